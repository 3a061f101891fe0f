//! The local control protocol between `postern` commands (later the tray) and the daemon: one
//! JSON object per line on a Unix socket, a request then its response, as many as the caller
//! likes on one connection.
//!
//! Who may do what is decided from the peer's credentials (`SO_PEERCRED`), never from
//! anything the peer says: see [`authorize`]. The socket itself is mode 0666 so that any
//! local user can run `postern status` and, on a device nobody has signed in to, `postern
//! login`; the check on every request does the security.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use proto::client::DenyReason;
use serde::{Deserialize, Serialize};

/// The largest request or response line accepted, in bytes.
pub const MAX_LINE: usize = 1024 * 1024;

/// A request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Where things stand.
    Status,
    /// Starts signing in: device authorization (browser) or an enrollment key.
    Login(LoginRequest),
    /// Waits until the sign-in started by `Login` ends.
    LoginWait,
    /// Signs out: removes the session, the routes and the TUN device.
    Logout,
    /// Resumes after `Down`.
    Up,
    /// Pauses: removes routes and the TUN device but keeps the session.
    Down,
    /// Asks for access to a resource now and waits for the answer.
    Connect {
        /// The resource's name or id.
        resource: String,
    },
}

impl Request {
    /// Whether the request only reads state.
    fn reads_only(&self) -> bool {
        matches!(self, Self::Status)
    }
}

/// How to sign in.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The controller's URL (required: the daemon forgets it at logout).
    pub controller: Option<String>,
    /// The pinned certificate fingerprint.
    pub fingerprint: Option<String>,
    /// Extra CA certificates (PEM), read by the CLI from `--ca-file`.
    pub ca_pem: Option<String>,
    /// An enrollment key: enroll without a browser. Never logged.
    pub enroll_key: Option<String>,
    /// The device's name.
    pub name: String,
}

impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest")
            .field("controller", &self.controller)
            .field("fingerprint", &self.fingerprint)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Response {
    /// Done.
    Ok,
    /// The status.
    Status(Box<Status>),
    /// The user must approve the device in a browser.
    LoginStarted {
        /// Where to approve.
        verification_uri: String,
        /// The code to enter there.
        user_code: String,
        /// The same URL with the code filled in.
        verification_uri_complete: String,
    },
    /// Signed in.
    SignedIn {
        /// Who.
        user_name: String,
        /// Where.
        controller: String,
    },
    /// Access was granted.
    Granted {
        /// The resource.
        resource: String,
        /// Until when.
        expires_at: Timestamp,
    },
    /// Access was denied, with reasons the user can act on.
    Denied {
        /// The resource.
        resource: String,
        /// Why.
        reasons: Vec<DenyReason>,
    },
    /// The request failed.
    Error {
        /// What went wrong, for people.
        message: String,
    },
}

/// Where the daemon stands, as `postern status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// `signed_out`, `signing_in`, `paused`, `connecting`, `connected` or `disconnected`.
    pub state: String,
    /// Why the daemon is signed out or disconnected, when it is.
    #[serde(default)]
    pub reason: Option<String>,
    /// The controller signed in to.
    #[serde(default)]
    pub controller: Option<String>,
    /// The signed-in user.
    #[serde(default)]
    pub user: Option<String>,
    /// The OS user id that signed in.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The device.
    #[serde(default)]
    pub device_id: Option<String>,
    /// The device's name.
    #[serde(default)]
    pub device_name: Option<String>,
    /// The TUN device, when it exists.
    #[serde(default)]
    pub interface: Option<String>,
    /// The device's tunnel address.
    #[serde(default)]
    pub tunnel_address: Option<IpAddr>,
    /// When the device session ends unless renewed.
    #[serde(default)]
    pub session_expires_at: Option<Timestamp>,
    /// Every resource the user may reach.
    #[serde(default)]
    pub resources: Vec<ResourceStatus>,
    /// The most recent denial.
    #[serde(default)]
    pub last_denial: Option<Denial>,
    /// A sign-in waiting for approval.
    #[serde(default)]
    pub login: Option<PendingLogin>,
    /// The device's posture as last collected, check by check (empty when the controller
    /// asks for none).
    #[serde(default)]
    pub posture: Vec<PostureCheck>,
}

/// One posture check as the daemon last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostureCheck {
    /// `disk_encryption`, `firewall`, `secure_boot` or `screen_lock`.
    pub check: String,
    /// `pass`, `fail` or `unknown`.
    pub state: model::CheckState,
    /// What the probe saw, and where it looked.
    pub detail: String,
}

/// One resource and its tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its addresses.
    pub addresses: Vec<IpNet>,
    /// Its ports (`tcp/443`); empty means every TCP and UDP port and ICMP.
    pub ports: Vec<String>,
    /// `idle`, `requesting`, `connecting`, `connected`, `denied` or `revoked`.
    pub tunnel: String,
    /// The current grant.
    #[serde(default)]
    pub grant_id: Option<String>,
    /// The gateway endpoint.
    #[serde(default)]
    pub gateway: Option<String>,
    /// When the grant ends unless renewed.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

