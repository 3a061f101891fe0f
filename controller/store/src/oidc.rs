//! OIDC single sign-on: identity providers, the identities they vouch for, the group
//! memberships their claims made, and the sign-ins in flight.

use jiff::Timestamp;
use model::{GroupId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::codec::{ms, ts};
use crate::{Conn, StoreError};

fn parse<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt {
        table,
        message: format!("bad id `{s}`"),
    })
}

/// An OpenID provider users can sign in with. Its client secret is kept apart and never
/// returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityProvider {
    /// The provider's id.
    pub id: uuid::Uuid,
    /// A unique name, used in the sign-in URL (`/auth/oidc/{name}/start`).
    pub name: String,
    /// The issuer URL; discovery reads `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The ID token claim that lists the user's groups.
    pub groups_claim: String,
    /// The scopes requested besides `openid`.
    pub scopes: Vec<String>,
    /// When it was added.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// Whether it comes from the controller's config file (`--config`): then it is changed
    /// there, and the API refuses to change or delete it.
    #[serde(default)]
    pub config_managed: bool,
}

#[derive(FromRow)]
struct ProviderRow {
    id: String,
    name: String,
    issuer: String,
    client_id: String,
    client_secret: String,
    groups_claim: String,
    scopes: String,
    created_at: i64,
    config_managed: i64,
}

impl ProviderRow {
    fn into_model(self) -> Result<(IdentityProvider, String), StoreError> {
        Ok((
            IdentityProvider {
                id: parse("identity_providers", &self.id)?,
                name: self.name,
                issuer: self.issuer,
                client_id: self.client_id,
                groups_claim: self.groups_claim,
                scopes: self.scopes.split_whitespace().map(str::to_owned).collect(),
                created_at: ts(self.created_at),
                config_managed: self.config_managed != 0,
            },
            self.client_secret,
        ))
    }
}

const PROVIDER_COLUMNS: &str =
    "id, name, issuer, client_id, client_secret, groups_claim, scopes, created_at, config_managed";

