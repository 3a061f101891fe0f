//! Access requests: the policy decision, the choice of a gateway, the device's tunnel
//! address and a fresh preshared key, the grant pushed to the gateway and acknowledged, and
//! the peer configuration the device needs. Does IO (the store and the gateway link).

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::IpNet;
use jiff::Timestamp;
use model::{DeviceId, Gateway, GatewayId, Grant, GrantId, PortRule, ResourceId, UserId};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::service::{Actor, DecisionRequest, Evaluation, Service, ServiceError, invalid, subject};
use crate::store::{self, Conn, GrantFilter};

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

pub(crate) fn default_tunnel_network() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10))
}

/// Checks that a tunnel network leaves room for device addresses.
pub(crate) fn check_tunnel_network(net: IpNet) -> std::result::Result<(), String> {
    match net {
        IpNet::V4(n) if n.prefix_len() > 30 => Err(format!(
            "`{net}` is too small: use an IPv4 network of /30 or larger"
        )),
        IpNet::V6(n) if n.prefix_len() > 126 || n.prefix_len() < 8 => {
            Err(format!("`{net}` must be an IPv6 network from /8 to /126"))
        }
        _ => Ok(()),
    }
}

/// How many addresses the network has (at most 2^120 for IPv6 after the check above).
fn network_size(net: IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(bits).unwrap_or(u128::MAX)
}

/// The address `offset` places after the network address.
fn host_at(net: IpNet, offset: u128) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let base = u32::from(n.network());
            IpAddr::V4(Ipv4Addr::from(
                base.wrapping_add(u32::try_from(offset).unwrap_or(0)),
            ))
        }
        IpNet::V6(n) => IpAddr::V6(Ipv6Addr::from(u128::from(n.network()).wrapping_add(offset))),
    }
}

/// The usable host offsets: the network address and the last address are never handed out.
fn host_offsets(net: IpNet) -> std::ops::Range<u128> {
    1..network_size(net).saturating_sub(1)
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
        if store::public_key_in_use(&mut tx, &public_key, crate::service::now()).await? {
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
        let gateway = match self.choose_gateway(&mut tx, &evaluation).await? {
            Ok(g) => g,
            Err(message) => {
                let mut extra = serde_json::Map::new();
                extra.insert("error".into(), message.clone().into());
                self.audit_decision(&mut tx, actor, &evaluation, None, extra)
                    .await?;
                tx.commit().await?;
                return Err(ServiceError::Unavailable(message));
            }
        };
        let (Some(gateway_public_key), Some(gateway_endpoint)) =
            (gateway.public_key.clone(), gateway.endpoint.clone())
        else {
            return Err(ServiceError::Unavailable(format!(
                "gateway {} has not announced its key and endpoint yet",
                gateway.name
            )));
        };
        let gateway_public_key: model::WgKey = gateway_public_key.parse().map_err(|e| {
            ServiceError::Unavailable(format!("gateway {} has an unusable key: {e}", gateway.name))
        })?;
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
        let ack = match self.gateways.push_grant(gateway.id, spec) {
            Some(ack) => Some(ack),
            None => self
                .cluster
                .holder(gateway.id)
                .map(|replica| self.cluster.push(replica, grant.id, gateway.id)),
        };
        let acknowledged = match ack {
            Some(ack) => matches!(
                tokio::time::timeout(self.ack_timeout, ack).await,
                Ok(Ok(()))
            ),
            None => false,
        };
        self.cluster.forget_push(grant.id);
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
            return Err(ServiceError::Unavailable(format!(
                "gateway {} did not acknowledge the grant within {} ms; try again",
                gateway.name,
                self.ack_timeout.as_millis()
            )));
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

    /// An online, enabled gateway of the resource's site with the fewest live grants, or
    /// why there is none.
    async fn choose_gateway(
        &self,
        c: &mut Conn,
        e: &Evaluation,
    ) -> Result<std::result::Result<Gateway, String>> {
        let site = e.resource.site_id;
        let candidates: Vec<Gateway> = store::list_gateways(c, Some(site))
            .await?
            .into_iter()
            .filter(|g| {
                !g.disabled
                    && g.public_key.is_some()
                    && g.endpoint.is_some()
                    && self.gateway_is_online(g.id)
            })
            .collect();
        if candidates.is_empty() {
            let site_name = store::get_site(c, site)
                .await?
                .map_or_else(|| site.to_string(), |s| s.name);
            return Ok(Err(format!("no gateway of site {site_name} is online")));
        }
        let counts = store::live_grant_counts(c, e.now).await?;
        let lightest = candidates
            .into_iter()
            .min_by_key(|g| (counts.get(&g.id).copied().unwrap_or(0), g.id))
            .ok_or_else(|| ServiceError::Unavailable("no gateway is online".into()))?;
        Ok(Ok(lightest))
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
        Err(ServiceError::Unavailable(format!(
            "the tunnel network {net} has no free address"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_skip_network_and_last_address() {
        let net: IpNet = "100.64.0.0/30".parse().unwrap();
        let hosts: Vec<IpAddr> = host_offsets(net).map(|o| host_at(net, o)).collect();
        assert_eq!(
            hosts,
            vec![
                "100.64.0.1".parse::<IpAddr>().unwrap(),
                "100.64.0.2".parse().unwrap()
            ]
        );
        let v6: IpNet = "fd00::/64".parse().unwrap();
        assert_eq!(host_at(v6, 5), "fd00::5".parse::<IpAddr>().unwrap());
        assert_eq!(host_offsets(v6).end, (1u128 << 64) - 1);
    }

    #[test]
    fn tunnel_networks_must_leave_room() {
        assert!(check_tunnel_network(default_tunnel_network()).is_ok());
        assert!(check_tunnel_network("10.0.0.0/31".parse().unwrap()).is_err());
        assert!(check_tunnel_network("fd00::/127".parse().unwrap()).is_err());
        assert!(check_tunnel_network("fd00::/64".parse().unwrap()).is_ok());
    }

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