/// A denial, as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// The resource's name.
    pub resource: String,
    /// Why.
    pub reasons: Vec<DenyReason>,
    /// When.
    pub at: Timestamp,
}

/// A sign-in waiting for the user in a browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLogin {
    /// Where to approve.
    pub verification_uri: String,
    /// The code.
    pub user_code: String,
}

/// Why a peer may not make a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Another OS user signed in to this device.
    #[error(
        "this device is signed in by another user (uid {owner}); only they or root may control postern"
    )]
    NotOwner {
        /// The uid that signed in.
        owner: u32,
    },
    /// Nobody signed in, and the request needs someone.
    #[error("nobody is signed in: run `postern login CONTROLLER-URL` first")]
    NotSignedIn,
}

/// Decides whether the local user `peer` may make `request` when `owner` (the uid that
/// signed in, if anyone did) holds the device:
///
/// - root may do anything;
/// - the owner may do anything;
/// - anyone may read the status;
/// - when nobody is signed in, anyone may start a sign-in (and so becomes the owner);
/// - everything else is refused.
pub fn authorize(peer: u32, owner: Option<u32>, request: &Request) -> Result<(), Refusal> {
    if peer == 0 || request.reads_only() || owner == Some(peer) {
        return Ok(());
    }
    match (owner, request) {
        (None, Request::Login(_) | Request::LoginWait) => Ok(()),
        (None, _) => Err(Refusal::NotSignedIn),
        (Some(owner), _) => Err(Refusal::NotOwner { owner }),
    }
}

/// The status as another (non-owner, non-root) user may see it: no user, device or
/// resources, only whether the device is signed in.
pub fn redact(status: &Status) -> Status {
    Status {
        state: status.state.clone(),
        controller: status.controller.clone(),
        ..Status::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    fn login() -> Request {
        Request::Login(LoginRequest {
            controller: Some("https://c".into()),
            fingerprint: None,
            ca_pem: None,
            enroll_key: Some("secret-key".into()),
            name: "laptop".into(),
        })
    }

    #[test_case(0, None, Request::Logout, true; "root before login")]
    #[test_case(0, Some(1000), Request::Down, true; "root after login")]
    #[test_case(1000, Some(1000), Request::Down, true; "owner")]
    #[test_case(1000, Some(1000), Request::Connect { resource: "a".into() }, true; "owner connects")]
    #[test_case(1001, Some(1000), Request::Down, false; "another user")]
    #[test_case(1001, Some(1000), Request::Logout, false; "another user logs out")]
    #[test_case(1001, Some(1000), Request::LoginWait, false; "another user waits")]
    #[test_case(1001, Some(1000), Request::Status, true; "anyone reads status")]
    #[test_case(1001, None, Request::LoginWait, true; "anyone waits for a login when nobody is signed in")]
    #[test_case(1001, None, Request::Up, false; "nothing else before login")]
    fn peer_credentials_policy(peer: u32, owner: Option<u32>, request: Request, allowed: bool) {
        assert_eq!(authorize(peer, owner, &request).is_ok(), allowed);
    }

    #[test]
    fn login_policy_and_messages() {
        assert_eq!(authorize(1001, None, &login()), Ok(()));
        let err = authorize(1001, Some(1000), &login()).unwrap_err();
        assert_eq!(err, Refusal::NotOwner { owner: 1000 });
        assert!(err.to_string().contains("uid 1000"));
        assert!(
            authorize(5, None, &Request::Down)
                .unwrap_err()
                .to_string()
                .contains("postern login")
        );
    }

    #[test]
    fn requests_are_json_lines_and_hide_keys_in_debug() {
        let text = serde_json::to_string(&login()).unwrap();
        assert!(text.starts_with(r#"{"cmd":"login""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), login());
        assert!(!format!("{:?}", login()).contains("secret-key"));
        let r: Request = serde_json::from_str(r#"{"cmd":"connect","resource":"app"}"#).unwrap();
        assert_eq!(
            r,
            Request::Connect {
                resource: "app".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"reboot"}"#).is_err());
    }

    #[test]
    fn redacted_status_shows_no_user_or_resources() {
        let s = Status {
            state: "connected".into(),
            user: Some("Ann".into()),
            resources: vec![ResourceStatus {
                id: "r".into(),
                name: "app".into(),
                addresses: vec![],
                ports: vec![],
                tunnel: "idle".into(),
                grant_id: None,
                gateway: None,
                expires_at: None,
            }],
            ..Status::default()
        };
        let r = redact(&s);
        assert_eq!(r.state, "connected");
        assert_eq!(r.user, None);
        assert!(r.resources.is_empty());
    }
}
