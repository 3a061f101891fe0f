//! Local accounts and web sessions: credentials (password hash, TOTP, failed attempts),
//! recovery codes, web sessions, and each user's last sign-in.

use jiff::Timestamp;
use model::UserId;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::codec::{ms, opt_ms, opt_ts, ts};
use crate::{Conn, StoreError};

fn user_id(table: &'static str, s: &str) -> Result<UserId, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt {
        table,
        message: format!("bad user id `{s}`"),
    })
}

// ---------------------------------------------------------------- credentials

/// A user's local credentials. Holds secrets: never logged, audited or returned by the API.
#[derive(Clone, PartialEq, Eq)]
pub struct LocalCredentials {
    pub user_id: UserId,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    /// base32 TOTP secret (pending until confirmed).
    pub totp_secret: Option<String>,
    pub totp_confirmed: bool,
    /// The last accepted TOTP time step; a code from this step or earlier is a replay.
    pub totp_last_step: Option<i64>,
    pub failed_attempts: i64,
    pub locked_until: Option<Timestamp>,
}

impl std::fmt::Debug for LocalCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCredentials")
            .field("user_id", &self.user_id)
            .field("has_password", &self.password_hash.is_some())
            .field("totp_confirmed", &self.totp_confirmed)
            .field("failed_attempts", &self.failed_attempts)
            .field("locked_until", &self.locked_until)
            .finish_non_exhaustive()
    }
}

#[derive(FromRow)]
struct CredentialsRow {
    user_id: String,
    password_hash: Option<String>,
    totp_secret: Option<String>,
    totp_confirmed: i64,
    totp_last_step: Option<i64>,
    failed_attempts: i64,
    locked_until: Option<i64>,
}

pub async fn get_credentials(
    c: &mut Conn,
    user: UserId,
) -> Result<Option<LocalCredentials>, StoreError> {
    let row = sqlx::query_as::<_, CredentialsRow>(
        "SELECT user_id, password_hash, totp_secret, totp_confirmed, totp_last_step, \
         failed_attempts, locked_until FROM local_credentials WHERE user_id = $1",
    )
    .bind(user.to_string())
    .fetch_optional(c)
    .await?;
    row.map(|r| {
        Ok(LocalCredentials {
            user_id: user_id("local_credentials", &r.user_id)?,
            password_hash: r.password_hash,
            totp_secret: r.totp_secret,
            totp_confirmed: r.totp_confirmed != 0,
            totp_last_step: r.totp_last_step,
            failed_attempts: r.failed_attempts,
            locked_until: opt_ts(r.locked_until),
        })
    })
    .transpose()
}

/// Sets the password hash, clearing failed attempts and any lockout.
pub async fn set_password_hash(
    c: &mut Conn,
    user: UserId,
    hash: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO local_credentials (user_id, password_hash, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash, \
         failed_attempts = 0, locked_until = NULL, updated_at = excluded.updated_at",
    )
    .bind(user.to_string())
    .bind(hash)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(())
}

/// Starts (or restarts) TOTP enrollment with a new, unconfirmed secret.
pub async fn set_pending_totp(
    c: &mut Conn,
    user: UserId,
    secret: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO local_credentials (user_id, totp_secret, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET totp_secret = excluded.totp_secret, \
         totp_confirmed = 0, totp_last_step = NULL, updated_at = excluded.updated_at",
    )
    .bind(user.to_string())
    .bind(secret)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(())
}

/// The TOTP secrets still stored in plain text (written before secrets were sealed), by user.
pub async fn plaintext_totp_secrets(c: &mut Conn) -> Result<Vec<(UserId, String)>, StoreError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT user_id, totp_secret FROM local_credentials WHERE totp_secret IS NOT NULL \
         AND totp_secret NOT LIKE 'enc:%' ORDER BY user_id",
    )
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(u, s)| Ok((user_id("local_credentials", &u)?, s)))
        .collect()
}

/// Replaces a stored TOTP secret by another form of the same secret (sealing a plaintext
/// one), if it is still `old`; true when it was replaced. The enrollment state is kept.
pub async fn reseal_totp_secret(
    c: &mut Conn,
    user: UserId,
    old: &str,
    new: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE local_credentials SET totp_secret = $3 WHERE user_id = $1 AND totp_secret = $2",
    )
    .bind(user.to_string())
    .bind(old)
    .bind(new)
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Confirms a pending TOTP secret, recording the step of the code that confirmed it.
pub async fn confirm_totp(
    c: &mut Conn,
    user: UserId,
    step: i64,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE local_credentials SET totp_confirmed = 1, totp_last_step = $2, updated_at = $3 \
         WHERE user_id = $1 AND totp_secret IS NOT NULL AND totp_confirmed = 0",
    )
    .bind(user.to_string())
    .bind(step)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Removes TOTP and every recovery code.
