//! The client control channel (ALPN `postern-client/1`): the daemon on an employee's device
//! and the controller, on one bidirectional QUIC stream, in the same framing as the gateway
//! channel ([`crate::encode`], [`crate::decode`]).
//!
//! 1. The daemon sends [`ClientMessage::Hello`] with its device id and device session; the
//!    controller answers [`ServerMessage::Challenge`] with a fresh nonce; the daemon answers
//!    [`ClientMessage::Proof`], the nonce signed with the device key
//!    ([`crate::device::DeviceKey::sign_challenge`]). The controller answers
//!    [`ServerMessage::Welcome`] (who, the device's tunnel address, the resources the user
//!    may reach) or [`ServerMessage::Refused`] and closes.
//! 2. Afterwards the daemon sends requests, each with its own `request` number that the
//!    answer repeats, and the controller pushes revocations, resource changes and the end
//!    of the session whenever they happen.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use model::{
    Admission, DeviceId, GatewayId, GrantId, PortRule, PresharedKey, ResourceId, UserId, WgKey,
};
use serde::{Deserialize, Serialize};

use crate::device::SignedReport;

/// [`crate::CLIENT_ALPN`], also here for the callers that name it by this path.
pub use crate::CLIENT_ALPN;

/// Messages from a client daemon to the controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// First message: which device, and its session secret. Never logged.
    Hello {
        /// The device.
        device_id: DeviceId,
        /// The device session secret.
        session: String,
        /// The client's version.
        client_version: String,
    },
    /// The controller's nonce signed with the device key (base64).
    Proof {
        /// The signature.
        signature: String,
    },
    /// Asks for access to a resource with a key pair made for this grant.
    RequestAccess {
        /// Repeated in the answer.
        request: u64,
        /// The resource.
        resource_id: ResourceId,
        /// The per-application WireGuard public key (base64, 32 bytes).
        public_key: String,
        /// A fresh posture report, when the daemon collects posture.
        #[serde(default)]
        posture: Option<SignedReport>,
    },
    /// The device no longer needs a grant (idle, or replaced by a renewal).
    Release {
        /// The grant.
        grant_id: GrantId,
    },
    /// A posture report (on change and periodically).
    Posture {
        /// The report.
        report: SignedReport,
    },
    /// Asks for a fresh session secret before the current one expires.
    RenewSession {
        /// Repeated in the answer.
        request: u64,
    },
    /// Ends the device session (`postern logout`); the controller revokes the device's
    /// grants, answers `Refused{code: session_ended}` and closes.
    SignOut,
}

/// Messages from the controller to a client daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// Sign this nonce (base64, 32 bytes) with the device key.
    Challenge {
        /// The nonce.
        nonce: String,
    },
    /// The daemon is signed in and connected.
    Welcome(Welcome),
    /// The connection is refused or ended; `code` says whether signing in again helps.
    Refused {
        /// Why, for programs.
        code: RefusalCode,
        /// Why, for people.
        reason: String,
    },
    /// The answer to [`ClientMessage::RequestAccess`] when allowed.
    Granted {
        /// The request answered.
        request: u64,
        /// The peer configuration.
        grant: ClientGrant,
    },
    /// The answer to [`ClientMessage::RequestAccess`] when denied by policy.
    Denied {
        /// The request answered.
        request: u64,
        /// Why, in words the user can act on; never empty.
        reasons: Vec<DenyReason>,
    },
    /// A request could not be served (no gateway online, invalid key); try again later.
    Failed {
        /// The request answered.
        request: u64,
        /// What went wrong.
        message: String,
    },
    /// The answer to [`ClientMessage::RenewSession`]: replace the stored session.
    SessionRenewed {
        /// The request answered.
        request: u64,
        /// The new session secret. Never logged.
        session: String,
        /// When it ends unless renewed.
        expires_at: Timestamp,
    },
    /// A grant of this device was revoked: tear its tunnel down now.
    Revoked {
        /// The grant.
        grant_id: GrantId,
        /// Why, for people.
        reason: String,
    },
    /// The set of resources the user may reach changed.
    Resources {
        /// Every resource the user may reach.
        resources: Vec<ClientResource>,
    },
    /// A posture report was accepted or refused.
    PostureAck {
        /// The report's sequence number.
        seq: u64,
        /// Why it was refused, when it was.
        #[serde(default)]
        error: Option<String>,
    },
}

