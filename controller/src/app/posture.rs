//! Posture profiles.

use model::{PostureProfile, PostureProfileId, ResourceId};
use serde::Deserialize;

use super::kernel::{
    Actor, Result, Service, ServiceError, invalid, name, now, on_duplicate, subject, unused,
};
use super::live::{Cause, Reevaluation};
use store::{self, GrantFilter};

/// A posture profile to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostureProfileInput {
    /// A unique name.
    pub name: String,
    /// The lowest OS version allowed, per OS id (e.g. `{"debian": "12"}`).
    #[serde(default)]
    pub min_os_versions: std::collections::BTreeMap<String, String>,
    /// Require an encrypted root file system.
    #[serde(default)]
    pub require_disk_encryption: bool,
    /// Require a loaded firewall rule set.
    #[serde(default)]
    pub require_firewall: bool,
    /// Require secure boot.
    #[serde(default)]
    pub require_secure_boot: bool,
    /// Require a configured screen lock.
    #[serde(default)]
    pub require_screen_lock: bool,
    /// Processes that must be running, by name.
    #[serde(default)]
    pub required_processes: Vec<String>,
    /// The lowest client version allowed.
    #[serde(default)]
    pub min_client_version: Option<String>,
    /// When not empty, only these serial numbers pass.
    #[serde(default)]
    pub serial_allowlist: Vec<String>,
    /// The oldest a posture report may be, in seconds.
    #[serde(default)]
    pub max_report_age_secs: Option<u64>,
}

impl Service {
    fn profile_from(id: PostureProfileId, input: PostureProfileInput) -> Result<PostureProfile> {
        let profile_name = name("name", &input.name)?;
        for (os, v) in &input.min_os_versions {
            if os.trim().is_empty() || model::compare_versions(v, v).is_none() {
                return Err(invalid(
                    format!("min_os_versions.{os}"),
                    "give an OS id and a version such as \"12\"",
                ));
            }
        }
        if let Some(v) = &input.min_client_version
            && model::compare_versions(v, v).is_none()
        {
            return Err(invalid(
                "min_client_version",
                "must be a version such as 1.2.0",
            ));
        }
        for (i, p) in input.required_processes.iter().enumerate() {
            if p.trim().is_empty() {
                return Err(invalid(
                    format!("required_processes[{i}]"),
                    "must not be empty",
                ));
            }
        }
        if input.max_report_age_secs == Some(0) {
            return Err(invalid("max_report_age_secs", "must be at least 1 second"));
        }
        Ok(PostureProfile {
            id,
            name: profile_name,
            min_os_versions: input.min_os_versions,
            require_disk_encryption: input.require_disk_encryption,
            require_firewall: input.require_firewall,
            require_secure_boot: input.require_secure_boot,
            require_screen_lock: input.require_screen_lock,
            required_processes: input.required_processes,
            min_client_version: input.min_client_version,
            serial_allowlist: input.serial_allowlist,
            max_report_age_secs: input.max_report_age_secs,
        })
    }

    /// Lists posture profiles.
    pub async fn list_profiles(&self, actor: &Actor) -> Result<Vec<PostureProfile>> {
        Self::require_reader(actor)?;
        Ok(store::list_profiles(&mut *self.store.conn().await?).await?)
    }

    /// One posture profile.
    pub async fn get_profile(&self, actor: &Actor, id: PostureProfileId) -> Result<PostureProfile> {
        Self::require_reader(actor)?;
        store::get_profile(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("posture profile"))
    }

    /// Creates a posture profile.
    pub async fn create_profile(
        &self,
        actor: &Actor,
        input: PostureProfileInput,
    ) -> Result<PostureProfile> {
        Self::require_admin(actor)?;
        let p = Self::profile_from(PostureProfileId::new(), input)?;
        let mut tx = self.store.begin().await?;
        store::insert_profile(&mut tx, &p, now())
            .await
            .map_err(on_duplicate("name", "posture profile", &p.name))?;
        self.audit(
            &mut tx,
            actor,
            "posture_profile.created",
            subject("posture_profile", p.id),
            serde_json::to_value(&p).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Replaces a posture profile; grants under policies that use it are revoked so they
    /// are decided again under the new rules.
    pub async fn update_profile(
        &self,
        actor: &Actor,
        id: PostureProfileId,
        input: PostureProfileInput,
    ) -> Result<PostureProfile> {
        Self::require_admin(actor)?;
        let p = Self::profile_from(id, input)?;
        let mut tx = self.store.begin().await?;
        let old = store::get_profile(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("posture profile"))?;
        store::update_profile(&mut tx, &p)
            .await
            .map_err(on_duplicate("name", "posture profile", &p.name))?;
        self.audit(
            &mut tx,
            actor,
            "posture_profile.updated",
            subject("posture_profile", id),
            serde_json::to_value(&p).unwrap_or_default(),
        )
        .await?;
        let mut changed = Reevaluation::default();
        if old != p {
            let cause = Cause::new("posture_profile.updated", "posture_profile", id);
            let mut resources: Vec<ResourceId> = store::list_policies(&mut tx)
                .await?
                .into_iter()
                .filter(|pol| pol.conditions.posture_profile_id == Some(id))
                .map(|pol| pol.resource_id)
                .collect();
            resources.sort();
            resources.dedup();
            for resource in resources {
                changed.extend(
                    self.reevaluate_in(&mut tx, actor, &cause, GrantFilter::for_resource(resource))
                        .await?,
                );
            }
        }
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(p)
    }

    /// Deletes a posture profile no policy uses.
    pub async fn delete_profile(&self, actor: &Actor, id: PostureProfileId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_profile(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("posture profile"))?;
        let used: Vec<String> = store::list_policies(&mut tx)
            .await?
            .into_iter()
            .filter(|p| p.conditions.posture_profile_id == Some(id))
            .map(|p| p.name)
            .collect();
        unused("profile", &used, "change")?;
        store::delete_profile(&mut tx, id).await?;
        self.record_deletion(&mut tx, actor, "posture_profile", id, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
