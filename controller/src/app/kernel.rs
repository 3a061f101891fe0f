//! The kernel of the application services: the [`Service`] struct, who acts ([`Actor`]),
//! the error type, and the helpers every feature file shares (audit, revocation, field
//! checks). It imports leaf modules only, never a feature file.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use model::{Device, FieldError, Grant, Resource, Role, User, parse_address, validate_name};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::addressing::{check_tunnel_network, default_tunnel_network};
use super::discovery::{DiscoveryCache, http_client};
use super::lockout::UnknownSignIns;
use crate::bus::{Bus, ControlEvent};
use crate::crypto::SecretKey;
use store::{self, AuditEvent, Conn, GrantFilter, Store, StoreError};

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// `token:<id>`, `user:<id>`, `setup`, `cli` or `system`.
    pub id: String,
    /// A readable name for the audit log.
    pub name: String,
    /// What the actor may do.
    pub role: Role,
}

impl Actor {
    /// The controller itself (expiry, background work).
    pub fn system() -> Self {
        Self {
            id: "system".into(),
            name: "postern-controller".into(),
            role: Role::Admin,
        }
    }

    /// An operator at the controller's command line.
    pub fn cli() -> Self {
        Self {
            id: "cli".into(),
            name: "postern-controller admin".into(),
            role: Role::Admin,
        }
    }
}

/// Why a service call failed. Each variant names a fact; the shells map it once, to HTTP in
/// `http/` and to the control protocol's codes in `control/`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is invalid.
    #[error("{0}")]
    Invalid(FieldError),
    /// The object named in the request does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with existing state (duplicate name, object still in use).
    #[error("{message}")]
    Conflict {
        /// The field that conflicts, when one does.
        field: Option<&'static str>,
        /// What conflicts.
        message: String,
    },
    /// The actor's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// The credential is missing, unknown, used or expired.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Too many failed sign-ins: the account is locked until `until`.
    #[error("too many failed sign-ins; try again after {} UTC", shown_minute(*until))]
    Locked {
        /// When the lock ends.
        until: Timestamp,
    },
    /// No enabled gateway of the resource's site is online.
    #[error("no gateway of site {site} is online")]
    NoGatewayOnline {
        /// The site's name.
        site: String,
    },
    /// The chosen gateway has not announced its WireGuard key and endpoint yet.
    #[error("gateway {gateway} has not announced its key and endpoint yet")]
    GatewayNotReady {
        /// The gateway's name.
        gateway: String,
    },
    /// The gateway did not acknowledge the new grant in time (the grant was revoked).
    #[error("gateway {gateway} did not acknowledge the grant within {} ms; try again", after.as_millis())]
    GatewayDidNotAck {
        /// The gateway's name.
        gateway: String,
        /// How long the controller waited.
        after: Duration,
    },
    /// The tunnel network has no free address for the device.
    #[error("the tunnel network {network} has no free address")]
    TunnelNetworkFull {
        /// The tunnel network.
        network: ipnet::IpNet,
    },
    /// The controller's public URL is not configured (`--public-url`) or not a URL, so no
    /// OIDC redirect URI can be made.
    #[error("the controller's public URL is not configured (--public-url)")]
    NoPublicUrl,
    /// The controller's public URL does not make a valid redirect URI.
    #[error("bad public URL: {0}")]
    BadPublicUrl(String),
    /// A secret sealed at rest cannot be opened with this controller's secret key.
    #[error(
        "{what} cannot be read ({error}); the controller's operator must restore the right secret key"
    )]
    SecretUnreadable {
        /// Which secret.
        what: String,
        /// Why.
        error: String,
    },
    /// Hashing a password failed.
    #[error("hashing the password failed: {0}")]
    PasswordHashing(String),
    /// Rendering a QR code failed.
    #[error("making the QR code failed: {0}")]
    QrCode(String),
    /// A client sign-in is not (or no longer) ready: `code` is the device authorization
    /// grant's error (`authorization_pending`, `slow_down`, `access_denied`,
    /// `expired_token`).
    #[error("{message}")]
    DeviceFlow {
        /// The error code.
        code: &'static str,
        /// What it means.
        message: &'static str,
    },
    /// The database failed; its text stays in the controller's log.
    #[error(transparent)]
    Store(StoreError),
}

