//! Posture: the profiles policies require, and each device's last report and the sequence
//! number of its reports.

use std::collections::BTreeMap;

use jiff::Timestamp;
use model::{DeviceId, PostureProfile, PostureProfileId, PostureReport};
use sqlx::FromRow;

use crate::codec::{id, json, ms, to_json};
use crate::{Conn, StoreError};

// ---------------------------------------------------------------- posture profiles

#[derive(FromRow)]
struct ProfileRow {
    id: String,
    name: String,
    spec: String,
}

impl ProfileRow {
    fn into_model(self) -> Result<PostureProfile, StoreError> {
        let mut p: PostureProfile = json("posture_profiles", &self.spec)?;
        p.id = id("posture_profiles", &self.id)?;
        p.name = self.name;
        Ok(p)
    }
}

pub async fn insert_profile(
    c: &mut Conn,
    p: &PostureProfile,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO posture_profiles (id, name, spec, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(to_json(p))
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_profile(c: &mut Conn, p: &PostureProfile) -> Result<(), StoreError> {
    sqlx::query("UPDATE posture_profiles SET name = $2, spec = $3 WHERE id = $1")
        .bind(p.id.to_string())
        .bind(&p.name)
        .bind(to_json(p))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_profiles(c: &mut Conn) -> Result<Vec<PostureProfile>, StoreError> {
    sqlx::query_as::<_, ProfileRow>("SELECT id, name, spec FROM posture_profiles ORDER BY name")
        .fetch_all(c)
        .await?
        .into_iter()
        .map(ProfileRow::into_model)
        .collect()
}

pub async fn profiles_by_id(
    c: &mut Conn,
) -> Result<BTreeMap<PostureProfileId, PostureProfile>, StoreError> {
    Ok(list_profiles(c)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect())
}

pub async fn get_profile(
    c: &mut Conn,
    p: PostureProfileId,
) -> Result<Option<PostureProfile>, StoreError> {
    sqlx::query_as::<_, ProfileRow>("SELECT id, name, spec FROM posture_profiles WHERE id = $1")
        .bind(p.to_string())
        .fetch_optional(c)
        .await?
        .map(ProfileRow::into_model)
        .transpose()
}

pub async fn delete_profile(c: &mut Conn, p: PostureProfileId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM posture_profiles WHERE id = $1")
        .bind(p.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- device posture

pub async fn set_posture(
    c: &mut Conn,
    d: DeviceId,
    report: &PostureReport,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET posture = $2 WHERE id = $1")
        .bind(d.to_string())
        .bind(to_json(report))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get_posture(c: &mut Conn, d: DeviceId) -> Result<Option<PostureReport>, StoreError> {
    let raw: Option<Option<String>> =
        sqlx::query_scalar("SELECT posture FROM devices WHERE id = $1")
            .bind(d.to_string())
            .fetch_optional(c)
            .await?;
    raw.flatten().map(|s| json("devices", &s)).transpose()
}

/// Accepts a posture report's sequence number only if it is greater than the last one
/// accepted for the device; false means a replay.
pub async fn advance_posture_seq(
    c: &mut Conn,
    device: DeviceId,
    seq: u64,
) -> Result<bool, StoreError> {
    let seq = i64::try_from(seq).unwrap_or(i64::MAX);
    let done = sqlx::query(
        "UPDATE devices SET posture_seq = $2 WHERE id = $1 \
         AND (posture_seq IS NULL OR posture_seq < $2)",
    )
    .bind(device.to_string())
    .bind(seq)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}