pub async fn clear_totp(c: &mut Conn, user: UserId, now: Timestamp) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE local_credentials SET totp_secret = NULL, totp_confirmed = 0, \
         totp_last_step = NULL, updated_at = $2 WHERE user_id = $1",
    )
    .bind(user.to_string())
    .bind(ms(now))
    .execute(&mut *c)
    .await?;
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user.to_string())
        .execute(c)
        .await?;
    Ok(())
}

/// Accepts a TOTP time step only when it is later than the last accepted one (atomic: two
/// concurrent uses of one code cannot both pass).
pub async fn accept_totp_step(c: &mut Conn, user: UserId, step: i64) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE local_credentials SET totp_last_step = $2 WHERE user_id = $1 \
         AND totp_confirmed = 1 AND (totp_last_step IS NULL OR totp_last_step < $2)",
    )
    .bind(user.to_string())
    .bind(step)
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Counts one more failed sign-in; returns the count.
pub async fn add_failed_attempt(c: &mut Conn, user: UserId) -> Result<i64, StoreError> {
    sqlx::query(
        "UPDATE local_credentials SET failed_attempts = failed_attempts + 1 WHERE user_id = $1",
    )
    .bind(user.to_string())
    .execute(&mut *c)
    .await?;
    Ok(
        sqlx::query_scalar("SELECT failed_attempts FROM local_credentials WHERE user_id = $1")
            .bind(user.to_string())
            .fetch_optional(c)
            .await?
            .unwrap_or(0),
    )
}

/// Locks the account until `until` and starts counting failures afresh.
pub async fn lock_account(c: &mut Conn, user: UserId, until: Timestamp) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE local_credentials SET locked_until = $2, failed_attempts = 0 WHERE user_id = $1",
    )
    .bind(user.to_string())
    .bind(ms(until))
    .execute(c)
    .await?;
    Ok(())
}

/// Clears failed attempts and lockout after a successful sign-in.
pub async fn clear_failures(c: &mut Conn, user: UserId) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE local_credentials SET failed_attempts = 0, locked_until = NULL WHERE user_id = $1",
    )
    .bind(user.to_string())
    .execute(c)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------- recovery codes

/// Replaces a user's recovery codes with these hashes.
pub async fn replace_recovery_codes(
    c: &mut Conn,
    user: UserId,
    hashes: &[String],
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user.to_string())
        .execute(&mut *c)
        .await?;
    for h in hashes {
        sqlx::query(
            "INSERT INTO recovery_codes (id, user_id, code_hash, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(user.to_string())
        .bind(h)
        .bind(ms(now))
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}

/// Marks an unused recovery code used; false when it is unknown or was used.
pub async fn use_recovery_code(
    c: &mut Conn,
    user: UserId,
    hash: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 \
         AND used_at IS NULL",
    )
    .bind(user.to_string())
    .bind(hash)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// How many unused recovery codes a user has.
pub async fn unused_recovery_codes(c: &mut Conn, user: UserId) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
    )
    .bind(user.to_string())
    .fetch_one(c)
    .await?)
}

// ---------------------------------------------------------------- last sign-in

/// Records a sign-in: its identity provider and, when MFA was part of it, its time.
pub async fn record_sign_in(
    c: &mut Conn,
    user: UserId,
    provider: &str,
    mfa_at: Option<Timestamp>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET last_provider = $2 WHERE id = $1")
        .bind(user.to_string())
        .bind(provider)
        .execute(&mut *c)
        .await?;
    if let Some(at) = mfa_at {
        record_mfa(c, user, at).await?;
    }
    Ok(())
}

/// Records an MFA outside sign-in (TOTP confirmation).
pub async fn record_mfa(c: &mut Conn, user: UserId, at: Timestamp) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET last_mfa_at = $2 WHERE id = $1")
        .bind(user.to_string())
        .bind(ms(at))
        .execute(c)
        .await?;
    Ok(())
}

/// A user's last sign-in: the identity provider and the time of the last MFA.
pub async fn last_sign_in(
    c: &mut Conn,
    user: UserId,
) -> Result<(Option<String>, Option<Timestamp>), StoreError> {
    let row: Option<(Option<String>, Option<i64>)> =
        sqlx::query_as("SELECT last_provider, last_mfa_at FROM users WHERE id = $1")
            .bind(user.to_string())
            .fetch_optional(c)
            .await?;
    Ok(row.map_or((None, None), |(p, m)| (p, opt_ts(m))))
}

// ---------------------------------------------------------------- web sessions

/// A browser's signed-in session. The cookie's secret is kept only as a hash and is not part
/// of this record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebSession {
    /// A public identifier of the session (not its secret).
    pub id: uuid::Uuid,
    /// Whose session it is.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// When it began (the sign-in).
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// The last request made with it.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen_at: Timestamp,
    /// When it ends regardless of use.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When MFA was completed for it, if it was.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub mfa_at: Option<Timestamp>,
    /// When it ended, if it did.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// The identity provider it was signed in with (`local` or a provider's name); absent
    /// for sessions older than this record.
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(FromRow)]
struct WebSessionRow {
    id: String,
    user_id: String,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
    mfa_at: Option<i64>,
    ended_at: Option<i64>,
    provider: Option<String>,
}

