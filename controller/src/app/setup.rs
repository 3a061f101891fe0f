//! First-run setup and API tokens.

use model::{Role, TokenId, User, UserId};
use serde::{Deserialize, Serialize};

use super::kernel::{
    Actor, Issued, Result, Service, ServiceError, check_email, invalid, name, now, subject,
};
use crate::secrets;
use store::{self, ApiToken, Conn};

/// An API token to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// What it is for.
    pub name: String,
    /// `admin` or `auditor`.
    pub role: Role,
}

/// The first admin, created with the setup code.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupInput {
    /// The one-time code the controller printed at its first start.
    pub code: String,
    /// The admin's e-mail address.
    pub email: String,
    /// The admin's name.
    pub name: String,
}

/// What setup created.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetupResult {
    /// The first admin.
    pub user: User,
    /// An admin API token for them, shown once.
    pub token: String,
}

impl Service {
    /// Makes a new setup code when no admin exists yet; `None` once setup is done.
    pub async fn prepare_setup(&self) -> Result<Option<String>> {
        let mut tx = self.store.begin().await?;
        if store::count_admins(&mut tx).await? > 0 {
            return Ok(None);
        }
        let code = secrets::setup_code();
        store::put_setup_code(&mut tx, &secrets::hash_setup_code(&code), now()).await?;
        tx.commit().await?;
        Ok(Some(code))
    }

    /// Creates the first admin with the one-time setup code, and an API token for them.
    pub async fn complete_setup(&self, input: SetupInput) -> Result<SetupResult> {
        let email = check_email("email", &input.email)?;
        let user_name = name("name", &input.name)?;
        let mut tx = self.store.begin().await?;
        let now = now();
        if store::count_admins(&mut tx).await? > 0
            || !store::consume_setup_code(&mut tx, &secrets::hash_setup_code(&input.code), now)
                .await?
        {
            return Err(ServiceError::Unauthorized(
                "the setup code is wrong or was already used",
            ));
        }
        let user = User {
            id: UserId::new(),
            email,
            name: user_name,
            role: Role::Admin,
            disabled: false,
            created_at: now,
        };
        store::insert_user(&mut tx, &user).await?;
        let actor = Actor {
            id: "setup".into(),
            name: "setup code".into(),
            role: Role::Admin,
        };
        self.audit(
            &mut tx,
            &actor,
            "user.created",
            subject("user", user.id),
            serde_json::to_value(&user).unwrap_or_default(),
        )
        .await?;
        let issued = self
            .insert_token(
                &mut tx,
                &actor,
                &format!("setup token of {}", user.email),
                Role::Admin,
                Some(user.id),
            )
            .await?;
        tx.commit().await?;
        Ok(SetupResult {
            user,
            token: issued.secret,
        })
    }

    async fn insert_token(
        &self,
        c: &mut Conn,
        actor: &Actor,
        token_name: &str,
        role: Role,
        user: Option<UserId>,
    ) -> Result<Issued<ApiToken>> {
        let secret = secrets::generate("pst_");
        let token = ApiToken {
            id: TokenId::new(),
            name: token_name.to_owned(),
            role,
            user_id: user,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        store::insert_api_token(c, &token, &secrets::hash(&secret)).await?;
        self.audit(
            c,
            actor,
            "token.created",
            subject("token", token.id),
            serde_json::json!({ "name": token.name, "role": role }),
        )
        .await?;
        Ok(Issued {
            record: token,
            secret,
        })
    }

    /// Creates an API token (admin or auditor role), shown once.
    pub async fn create_token(&self, actor: &Actor, input: TokenInput) -> Result<Issued<ApiToken>> {
        Self::require_admin(actor)?;
        let token_name = name("name", &input.name)?;
        if input.role == Role::User {
            return Err(invalid(
                "role",
                "API tokens are for automation: use admin or auditor",
            ));
        }
        let mut tx = self.store.begin().await?;
        let issued = self
            .insert_token(&mut tx, actor, &token_name, input.role, None)
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Lists API tokens (without secrets).
    pub async fn list_tokens(&self, actor: &Actor) -> Result<Vec<ApiToken>> {
        Self::require_reader(actor)?;
        Ok(store::list_api_tokens(&mut *self.store.conn().await?).await?)
    }

    /// Revokes an API token.
    pub async fn revoke_token(&self, actor: &Actor, id: TokenId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::revoke_api_token(&mut tx, id, now()).await? {
            return Err(ServiceError::NotFound("token"));
        }
        self.audit(
            &mut tx,
            actor,
            "token.revoked",
            subject("token", id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The actor behind a bearer token.
    pub async fn authenticate(&self, bearer: &str) -> Result<Actor> {
        let mut c = self.store.conn().await?;
        let token = store::use_api_token(&mut c, &secrets::hash(bearer), now())
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the API token is unknown or revoked",
            ))?;
        if let Some(user) = token.user_id {
            let user = store::get_user(&mut c, user).await?;
            if user.is_none_or(|u| u.disabled) {
                return Err(ServiceError::Unauthorized("the token's user is disabled"));
            }
        }
        Ok(Actor {
            id: subject("token", token.id),
            name: token.name,
            role: token.role,
        })
    }
}
