//! Users, groups and memberships.

use model::{Group, GroupId, Role, User, UserId};
use serde::Deserialize;

use super::kernel::{
    Actor, Result, Service, ServiceError, check_email, invalid, name, now, on_duplicate, subject,
    unused,
};
use super::live::{Cause, Reevaluation};
use store::{self, GrantFilter, PolicyRef, StoreError};

/// A user to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Their e-mail address.
    pub email: String,
    /// Their display name.
    pub name: String,
    /// Their role (default `user`).
    #[serde(default)]
    pub role: Option<Role>,
}

/// Changes to a user.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Disable (revoking every grant) or enable them.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A group to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// A unique name.
    pub name: String,
    /// What the group is for.
    #[serde(default)]
    pub description: String,
}

/// A user to add to a group.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// The user.
    pub user_id: UserId,
}

impl Service {
    /// Lists users.
    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<User>> {
        Self::require_reader(actor)?;
        Ok(store::list_users(&mut *self.store.conn().await?).await?)
    }

    /// One user.
    pub async fn get_user(&self, actor: &Actor, id: UserId) -> Result<User> {
        Self::require_reader(actor)?;
        store::get_user(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("user"))
    }

    /// Creates a user.
    pub async fn create_user(&self, actor: &Actor, input: UserInput) -> Result<User> {
        Self::require_admin(actor)?;
        let user = User {
            id: UserId::new(),
            email: check_email("email", &input.email)?,
            name: name("name", &input.name)?,
            role: input.role.unwrap_or(Role::User),
            disabled: false,
            created_at: now(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_user(&mut tx, &user)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(_) => ServiceError::Conflict {
                    field: Some("email"),
                    message: format!("a user with e-mail `{}` already exists", user.email),
                },
                e => e.into(),
            })?;
        self.audit(
            &mut tx,
            actor,
            "user.created",
            subject("user", user.id),
            serde_json::to_value(&user).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Changes a user. Disabling revokes every grant of theirs.
    pub async fn update_user(&self, actor: &Actor, id: UserId, patch: UserPatch) -> Result<User> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let mut u = store::get_user(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        if let Some(e) = &patch.email {
            u.email = check_email("email", e)?;
        }
        if let Some(n) = &patch.name {
            u.name = name("name", n)?;
        }
        if let Some(r) = patch.role {
            u.role = r;
        }
        let disabling = patch.disabled == Some(true) && !u.disabled;
        if let Some(d) = patch.disabled {
            u.disabled = d;
        }
        store::update_user(&mut tx, &u).await.map_err(|e| match e {
            StoreError::Duplicate(_) => ServiceError::Conflict {
                field: Some("email"),
                message: format!("a user with e-mail `{}` already exists", u.email),
            },
            e => e.into(),
        })?;
        if store::count_admins(&mut tx).await? == 0 {
            return Err(ServiceError::Conflict {
                field: Some("role"),
                message: "this would leave no enabled admin".into(),
            });
        }
        self.audit(
            &mut tx,
            actor,
            "user.updated",
            subject("user", id),
            serde_json::to_value(&u).unwrap_or_default(),
        )
        .await?;
        if disabling {
            self.end_sessions_in(&mut tx, actor, id, "user disabled")
                .await?;
            self.end_device_sessions_in(&mut tx, None, Some(id), "user disabled")
                .await?;
        }
        // A disabled user's grants are refused by the decision (`user_disabled`).
        let changed = if disabling {
            self.reevaluate_in(
                &mut tx,
                actor,
                &Cause::new("user.updated", "user", id),
                GrantFilter::for_user(id),
            )
            .await?
        } else {
            Reevaluation::default()
        };
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        if disabling {
            self.announce_sessions_ended(None, Some(id), "user disabled");
        }
        Ok(u)
    }

    /// Deletes a user, their devices and memberships, revoking their grants.
    pub async fn delete_user(&self, actor: &Actor, id: UserId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::delete_user(&mut tx, id).await? {
            return Err(ServiceError::NotFound("user"));
        }
        if store::count_admins(&mut tx).await? == 0 {
            return Err(ServiceError::Conflict {
                field: None,
                message: "this would leave no enabled admin".into(),
            });
        }
        let revoked = self
            .record_deletion(&mut tx, actor, "user", id, Some(GrantFilter::for_user(id)))
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        self.announce_sessions_ended(None, Some(id), "user deleted");
        Ok(())
    }

    /// Lists groups.
    pub async fn list_groups(&self, actor: &Actor) -> Result<Vec<Group>> {
        Self::require_reader(actor)?;
        Ok(store::list_groups(&mut *self.store.conn().await?).await?)
    }

    /// One group.
    pub async fn get_group(&self, actor: &Actor, id: GroupId) -> Result<Group> {
        Self::require_reader(actor)?;
        store::get_group(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))
    }

    /// Creates a group.
    pub async fn create_group(&self, actor: &Actor, input: GroupInput) -> Result<Group> {
        Self::require_admin(actor)?;
        let g = Group {
            id: GroupId::new(),
            name: name("name", &input.name)?,
            description: input.description.trim().to_owned(),
            created_at: now(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_group(&mut tx, &g)
            .await
            .map_err(on_duplicate("name", "group", &g.name))?;
        self.audit(
            &mut tx,
            actor,
            "group.created",
            subject("group", g.id),
            serde_json::to_value(&g).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(g)
    }

    /// Renames or re-describes a group.
    pub async fn update_group(
        &self,
        actor: &Actor,
        id: GroupId,
        input: GroupInput,
    ) -> Result<Group> {
        Self::require_admin(actor)?;
        let new_name = name("name", &input.name)?;
        let mut tx = self.store.begin().await?;
        let mut g = store::get_group(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        g.name = new_name;
        g.description = input.description.trim().to_owned();
        store::update_group(&mut tx, &g)
            .await
            .map_err(on_duplicate("name", "group", &g.name))?;
        self.audit(
            &mut tx,
            actor,
            "group.updated",
            subject("group", id),
            serde_json::to_value(&g).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(g)
    }

    /// Deletes a group no policy names.
    pub async fn delete_group(&self, actor: &Actor, id: GroupId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_group(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        let used = store::policies_referencing(&mut tx, PolicyRef::Group, &id.to_string()).await?;
        unused("group", &used, "delete")?;
        store::delete_group(&mut tx, id).await?;
        self.record_deletion(&mut tx, actor, "group", id, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The members of a group.
    pub async fn group_members(&self, actor: &Actor, id: GroupId) -> Result<Vec<User>> {
        Self::require_reader(actor)?;
        let mut c = self.store.conn().await?;
        store::get_group(&mut c, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        Ok(store::group_members(&mut c, id).await?)
    }

    /// Adds a user to a group.
    pub async fn add_member(
        &self,
        actor: &Actor,
        group: GroupId,
        input: MemberInput,
    ) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_group(&mut tx, group)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        if store::get_user(&mut tx, input.user_id).await?.is_none() {
            return Err(invalid(
                "user_id",
                format!("no user has the id {}", input.user_id),
            ));
        }
        let mut changed = Reevaluation::default();
        if store::add_member(&mut tx, group, input.user_id, now()).await? {
            self.audit(
                &mut tx,
                actor,
                "group.member_added",
                subject("group", group),
                serde_json::json!({ "user": input.user_id }),
            )
            .await?;
            // A deny policy of the group now covers the user's live access.
            changed = self
                .reevaluate_in(
                    &mut tx,
                    actor,
                    &Cause::new("group.member_added", "group", group),
                    GrantFilter::for_user(input.user_id),
                )
                .await?;
        }
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(())
    }

    /// Removes a user from a group, revoking the grants they held through it.
    pub async fn remove_member(&self, actor: &Actor, group: GroupId, user: UserId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::remove_member(&mut tx, group, user).await? {
            return Err(ServiceError::NotFound("membership"));
        }
        self.audit(
            &mut tx,
            actor,
            "group.member_removed",
            subject("group", group),
            serde_json::json!({ "user": user }),
        )
        .await?;
        let changed = self
            .reevaluate_in(
                &mut tx,
                actor,
                &Cause::new("group.member_removed", "group", group),
                GrantFilter::for_user(user),
            )
            .await?;
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(())
    }
}
