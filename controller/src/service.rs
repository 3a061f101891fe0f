//! The controller's application services: every rule about objects lives here once, and the
//! REST API (and later the web UI) call these. Each write is one transaction that includes
//! its audit record, so a rejected request changes nothing.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use model::{
    Conditions, Device, DeviceId, EnrollmentKeyId, FieldError, Gateway, GatewayId, Grant, GrantId,
    Group, GroupId, Policy, PolicyAction, PolicyId, PortRule, PostureProfile, PostureProfileId,
    Resource, ResourceId, Role, Site, SiteId, TimeWindow, TokenId, User, UserId, parse_address,
    validate_name,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::control::Registry;
use crate::secrets;
use crate::store::{
    self, ApiToken, AuditEvent, AuditFilter, Conn, EnrollmentKey, GatewayToken, GrantFilter,
    PolicyRef, Store, StoreError,
};

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

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A field of the request is invalid.
    #[error("{0}")]
    Invalid(FieldError),
    /// The object named in the path does not exist.
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
    /// The actor may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The credential is missing, unknown, used or expired.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// Too many failed sign-ins: the account is locked for a while.
    #[error("{0}")]
    Locked(String),
    /// A needed part of the system is not available now (no gateway online, no
    /// acknowledgement); trying again later may succeed.
    #[error("{0}")]
    Unavailable(String),
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
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
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

type Result<T, E = ServiceError> = std::result::Result<T, E>;

pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ServiceError {
    ServiceError::Invalid(FieldError::new(field, message))
}

/// Refuses to delete the `what` while the policies `used` name it ("delete them first").
fn unused(what: &str, used: &[String], fix: &str) -> Result<()> {
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

fn duplicate(field: &'static str, what: &str, name: &str) -> ServiceError {
    ServiceError::Conflict {
        field: Some(field),
        message: format!("a {what} named `{name}` already exists"),
    }
}

/// Maps a unique-constraint failure on insert/update to a conflict on `field`.
fn on_duplicate(
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

/// Something that happened which other parts of the controller react to: every gateway
/// control connection subscribes and pushes the revocations of its grants.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    /// A grant was revoked; its gateway must drop the peer.
    GrantRevoked(Grant),
    /// Device sessions ended (sign-out, a disabled user or device): connected clients of
    /// that device or user must be disconnected.
    SessionsEnded {
        /// Only this device's sessions, when set.
        device: Option<DeviceId>,
        /// Only this user's sessions, when set.
        user: Option<UserId>,
        /// Why, for people.
        reason: String,
    },
    /// A device's posture report was accepted (its live grants were re-evaluated).
    PostureChanged(DeviceId),
    /// Events may have been lost (the replicas' notifications were interrupted): every link
    /// must resynchronise from the database.
    Resync,
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

// ---------------------------------------------------------------- inputs

/// A site to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    /// A unique name.
    pub name: String,
}

/// Options for a new gateway enrollment token.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayTokenInput {
    /// How long the token may wait for its gateway, in seconds (default one day, at most 30).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// Changes to a gateway.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayPatch {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// Disable (revoking its grants) or enable it.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A resource to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    /// A unique name.
    pub name: String,
    /// The site whose gateways reach it.
    pub site_id: SiteId,
    /// IPv4/IPv6 addresses and CIDRs, e.g. `10.0.5.20` or `10.0.6.0/24`.
    pub addresses: Vec<String>,
    /// `tcp/22`, `tcp/8000-8080`, `udp/53`, `icmp`; empty means every protocol and port.
    #[serde(default)]
    pub ports: Vec<String>,
}

/// A user to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Their e-mail address.
    pub email: String,
    /// Their display name.
    pub name: String,
    /// Their role (default `user`).
    #[serde(default)]
    pub role: Option<Role>,
}

/// Changes to a user.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// A new e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new role.
    #[serde(default)]
    pub role: Option<Role>,
    /// Disable (revoking every grant) or enable them.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A group to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupInput {
    /// A unique name.
    pub name: String,
    /// What the group is for.
    #[serde(default)]
    pub description: String,
}

/// A user to add to a group.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberInput {
    /// The user.
    pub user_id: UserId,
}

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

/// An API token to create.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// What it is for.
    pub name: String,
    /// `admin` or `auditor`.
    pub role: Role,
}

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

/// The first admin, created with the setup code.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupInput {
    /// The one-time code the controller printed at its first start.
    pub code: String,
    /// The admin's e-mail address.
    pub email: String,
    /// The admin's name.
    pub name: String,
}

