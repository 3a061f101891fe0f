//! Client sign-in: device authorizations in flight, and device sessions.

use jiff::Timestamp;
use model::{DeviceId, UserId};
use sqlx::FromRow;

use crate::codec::{id, ms, opt_ms, ts};
use crate::{Conn, StoreError};

// ---------------------------------------------------------------- device authorizations

/// One client sign-in in flight. The device code is kept only as a hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAuthorization {
    pub id: uuid::Uuid,
    pub user_code: String,
    pub public_key: String,
    pub name: String,
    pub source: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub last_poll_at: Option<Timestamp>,
    pub user_id: Option<UserId>,
    pub decided_at: Option<Timestamp>,
    /// `Some(true)` approved, `Some(false)` denied, `None` waiting.
    pub approved: Option<bool>,
    pub mfa_at: Option<Timestamp>,
    pub provider: Option<String>,
    pub consumed_at: Option<Timestamp>,
}

#[derive(FromRow)]
struct AuthorizationRow {
    id: String,
    user_code: String,
    public_key: String,
    name: String,
    source: Option<String>,
    created_at: i64,
    expires_at: i64,
    last_poll_at: Option<i64>,
    user_id: Option<String>,
    decided_at: Option<i64>,
    approved: Option<i64>,
    mfa_at: Option<i64>,
    provider: Option<String>,
    consumed_at: Option<i64>,
}

const AUTHORIZATION_COLUMNS: &str = "id, user_code, public_key, name, source, created_at, \
     expires_at, last_poll_at, user_id, decided_at, approved, mfa_at, provider, consumed_at";

impl AuthorizationRow {
    fn into_model(self) -> Result<DeviceAuthorization, StoreError> {
        const T: &str = "device_authorizations";
        Ok(DeviceAuthorization {
            id: id(T, &self.id)?,
            user_code: self.user_code,
            public_key: self.public_key,
            name: self.name,
            source: self.source,
            created_at: ts(self.created_at),
            expires_at: ts(self.expires_at),
            last_poll_at: self.last_poll_at.map(ts),
            user_id: self.user_id.as_deref().map(|u| id(T, u)).transpose()?,
            decided_at: self.decided_at.map(ts),
            approved: self.approved.map(|a| a != 0),
            mfa_at: self.mfa_at.map(ts),
            provider: self.provider,
            consumed_at: self.consumed_at.map(ts),
        })
    }
}

