//! Policy decisions: the facts a decision is made on, the decision, its audit.

use std::net::IpAddr;

use jiff::Timestamp;
use model::{DeviceId, GatewayId, ResourceId, UserId};
use serde::Deserialize;

use super::kernel::{Actor, Evaluation, Result, Service, invalid, now, subject};
use store::{self, Conn};

/// An access question: may this user's device reach this resource from this address now?
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// The user.
    pub user_id: UserId,
    /// Their device.
    pub device_id: DeviceId,
    /// The resource.
    pub resource_id: ResourceId,
    /// The address the request comes from.
    pub source: String,
    /// How the user signed in; by default the provider of their last sign-in (`local` if
    /// they never signed in).
    #[serde(default)]
    pub identity_provider: Option<String>,
    /// When the user last completed MFA; by default the time their last sign-in recorded.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_mfa_at: Option<Timestamp>,
}

impl Service {
    /// Decides whether a user's device may reach a resource now, and audits the decision. An
    /// identity provider or MFA time the request leaves out is the user's last sign-in's.
    pub async fn decide(&self, actor: &Actor, req: DecisionRequest) -> Result<policy::Decision> {
        Self::require_reader(actor)?;
        let mut tx = self.store.begin().await?;
        let req = self.with_sign_in_facts(&mut tx, req).await?;
        let evaluation = self.evaluate(&mut tx, &req).await?;
        self.audit_decision(&mut tx, actor, &evaluation, None, serde_json::Map::new())
            .await?;
        tx.commit().await?;
        Ok(evaluation.decision)
    }

    /// Fills in the identity provider and MFA time a decision request leaves out from the
    /// user's last sign-in (`users.last_provider`, `users.last_mfa_at`).
    pub(crate) async fn with_sign_in_facts(
        &self,
        c: &mut Conn,
        mut req: DecisionRequest,
    ) -> Result<DecisionRequest> {
        if req.identity_provider.is_none() || req.last_mfa_at.is_none() {
            let (provider, mfa_at) = store::last_sign_in(c, req.user_id).await?;
            req.identity_provider = req.identity_provider.or(provider);
            req.last_mfa_at = req.last_mfa_at.or(mfa_at);
        }
        Ok(req)
    }

    /// Evaluates the policy decision for `req` on `c`, without auditing it: the one
    /// implementation behind [`Service::decide`] and access requests.
    pub(crate) async fn evaluate(&self, c: &mut Conn, req: &DecisionRequest) -> Result<Evaluation> {
        let source: IpAddr = req
            .source
            .trim()
            .parse()
            .map_err(|_| invalid("source", format!("`{}` is not an IP address", req.source)))?;
        let user = store::get_user(c, req.user_id)
            .await?
            .ok_or_else(|| invalid("user_id", format!("no user has the id {}", req.user_id)))?;
        let device = store::get_device(c, req.device_id).await?.ok_or_else(|| {
            invalid(
                "device_id",
                format!("no device has the id {}", req.device_id),
            )
        })?;
        let resource = store::get_resource(c, req.resource_id)
            .await?
            .ok_or_else(|| {
                invalid(
                    "resource_id",
                    format!("no resource has the id {}", req.resource_id),
                )
            })?;
        let groups = store::groups_of_user(c, user.id).await?;
        let policies = store::policies_for_resource(c, resource.id).await?;
        let profiles = store::profiles_by_id(c).await?;
        let posture = store::get_posture(c, device.id).await?;
        let idp = req
            .identity_provider
            .clone()
            .unwrap_or_else(|| "local".to_owned());
        let now = now();
        let decision = policy::decide(&policy::DecisionInput {
            user: &user,
            user_groups: &groups,
            device: &device,
            posture: posture.as_ref(),
            identity_provider: &idp,
            last_mfa_at: req.last_mfa_at,
            source,
            now,
            resource: &resource,
            policies: &policies,
            posture_profiles: &profiles,
        });
        Ok(Evaluation {
            user,
            device,
            resource,
            source,
            now,
            decision,
        })
    }

    /// Audits a decision with the gateway chosen for it (if any) and `extra` details.
    pub(crate) async fn audit_decision(
        &self,
        c: &mut Conn,
        actor: &Actor,
        e: &Evaluation,
        gateway: Option<GatewayId>,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        let (kind, mut details) = match &e.decision {
            policy::Decision::Allow { expires_at, policy } => (
                "decision.allow",
                serde_json::json!({ "user": e.user.id, "device": e.device.id, "resource": e.resource.id, "gateway": gateway, "source": e.source, "policy": policy, "expires_at": expires_at, "requested_by": actor.id }),
            ),
            policy::Decision::Deny { reasons } => (
                "decision.deny",
                serde_json::json!({ "user": e.user.id, "device": e.device.id, "resource": e.resource.id, "gateway": gateway, "source": e.source, "reasons": reasons, "requested_by": actor.id }),
            ),
        };
        if let Some(map) = details.as_object_mut() {
            map.extend(extra);
        }
        let subject_user = Actor {
            id: subject("user", e.user.id),
            name: e.user.email.clone(),
            role: e.user.role,
        };
        self.audit(
            c,
            &subject_user,
            kind,
            subject("resource", e.resource.id),
            details,
        )
        .await
    }
}