impl ServiceError {
    /// Whether trying again later may succeed (a gateway, the tunnel network or a
    /// configured part of the controller is not available now).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::NoGatewayOnline { .. }
                | Self::GatewayNotReady { .. }
                | Self::GatewayDidNotAck { .. }
                | Self::TunnelNetworkFull { .. }
                | Self::NoPublicUrl
                | Self::BadPublicUrl(_)
                | Self::SecretUnreadable { .. }
                | Self::PasswordHashing(_)
                | Self::QrCode(_)
        )
    }
}

/// `until` rounded up to the minute, so that "after HH:MM" is never too early.
fn shown_minute(until: Timestamp) -> String {
    until
        .checked_add(SignedDuration::from_secs(59))
        .unwrap_or(until)
        .strftime("%H:%M")
        .to_string()
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(m) => ServiceError::Conflict {
                field: None,
                message: format!("already exists ({m})"),
            },
            StoreError::Referenced(m) => ServiceError::Conflict {
                field: None,
                message: format!("still in use ({m})"),
            },
            e => ServiceError::Store(e),
        }
    }
}

impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

pub(crate) type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(FieldError::new(field, message))
}

/// Refuses to delete the `what` while the policies `used` name it ("delete them first").
pub(crate) fn unused(what: &str, used: &[String], fix: &str) -> Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    Err(ServiceError::Conflict {
        field: None,
        message: format!(
            "the {what} is used by policies {}: {fix} them first",
            used.join(", ")
        ),
    })
}

pub(crate) fn duplicate(field: &'static str, what: &str, name: &str) -> ServiceError {
    ServiceError::Conflict {
        field: Some(field),
        message: format!("a {what} named `{name}` already exists"),
    }
}

/// Maps a unique-constraint failure on insert/update to a conflict on `field`.
pub(crate) fn on_duplicate(
    field: &'static str,
    what: &'static str,
    name: &str,
) -> impl FnOnce(StoreError) -> ServiceError {
    let name = name.to_owned();
    move |e| match e {
        StoreError::Duplicate(_) => duplicate(field, what, &name),
        e => e.into(),
    }
}

/// A policy decision with what it was made about.
#[derive(Debug, Clone)]
pub(crate) struct Evaluation {
    pub(crate) user: User,
    pub(crate) device: Device,
    pub(crate) resource: Resource,
    pub(crate) source: IpAddr,
    pub(crate) now: Timestamp,
    pub(crate) decision: policy::Decision,
}

/// A secret shown once, with the record that describes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Issued<T> {
    /// The record, without the secret.
    #[serde(flatten)]
    pub record: T,
    /// The secret. It is shown only now; the controller keeps only a hash.
    pub secret: String,
}

// ---------------------------------------------------------------- validation helpers

pub(crate) const DAY: u64 = 24 * 60 * 60;

/// The current time at the store's precision (milliseconds), so that what a write returns
/// equals what a later read returns.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond())
        .unwrap_or_else(|_| Timestamp::now())
}

pub(crate) fn check_email(field: &str, email: &str) -> Result<String> {
    let e = email.trim().to_lowercase();
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(invalid(
            field,
            format!("`{email}` is not an e-mail address"),
        ));
    }
    Ok(e)
}

pub(crate) fn name(field: &str, n: &str) -> Result<String> {
    validate_name(field, n).map_err(ServiceError::Invalid)?;
    Ok(n.trim().to_owned())
}

pub(crate) fn duration(field: &str, v: Option<u64>, default: u64, max: u64) -> Result<u64> {
    let v = v.unwrap_or(default);
    if v == 0 {
        return Err(invalid(field, "must be at least 1 second"));
    }
    if v > max {
        return Err(invalid(
            field,
            format!("must be at most {max} seconds ({} days)", max / DAY),
        ));
    }
    Ok(v)
}

pub(crate) fn after(now: Timestamp, secs: u64) -> Timestamp {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    now.checked_add(SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MAX)
}

pub(crate) fn addresses(field: &str, raw: &[String]) -> Result<Vec<ipnet::IpNet>> {
    raw.iter()
        .enumerate()
        .map(|(i, a)| parse_address(a).map_err(|m| invalid(format!("{field}[{i}]"), m)))
        .collect()
}

