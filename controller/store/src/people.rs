//! Users and groups, and the groups' members.

use jiff::Timestamp;
use model::{Group, GroupId, Role, User, UserId};
use sqlx::FromRow;

use crate::codec::{flag, id, ms, ts};
use crate::{Conn, StoreError};

// ---------------------------------------------------------------- users

#[derive(FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    role: String,
    disabled: i64,
    created_at: i64,
}

const USER_COLUMNS: &str = "id, email, name, role, disabled, created_at";

impl UserRow {
    fn into_model(self) -> Result<User, StoreError> {
        Ok(User {
            id: id("users", &self.id)?,
            email: self.email,
            name: self.name,
            role: Role::parse(&self.role).ok_or_else(|| StoreError::Corrupt {
                table: "users",
                message: format!("unknown role `{}`", self.role),
            })?,
            disabled: self.disabled != 0,
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_user(c: &mut Conn, u: &User) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, email, name, role, disabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(u.id.to_string())
    .bind(&u.email)
    .bind(&u.name)
    .bind(u.role.as_str())
    .bind(flag(u.disabled))
    .bind(ms(u.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_user(c: &mut Conn, u: &User) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET email = $2, name = $3, role = $4, disabled = $5 WHERE id = $1")
        .bind(u.id.to_string())
        .bind(&u.email)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(flag(u.disabled))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_users(c: &mut Conn) -> Result<Vec<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email"))
        .fetch_all(c)
        .await?
        .into_iter()
        .map(UserRow::into_model)
        .collect()
}

pub async fn get_user(c: &mut Conn, u: UserId) -> Result<Option<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(u.to_string())
        .fetch_optional(c)
        .await?
        .map(UserRow::into_model)
        .transpose()
}

pub async fn user_by_email(c: &mut Conn, email: &str) -> Result<Option<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(c)
    .await?
    .map(UserRow::into_model)
    .transpose()
}

pub async fn count_admins(c: &mut Conn) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0")
            .fetch_one(c)
            .await?,
    )
}

pub async fn delete_user(c: &mut Conn, u: UserId) -> Result<bool, StoreError> {
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = created_at WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(u.to_string())
    .execute(&mut *c)
    .await?;
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(u.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- groups

#[derive(FromRow)]
struct GroupRow {
    id: String,
    name: String,
    description: String,
    created_at: i64,
}

impl GroupRow {
    fn into_model(self) -> Result<Group, StoreError> {
        Ok(Group {
            id: id("user_groups", &self.id)?,
            name: self.name,
            description: self.description,
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_group(c: &mut Conn, g: &Group) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO user_groups (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(g.id.to_string())
    .bind(&g.name)
    .bind(&g.description)
    .bind(ms(g.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_group(c: &mut Conn, g: &Group) -> Result<(), StoreError> {
    sqlx::query("UPDATE user_groups SET name = $2, description = $3 WHERE id = $1")
        .bind(g.id.to_string())
        .bind(&g.name)
        .bind(&g.description)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_groups(c: &mut Conn) -> Result<Vec<Group>, StoreError> {
    sqlx::query_as::<_, GroupRow>(
        "SELECT id, name, description, created_at FROM user_groups ORDER BY name",
    )
    .fetch_all(c)
    .await?
    .into_iter()
    .map(GroupRow::into_model)
    .collect()
}

pub async fn get_group(c: &mut Conn, g: GroupId) -> Result<Option<Group>, StoreError> {
    sqlx::query_as::<_, GroupRow>(
        "SELECT id, name, description, created_at FROM user_groups WHERE id = $1",
    )
    .bind(g.to_string())
    .fetch_optional(c)
    .await?
    .map(GroupRow::into_model)
    .transpose()
}

pub async fn delete_group(c: &mut Conn, g: GroupId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM user_groups WHERE id = $1")
        .bind(g.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Adds `user` to `group`; `false` when they already were a member.
pub async fn add_member(
    c: &mut Conn,
    group: GroupId,
    user: UserId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND user_id = $2",
    )
    .bind(group.to_string())
    .bind(user.to_string())
    .fetch_one(&mut *c)
    .await?;
    if exists > 0 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)")
        .bind(group.to_string())
        .bind(user.to_string())
        .bind(ms(now))
        .execute(c)
        .await?;
    Ok(true)
}

pub async fn remove_member(c: &mut Conn, group: GroupId, user: UserId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group.to_string())
        .bind(user.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn group_members(c: &mut Conn, group: GroupId) -> Result<Vec<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(
        "SELECT u.id, u.email, u.name, u.role, u.disabled, u.created_at FROM users u \
         JOIN group_members m ON m.user_id = u.id WHERE m.group_id = $1 ORDER BY u.email",
    )
    .bind(group.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(UserRow::into_model)
    .collect()
}

pub async fn groups_of_user(c: &mut Conn, user: UserId) -> Result<Vec<GroupId>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id",
    )
    .bind(user.to_string())
    .fetch_all(c)
    .await?;
    ids.iter().map(|g| id("group_members", g)).collect()
}
