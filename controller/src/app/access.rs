//! Access requests: the policy decision, the choice of a gateway, the device's tunnel
//! address and a fresh preshared key, the grant pushed to the gateway and acknowledged, and
//! the peer configuration the device needs. Does IO (the store and the gateway link).

use std::collections::HashSet;
use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::IpNet;
use jiff::Timestamp;
use model::{DeviceId, Gateway, GatewayId, Grant, GrantId, PortRule, ResourceId, UserId};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::addressing::{host_at, host_offsets};
use super::decisions::DecisionRequest;
use super::kernel::{Actor, Evaluation, Service, ServiceError, invalid, subject};
use store::{self, Conn, GrantFilter};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// A device asking for access to a resource with a key pair it made for this grant.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The user.
    pub user_id: UserId,
    /// Their device.
    pub device_id: DeviceId,
    /// The resource.
    pub resource_id: ResourceId,
    /// The address the request comes from.
    pub source: String,
    /// The per-application WireGuard public key made on the device for this grant (base64,
    /// 32 bytes).
    pub public_key: String,
    /// How the user signed in; by default the provider of their last sign-in (`local` if
    /// they never signed in).
    #[serde(default)]
    pub identity_provider: Option<String>,
    /// When the user last completed MFA; by default the time their last sign-in recorded.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_mfa_at: Option<Timestamp>,
}

/// The WireGuard peer configuration of an issued grant: what the device needs to reach the
/// resource through the gateway. Its preshared key is shown only here.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessGrant {
    /// The grant.
    pub grant_id: GrantId,
    /// The gateway that serves it.
    pub gateway_id: GatewayId,
    /// The gateway's WireGuard public key (base64).
    #[schema(value_type = String)]
    pub gateway_public_key: model::WgKey,
    /// The gateway's UDP endpoint (`host:port`).
    pub gateway_endpoint: String,
    /// The preshared key of this grant (base64, 32 bytes). Keep it secret.
    #[schema(value_type = String)]
    pub preshared_key: model::PresharedKey,
    /// The device's address inside the tunnel.
    #[schema(value_type = String)]
    pub tunnel_address: IpAddr,
    /// The destinations the grant reaches.
    #[schema(value_type = Vec<String>)]
    pub addresses: Vec<IpNet>,
    /// The protocols and ports it reaches; empty means all.
    pub ports: Vec<PortRule>,
    /// When it ends unless renewed.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for AccessGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessGrant")
            .field("grant_id", &self.grant_id)
            .field("gateway_id", &self.gateway_id)
            .field("gateway_public_key", &self.gateway_public_key)
            .field("gateway_endpoint", &self.gateway_endpoint)
            .field("preshared_key", &"<secret>")
            .field("tunnel_address", &self.tunnel_address)
            .field("addresses", &self.addresses)
            .field("ports", &self.ports)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What an access request came to.
#[derive(Debug, Clone)]
pub enum AccessOutcome {
    /// Allowed, pushed to the gateway and acknowledged.
    Granted(AccessGrant),
    /// Denied by the policy decision.
    Denied {
        /// Why, in words the user can act on; never empty.
        reasons: Vec<policy::Reason>,
    },
}

/// A fresh WireGuard preshared key (32 random bytes).
fn preshared_key() -> model::PresharedKey {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    model::PresharedKey::from(bytes)
}

/// Checks a WireGuard public key: base64 of 32 bytes.
pub(crate) fn check_wireguard_key(field: &str, key: &str) -> Result<String> {
    let key = key.trim();
    let decoded = STANDARD
        .decode(key)
        .map_err(|_| invalid(field, "must be a base64 WireGuard key"))?;
    if decoded.len() != 32 {
        return Err(invalid(field, "must be a 32-byte WireGuard key"));
    }
    Ok(key.to_owned())
}

impl Service {
    /// Decides an access request and, when it is allowed, issues the grant: picks an online
    /// gateway of the resource's site, gives the device a tunnel address and the grant a
    /// fresh preshared key, pushes it to the gateway and waits for its acknowledgement
    /// before answering with the peer configuration. The decision and the grant are
    /// audited; the preshared key is not.
    pub async fn request_access(&self, actor: &Actor, req: AccessRequest) -> Result<AccessOutcome> {
        Self::require_admin(actor)?;
        let decision_request = DecisionRequest {
            user_id: req.user_id,
            device_id: req.device_id,
            resource_id: req.resource_id,
            source: req.source,
            identity_provider: req.identity_provider,
            last_mfa_at: req.last_mfa_at,
        };
        let decision_request = {
            let mut c = self.store.conn().await?;
            self.with_sign_in_facts(&mut c, decision_request).await?
        };
        self.issue_access(actor, decision_request, &req.public_key)
            .await
    }