pub async fn insert_device_authorization(
    c: &mut Conn,
    a: &DeviceAuthorization,
    device_code_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO device_authorizations (id, device_code_hash, user_code, public_key, name, \
         source, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(a.id.to_string())
    .bind(device_code_hash)
    .bind(&a.user_code)
    .bind(&a.public_key)
    .bind(&a.name)
    .bind(a.source.as_deref())
    .bind(ms(a.created_at))
    .bind(ms(a.expires_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn device_authorization_by_code(
    c: &mut Conn,
    device_code_hash: &str,
) -> Result<Option<DeviceAuthorization>, StoreError> {
    sqlx::query_as::<_, AuthorizationRow>(&format!(
        "SELECT {AUTHORIZATION_COLUMNS} FROM device_authorizations WHERE device_code_hash = $1"
    ))
    .bind(device_code_hash)
    .fetch_optional(c)
    .await?
    .map(AuthorizationRow::into_model)
    .transpose()
}

pub async fn device_authorization_by_user_code(
    c: &mut Conn,
    user_code: &str,
) -> Result<Option<DeviceAuthorization>, StoreError> {
    sqlx::query_as::<_, AuthorizationRow>(&format!(
        "SELECT {AUTHORIZATION_COLUMNS} FROM device_authorizations WHERE user_code = $1"
    ))
    .bind(user_code)
    .fetch_optional(c)
    .await?
    .map(AuthorizationRow::into_model)
    .transpose()
}

pub async fn touch_device_authorization(
    c: &mut Conn,
    id: uuid::Uuid,
    at: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE device_authorizations SET last_poll_at = $2 WHERE id = $1")
        .bind(id.to_string())
        .bind(ms(at))
        .execute(c)
        .await?;
    Ok(())
}

/// Records the person's answer; only a waiting, unexpired authorization can be decided.
pub async fn decide_device_authorization(
    c: &mut Conn,
    a: &DeviceAuthorization,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE device_authorizations SET user_id = $2, decided_at = $3, approved = $4, \
         mfa_at = $5, provider = $6 WHERE id = $1 AND approved IS NULL AND expires_at > $3",
    )
    .bind(a.id.to_string())
    .bind(a.user_id.map(|u| u.to_string()))
    .bind(opt_ms(a.decided_at))
    .bind(a.approved.map(crate::codec::flag))
    .bind(opt_ms(a.mfa_at))
    .bind(a.provider.as_deref())
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Marks an approved authorization used; true only for the first caller.
pub async fn consume_device_authorization(
    c: &mut Conn,
    id: uuid::Uuid,
    at: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE device_authorizations SET consumed_at = $2 WHERE id = $1 AND consumed_at IS NULL",
    )
    .bind(id.to_string())
    .bind(ms(at))
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets authorizations that expired a day ago.
pub async fn purge_device_authorizations(c: &mut Conn, now: Timestamp) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM device_authorizations WHERE expires_at < $1")
        .bind(ms(now) - 86_400_000)
        .execute(c)
        .await?;
    Ok(done.rows_affected())
}

// ---------------------------------------------------------------- device sessions

/// A device session; its secret is kept only as a hash and is not part of this record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSessionRecord {
    pub id: uuid::Uuid,
    pub device_id: DeviceId,
    pub user_id: UserId,
    pub created_at: Timestamp,
    pub renewed_at: Timestamp,
    pub expires_at: Timestamp,
    pub absolute_expires_at: Timestamp,
    pub mfa_at: Option<Timestamp>,
    pub provider: String,
    pub ended_at: Option<Timestamp>,
}

#[derive(FromRow)]
struct SessionRow {
    id: String,
    device_id: String,
    user_id: String,
    created_at: i64,
    renewed_at: i64,
    expires_at: i64,
    absolute_expires_at: i64,
    mfa_at: Option<i64>,
    provider: String,
    ended_at: Option<i64>,
}

const SESSION_COLUMNS: &str = "id, device_id, user_id, created_at, renewed_at, expires_at, \
     absolute_expires_at, mfa_at, provider, ended_at";

impl SessionRow {
    fn into_model(self) -> Result<DeviceSessionRecord, StoreError> {
        const T: &str = "device_sessions";
        Ok(DeviceSessionRecord {
            id: id(T, &self.id)?,
            device_id: id(T, &self.device_id)?,
            user_id: id(T, &self.user_id)?,
            created_at: ts(self.created_at),
            renewed_at: ts(self.renewed_at),
            expires_at: ts(self.expires_at),
            absolute_expires_at: ts(self.absolute_expires_at),
            mfa_at: self.mfa_at.map(ts),
            provider: self.provider,
            ended_at: self.ended_at.map(ts),
        })
    }
}

pub async fn insert_device_session(
    c: &mut Conn,
    s: &DeviceSessionRecord,
    token_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO device_sessions (id, token_hash, device_id, user_id, created_at, \
         renewed_at, expires_at, absolute_expires_at, mfa_at, provider) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(s.id.to_string())
    .bind(token_hash)
    .bind(s.device_id.to_string())
    .bind(s.user_id.to_string())
    .bind(ms(s.created_at))
    .bind(ms(s.renewed_at))
    .bind(ms(s.expires_at))
    .bind(ms(s.absolute_expires_at))
    .bind(opt_ms(s.mfa_at))
    .bind(&s.provider)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn device_session_by_token(
    c: &mut Conn,
    token_hash: &str,
) -> Result<Option<DeviceSessionRecord>, StoreError> {
    sqlx::query_as::<_, SessionRow>(&format!(
        "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE token_hash = $1"
    ))
    .bind(token_hash)
    .fetch_optional(c)
    .await?
    .map(SessionRow::into_model)
    .transpose()
}

/// Replaces a live session's secret and moves its expiry; false when it has ended.
pub async fn renew_device_session(
    c: &mut Conn,
    id: uuid::Uuid,
    token_hash: &str,
    now: Timestamp,
    expires_at: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE device_sessions SET token_hash = $2, renewed_at = $3, expires_at = $4 \
         WHERE id = $1 AND ended_at IS NULL",
    )
    .bind(id.to_string())
    .bind(token_hash)
    .bind(ms(now))
    .bind(ms(expires_at))
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends the live sessions of a device or of a user (at least one must be given); returns
/// how many ended.
pub async fn end_device_sessions(
    c: &mut Conn,
    device: Option<DeviceId>,
    user: Option<UserId>,
    now: Timestamp,
    reason: &str,
) -> Result<u64, StoreError> {
    if device.is_none() && user.is_none() {
        return Ok(0);
    }
    let done = sqlx::query(
        "UPDATE device_sessions SET ended_at = $3, end_reason = $4 WHERE ended_at IS NULL \
         AND ($1 IS NULL OR device_id = $1) AND ($2 IS NULL OR user_id = $2)",
    )
    .bind(device.map(|d| d.to_string()))
    .bind(user.map(|u| u.to_string()))
    .bind(ms(now))
    .bind(reason)
    .execute(c)
    .await?;
    Ok(done.rows_affected())
}

/// Ends the live device sessions signed in to through `provider` (only `user`'s, when
/// given); returns each (device, user) once.
pub async fn end_provider_device_sessions(
    c: &mut Conn,
    user: Option<UserId>,
    provider: &str,
    now: Timestamp,
    reason: &str,
) -> Result<Vec<(DeviceId, UserId)>, StoreError> {
    let user = user.map(|u| u.to_string());
    let ended: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT device_id, user_id FROM device_sessions \
         WHERE ($1 IS NULL OR user_id = $1) AND provider = $2 AND ended_at IS NULL \
         ORDER BY device_id, user_id",
    )
    .bind(user.clone())
    .bind(provider)
    .fetch_all(&mut *c)
    .await?;
    sqlx::query(
        "UPDATE device_sessions SET ended_at = $3, end_reason = $4 \
         WHERE ($1 IS NULL OR user_id = $1) AND provider = $2 AND ended_at IS NULL",
    )
    .bind(user)
    .bind(provider)
    .bind(ms(now))
    .bind(reason)
    .execute(c)
    .await?;
    ended
        .into_iter()
        .map(|(d, u)| Ok((id("device_sessions", &d)?, id("device_sessions", &u)?)))
        .collect()
}

/// A device session by its id.
pub async fn device_session_by_id(
    c: &mut Conn,
    id: uuid::Uuid,
) -> Result<Option<DeviceSessionRecord>, StoreError> {
    sqlx::query_as::<_, SessionRow>(&format!(
        "SELECT {SESSION_COLUMNS} FROM device_sessions WHERE id = $1"
    ))
    .bind(id.to_string())
    .fetch_optional(c)
    .await?
    .map(SessionRow::into_model)
    .transpose()
}