pub async fn insert_provider(
    c: &mut Conn,
    p: &IdentityProvider,
    client_secret: &str,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO identity_providers ({PROVIDER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(&p.issuer)
    .bind(&p.client_id)
    .bind(client_secret)
    .bind(&p.groups_claim)
    .bind(p.scopes.join(" "))
    .bind(ms(p.created_at))
    .bind(crate::codec::flag(p.config_managed))
    .execute(c)
    .await?;
    Ok(())
}

/// Changes a provider (all but its id, name and creation time); false when it does not exist.
pub async fn update_provider(
    c: &mut Conn,
    p: &IdentityProvider,
    client_secret: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE identity_providers SET issuer = $2, client_id = $3, client_secret = $4, \
         groups_claim = $5, scopes = $6, config_managed = $7 WHERE id = $1",
    )
    .bind(p.id.to_string())
    .bind(&p.issuer)
    .bind(&p.client_id)
    .bind(client_secret)
    .bind(&p.groups_claim)
    .bind(p.scopes.join(" "))
    .bind(crate::codec::flag(p.config_managed))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Every provider's stored client secret (sealed or legacy plaintext), by provider id.
pub async fn provider_secrets(c: &mut Conn) -> Result<Vec<(uuid::Uuid, String)>, StoreError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, client_secret FROM identity_providers ORDER BY id")
            .fetch_all(c)
            .await?;
    rows.into_iter()
        .map(|(id, s)| Ok((parse("identity_providers", &id)?, s)))
        .collect()
}

/// Replaces a provider's stored client secret if it is still `old`; true when it was.
pub async fn reseal_provider_secret(
    c: &mut Conn,
    id: uuid::Uuid,
    old: &str,
    new: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE identity_providers SET client_secret = $3 WHERE id = $1 AND client_secret = $2",
    )
    .bind(id.to_string())
    .bind(old)
    .bind(new)
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn list_providers(c: &mut Conn) -> Result<Vec<IdentityProvider>, StoreError> {
    sqlx::query_as::<_, ProviderRow>(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers ORDER BY name"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(|r| r.into_model().map(|(p, _)| p))
    .collect()
}

/// A provider by name, with its client secret.
pub async fn provider_by_name(
    c: &mut Conn,
    name: &str,
) -> Result<Option<(IdentityProvider, String)>, StoreError> {
    sqlx::query_as::<_, ProviderRow>(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(c)
    .await?
    .map(ProviderRow::into_model)
    .transpose()
}

pub async fn get_provider(
    c: &mut Conn,
    id: uuid::Uuid,
) -> Result<Option<IdentityProvider>, StoreError> {
    sqlx::query_as::<_, ProviderRow>(&format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(c)
    .await?
    .map(|r| r.into_model().map(|(p, _)| p))
    .transpose()
}

pub async fn delete_provider(c: &mut Conn, id: uuid::Uuid) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM oidc_logins WHERE provider_id = $1")
        .bind(id.to_string())
        .execute(&mut *c)
        .await?;
    let done = sqlx::query("DELETE FROM identity_providers WHERE id = $1")
        .bind(id.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- sign-ins in flight

/// A sign-in between the redirect to the provider and its callback. Holds secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub provider_id: uuid::Uuid,
    pub browser_hash: String,
    pub nonce: String,
    pub pkce_verifier: String,
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("provider_id", &self.provider_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

pub async fn insert_pending_login(
    c: &mut Conn,
    state_hash: &str,
    p: &PendingLogin,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
        .bind(ms(now))
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "INSERT INTO oidc_logins (state_hash, provider_id, browser_hash, nonce, pkce_verifier, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(state_hash)
    .bind(p.provider_id.to_string())
    .bind(&p.browser_hash)
    .bind(&p.nonce)
    .bind(&p.pkce_verifier)
    .bind(ms(now))
    .bind(ms(p.expires_at))
    .execute(c)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct PendingRow {
    provider_id: String,
    browser_hash: String,
    nonce: String,
    pkce_verifier: String,
    expires_at: i64,
}

/// Takes (reads and deletes) the sign-in with this state: a state works once.
pub async fn take_pending_login(
    c: &mut Conn,
    state_hash: &str,
) -> Result<Option<PendingLogin>, StoreError> {
    let Some(row) = sqlx::query_as::<_, PendingRow>(
        "SELECT provider_id, browser_hash, nonce, pkce_verifier, expires_at FROM oidc_logins \
         WHERE state_hash = $1",
    )
    .bind(state_hash)
    .fetch_optional(&mut *c)
    .await?
    else {
        return Ok(None);
    };
    let done = sqlx::query("DELETE FROM oidc_logins WHERE state_hash = $1")
        .bind(state_hash)
        .execute(c)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    Ok(Some(PendingLogin {
        provider_id: parse("oidc_logins", &row.provider_id)?,
        browser_hash: row.browser_hash,
        nonce: row.nonce,
        pkce_verifier: row.pkce_verifier,
        expires_at: ts(row.expires_at),
    }))
}

// ---------------------------------------------------------------- identities and groups

/// The user an (issuer, subject) identity belongs to.
pub async fn identity_user(
    c: &mut Conn,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserId>, StoreError> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT user_id FROM oidc_identities WHERE issuer = $1 AND subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .fetch_optional(c)
    .await?;
    id.map(|s| parse("oidc_identities", &s)).transpose()
}

/// One identity at an OpenID provider.
#[derive(Debug, Clone)]
pub struct OidcIdentity<'a> {
    pub issuer: &'a str,
    pub subject: &'a str,
    pub provider_id: uuid::Uuid,
    pub user_id: UserId,
    pub email: Option<&'a str>,
}

pub async fn insert_identity(
    c: &mut Conn,
    i: &OidcIdentity<'_>,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO oidc_identities (id, issuer, subject, provider_id, user_id, email, \
         created_at, last_sign_in_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(i.issuer)
    .bind(i.subject)
    .bind(i.provider_id.to_string())
    .bind(i.user_id.to_string())
    .bind(i.email)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn touch_identity(
    c: &mut Conn,
    issuer: &str,
    subject: &str,
    email: Option<&str>,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE oidc_identities SET last_sign_in_at = $3, email = $4 \
         WHERE issuer = $1 AND subject = $2",
    )
    .bind(issuer)
    .bind(subject)
    .bind(ms(now))
    .bind(email)
    .execute(c)
    .await?;
    Ok(())
}

/// An identity at an OpenID provider as admins see it: who vouches for it and whose it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Identity {
    /// The identity's id (used to link or unlink it).
    pub id: uuid::Uuid,
    /// The user it signs in as.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The identity provider it signed in through.
    pub provider_id: uuid::Uuid,
    /// That provider's name; absent when the provider was removed.
    pub provider: Option<String>,
    /// The issuer of its ID tokens.
    pub issuer: String,
    /// The subject (`sub`) the issuer names it by.
    pub subject: String,
    /// The e-mail address the provider last asserted.
    pub email: Option<String>,
    /// When it first signed in.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it last signed in.
    #[schema(value_type = String, format = DateTime)]
    pub last_sign_in_at: Timestamp,
}

#[derive(FromRow)]
struct IdentityRow {
    id: String,
    user_id: String,
    provider_id: String,
    provider: Option<String>,
    issuer: String,
    subject: String,
    email: Option<String>,
    created_at: i64,
    last_sign_in_at: i64,
}

impl IdentityRow {
    fn into_model(self) -> Result<Identity, StoreError> {
        Ok(Identity {
            id: parse("oidc_identities", &self.id)?,
            user_id: parse("oidc_identities", &self.user_id)?,
            provider_id: parse("oidc_identities", &self.provider_id)?,
            provider: self.provider,
            issuer: self.issuer,
            subject: self.subject,
            email: self.email,
            created_at: ts(self.created_at),
            last_sign_in_at: ts(self.last_sign_in_at),
        })
    }
}

const IDENTITY_SELECT: &str = "SELECT i.id, i.user_id, i.provider_id, p.name AS provider, \
     i.issuer, i.subject, i.email, i.created_at, i.last_sign_in_at FROM oidc_identities i \
     LEFT JOIN identity_providers p ON p.id = i.provider_id";

/// A user's identities, oldest first.
pub async fn list_identities(c: &mut Conn, user: UserId) -> Result<Vec<Identity>, StoreError> {
    sqlx::query_as::<_, IdentityRow>(&format!(
        "{IDENTITY_SELECT} WHERE i.user_id = $1 ORDER BY i.created_at, i.id"
    ))
    .bind(user.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(IdentityRow::into_model)
    .collect()
}

/// One identity by its id.
pub async fn get_identity(c: &mut Conn, id: uuid::Uuid) -> Result<Option<Identity>, StoreError> {
    sqlx::query_as::<_, IdentityRow>(&format!("{IDENTITY_SELECT} WHERE i.id = $1"))
        .bind(id.to_string())
        .fetch_optional(c)
        .await?
        .map(IdentityRow::into_model)
        .transpose()
}

/// Makes an identity sign in as `user`; false when it does not exist.
pub async fn move_identity(c: &mut Conn, id: uuid::Uuid, user: UserId) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE oidc_identities SET user_id = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(user.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Forgets an identity: its next sign-in makes a new user. False when it did not exist.
pub async fn delete_identity(c: &mut Conn, id: uuid::Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM oidc_identities WHERE id = $1")
        .bind(id.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// The groups whose membership of `user` came from `provider`'s group claim.
pub async fn provider_groups(
    c: &mut Conn,
    provider: uuid::Uuid,
    user: UserId,
) -> Result<Vec<GroupId>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM oidc_group_memberships WHERE provider_id = $1 AND user_id = $2 \
         ORDER BY group_id",
    )
    .bind(provider.to_string())
    .bind(user.to_string())
    .fetch_all(c)
    .await?;
    ids.iter()
        .map(|s| parse("oidc_group_memberships", s))
        .collect()
}

pub async fn add_provider_group(
    c: &mut Conn,
    provider: uuid::Uuid,
    user: UserId,
    group: GroupId,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO oidc_group_memberships (provider_id, user_id, group_id) VALUES ($1, $2, $3)",
    )
    .bind(provider.to_string())
    .bind(user.to_string())
    .bind(group.to_string())
    .execute(c)
    .await?;
    Ok(())
}

pub async fn remove_provider_group(
    c: &mut Conn,
    provider: uuid::Uuid,
    user: UserId,
    group: GroupId,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM oidc_group_memberships WHERE provider_id = $1 AND user_id = $2 \
         AND group_id = $3",
    )
    .bind(provider.to_string())
    .bind(user.to_string())
    .bind(group.to_string())
    .execute(c)
    .await?;
    Ok(())
}

/// A group by its name.
pub async fn group_id_by_name(c: &mut Conn, name: &str) -> Result<Option<GroupId>, StoreError> {
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM user_groups WHERE name = $1")
        .bind(name)
        .fetch_optional(c)
        .await?;
    id.map(|s| parse("user_groups", &s)).transpose()
}