/// What setup created.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SetupResult {
    /// The first admin.
    pub user: User,
    /// An admin API token for them, shown once.
    pub token: String,
}

// ---------------------------------------------------------------- validation helpers

const DAY: u64 = 24 * 60 * 60;

/// The current time at the store's precision (milliseconds), so that what a write returns
/// equals what a later read returns.
pub(crate) fn now() -> Timestamp {
    Timestamp::from_millisecond(Timestamp::now().as_millisecond())
        .unwrap_or_else(|_| Timestamp::now())
}

fn check_email(field: &str, email: &str) -> Result<String> {
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

fn name(field: &str, n: &str) -> Result<String> {
    validate_name(field, n).map_err(ServiceError::Invalid)?;
    Ok(n.trim().to_owned())
}

fn duration(field: &str, v: Option<u64>, default: u64, max: u64) -> Result<u64> {
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

fn after(now: Timestamp, secs: u64) -> Timestamp {
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    now.checked_add(SignedDuration::from_secs(secs))
        .unwrap_or(Timestamp::MAX)
}

fn addresses(field: &str, raw: &[String]) -> Result<Vec<ipnet::IpNet>> {
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

/// The controller's application services over one store.
#[derive(Clone, Debug)]
pub struct Service {
    pub(crate) store: Store,
    pub(crate) events: broadcast::Sender<ControlEvent>,
    /// The gateways whose control connection is up.
    pub(crate) gateways: Arc<Registry>,
    /// The other controller replicas on the same PostgreSQL database.
    pub(crate) cluster: Arc<crate::cluster::Cluster>,
    pub(crate) tunnel_network: ipnet::IpNet,
    pub(crate) ack_timeout: Duration,
    /// How long a device session lasts without renewal.
    pub(crate) device_session_ttl: SignedDuration,
    /// How often clients send posture reports (zero: never).
    pub(crate) posture_interval: Duration,
    /// Failed sign-ins for e-mail addresses without a local account, so that they lock
    /// like real accounts do and lockout tells nothing about which accounts exist.
    pub(crate) unknown_sign_ins: Arc<crate::local::UnknownSignIns>,
    /// The URL browsers reach the controller at (OIDC redirect URIs are made from it).
    pub(crate) public_url: Option<Arc<str>>,
    /// The HTTP client for OpenID providers (discovery, token endpoint).
    pub(crate) oidc_http: reqwest::Client,
    /// Providers' discovery documents and signing keys, fetched once and cached.
    pub(crate) oidc_cache: Arc<crate::oidc::DiscoveryCache>,
    /// The key TOTP secrets and client secrets are sealed under at rest.
    pub(crate) secret_key: crate::crypto::SecretKey,
}

impl Service {
    /// Services over `store`.
    pub fn new(store: Store) -> Self {
        Self::with_event_capacity(store, 4096)
    }

    /// Services whose event channel holds `capacity` events before a slow receiver lags.
    pub(crate) fn with_event_capacity(store: Store, capacity: usize) -> Self {
        let (events, _) = broadcast::channel(capacity);
        Self {
            store,
            events,
            gateways: Arc::new(Registry::default()),
            cluster: Arc::default(),
            unknown_sign_ins: Arc::default(),
            public_url: None,
            oidc_http: crate::oidc::http_client(),
            oidc_cache: Arc::default(),
            secret_key: crate::crypto::SecretKey::random(),
            tunnel_network: crate::access::default_tunnel_network(),
            ack_timeout: DEFAULT_ACK_TIMEOUT,
            device_session_ttl: crate::device::DEFAULT_DEVICE_SESSION_TTL,
            posture_interval: Duration::from_secs(60),
        }
    }

    /// Sets how long a device session lasts without renewal.
    pub fn with_device_session_ttl(mut self, ttl: Duration) -> Self {
        self.device_session_ttl =
            SignedDuration::try_from(ttl).unwrap_or(crate::device::DEFAULT_DEVICE_SESSION_TTL);
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
        crate::access::check_tunnel_network(network).map_err(|m| invalid("tunnel_network", m))?;
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
    pub fn with_secret_key(mut self, key: crate::crypto::SecretKey) -> Self {
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

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Subscribes to control events (revocations).
    pub fn subscribe(&self) -> broadcast::Receiver<ControlEvent> {
        self.events.subscribe()
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
        store::append_audit(c, &event).await?;
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

    fn require_reader(actor: &Actor) -> Result<()> {
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
                }),
            )
            .await?;
        }
        Ok(revoked)
    }

    /// Records `{kind}.deleted` for `id` in `c`'s transaction and, with `revoke`, revokes the
    /// live grants that depended on it ("{kind} deleted"); returns them to announce after
    /// commit.
    async fn record_deletion(
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
            // No subscriber is not an error: nothing is connected yet.
            let _ = self.events.send(ControlEvent::GrantRevoked(g.clone()));
            self.cluster
                .publish(crate::cluster::Message::Revoked { grant: Box::new(g) });
        }
    }

    // ------------------------------------------------------------ setup and tokens

    /// Makes a new setup code when no admin exists yet; `None` once setup is done.
    pub async fn prepare_setup(&self) -> Result<Option<String>> {
        let mut tx = self.store.begin().await?;
        if store::count_admins(&mut tx).await? > 0 {
            return Ok(None);
        }
        let code = secrets::setup_code();
        store::put_setup_code(&mut tx, &secrets::hash_setup_code(&code), now()).await?;
        tx.commit().await?;
        Ok(Some(code))
    }

    /// Creates the first admin with the one-time setup code, and an API token for them.
    pub async fn complete_setup(&self, input: SetupInput) -> Result<SetupResult> {
        let email = check_email("email", &input.email)?;
        let user_name = name("name", &input.name)?;
        let mut tx = self.store.begin().await?;
        let now = now();
        if store::count_admins(&mut tx).await? > 0
            || !store::consume_setup_code(&mut tx, &secrets::hash_setup_code(&input.code), now)
                .await?
        {
            return Err(ServiceError::Unauthorized(
                "the setup code is wrong or was already used",
            ));
        }
        let user = User {
            id: UserId::new(),
            email,
            name: user_name,
            role: Role::Admin,
            disabled: false,
            created_at: now,
        };
        store::insert_user(&mut tx, &user).await?;
        let actor = Actor {
            id: "setup".into(),
            name: "setup code".into(),
            role: Role::Admin,
        };
        self.audit(
            &mut tx,
            &actor,
            "user.created",
            subject("user", user.id),
            serde_json::to_value(&user).unwrap_or_default(),
        )
        .await?;
        let issued = self
            .insert_token(
                &mut tx,
                &actor,
                &format!("setup token of {}", user.email),
                Role::Admin,
                Some(user.id),
            )
            .await?;
        tx.commit().await?;
        Ok(SetupResult {
            user,
            token: issued.secret,
        })
    }

    async fn insert_token(
        &self,
        c: &mut Conn,
        actor: &Actor,
        token_name: &str,
        role: Role,
        user: Option<UserId>,
    ) -> Result<Issued<ApiToken>> {
        let secret = secrets::generate("pst_");
        let token = ApiToken {
            id: TokenId::new(),
            name: token_name.to_owned(),
            role,
            user_id: user,
            created_at: now(),
            last_used_at: None,
            revoked_at: None,
        };
        store::insert_api_token(c, &token, &secrets::hash(&secret)).await?;
        self.audit(
            c,
            actor,
            "token.created",
            subject("token", token.id),
            serde_json::json!({ "name": token.name, "role": role }),
        )
        .await?;
        Ok(Issued {
            record: token,
            secret,
        })
    }

    /// Creates an API token (admin or auditor role), shown once.
    pub async fn create_token(&self, actor: &Actor, input: TokenInput) -> Result<Issued<ApiToken>> {
        Self::require_admin(actor)?;
        let token_name = name("name", &input.name)?;
        if input.role == Role::User {
            return Err(invalid(
                "role",
                "API tokens are for automation: use admin or auditor",
            ));
        }
        let mut tx = self.store.begin().await?;
        let issued = self
            .insert_token(&mut tx, actor, &token_name, input.role, None)
            .await?;
        tx.commit().await?;
        Ok(issued)
    }

    /// Lists API tokens (without secrets).
    pub async fn list_tokens(&self, actor: &Actor) -> Result<Vec<ApiToken>> {
        Self::require_reader(actor)?;
        Ok(store::list_api_tokens(&mut *self.store.conn().await?).await?)
    }

    /// Revokes an API token.
    pub async fn revoke_token(&self, actor: &Actor, id: TokenId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::revoke_api_token(&mut tx, id, now()).await? {
            return Err(ServiceError::NotFound("token"));
        }
        self.audit(
            &mut tx,
            actor,
            "token.revoked",
            subject("token", id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The actor behind a bearer token.
    pub async fn authenticate(&self, bearer: &str) -> Result<Actor> {
        let mut c = self.store.conn().await?;
        let token = store::use_api_token(&mut c, &secrets::hash(bearer), now())
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the API token is unknown or revoked",
            ))?;
        if let Some(user) = token.user_id {
            let user = store::get_user(&mut c, user).await?;
            if user.is_none_or(|u| u.disabled) {
                return Err(ServiceError::Unauthorized("the token's user is disabled"));
            }
        }
        Ok(Actor {
            id: subject("token", token.id),
            name: token.name,
            role: token.role,
        })
    }

    // ------------------------------------------------------------ sites and gateways

    /// Lists sites.
    pub async fn list_sites(&self, actor: &Actor) -> Result<Vec<Site>> {
        Self::require_reader(actor)?;
        Ok(store::list_sites(&mut *self.store.conn().await?).await?)
    }

    /// One site.
    pub async fn get_site(&self, actor: &Actor, id: SiteId) -> Result<Site> {
        Self::require_reader(actor)?;
        store::get_site(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("site"))
    }

    /// Creates a site.
    pub async fn create_site(&self, actor: &Actor, input: SiteInput) -> Result<Site> {
        Self::require_admin(actor)?;
        let site = Site {
            id: SiteId::new(),
            name: name("name", &input.name)?,
            created_at: now(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_site(&mut tx, &site)
            .await
            .map_err(on_duplicate("name", "site", &site.name))?;
        self.audit(
            &mut tx,
            actor,
            "site.created",
            subject("site", site.id),
            serde_json::to_value(&site).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(site)
    }

    /// Renames a site.
    pub async fn update_site(&self, actor: &Actor, id: SiteId, input: SiteInput) -> Result<Site> {
        Self::require_admin(actor)?;
        let new_name = name("name", &input.name)?;
        let mut tx = self.store.begin().await?;
        let mut site = store::get_site(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        site.name = new_name;
        store::update_site(&mut tx, &site)
            .await
            .map_err(on_duplicate("name", "site", &site.name))?;
        self.audit(
            &mut tx,
            actor,
            "site.updated",
            subject("site", id),
            serde_json::to_value(&site).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(site)
    }

    /// Deletes a site that has no resources and no gateways.
    pub async fn delete_site(&self, actor: &Actor, id: SiteId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_site(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        let resources = store::list_resources(&mut tx, Some(id)).await?;
        let gateways = store::list_gateways(&mut tx, Some(id)).await?;
        if !resources.is_empty() || !gateways.is_empty() {
            return Err(ServiceError::Conflict {
                field: None,
                message: format!(
                    "the site still has {} resource(s) and {} gateway(s): delete them first",
                    resources.len(),
                    gateways.len()
                ),
            });
        }
        store::delete_site(&mut tx, id).await?;
        self.record_deletion(&mut tx, actor, "site", id, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a one-time gateway enrollment token for a site, shown once.
    pub async fn create_gateway_token(
        &self,
        actor: &Actor,
        site: SiteId,
        input: GatewayTokenInput,
    ) -> Result<Issued<GatewayToken>> {
        Self::require_admin(actor)?;
        let secs = duration("expires_in_secs", input.expires_in_secs, DAY, 30 * DAY)?;
        let mut tx = self.store.begin().await?;
        store::get_site(&mut tx, site)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        let now = now();
        let secret = secrets::generate("pgt_");
        let token = GatewayToken {
            id: TokenId::new(),
            site_id: site,
            created_at: now,
            expires_at: after(now, secs),
            used_at: None,
            gateway_id: None,
        };
        store::insert_gateway_token(&mut tx, &token, &secrets::hash(&secret)).await?;
        self.audit(
            &mut tx,
            actor,
            "gateway_token.created",
            subject("site", site),
            serde_json::json!({ "token": token.id, "expires_at": token.expires_at }),
        )
        .await?;
        tx.commit().await?;
        Ok(Issued {
            record: token,
            secret,
        })
    }

    /// Lists a site's gateway tokens (without secrets).
    pub async fn list_gateway_tokens(
        &self,
        actor: &Actor,
        site: SiteId,
    ) -> Result<Vec<GatewayToken>> {
        Self::require_reader(actor)?;
        let mut c = self.store.conn().await?;
        store::get_site(&mut c, site)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        Ok(store::list_gateway_tokens(&mut c, site).await?)
    }

    /// Exchanges a one-time gateway token for a gateway record and its durable credential.
    pub async fn enroll_gateway(&self, token: &str, gateway_name: &str) -> Result<Issued<Gateway>> {
        let gateway_name = name("name", gateway_name)?;
        let mut tx = self.store.begin().await?;
        let now = now();
        let id = GatewayId::new();
        let site = store::consume_gateway_token(&mut tx, &secrets::hash(token), id, now)
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the gateway token is unknown, used or expired",
            ))?;
        let secret = secrets::generate("pgc_");
        let gateway = Gateway {
            id,
            site_id: site,
            name: gateway_name,
            public_key: None,
            endpoint: None,
            disabled: false,
            online: false,
            last_seen_at: Some(now),
            created_at: now,
        };
        store::insert_gateway(&mut tx, &gateway, &secrets::hash(&secret))
            .await
            .map_err(on_duplicate("name", "gateway", &gateway.name))?;
        let actor = Actor {
            id: subject("gateway", id),
            name: gateway.name.clone(),
            role: Role::User,
        };
        self.audit(
            &mut tx,
            &actor,
            "gateway.enrolled",
            subject("gateway", id),
            serde_json::json!({ "site": site, "name": gateway.name }),
        )
        .await?;
        tx.commit().await?;
        Ok(Issued {
            record: gateway,
            secret,
        })
    }

    /// The enabled gateway holding this durable credential.
    pub async fn authenticate_gateway(&self, credential: &str) -> Result<Gateway> {
        let mut c = self.store.conn().await?;
        let g = store::gateway_by_credential(&mut c, &secrets::hash(credential))
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the gateway credential is unknown",
            ))?;
        if g.disabled {
            return Err(ServiceError::Unauthorized("the gateway is disabled"));
        }
        Ok(g)
    }

    /// Lists gateways, optionally of one site.
    pub async fn list_gateways(&self, actor: &Actor, site: Option<SiteId>) -> Result<Vec<Gateway>> {
        Self::require_reader(actor)?;
        let gateways = store::list_gateways(&mut *self.store.conn().await?, site).await?;
        Ok(gateways.into_iter().map(|g| self.with_online(g)).collect())
    }

    /// The gateway with its `online` flag from the live control connections.
    pub(crate) fn with_online(&self, mut g: Gateway) -> Gateway {
        g.online = !g.disabled && self.gateway_is_online(g.id);
        g
    }

    /// One gateway.
    pub async fn get_gateway(&self, actor: &Actor, id: GatewayId) -> Result<Gateway> {
        Self::require_reader(actor)?;
        store::get_gateway(&mut *self.store.conn().await?, id)
            .await?
            .map(|g| self.with_online(g))
            .ok_or(ServiceError::NotFound("gateway"))
    }

    /// Renames, disables or enables a gateway. Disabling revokes its grants.
    pub async fn update_gateway(
        &self,
        actor: &Actor,
        id: GatewayId,
        patch: GatewayPatch,
    ) -> Result<Gateway> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let mut g = store::get_gateway(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("gateway"))?;
        if let Some(n) = &patch.name {
            g.name = name("name", n)?;
        }
        let disabling = patch.disabled == Some(true) && !g.disabled;
        if let Some(d) = patch.disabled {
            g.disabled = d;
        }
        store::update_gateway(&mut tx, &g)
            .await
            .map_err(on_duplicate("name", "gateway", &g.name))?;
        self.audit(
            &mut tx,
            actor,
            "gateway.updated",
            subject("gateway", id),
            serde_json::json!({ "name": g.name, "disabled": g.disabled }),
        )
        .await?;
        let revoked = if disabling {
            self.revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_gateway(id),
                "gateway disabled",
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
        if disabling {
            self.close_gateway(id, "the gateway was disabled by an administrator");
        }
        Ok(self.with_online(g))
    }

    /// Deletes a gateway, revoking its grants.
    pub async fn delete_gateway(&self, actor: &Actor, id: GatewayId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::delete_gateway(&mut tx, id).await? {
            return Err(ServiceError::NotFound("gateway"));
        }
        let revoked = self
            .record_deletion(
                &mut tx,
                actor,
                "gateway",
                id,
                Some(GrantFilter::for_gateway(id)),
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        self.close_gateway(id, "the gateway was deleted by an administrator");
        Ok(())
    }

    // ------------------------------------------------------------ resources

    async fn resource_from(
        &self,
        c: &mut Conn,
        id: ResourceId,
        input: ResourceInput,
        created_at: Timestamp,
    ) -> Result<Resource> {
        let resource_name = name("name", &input.name)?;
        if input.addresses.is_empty() {
            return Err(invalid("addresses", "give at least one address or CIDR"));
        }
        let addresses = addresses("addresses", &input.addresses)?;
        let ports = input
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<PortRule>()
                    .map_err(|e| invalid(format!("ports[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        if store::get_site(c, input.site_id).await?.is_none() {
            return Err(invalid(
                "site_id",
                format!("no site has the id {}", input.site_id),
            ));
        }
        Ok(Resource {
            id,
            name: resource_name,
            site_id: input.site_id,
            addresses,
            ports,
            created_at,
        })
    }

    /// Lists resources, optionally of one site.
    pub async fn list_resources(
        &self,
        actor: &Actor,
        site: Option<SiteId>,
    ) -> Result<Vec<Resource>> {
        Self::require_reader(actor)?;
        Ok(store::list_resources(&mut *self.store.conn().await?, site).await?)
    }

    /// One resource.
    pub async fn get_resource(&self, actor: &Actor, id: ResourceId) -> Result<Resource> {
        Self::require_reader(actor)?;
        store::get_resource(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("resource"))
    }

    /// Creates a resource.
    pub async fn create_resource(&self, actor: &Actor, input: ResourceInput) -> Result<Resource> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let r = self
            .resource_from(&mut tx, ResourceId::new(), input, now())
            .await?;
        store::insert_resource(&mut tx, &r)
            .await
            .map_err(on_duplicate("name", "resource", &r.name))?;
        self.audit(
            &mut tx,
            actor,
            "resource.created",
            subject("resource", r.id),
            serde_json::to_value(&r).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Replaces a resource; its live grants are revoked, since what they reach changed.
    pub async fn update_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        input: ResourceInput,
    ) -> Result<Resource> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let old = store::get_resource(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("resource"))?;
        let r = self
            .resource_from(&mut tx, id, input, old.created_at)
            .await?;
        store::update_resource(&mut tx, &r)
            .await
            .map_err(on_duplicate("name", "resource", &r.name))?;
        self.audit(
            &mut tx,
            actor,
            "resource.updated",
            subject("resource", id),
            serde_json::to_value(&r).unwrap_or_default(),
        )
        .await?;
        let revoked = if r != old {
            self.revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_resource(id),
                "resource changed",
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
        Ok(r)
    }

    /// Deletes a resource no policy names, revoking its grants.
    pub async fn delete_resource(&self, actor: &Actor, id: ResourceId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_resource(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("resource"))?;
        let used =
            store::policies_referencing(&mut tx, PolicyRef::Resource, &id.to_string()).await?;
        unused("resource", &used, "delete")?;
        store::delete_resource(&mut tx, id).await?;
        let revoked = self
            .record_deletion(
                &mut tx,
                actor,
                "resource",
                id,
                Some(GrantFilter::for_resource(id)),
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        Ok(())
    }

    // ------------------------------------------------------------ users and groups

    /// Lists users.
    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<User>> {
        Self::require_reader(actor)?;
        Ok(store::list_users(&mut *self.store.conn().await?).await?)
    }

    /// One user.
    pub async fn get_user(&self, actor: &Actor, id: UserId) -> Result<User> {
        Self::require_reader(actor)?;
        store::get_user(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("user"))
    }

    /// Creates a user.
    pub async fn create_user(&self, actor: &Actor, input: UserInput) -> Result<User> {
        Self::require_admin(actor)?;
        let user = User {
            id: UserId::new(),
            email: check_email("email", &input.email)?,
            name: name("name", &input.name)?,
            role: input.role.unwrap_or(Role::User),
            disabled: false,
            created_at: now(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_user(&mut tx, &user)
            .await
            .map_err(|e| match e {
                StoreError::Duplicate(_) => ServiceError::Conflict {
                    field: Some("email"),
                    message: format!("a user with e-mail `{}` already exists", user.email),
                },
                e => e.into(),
            })?;
        self.audit(
            &mut tx,
            actor,
            "user.created",
            subject("user", user.id),
            serde_json::to_value(&user).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Changes a user. Disabling revokes every grant of theirs.
    pub async fn update_user(&self, actor: &Actor, id: UserId, patch: UserPatch) -> Result<User> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let mut u = store::get_user(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        if let Some(e) = &patch.email {
            u.email = check_email("email", e)?;
        }
        if let Some(n) = &patch.name {
            u.name = name("name", n)?;
        }
        if let Some(r) = patch.role {
            u.role = r;
        }
        let disabling = patch.disabled == Some(true) && !u.disabled;
        if let Some(d) = patch.disabled {
            u.disabled = d;
        }
        store::update_user(&mut tx, &u).await.map_err(|e| match e {
            StoreError::Duplicate(_) => ServiceError::Conflict {
                field: Some("email"),
                message: format!("a user with e-mail `{}` already exists", u.email),
            },
            e => e.into(),
        })?;
        if store::count_admins(&mut tx).await? == 0 {
            return Err(ServiceError::Conflict {
                field: Some("role"),
                message: "this would leave no enabled admin".into(),
            });
        }
        self.audit(
            &mut tx,
            actor,
            "user.updated",
            subject("user", id),
            serde_json::to_value(&u).unwrap_or_default(),
        )
        .await?;
        if disabling {
            self.end_sessions_in(&mut tx, actor, id, "user disabled")
                .await?;
            self.end_device_sessions_in(&mut tx, None, Some(id), "user disabled")
                .await?;
        }
        let revoked = if disabling {
            self.revoke_in(&mut tx, actor, GrantFilter::for_user(id), "user disabled")
                .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
        if disabling {
            self.announce_sessions_ended(None, Some(id), "user disabled");
        }
        Ok(u)
    }

    /// Deletes a user, their devices and memberships, revoking their grants.
    pub async fn delete_user(&self, actor: &Actor, id: UserId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::delete_user(&mut tx, id).await? {
            return Err(ServiceError::NotFound("user"));
        }
        if store::count_admins(&mut tx).await? == 0 {
            return Err(ServiceError::Conflict {
                field: None,
                message: "this would leave no enabled admin".into(),
            });
        }
        let revoked = self
            .record_deletion(&mut tx, actor, "user", id, Some(GrantFilter::for_user(id)))
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        self.announce_sessions_ended(None, Some(id), "user deleted");
        Ok(())
    }

    /// Lists groups.
    pub async fn list_groups(&self, actor: &Actor) -> Result<Vec<Group>> {
        Self::require_reader(actor)?;
        Ok(store::list_groups(&mut *self.store.conn().await?).await?)
    }

    /// One group.
    pub async fn get_group(&self, actor: &Actor, id: GroupId) -> Result<Group> {
        Self::require_reader(actor)?;
        store::get_group(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))
    }

    /// Creates a group.
    pub async fn create_group(&self, actor: &Actor, input: GroupInput) -> Result<Group> {
        Self::require_admin(actor)?;
        let g = Group {
            id: GroupId::new(),
            name: name("name", &input.name)?,
            description: input.description.trim().to_owned(),
            created_at: now(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_group(&mut tx, &g)
            .await
            .map_err(on_duplicate("name", "group", &g.name))?;
        self.audit(
            &mut tx,
            actor,
            "group.created",
            subject("group", g.id),
            serde_json::to_value(&g).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(g)
    }

    /// Renames or re-describes a group.
    pub async fn update_group(
        &self,
        actor: &Actor,
        id: GroupId,
        input: GroupInput,
    ) -> Result<Group> {
        Self::require_admin(actor)?;
        let new_name = name("name", &input.name)?;
        let mut tx = self.store.begin().await?;
        let mut g = store::get_group(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        g.name = new_name;
        g.description = input.description.trim().to_owned();
        store::update_group(&mut tx, &g)
            .await
            .map_err(on_duplicate("name", "group", &g.name))?;
        self.audit(
            &mut tx,
            actor,
            "group.updated",
            subject("group", id),
            serde_json::to_value(&g).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(g)
    }

    /// Deletes a group no policy names.
    pub async fn delete_group(&self, actor: &Actor, id: GroupId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_group(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        let used = store::policies_referencing(&mut tx, PolicyRef::Group, &id.to_string()).await?;
        unused("group", &used, "delete")?;
        store::delete_group(&mut tx, id).await?;
        self.record_deletion(&mut tx, actor, "group", id, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The members of a group.
    pub async fn group_members(&self, actor: &Actor, id: GroupId) -> Result<Vec<User>> {
        Self::require_reader(actor)?;
        let mut c = self.store.conn().await?;
        store::get_group(&mut c, id)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        Ok(store::group_members(&mut c, id).await?)
    }

    /// Adds a user to a group.
    pub async fn add_member(
        &self,
        actor: &Actor,
        group: GroupId,
        input: MemberInput,
    ) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_group(&mut tx, group)
            .await?
            .ok_or(ServiceError::NotFound("group"))?;
        if store::get_user(&mut tx, input.user_id).await?.is_none() {
            return Err(invalid(
                "user_id",
                format!("no user has the id {}", input.user_id),
            ));
        }
        if store::add_member(&mut tx, group, input.user_id, now()).await? {
            self.audit(
                &mut tx,
                actor,
                "group.member_added",
                subject("group", group),
                serde_json::json!({ "user": input.user_id }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes a user from a group, revoking the grants they held through it.
    pub async fn remove_member(&self, actor: &Actor, group: GroupId, user: UserId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::remove_member(&mut tx, group, user).await? {
            return Err(ServiceError::NotFound("membership"));
        }
        self.audit(
            &mut tx,
            actor,
            "group.member_removed",
            subject("group", group),
            serde_json::json!({ "user": user }),
        )
        .await?;
        let mut revoked = Vec::new();
        for p in store::list_policies(&mut tx)
            .await?
            .into_iter()
            .filter(|p| p.group_id == group)
        {
            revoked.extend(
                self.revoke_in(
                    &mut tx,
                    actor,
                    GrantFilter {
                        user: Some(user),
                        policy: Some(p.id),
                        ..Default::default()
                    },
                    "removed from group",
                )
                .await?,
            );
        }
        tx.commit().await?;
        self.announce(revoked);
        Ok(())
    }

    // ------------------------------------------------------------ devices and enrollment keys

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
        let revoked = if disabling {
            self.end_device_sessions_in(&mut tx, Some(id), None, "device disabled")
                .await?;
            self.revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_device(id),
                "device disabled",
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
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
        tx.commit().await?;
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

    // ------------------------------------------------------------ posture profiles

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
        let mut revoked = Vec::new();
        if old != p {
            for pol in store::list_policies(&mut tx)
                .await?
                .into_iter()
                .filter(|pol| pol.conditions.posture_profile_id == Some(id))
            {
                revoked.extend(
                    self.revoke_in(
                        &mut tx,
                        actor,
                        GrantFilter::for_policy(pol.id),
                        "posture profile changed",
                    )
                    .await?,
                );
            }
        }
        tx.commit().await?;
        self.announce(revoked);
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

    // ------------------------------------------------------------ policies

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
        // A new deny policy must cut existing access it covers.
        let revoked = if p.action == PolicyAction::Deny && !p.disabled {
            self.revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_resource(p.resource_id),
                "deny policy added",
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
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
        let mut revoked = Vec::new();
        if p != old {
            revoked = self
                .revoke_in(
                    &mut tx,
                    actor,
                    GrantFilter::for_policy(id),
                    "policy changed",
                )
                .await?;
            if p.action == PolicyAction::Deny && !p.disabled {
                revoked.extend(
                    self.revoke_in(
                        &mut tx,
                        actor,
                        GrantFilter::for_resource(p.resource_id),
                        "deny policy changed",
                    )
                    .await?,
                );
            }
        }
        tx.commit().await?;
        self.announce(revoked);
        Ok(p)
    }

    /// Deletes a policy, revoking the grants issued under it.
    pub async fn delete_policy(&self, actor: &Actor, id: PolicyId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::delete_policy(&mut tx, id).await? {
            return Err(ServiceError::NotFound("policy"));
        }
        let revoked = self
            .record_deletion(
                &mut tx,
                actor,
                "policy",
                id,
                Some(GrantFilter::for_policy(id)),
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        Ok(())
    }

    // ------------------------------------------------------------ decisions and grants

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

    /// Lists grants; with `live`, only those in force now.
    pub async fn list_grants(
        &self,
        actor: &Actor,
        mut filter: GrantFilter,
        live: bool,
    ) -> Result<Vec<Grant>> {
        Self::require_reader(actor)?;
        filter.live_at = live.then(Timestamp::now);
        Ok(store::list_grants(&mut *self.store.conn().await?, &filter).await?)
    }

    /// Stores a grant issued by the access flow.
    pub async fn record_grant(&self, actor: &Actor, grant: &Grant) -> Result<()> {
        let mut tx = self.store.begin().await?;
        store::insert_grant(&mut tx, grant).await?;
        self.audit(&mut tx, actor, "grant.issued", subject("grant", grant.id), serde_json::json!({
            "device": grant.device_id, "user": grant.user_id, "resource": grant.resource_id,
            "gateway": grant.gateway_id, "policy": grant.policy_id, "expires_at": grant.expires_at,
        })).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes one grant.
    pub async fn revoke_grant(&self, actor: &Actor, id: GrantId) -> Result<Grant> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let g = store::get_grant(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("grant"))?;
        if g.revoked_at.is_some() {
            return Err(ServiceError::Conflict {
                field: None,
                message: "the grant is already revoked".into(),
            });
        }
        let revoked = self
            .revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_grant(id),
                "revoked by an admin",
            )
            .await?;
        tx.commit().await?;
        let out = revoked.first().cloned().unwrap_or(Grant {
            revoked_at: Some(now()),
            ..g
        });
        self.announce(revoked);
        Ok(out)
    }

    // ------------------------------------------------------------ audit

    /// Reads the audit log.
    pub async fn audit_log(&self, actor: &Actor, filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        Self::require_reader(actor)?;
        Ok(store::query_audit(&mut *self.store.conn().await?, &filter).await?)
    }
}