pub(crate) fn subject(kind: &str, id: impl std::fmt::Display) -> String {
    format!("{kind}:{id}")
}

// ---------------------------------------------------------------- the service

/// The tunnel network device addresses come from unless configured otherwise.
pub const DEFAULT_TUNNEL_NETWORK: &str = "100.64.0.0/10";

/// How long an access request waits for the gateway to acknowledge the new grant by default.
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a device session lasts without renewal by default.
pub const DEFAULT_DEVICE_SESSION_TTL: SignedDuration = SignedDuration::from_hours(12);

/// The controller's application services over one store.
#[derive(Clone, Debug)]
pub struct Service {
    pub(crate) store: Store,
    /// Events, the gateways connected here, and the other replicas.
    pub(crate) bus: Bus,
    pub(crate) tunnel_network: ipnet::IpNet,
    pub(crate) ack_timeout: Duration,
    /// How long a device session lasts without renewal.
    pub(crate) device_session_ttl: SignedDuration,
    /// How often clients send posture reports (zero: never).
    pub(crate) posture_interval: Duration,
    /// Failed sign-ins for e-mail addresses without a local account, so that they lock
    /// like real accounts do and lockout tells nothing about which accounts exist.
    pub(crate) unknown_sign_ins: Arc<UnknownSignIns>,
    /// The URL browsers reach the controller at (OIDC redirect URIs are made from it).
    pub(crate) public_url: Option<Arc<str>>,
    /// The HTTP client for OpenID providers (discovery, token endpoint).
    pub(crate) oidc_http: reqwest::Client,
    /// Providers' discovery documents and signing keys, fetched once and cached.
    pub(crate) oidc_cache: Arc<DiscoveryCache>,
    /// The key TOTP secrets and client secrets are sealed under at rest.
    pub(crate) secret_key: SecretKey,
    /// Wakes the audit sealer (`timers`): an audited write is about to commit.
    pub(crate) audit_written: Arc<tokio::sync::Notify>,
}

impl Service {
    /// Services over `store`.
    pub fn new(store: Store) -> Self {
        Self::with_event_capacity(store, 4096)
    }

    /// Services whose event channel holds `capacity` events before a slow receiver lags.
    pub(crate) fn with_event_capacity(store: Store, capacity: usize) -> Self {
        Self {
            store,
            bus: Bus::new(capacity),
            unknown_sign_ins: Arc::default(),
            public_url: None,
            oidc_http: http_client(),
            oidc_cache: Arc::default(),
            secret_key: SecretKey::random(),
            tunnel_network: default_tunnel_network(),
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            device_session_ttl: DEFAULT_DEVICE_SESSION_TTL,
            posture_interval: Duration::from_secs(60),
            audit_written: Arc::default(),
        }
    }

    /// Sets how long a device session lasts without renewal.
    pub fn with_device_session_ttl(mut self, ttl: Duration) -> Self {
        self.device_session_ttl =
            SignedDuration::try_from(ttl).unwrap_or(DEFAULT_DEVICE_SESSION_TTL);
        self
    }

    /// Sets how often clients send posture reports (zero: never).
    pub fn with_posture_interval(mut self, interval: Duration) -> Self {
        self.posture_interval = interval;
        self
    }

    /// How often clients send posture reports.
    pub fn posture_interval(&self) -> Duration {
        self.posture_interval
    }

    /// Takes device tunnel addresses from `network` (an IPv4 network of at most /30 or an
    /// IPv6 one of at most /126).
    pub fn with_tunnel_network(mut self, network: ipnet::IpNet) -> Result<Self> {
        check_tunnel_network(network).map_err(|m| invalid("tunnel_network", m))?;
        self.tunnel_network = network.trunc();
        Ok(self)
    }

    /// Sets the URL browsers reach the controller at, e.g. `https://postern.example.com`;
    /// OIDC sign-in needs it for its redirect URI
    /// (`{public_url}/auth/oidc/{provider}/callback`).
    pub fn with_public_url(mut self, url: impl Into<String>) -> Self {
        let url: String = url.into();
        self.public_url = Some(Arc::from(url.trim_end_matches('/')));
        self
    }

