//! API tokens, and the one-time setup code that makes the first admin.

use jiff::Timestamp;
use model::{Role, TokenId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::codec::{id, ms, opt_ts, ts};
use crate::{Conn, StoreError};

// ---------------------------------------------------------------- API tokens

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// The token's id.
    pub id: TokenId,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The user it acts for, when it belongs to one.
    pub user_id: Option<UserId>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was last used.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

#[derive(FromRow)]
struct ApiTokenRow {
    id: String,
    name: String,
    role: String,
    user_id: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, name, role, user_id, created_at, last_used_at, revoked_at";

impl ApiTokenRow {
    fn into_model(self) -> Result<ApiToken, StoreError> {
        const T: &str = "api_tokens";
        Ok(ApiToken {
            id: id(T, &self.id)?,
            name: self.name,
            role: Role::parse(&self.role).ok_or_else(|| StoreError::Corrupt {
                table: T,
                message: format!("unknown role `{}`", self.role),
            })?,
            user_id: self.user_id.as_deref().map(|u| id(T, u)).transpose()?,
            created_at: ts(self.created_at),
            last_used_at: opt_ts(self.last_used_at),
            revoked_at: opt_ts(self.revoked_at),
        })
    }
}

pub async fn insert_api_token(
    c: &mut Conn,
    t: &ApiToken,
    token_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, token_hash, user_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id.to_string())
    .bind(&t.name)
    .bind(t.role.as_str())
    .bind(token_hash)
    .bind(t.user_id.map(|u| u.to_string()))
    .bind(ms(t.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_api_tokens(c: &mut Conn) -> Result<Vec<ApiToken>, StoreError> {
    sqlx::query_as::<_, ApiTokenRow>(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(ApiTokenRow::into_model)
    .collect()
}

/// The unrevoked token with this hash, after recording its use.
pub async fn use_api_token(
    c: &mut Conn,
    token_hash: &str,
    now: Timestamp,
) -> Result<Option<ApiToken>, StoreError> {
    let token = sqlx::query_as::<_, ApiTokenRow>(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(token_hash)
    .fetch_optional(&mut *c)
    .await?
    .map(ApiTokenRow::into_model)
    .transpose()?;
    if let Some(t) = &token {
        // Only write when the recorded use is over a minute old, to keep reads cheap.
        let stale = t
            .last_used_at
            .is_none_or(|at| now.as_millisecond() - at.as_millisecond() > 60_000);
        if stale {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(t.id.to_string())
                .bind(ms(now))
                .execute(c)
                .await?;
        }
    }
    Ok(token)
}

pub async fn revoke_api_token(
    c: &mut Conn,
    t: TokenId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(t.to_string())
            .bind(ms(now))
            .execute(c)
            .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- setup code

/// Stores a fresh setup code hash, replacing any unused one.
pub async fn put_setup_code(
    c: &mut Conn,
    code_hash: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM setup_codes WHERE id = 1")
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO setup_codes (id, code_hash, created_at) VALUES (1, $1, $2)")
        .bind(code_hash)
        .bind(ms(now))
        .execute(c)
        .await?;
    Ok(())
}

/// Consumes the setup code if `code_hash` matches the unused one.
pub async fn consume_setup_code(
    c: &mut Conn,
    code_hash: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE setup_codes SET used_at = $2 WHERE id = 1 AND code_hash = $1 AND used_at IS NULL",
    )
    .bind(code_hash)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}