/// What a connected daemon learns first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The signed-in user.
    pub user_id: UserId,
    /// Their name or e-mail, for `postern status`.
    pub user_name: String,
    /// The device.
    pub device_id: DeviceId,
    /// The device's name.
    pub device_name: String,
    /// The device's address inside tunnels: the TUN device's address.
    pub tunnel_address: IpAddr,
    /// The resources the user may reach (policies may still deny by condition).
    pub resources: Vec<ClientResource>,
    /// When the device session ends unless renewed.
    pub session_expires_at: Timestamp,
    /// How often to send posture reports, in seconds (0: don't).
    pub posture_interval_secs: u64,
    /// Processes the controller's posture profiles look for.
    #[serde(default)]
    pub posture_processes: Vec<String>,
}

/// A resource as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientResource {
    /// The resource.
    pub id: ResourceId,
    /// Its name.
    pub name: String,
    /// Its addresses: routed into the TUN device.
    pub addresses: Vec<IpNet>,
    /// Its protocols and ports; empty means every TCP and UDP port and ICMP (see
    /// [`Admission`]).
    pub ports: Vec<PortRule>,
}

impl ClientResource {
    /// What the resource admits: the packets the client tunnels to it.
    pub fn admission(&self) -> Admission {
        Admission::new(self.addresses.clone(), self.ports.clone())
    }
}

/// A grant as the device needs it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientGrant {
    /// The grant.
    pub grant_id: GrantId,
    /// The resource.
    pub resource_id: ResourceId,
    /// The gateway serving it.
    pub gateway_id: GatewayId,
    /// The gateway's WireGuard public key (base64 on the wire).
    pub gateway_public_key: WgKey,
    /// The gateway's UDP endpoint (`host:port`).
    pub gateway_endpoint: String,
    /// The preshared key (base64 on the wire). Never logged.
    pub preshared_key: PresharedKey,
    /// The device's tunnel address.
    pub tunnel_address: IpAddr,
    /// The destinations it reaches.
    pub addresses: Vec<IpNet>,
    /// The protocols and ports; empty means every TCP and UDP port and ICMP (see
    /// [`Admission`]).
    pub ports: Vec<PortRule>,
    /// When it ends unless renewed.
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for ClientGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientGrant")
            .field("grant_id", &self.grant_id)
            .field("resource_id", &self.resource_id)
            .field("gateway_id", &self.gateway_id)
            .field("gateway_public_key", &self.gateway_public_key)
            .field("gateway_endpoint", &self.gateway_endpoint)
            .field("tunnel_address", &self.tunnel_address)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// One reason for a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DenyReason {
    /// For programs, e.g. `mfa_too_old`, `firewall_off`.
    pub code: String,
    /// For people: what is wrong and how to fix it.
    pub message: String,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// The session is unknown, expired or ended: sign in again.
    SessionEnded,
    /// The device is disabled or deleted: ask an admin.
    DeviceDisabled,
    /// The user is disabled.
    UserDisabled,
    /// The proof of the device key failed.
    BadProof,
    /// The protocol was not followed.
    Protocol,
}

impl RefusalCode {
    /// Whether the daemon must sign in again rather than retry.
    pub fn needs_login(self) -> bool {
        !matches!(self, Self::Protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode};

    #[test]
    fn client_messages_round_trip() {
        let msgs = vec![
            ClientMessage::Hello {
                device_id: DeviceId::new(),
                session: "s".into(),
                client_version: "0.1.0".into(),
            },
            ClientMessage::RequestAccess {
                request: 3,
                resource_id: ResourceId::new(),
                public_key: "k".into(),
                posture: None,
            },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            encode(m, &mut buf);
        }
        let (a, used) = decode::<ClientMessage>(&buf).unwrap().unwrap();
        let (b, _) = decode::<ClientMessage>(&buf[used..]).unwrap().unwrap();
        assert_eq!(vec![a, b], msgs);
    }

    #[test]
    fn grants_hide_the_preshared_key_in_debug() {
        let g = ClientGrant {
            grant_id: GrantId::new(),
            resource_id: ResourceId::new(),
            gateway_id: GatewayId::new(),
            gateway_public_key: WgKey::from([1; 32]),
            gateway_endpoint: "10.0.0.1:51820".into(),
            preshared_key: PresharedKey::from([0x5e; 32]),
            tunnel_address: "100.64.0.2".parse().unwrap(),
            addresses: vec![],
            ports: vec![],
            expires_at: Timestamp::UNIX_EPOCH,
        };
        assert!(!format!("{g:?}").contains(&g.preshared_key.to_base64()));
    }
}
