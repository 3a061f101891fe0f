//! Policies.

use jiff::Timestamp;
use model::{
    Conditions, GroupId, Policy, PolicyAction, PolicyId, PostureProfileId, ResourceId, TimeWindow,
    validate_name,
};
use serde::Deserialize;

use super::kernel::{
    Actor, DAY, Result, Service, ServiceError, addresses, duration, invalid, name, now,
    on_duplicate, subject,
};
use super::live::{Cause, Reevaluation};
use store::{self, Conn, GrantFilter};

/// A policy's conditions as written in a request.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConditionsInput {
    /// The posture profile the device must pass.
    #[serde(default)]
    pub posture_profile_id: Option<PostureProfileId>,
    /// Weekly windows; empty means always.
    #[serde(default)]
    pub time_windows: Vec<TimeWindow>,
    /// IANA time zone of the windows (default UTC).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Source addresses the request must come from; empty means anywhere.
    #[serde(default)]
    pub source_cidrs: Vec<String>,
    /// The oldest the user's last MFA may be, in seconds.
    #[serde(default)]
    pub max_mfa_age_secs: Option<u64>,
    /// The identity provider the user must have signed in with.
    #[serde(default)]
    pub identity_provider: Option<String>,
}

/// A policy to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyInput {
    /// A unique name.
    pub name: String,
    /// Whose access it governs.
    pub group_id: GroupId,
    /// What it governs access to.
    pub resource_id: ResourceId,
    /// `allow` (default) or `deny`.
    #[serde(default)]
    pub action: PolicyAction,
    /// When it applies.
    #[serde(default)]
    pub conditions: ConditionsInput,
    /// The longest a grant lasts before renewal, in seconds (default 8 hours, at most 30 days).
    #[serde(default)]
    pub max_session_secs: Option<u64>,
    /// Create it disabled.
    #[serde(default)]
    pub disabled: bool,
}

impl Service {
    async fn policy_from(
        &self,
        c: &mut Conn,
        id: PolicyId,
        input: PolicyInput,
        created_at: Timestamp,
    ) -> Result<Policy> {
        let policy_name = name("name", &input.name)?;
        let ci = input.conditions;
        for (i, w) in ci.time_windows.iter().enumerate() {
            w.validate()
                .map_err(|e| invalid(format!("conditions.time_windows[{i}]"), e.to_string()))?;
        }
        if let Some(tz) = &ci.time_zone {
            model::time_zone(tz).map_err(|e| invalid("conditions.time_zone", e.to_string()))?;
        }
        let source_cidrs = addresses("conditions.source_cidrs", &ci.source_cidrs)?;
        if ci.max_mfa_age_secs == Some(0) {
            return Err(invalid(
                "conditions.max_mfa_age_secs",
                "must be at least 1 second",
            ));
        }
        if let Some(idp) = &ci.identity_provider {
            validate_name("conditions.identity_provider", idp).map_err(ServiceError::Invalid)?;
        }
        let max_session_secs = duration(
            "max_session_secs",
            input.max_session_secs,
            8 * 60 * 60,
            30 * DAY,
        )?;
        if store::get_group(c, input.group_id).await?.is_none() {
            return Err(invalid(
                "group_id",
                format!("no group has the id {}", input.group_id),
            ));
        }
        if store::get_resource(c, input.resource_id).await?.is_none() {
            return Err(invalid(
                "resource_id",
                format!("no resource has the id {}", input.resource_id),
            ));
        }
        if let Some(p) = ci.posture_profile_id
            && store::get_profile(c, p).await?.is_none()
        {
            return Err(invalid(
                "conditions.posture_profile_id",
                format!("no posture profile has the id {p}"),
            ));
        }
        Ok(Policy {
            id,
            name: policy_name,
            group_id: input.group_id,
            resource_id: input.resource_id,
            action: input.action,
            conditions: Conditions {
                posture_profile_id: ci.posture_profile_id,
                time_windows: ci.time_windows,
                time_zone: ci.time_zone,
                source_cidrs,
                max_mfa_age_secs: ci.max_mfa_age_secs,
                identity_provider: ci.identity_provider,
            },
            max_session_secs,
            disabled: input.disabled,
            created_at,
        })
    }

    /// Lists policies.
    pub async fn list_policies(&self, actor: &Actor) -> Result<Vec<Policy>> {
        Self::require_reader(actor)?;
        Ok(store::list_policies(&mut *self.store.conn().await?).await?)
    }

    /// One policy.
    pub async fn get_policy(&self, actor: &Actor, id: PolicyId) -> Result<Policy> {
        Self::require_reader(actor)?;
        store::get_policy(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("policy"))
    }

    /// Creates a policy.
    pub async fn create_policy(&self, actor: &Actor, input: PolicyInput) -> Result<Policy> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let p = self
            .policy_from(&mut tx, PolicyId::new(), input, now())
            .await?;
        store::insert_policy(&mut tx, &p)
            .await
            .map_err(on_duplicate("name", "policy", &p.name))?;
        self.audit(
            &mut tx,
            actor,
            "policy.created",
            subject("policy", p.id),
            serde_json::to_value(&p).unwrap_or_default(),
        )
        .await?;
        // A new deny policy cuts existing access it covers; a new allow changes nothing
        // that is live, but deciding again costs little and keeps one rule.
        let changed = self
            .reevaluate_in(
                &mut tx,
                actor,
                &Cause::new("policy.created", "policy", p.id),
                GrantFilter::for_resource(p.resource_id),
            )
            .await?;
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(p)
    }

    /// Replaces a policy; grants issued under it are revoked so they are decided again.
    pub async fn update_policy(
        &self,
        actor: &Actor,
        id: PolicyId,
        input: PolicyInput,
    ) -> Result<Policy> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let old = store::get_policy(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("policy"))?;
        let p = self.policy_from(&mut tx, id, input, old.created_at).await?;
        store::update_policy(&mut tx, &p)
            .await
            .map_err(on_duplicate("name", "policy", &p.name))?;
        self.audit(
            &mut tx,
            actor,
            "policy.updated",
            subject("policy", id),
            serde_json::to_value(&p).unwrap_or_default(),
        )
        .await?;
        let mut changed = Reevaluation::default();
        if p != old {
            let cause = Cause::new("policy.updated", "policy", id);
            changed = self
                .reevaluate_in(
                    &mut tx,
                    actor,
                    &cause,
                    GrantFilter::for_resource(old.resource_id),
                )
                .await?;
            if p.resource_id != old.resource_id {
                changed.extend(
                    self.reevaluate_in(
                        &mut tx,
                        actor,
                        &cause,
                        GrantFilter::for_resource(p.resource_id),
                    )
                    .await?,
                );
            }
        }
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(p)
    }

    /// Deletes a policy, revoking the grants issued under it.
    pub async fn delete_policy(&self, actor: &Actor, id: PolicyId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let deleted = store::get_policy(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("policy"))?;
        if !store::delete_policy(&mut tx, id).await? {
            return Err(ServiceError::NotFound("policy"));
        }
        self.record_deletion(&mut tx, actor, "policy", id, None)
            .await?;
        let changed = self
            .reevaluate_in(
                &mut tx,
                actor,
                &Cause::new("policy.deleted", "policy", id),
                GrantFilter::for_resource(deleted.resource_id),
            )
            .await?;
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        Ok(())
    }
}