    /// Seals TOTP secrets and identity providers' client secrets at rest under `key`. Without
    /// it a random key is used, and what is sealed does not survive this process.
    pub fn with_secret_key(mut self, key: SecretKey) -> Self {
        self.secret_key = key;
        self
    }

    /// Waits at most `timeout` for a gateway to acknowledge a new grant.
    pub fn with_ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// The network device tunnel addresses come from.
    pub fn tunnel_network(&self) -> ipnet::IpNet {
        self.tunnel_network
    }

    /// The store, for operator tools and tests. The shells never use it: they go through
    /// the services (`controller/tests/layers.rs` refuses a `.store()` call in a shell).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Subscribes to control events (revocations).
    pub fn subscribe(&self) -> broadcast::Receiver<ControlEvent> {
        self.bus.subscribe()
    }

    /// The fan-out to gateways, clients and the other replicas.
    pub(crate) fn bus(&self) -> &Bus {
        &self.bus
    }

    pub(crate) async fn audit(
        &self,
        c: &mut Conn,
        actor: &Actor,
        kind: &str,
        subject: String,
        details: serde_json::Value,
    ) -> Result<()> {
        let event = AuditEvent {
            id: model::AuditEventId::new(),
            at: now(),
            actor: actor.id.clone(),
            actor_name: actor.name.clone(),
            kind: kind.to_owned(),
            subject,
            details,
        };
        // Inserted unsealed inside the caller's transaction; the sealer, woken here, gives
        // it its place in the hash chain once that transaction has committed (see
        // `store::audit_chain` for why not here).
        store::append_audit(c, &event).await?;
        self.audit_written.notify_one();
        Ok(())
    }

    pub(crate) fn require_admin(actor: &Actor) -> Result<()> {
        if actor.role != Role::Admin {
            return Err(ServiceError::Forbidden(format!(
                "the {} role can read but not change anything",
                actor.role.as_str()
            )));
        }
        Ok(())
    }

    pub(crate) fn require_reader(actor: &Actor) -> Result<()> {
        match actor.role {
            Role::Admin | Role::Auditor => Ok(()),
            Role::User => Err(ServiceError::Forbidden(
                "this needs the admin or auditor role".into(),
            )),
        }
    }

    /// Revokes the live grants matching `filter` inside `c`'s transaction, audits each, and
    /// returns them so the caller can announce them after commit.
    pub(crate) async fn revoke_in(
        &self,
        c: &mut Conn,
        actor: &Actor,
        filter: GrantFilter,
        reason: &str,
    ) -> Result<Vec<Grant>> {
        let now = now();
        let revoked = store::revoke_grants(c, &filter, now, reason).await?;
        for g in &revoked {
            self.audit(
                c,
                actor,
                "grant.revoked",
                subject("grant", g.id),
                serde_json::json!({
                    "device": g.device_id, "user": g.user_id, "resource": g.resource_id,
                    "gateway": g.gateway_id, "policy": g.policy_id, "reason": reason,
                    "cause": reason, "by": actor.id,
                }),
            )
            .await?;
        }
        Ok(revoked)
    }

    /// Records `{kind}.deleted` for `id` in `c`'s transaction and, with `revoke`, revokes the
    /// live grants that depended on it ("{kind} deleted"); returns them to announce after
    /// commit.
    pub(crate) async fn record_deletion(
        &self,
        c: &mut Conn,
        actor: &Actor,
        kind: &str,
        id: impl std::fmt::Display,
        revoke: Option<GrantFilter>,
    ) -> Result<Vec<Grant>> {
        self.audit(
            c,
            actor,
            &format!("{kind}.deleted"),
            subject(kind, id),
            serde_json::json!({}),
        )
        .await?;
        match revoke {
            Some(filter) => {
                let reason = format!("{} deleted", kind.replace('_', " "));
                self.revoke_in(c, actor, filter, &reason).await
            }
            None => Ok(Vec::new()),
        }
    }

    pub(crate) fn announce(&self, revoked: Vec<Grant>) {
        for g in revoked {
            tracing::info!(grant = %g.id, device = %g.device_id, resource = %g.resource_id, "grant revoked");
            self.bus.revoked(g);
        }
    }
}
