//! Devices as admins see them, enrollment keys, posture reports.

use model::{Device, DeviceId, EnrollmentKeyId, UserId};
use serde::Deserialize;

use super::kernel::{
    Actor, DAY, Issued, Result, Service, ServiceError, after, duration, invalid, name, now, subject,
};
use super::live::{Cause, Reevaluation};
use crate::secrets;
use store::{self, Conn, EnrollmentKey, GrantFilter, StoreError};

/// Changes to a device.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DevicePatch {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// Disable (revoking every grant) or enable it.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// An enrollment key to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentKeyInput {
    /// The user whose devices it enrolls.
    pub user_id: UserId,
    /// Whether it may enroll several devices until it expires (default: one device).
    #[serde(default)]
    pub reusable: bool,
    /// How long it lasts, in seconds (default one day, at most 90 days).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// A device enrolling itself with an enrollment key.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollInput {
    /// The enrollment key from `enrollment-keys`.
    pub enrollment_key: String,
    /// The device's name.
    pub name: String,
    /// The device's public key (base64, 32 bytes), made on the device.
    pub public_key: String,
}

impl Service {
    /// Lists devices, optionally of one user.
    pub async fn list_devices(&self, actor: &Actor, user: Option<UserId>) -> Result<Vec<Device>> {
        Self::require_reader(actor)?;
        Ok(store::list_devices(&mut *self.store.conn().await?, user).await?)
    }

    /// One device.
    pub async fn get_device(&self, actor: &Actor, id: DeviceId) -> Result<Device> {
        Self::require_reader(actor)?;
        store::get_device(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("device"))
    }

    /// Registers a device for a user (browser enrollment arrives with the client issue).
    pub async fn register_device(
        &self,
        actor: &Actor,
        user: UserId,
        device_name: &str,
        public_key: &str,
    ) -> Result<Device> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let device = self
            .insert_device_in(&mut tx, actor, user, device_name, public_key)
            .await?;
        tx.commit().await?;
        Ok(device)
    }

    pub(crate) async fn insert_device_in(
        &self,
        c: &mut Conn,
        actor: &Actor,
        user: UserId,
        device_name: &str,
        public_key: &str,
    ) -> Result<Device> {
        let key = public_key.trim();
        let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key)
            .map_err(|_| invalid("public_key", "must be base64"))?;
        if decoded.len() != 32 {
            return Err(invalid("public_key", "must be a 32-byte key"));
        }
        let device = Device {
            id: DeviceId::new(),
            user_id: user,
            name: name("name", device_name)?,
            public_key: key.to_owned(),
            disabled: false,
            created_at: now(),
            last_seen_at: None,
        };
        if store::get_user(c, user).await?.is_none() {
            return Err(invalid("user_id", format!("no user has the id {user}")));
        }
        store::insert_device(c, &device)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(_) => ServiceError::Conflict {
                    field: Some("public_key"),
                    message: "a device with this key is already enrolled".into(),
                },
                e => e.into(),
            })?;
        self.audit(
            c,
            actor,
            "device.enrolled",
            subject("device", device.id),
            serde_json::json!({ "user": user, "name": device.name }),
        )
        .await?;
        Ok(device)
    }

    /// Renames, disables or enables a device. Disabling revokes its grants.
    pub async fn update_device(
        &self,
        actor: &Actor,
        id: DeviceId,
        patch: DevicePatch,
    ) -> Result<Device> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let mut d = store::get_device(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("device"))?;
        if let Some(n) = &patch.name {
            d.name = name("name", n)?;
        }
        let disabling = patch.disabled == Some(true) && !d.disabled;
        if let Some(v) = patch.disabled {
            d.disabled = v;
        }
        store::update_device(&mut tx, &d).await?;
        self.audit(
            &mut tx,
            actor,
            "device.updated",
            subject("device", id),
            serde_json::json!({ "name": d.name, "disabled": d.disabled }),
        )
        .await?;
        // A disabled device's grants are refused by the decision (`device_disabled`).
        let changed = if disabling {
            self.end_device_sessions_in(&mut tx, Some(id), None, "device disabled")
                .await?;
            self.reevaluate_in(
                &mut tx,
                actor,
                &Cause::new("device.updated", "device", id),
                GrantFilter::for_device(id),
            )
            .await?
        } else {
            Reevaluation::default()
        };
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        if disabling {
            self.announce_sessions_ended(Some(id), None, "device disabled");
        }
        Ok(d)
    }

    /// Removes a device, revoking its grants; it must enroll again to come back.
    pub async fn delete_device(&self, actor: &Actor, id: DeviceId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::delete_device(&mut tx, id).await? {
            return Err(ServiceError::NotFound("device"));
        }
        let revoked = self
            .record_deletion(
                &mut tx,
                actor,
                "device",
                id,
                Some(GrantFilter::for_device(id)),
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        self.announce_sessions_ended(Some(id), None, "device deleted");
        Ok(())
    }

    /// Stores a device's latest posture report.
    pub async fn record_posture(
        &self,
        device: DeviceId,
        report: &model::PostureReport,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        store::get_device(&mut tx, device)
            .await?
            .ok_or(ServiceError::NotFound("device"))?;
        store::set_posture(&mut tx, device, report).await?;
        let changed = self
            .reevaluate_in(
                &mut tx,
                &Actor::system(),
                &Cause::new("posture.recorded", "device", device),
                GrantFilter::for_device(device),
            )
            .await?;
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(())
    }

    /// Lists enrollment keys (without secrets).
    pub async fn list_enrollment_keys(&self, actor: &Actor) -> Result<Vec<EnrollmentKey>> {
        Self::require_reader(actor)?;
        Ok(store::list_enrollment_keys(&mut *self.store.conn().await?).await?)
    }

    /// Creates an enrollment key for a user, shown once.
    pub async fn create_enrollment_key(
        &self,
        actor: &Actor,
        input: EnrollmentKeyInput,
    ) -> Result<Issued<EnrollmentKey>> {
        Self::require_admin(actor)?;
        let secs = duration("expires_in_secs", input.expires_in_secs, DAY, 90 * DAY)?;
        let mut tx = self.store.begin().await?;
        if store::get_user(&mut tx, input.user_id).await?.is_none() {
            return Err(invalid(
                "user_id",
                format!("no user has the id {}", input.user_id),
            ));
        }
        let now = now();
        let secret = secrets::generate("pek_");
        let key = EnrollmentKey {
            id: EnrollmentKeyId::new(),
            user_id: input.user_id,
            reusable: input.reusable,
            created_at: now,
            expires_at: after(now, secs),
            used_at: None,
            revoked_at: None,
        };
        store::insert_enrollment_key(&mut tx, &key, &secrets::hash(&secret)).await?;
        self.audit(&mut tx, actor, "enrollment_key.created", subject("enrollment_key", key.id), serde_json::json!({ "user": key.user_id, "reusable": key.reusable, "expires_at": key.expires_at })).await?;
        tx.commit().await?;
        Ok(Issued {
            record: key,
            secret,
        })
    }

    /// Revokes an enrollment key.
    pub async fn revoke_enrollment_key(&self, actor: &Actor, id: EnrollmentKeyId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::revoke_enrollment_key(&mut tx, id, now()).await? {
            return Err(ServiceError::NotFound("enrollment key"));
        }
        self.audit(
            &mut tx,
            actor,
            "enrollment_key.revoked",
            subject("enrollment_key", id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
