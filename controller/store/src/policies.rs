//! Policies: which group may reach which resource, under which conditions.

use model::{Conditions, Policy, PolicyAction, PolicyId, ResourceId};
use sqlx::FromRow;

use crate::codec::{flag, id, json, ms, to_json, ts};
use crate::{Conn, StoreError};

#[derive(FromRow)]
struct PolicyRow {
    id: String,
    name: String,
    group_id: String,
    resource_id: String,
    action: String,
    conditions: String,
    max_session_secs: i64,
    disabled: i64,
    created_at: i64,
}

const POLICY_COLUMNS: &str =
    "id, name, group_id, resource_id, action, conditions, max_session_secs, disabled, created_at";

impl PolicyRow {
    fn into_model(self) -> Result<Policy, StoreError> {
        const T: &str = "policies";
        Ok(Policy {
            id: id(T, &self.id)?,
            name: self.name,
            group_id: id(T, &self.group_id)?,
            resource_id: id(T, &self.resource_id)?,
            action: match self.action.as_str() {
                "allow" => PolicyAction::Allow,
                "deny" => PolicyAction::Deny,
                other => {
                    return Err(StoreError::Corrupt {
                        table: T,
                        message: format!("unknown action `{other}`"),
                    });
                }
            },
            conditions: json::<Conditions>(T, &self.conditions)?,
            max_session_secs: u64::try_from(self.max_session_secs).unwrap_or(0),
            disabled: self.disabled != 0,
            created_at: ts(self.created_at),
        })
    }
}

fn action_str(a: PolicyAction) -> &'static str {
    match a {
        PolicyAction::Allow => "allow",
        PolicyAction::Deny => "deny",
    }
}

pub async fn insert_policy(c: &mut Conn, p: &Policy) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO policies (id, name, group_id, resource_id, action, conditions, \
         max_session_secs, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(p.group_id.to_string())
    .bind(p.resource_id.to_string())
    .bind(action_str(p.action))
    .bind(to_json(&p.conditions))
    .bind(i64::try_from(p.max_session_secs).unwrap_or(i64::MAX))
    .bind(flag(p.disabled))
    .bind(ms(p.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_policy(c: &mut Conn, p: &Policy) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE policies SET name = $2, group_id = $3, resource_id = $4, action = $5, \
         conditions = $6, max_session_secs = $7, disabled = $8 WHERE id = $1",
    )
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(p.group_id.to_string())
    .bind(p.resource_id.to_string())
    .bind(action_str(p.action))
    .bind(to_json(&p.conditions))
    .bind(i64::try_from(p.max_session_secs).unwrap_or(i64::MAX))
    .bind(flag(p.disabled))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_policies(c: &mut Conn) -> Result<Vec<Policy>, StoreError> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies ORDER BY name"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(PolicyRow::into_model)
    .collect()
}

pub async fn policies_for_resource(c: &mut Conn, r: ResourceId) -> Result<Vec<Policy>, StoreError> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE resource_id = $1 ORDER BY id"
    ))
    .bind(r.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(PolicyRow::into_model)
    .collect()
}

pub async fn get_policy(c: &mut Conn, p: PolicyId) -> Result<Option<Policy>, StoreError> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1"
    ))
    .bind(p.to_string())
    .fetch_optional(c)
    .await?
    .map(PolicyRow::into_model)
    .transpose()
}

pub async fn delete_policy(c: &mut Conn, p: PolicyId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM policies WHERE id = $1")
        .bind(p.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Counts the policies that name `column = value` (for refusing deletes with a clear reason).
pub async fn policies_referencing(
    c: &mut Conn,
    column: PolicyRef,
    value: &str,
) -> Result<Vec<String>, StoreError> {
    let sql = match column {
        PolicyRef::Group => "SELECT name FROM policies WHERE group_id = $1 ORDER BY name",
        PolicyRef::Resource => "SELECT name FROM policies WHERE resource_id = $1 ORDER BY name",
    };
    Ok(sqlx::query_scalar(sql).bind(value).fetch_all(c).await?)
}

/// A column of `policies` that points at another object.
#[derive(Debug, Clone, Copy)]
pub enum PolicyRef {
    Group,
    Resource,
}
