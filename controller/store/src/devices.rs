//! Devices and the enrollment keys that enroll them.

use jiff::Timestamp;
use model::{Device, DeviceId, EnrollmentKeyId, UserId};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::codec::{flag, id, ms, opt_ms, opt_ts, ts};
use crate::{Conn, StoreError};

// ---------------------------------------------------------------- devices

#[derive(FromRow)]
struct DeviceRow {
    id: String,
    user_id: String,
    name: String,
    public_key: String,
    disabled: i64,
    created_at: i64,
    last_seen_at: Option<i64>,
}

const DEVICE_COLUMNS: &str = "id, user_id, name, public_key, disabled, created_at, last_seen_at";

impl DeviceRow {
    fn into_model(self) -> Result<Device, StoreError> {
        Ok(Device {
            id: id("devices", &self.id)?,
            user_id: id("devices", &self.user_id)?,
            name: self.name,
            public_key: self.public_key,
            disabled: self.disabled != 0,
            created_at: ts(self.created_at),
            last_seen_at: opt_ts(self.last_seen_at),
        })
    }
}

pub async fn insert_device(c: &mut Conn, d: &Device) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO devices (id, user_id, name, public_key, disabled, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(d.id.to_string())
    .bind(d.user_id.to_string())
    .bind(&d.name)
    .bind(&d.public_key)
    .bind(flag(d.disabled))
    .bind(ms(d.created_at))
    .bind(opt_ms(d.last_seen_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_device(c: &mut Conn, d: &Device) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET name = $2, disabled = $3, last_seen_at = $4 WHERE id = $1")
        .bind(d.id.to_string())
        .bind(&d.name)
        .bind(flag(d.disabled))
        .bind(opt_ms(d.last_seen_at))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_devices(c: &mut Conn, user: Option<UserId>) -> Result<Vec<Device>, StoreError> {
    let rows = match user {
        Some(user) => {
            sqlx::query_as::<_, DeviceRow>(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at"
            ))
            .bind(user.to_string())
            .fetch_all(c)
            .await?
        }
        None => {
            sqlx::query_as::<_, DeviceRow>(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at"
            ))
            .fetch_all(c)
            .await?
        }
    };
    rows.into_iter().map(DeviceRow::into_model).collect()
}

pub async fn get_device(c: &mut Conn, d: DeviceId) -> Result<Option<Device>, StoreError> {
    sqlx::query_as::<_, DeviceRow>(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
    ))
    .bind(d.to_string())
    .fetch_optional(c)
    .await?
    .map(DeviceRow::into_model)
    .transpose()
}

pub async fn device_by_public_key(
    c: &mut Conn,
    public_key: &str,
) -> Result<Option<Device>, StoreError> {
    sqlx::query_as::<_, DeviceRow>(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE public_key = $1"
    ))
    .bind(public_key)
    .fetch_optional(c)
    .await?
    .map(DeviceRow::into_model)
    .transpose()
}

/// Records that a device was seen now.
pub async fn touch_device(c: &mut Conn, d: DeviceId, at: Timestamp) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET last_seen_at = $2 WHERE id = $1")
        .bind(d.to_string())
        .bind(ms(at))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn delete_device(c: &mut Conn, d: DeviceId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(d.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- enrollment keys

/// An enrollment key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentKey {
    /// The key's id.
    pub id: EnrollmentKeyId,
    /// The user a device enrolled with it belongs to.
    pub user_id: UserId,
    /// Whether it may enroll several devices until it expires.
    pub reusable: bool,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it stops working.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When it was last used.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub used_at: Option<Timestamp>,
    /// When an admin revoked it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

#[derive(FromRow)]
struct EnrollmentKeyRow {
    id: String,
    user_id: String,
    reusable: i64,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

const ENROLLMENT_KEY_COLUMNS: &str =
    "id, user_id, reusable, created_at, expires_at, used_at, revoked_at";

impl EnrollmentKeyRow {
    fn into_model(self) -> Result<EnrollmentKey, StoreError> {
        Ok(EnrollmentKey {
            id: id("enrollment_keys", &self.id)?,
            user_id: id("enrollment_keys", &self.user_id)?,
            reusable: self.reusable != 0,
            created_at: ts(self.created_at),
            expires_at: ts(self.expires_at),
            used_at: opt_ts(self.used_at),
            revoked_at: opt_ts(self.revoked_at),
        })
    }
}

pub async fn insert_enrollment_key(
    c: &mut Conn,
    k: &EnrollmentKey,
    key_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrollment_keys (id, user_id, key_hash, reusable, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(k.id.to_string())
    .bind(k.user_id.to_string())
    .bind(key_hash)
    .bind(flag(k.reusable))
    .bind(ms(k.created_at))
    .bind(ms(k.expires_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_enrollment_keys(c: &mut Conn) -> Result<Vec<EnrollmentKey>, StoreError> {
    sqlx::query_as::<_, EnrollmentKeyRow>(&format!(
        "SELECT {ENROLLMENT_KEY_COLUMNS} FROM enrollment_keys ORDER BY created_at DESC"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(EnrollmentKeyRow::into_model)
    .collect()
}

pub async fn revoke_enrollment_key(
    c: &mut Conn,
    k: EnrollmentKeyId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE enrollment_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(k.to_string())
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Uses an enrollment key: returns it when it is valid at `now` (unrevoked, unexpired, and
/// unused unless reusable) and records the use; `None` otherwise.
pub async fn consume_enrollment_key(
    c: &mut Conn,
    key_hash: &str,
    now: Timestamp,
) -> Result<Option<EnrollmentKey>, StoreError> {
    let done = sqlx::query(
        "UPDATE enrollment_keys SET used_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL \
         AND expires_at > $2 AND (reusable = 1 OR used_at IS NULL)",
    )
    .bind(key_hash)
    .bind(ms(now))
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query_as::<_, EnrollmentKeyRow>(&format!(
        "SELECT {ENROLLMENT_KEY_COLUMNS} FROM enrollment_keys WHERE key_hash = $1"
    ))
    .bind(key_hash)
    .fetch_optional(c)
    .await?
    .map(EnrollmentKeyRow::into_model)
    .transpose()
}
