use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::{
    Admission, DeviceId, FieldError, GatewayId, GrantId, GroupId, PolicyId, PortRule,
    PostureProfileId, Protocol, ResourceId, SiteId, TimeWindow, UserId,
};

/// What a user or token may do with the admin API and UI.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read everything, change nothing.
    Auditor,
    /// Their own devices and access only.
    User,
}

impl Role {
    /// The role's name as stored and written.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Auditor => "auditor",
            Role::User => "user",
        }
    }

    /// Parses a stored role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

/// A network location with private servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Site {
    /// The site's id.
    pub id: SiteId,
    /// A unique name.
    pub name: String,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A gateway process enrolled into a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Gateway {
    /// The gateway's id.
    pub id: GatewayId,
    /// The site it serves.
    pub site_id: SiteId,
    /// Its name, unique in the site.
    pub name: String,
    /// Its WireGuard public key (base64), once it has connected.
    pub public_key: Option<String>,
    /// The UDP endpoint clients reach it at (`host:port`).
    pub endpoint: Option<String>,
    /// A disabled gateway is sent no grants and may not connect.
    pub disabled: bool,
    /// Whether its control connection is up.
    pub online: bool,
    /// When the controller last heard from it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen_at: Option<Timestamp>,
    /// When it enrolled.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// What a user can be granted: addresses in a site, with protocols and ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Resource {
    /// The resource's id.
    pub id: ResourceId,
    /// A unique name.
    pub name: String,
    /// The site whose gateways reach it.
    pub site_id: SiteId,
    /// Addresses and CIDRs.
    #[schema(value_type = Vec<String>, example = json!(["10.0.5.20/32"]))]
    pub addresses: Vec<IpNet>,
    /// Protocols and ports; empty means every TCP and UDP port and ICMP, but no other IP
    /// protocol (see [`Admission`]).
    pub ports: Vec<PortRule>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl Resource {
    /// Whether a packet to `dst` with `protocol` and destination `port` lies inside this
    /// resource, by the one rule of [`Admission`].
    pub fn admits(&self, dst: IpAddr, protocol: Protocol, port: u16) -> bool {
        crate::admission::admits(&self.addresses, &self.ports, dst, Some(protocol), port)
    }

    /// What the resource admits, as a grant to it carries it.
    pub fn admission(&self) -> Admission {
        Admission::new(self.addresses.clone(), self.ports.clone())
    }
}

/// A person, from an identity provider or a local account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct User {
    /// The user's id.
    pub id: UserId,
    /// Their e-mail address.
    pub email: String,
    /// Their display name.
    pub name: String,
    /// What they may do in the admin UI and API.
    pub role: Role,
    /// A disabled user reaches nothing and has every grant revoked.
    pub disabled: bool,
    /// When they were created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// A named set of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Group {
    /// The group's id.
    pub id: GroupId,
    /// A unique name.
    pub name: String,
    /// What the group is for.
    pub description: String,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// An enrolled machine of a user, known by the public half of a key made on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Device {
    /// The device's id.
    pub id: DeviceId,
    /// Its owner.
    pub user_id: UserId,
    /// Its name (host name by default).
    pub name: String,
    /// The device's public key (base64).
    pub public_key: String,
    /// A disabled device reaches nothing and has every grant revoked.
    pub disabled: bool,
    /// When it enrolled.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was last seen.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_seen_at: Option<Timestamp>,
}

/// Whether a policy grants or blocks access. A matching `deny` beats every `allow`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    /// Grant access when the conditions hold.
    #[default]
    Allow,
    /// Block access when the conditions hold, whatever other policies say.
    Deny,
}

/// The conditions under which a policy applies. Every condition set must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conditions {
    /// The posture profile the device must pass.
    #[serde(default)]
    pub posture_profile_id: Option<PostureProfileId>,
    /// Weekly windows in `time_zone`; empty means always.
    #[serde(default)]
    pub time_windows: Vec<TimeWindow>,
    /// The IANA time zone of `time_windows` (UTC when absent).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The source addresses the request must come from; empty means anywhere.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub source_cidrs: Vec<IpNet>,
    /// The oldest the user's last MFA may be, in seconds.
    #[serde(default)]
    pub max_mfa_age_secs: Option<u64>,
    /// The identity provider the user must have signed in with (`local` for local accounts).
    #[serde(default)]
    pub identity_provider: Option<String>,
}

/// A rule from a group to a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Policy {
    /// The policy's id.
    pub id: PolicyId,
    /// A unique name.
    pub name: String,
    /// Whose access it governs.
    pub group_id: GroupId,
    /// What it governs access to.
    pub resource_id: ResourceId,
    /// Allow or deny.
    pub action: PolicyAction,
    /// When it applies.
    pub conditions: Conditions,
    /// The longest a grant under it lasts before renewal, in seconds.
    pub max_session_secs: u64,
    /// A disabled policy applies to nothing.
    pub disabled: bool,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

/// One authorization for one device to one resource through one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Grant {
    /// The grant's id.
    pub id: GrantId,
    /// The device it was issued to.
    pub device_id: DeviceId,
    /// The device's owner.
    pub user_id: UserId,
    /// The resource it reaches.
    pub resource_id: ResourceId,
    /// The policy that allowed it.
    pub policy_id: PolicyId,
    /// The gateway that serves it.
    pub gateway_id: GatewayId,
    /// The per-application WireGuard public key made on the device (base64).
    pub public_key: String,
    /// The device's address inside the tunnel.
    #[schema(value_type = String)]
    pub tunnel_address: IpAddr,
    /// When it was issued.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it ends unless renewed.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When it was revoked, if it was.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

impl Grant {
    /// Whether the grant is in force at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

/// Parses an address or CIDR: `10.0.5.20` means `10.0.5.20/32`. A CIDR with host bits set
/// is refused, since it usually hides a typo.
pub fn parse_address(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = s
        .parse()
        .map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set: did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// Checks a name: 1 to 100 characters, not blank, no control characters.
pub fn validate_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if name.chars().count() > 100 {
        return Err(FieldError::new(field, "must be at most 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_address_is_a_host_route() {
        assert_eq!(
            parse_address("10.0.5.20").unwrap().to_string(),
            "10.0.5.20/32"
        );
        assert_eq!(parse_address("fd00::1").unwrap().to_string(), "fd00::1/128");
    }

    #[test]
    fn cidr_with_host_bits_is_refused() {
        let err = parse_address("10.0.0.1/24").unwrap_err();
        assert!(err.contains("10.0.0.0/24"), "{err}");
        assert!(parse_address("10.0.0.0/33").is_err());
        assert!(parse_address("example").is_err());
    }

    #[test]
    fn resource_admits_inside_only() {
        let r = Resource {
            id: ResourceId::new(),
            name: "db".into(),
            site_id: SiteId::new(),
            addresses: vec![parse_address("10.0.5.0/24").unwrap()],
            ports: vec!["tcp/5432".parse().unwrap()],
            created_at: Timestamp::UNIX_EPOCH,
        };
        assert!(r.admits("10.0.5.7".parse().unwrap(), Protocol::Tcp, 5432));
        assert!(!r.admits("10.0.6.7".parse().unwrap(), Protocol::Tcp, 5432));
        assert!(!r.admits("10.0.5.7".parse().unwrap(), Protocol::Tcp, 22));
        assert!(!r.admits("10.0.5.7".parse().unwrap(), Protocol::Udp, 5432));
    }
}