const SESSION_COLUMNS: &str =
    "id, user_id, created_at, last_seen_at, expires_at, mfa_at, ended_at, provider";

impl WebSessionRow {
    fn into_model(self) -> Result<WebSession, StoreError> {
        Ok(WebSession {
            id: self.id.parse().map_err(|_| StoreError::Corrupt {
                table: "web_sessions",
                message: format!("bad id `{}`", self.id),
            })?,
            user_id: user_id("web_sessions", &self.user_id)?,
            created_at: ts(self.created_at),
            last_seen_at: ts(self.last_seen_at),
            expires_at: ts(self.expires_at),
            mfa_at: opt_ts(self.mfa_at),
            ended_at: opt_ts(self.ended_at),
            provider: self.provider,
        })
    }
}

pub async fn insert_web_session(
    c: &mut Conn,
    s: &WebSession,
    token_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO web_sessions (id, token_hash, user_id, created_at, last_seen_at, \
         expires_at, mfa_at, ended_at, provider) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(s.id.to_string())
    .bind(token_hash)
    .bind(s.user_id.to_string())
    .bind(ms(s.created_at))
    .bind(ms(s.last_seen_at))
    .bind(ms(s.expires_at))
    .bind(opt_ms(s.mfa_at))
    .bind(opt_ms(s.ended_at))
    .bind(s.provider.as_deref())
    .execute(c)
    .await?;
    Ok(())
}

pub async fn web_session_by_token(
    c: &mut Conn,
    token_hash: &str,
) -> Result<Option<WebSession>, StoreError> {
    sqlx::query_as::<_, WebSessionRow>(&format!(
        "SELECT {SESSION_COLUMNS} FROM web_sessions WHERE token_hash = $1"
    ))
    .bind(token_hash)
    .fetch_optional(c)
    .await?
    .map(WebSessionRow::into_model)
    .transpose()
}

/// A user's web sessions, for tests.
#[cfg(any(test, feature = "testing"))]
pub async fn list_web_sessions(c: &mut Conn, user: UserId) -> Result<Vec<WebSession>, StoreError> {
    sqlx::query_as::<_, WebSessionRow>(&format!(
        "SELECT {SESSION_COLUMNS} FROM web_sessions WHERE user_id = $1 ORDER BY created_at, id"
    ))
    .bind(user.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(WebSessionRow::into_model)
    .collect()
}

/// Records use of a live session.
pub async fn touch_web_session(
    c: &mut Conn,
    id: uuid::Uuid,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE web_sessions SET last_seen_at = $2 WHERE id = $1 AND ended_at IS NULL \
         AND last_seen_at < $2",
    )
    .bind(id.to_string())
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(())
}

/// Records an MFA made within a live session.
pub async fn set_web_session_mfa(
    c: &mut Conn,
    id: uuid::Uuid,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE web_sessions SET mfa_at = $2 WHERE id = $1 AND ended_at IS NULL")
        .bind(id.to_string())
        .bind(ms(at))
        .execute(c)
        .await?;
    Ok(())
}

/// Ends one session; false when it had already ended.
pub async fn end_web_session(
    c: &mut Conn,
    id: uuid::Uuid,
    now: Timestamp,
    reason: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE web_sessions SET ended_at = $2, end_reason = $3 WHERE id = $1 AND ended_at IS NULL",
    )
    .bind(id.to_string())
    .bind(ms(now))
    .bind(reason)
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Ends every live session of a user except `keep`; returns how many ended.
pub async fn end_user_web_sessions(
    c: &mut Conn,
    user: UserId,
    keep: Option<uuid::Uuid>,
    now: Timestamp,
    reason: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE web_sessions SET ended_at = $2, end_reason = $3 \
         WHERE user_id = $1 AND ended_at IS NULL AND id <> $4",
    )
    .bind(user.to_string())
    .bind(ms(now))
    .bind(reason)
    .bind(keep.map_or_else(String::new, |k| k.to_string()))
    .execute(c)
    .await?;
    Ok(done.rows_affected())
}

/// Ends every live session of a user that was signed in with `provider`; returns how many.
pub async fn end_provider_web_sessions(
    c: &mut Conn,
    user: Option<UserId>,
    provider: &str,
    now: Timestamp,
    reason: &str,
) -> Result<u64, StoreError> {
    let done = sqlx::query(
        "UPDATE web_sessions SET ended_at = $3, end_reason = $4 \
         WHERE ($1 IS NULL OR user_id = $1) AND provider = $2 AND ended_at IS NULL",
    )
    .bind(user.map(|u| u.to_string()))
    .bind(provider)
    .bind(ms(now))
    .bind(reason)
    .execute(c)
    .await?;
    Ok(done.rows_affected())
}