    /// Decides and, when allowed, issues a grant: the one implementation behind the API's
    /// access requests and the clients' own.
    pub(crate) async fn issue_access(
        &self,
        actor: &Actor,
        decision_request: DecisionRequest,
        public_key: &str,
    ) -> Result<AccessOutcome> {
        let public_key = check_wireguard_key("public_key", public_key)?;
        let mut tx = self.store.begin().await?;
        if store::public_key_in_use(&mut tx, &public_key, super::kernel::now()).await? {
            return Err(ServiceError::Conflict {
                field: Some("public_key"),
                message: "a live grant already uses this public key: make a new key pair for \
                          every grant"
                    .into(),
            });
        }
        let evaluation = self.evaluate(&mut tx, &decision_request).await?;
        let (expires_at, policy_id) = match &evaluation.decision {
            policy::Decision::Deny { reasons } => {
                let reasons = reasons.clone();
                self.audit_decision(&mut tx, actor, &evaluation, None, serde_json::Map::new())
                    .await?;
                tx.commit().await?;
                return Ok(AccessOutcome::Denied { reasons });
            }
            policy::Decision::Allow { expires_at, policy } => (*expires_at, *policy),
        };
        let gateway = match self.choose_gateway(&mut tx, &evaluation).await {
            Ok(g) => g,
            Err(e @ ServiceError::NoGatewayOnline { .. }) => {
                let mut extra = serde_json::Map::new();
                extra.insert("error".into(), e.to_string().into());
                self.audit_decision(&mut tx, actor, &evaluation, None, extra)
                    .await?;
                tx.commit().await?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let (Some(gateway_public_key), Some(gateway_endpoint)) =
            (gateway.public_key.clone(), gateway.endpoint.clone())
        else {
            return Err(ServiceError::GatewayNotReady {
                gateway: gateway.name,
            });
        };
        // Checked when the gateway said hello; a key that no longer parses is no key.
        let Ok(gateway_public_key) = gateway_public_key.parse::<model::WgKey>() else {
            return Err(ServiceError::GatewayNotReady {
                gateway: gateway.name,
            });
        };
        let tunnel_address = self
            .allocate_tunnel_address(&mut tx, evaluation.device.id, expires_at, evaluation.now)
            .await?;
        let psk = preshared_key();
        let grant = Grant {
            id: GrantId::new(),
            device_id: evaluation.device.id,
            user_id: evaluation.user.id,
            resource_id: evaluation.resource.id,
            policy_id,
            gateway_id: gateway.id,
            public_key,
            tunnel_address,
            created_at: evaluation.now,
            expires_at,
            revoked_at: None,
        };
        store::insert_grant(&mut tx, &grant).await?;
        store::set_preshared_key(&mut tx, grant.id, &psk.to_base64()).await?;
        store::set_decision_facts(
            &mut tx,
            grant.id,
            &store::DecisionFacts {
                source: Some(evaluation.source),
                identity_provider: decision_request.identity_provider.clone(),
                last_mfa_at: decision_request.last_mfa_at,
            },
        )
        .await?;
        let mut extra = serde_json::Map::new();
        extra.insert("grant".into(), grant.id.to_string().into());
        self.audit_decision(&mut tx, actor, &evaluation, Some(gateway.id), extra)
            .await?;
        self.audit(
            &mut tx,
            actor,
            "grant.issued",
            subject("grant", grant.id),
            serde_json::json!({
                "device": grant.device_id, "user": grant.user_id, "resource": grant.resource_id,
                "gateway": grant.gateway_id, "policy": grant.policy_id,
                "expires_at": grant.expires_at, "tunnel_address": grant.tunnel_address,
            }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(grant = %grant.id, device = %grant.device_id, resource = %grant.resource_id, gateway = %gateway.id, "grant issued");
        self.bus.deadline_changed();

        let spec = proto::GrantSpec {
            id: grant.id,
            public_key: grant
                .public_key
                .parse()
                .map_err(|e: model::KeyError| invalid("public_key", e.to_string()))?,
            preshared_key: psk.clone(),
            tunnel_address,
            addresses: evaluation.resource.addresses.clone(),
            ports: evaluation.resource.ports.clone(),
            expires_at,
        };
        // The gateway's connection is here, or at another replica, which pushes the grant
        // for us and relays the acknowledgement.
        let ack = self.bus.push_grant(gateway.id, spec);
        let acknowledged = match ack {
            Some(ack) => matches!(
                tokio::time::timeout(self.ack_timeout, ack).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        self.bus.forget_push(grant.id);
        if !acknowledged {
            tracing::warn!(grant = %grant.id, gateway = %gateway.id, "the gateway did not acknowledge a new grant in time");
            let mut tx = self.store.begin().await?;
            let revoked = self
                .revoke_in(
                    &mut tx,
                    &Actor::system(),
                    GrantFilter::for_grant(grant.id),
                    "the gateway did not acknowledge the grant",
                )
                .await?;
            tx.commit().await?;
            self.announce(revoked);
            return Err(ServiceError::GatewayDidNotAck {
                gateway: gateway.name,
                after: self.ack_timeout,
            });
        }
        Ok(AccessOutcome::Granted(AccessGrant {
            grant_id: grant.id,
            gateway_id: gateway.id,
            gateway_public_key,
            gateway_endpoint,
            preshared_key: psk,
            tunnel_address,
            addresses: evaluation.resource.addresses,
            ports: evaluation.resource.ports,
            expires_at,
        }))
    }

    /// An online, enabled gateway of the resource's site with the fewest live grants
    /// ([`ServiceError::NoGatewayOnline`] when there is none).
    async fn choose_gateway(&self, c: &mut Conn, e: &Evaluation) -> Result<Gateway> {
        let site = e.resource.site_id;
        let candidates: Vec<Gateway> = store::list_gateways(c, Some(site))
            .await?
            .into_iter()
            .filter(|g| {
                !g.disabled
                    && g.public_key.is_some()
                    && g.endpoint.is_some()
                    && self.bus.gateway_is_online(g.id)
            })
            .collect();
        if candidates.is_empty() {
            let site_name = store::get_site(c, site)
                .await?
                .map_or_else(|| site.to_string(), |s| s.name);
            return Err(ServiceError::NoGatewayOnline { site: site_name });
        }
        if candidates.len() == 1 {
            // The usual site: one gateway, nothing to balance (and no count of every live
            // grant on each issuance).
            return candidates
                .into_iter()
                .next()
                .ok_or_else(|| ServiceError::NoGatewayOnline {
                    site: site.to_string(),
                });
        }
        let counts = store::live_grant_counts(c, e.now).await?;
        let lightest = candidates
            .into_iter()
            .min_by_key(|g| (counts.get(&g.id).copied().unwrap_or(0), g.id))
            .ok_or_else(|| ServiceError::NoGatewayOnline {
                site: site.to_string(),
            })?;
        Ok(lightest)
    }

    /// The device's tunnel address: the one it already holds, or a free one of the tunnel
    /// network, leased until `expires_at` at least.
    pub(crate) async fn allocate_tunnel_address(
        &self,
        c: &mut Conn,
        device: DeviceId,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> Result<IpAddr> {
        let net = self.tunnel_network;
        if let Some(held) = store::device_tunnel_address(c, device, now).await?
            && net.contains(&held)
            && store::claim_tunnel_address(c, held, device, expires_at, now).await?
        {
            return Ok(held);
        }
        let offsets = host_offsets(net);
        // Random picks spread devices over the network and make two replicas unlikely to
        // race for one address; a full scan finds the last free ones.
        for _ in 0..16 {
            let candidate = host_at(net, rand::thread_rng().gen_range(offsets.clone()));
            if store::claim_tunnel_address(c, candidate, device, expires_at, now).await? {
                return Ok(candidate);
            }
        }
        let leased: HashSet<IpAddr> = store::leased_tunnel_addresses(c, now)
            .await?
            .into_iter()
            .collect();
        for offset in offsets {
            let candidate = host_at(net, offset);
            if !leased.contains(&candidate)
                && store::claim_tunnel_address(c, candidate, device, expires_at, now).await?
            {
                return Ok(candidate);
            }
        }
        Err(ServiceError::TunnelNetworkFull { network: net })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_psks_are_fresh() {
        assert!(check_wireguard_key("k", &STANDARD.encode([7u8; 32])).is_ok());
        assert!(check_wireguard_key("k", &STANDARD.encode([7u8; 31])).is_err());
        assert!(check_wireguard_key("k", "not base64!").is_err());
        let (a, b) = (preshared_key(), preshared_key());
        assert_ne!(a, b);
        assert_eq!(STANDARD.decode(a.to_base64()).unwrap().len(), 32);
    }
}
