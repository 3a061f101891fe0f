//! Client devices signing in and staying signed in: the device authorization flow (the
//! daemon asks, the person approves in a browser, the daemon collects a device session),
//! enrollment keys for machines without a person, device sessions (renewed with a new
//! secret, ended by sign-out or a disabled user or device), the resources a client routes,
//! clients' own access requests, and signed posture reports.

use std::net::IpAddr;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use model::{Device, DeviceId, GrantId, PolicyAction, ResourceId, Role, User, UserId};
use proto::client::ClientResource;
use proto::device::SignedReport;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::access::AccessOutcome;
use super::accounts::SignedIn;
use super::decisions::DecisionRequest;
use super::kernel::{Actor, Service, ServiceError, invalid, now, subject};
use super::live::Cause;
use crate::bus::ControlEvent;
use crate::secrets;
use store::{self, DeviceAuthorization, DeviceSessionRecord, GrantFilter};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// How long a person has to approve a client sign-in.
pub const DEVICE_AUTHORIZATION_TTL: SignedDuration = SignedDuration::from_mins(10);
/// How often a daemon may poll for the outcome of a sign-in.
pub const DEVICE_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a device session lasts, renewals included: then the person signs in again.
pub const DEVICE_SESSION_MAX: SignedDuration = SignedDuration::from_hours(30 * 24);
/// How far a posture report's collection time may lie from the controller's clock.
pub const POSTURE_MAX_SKEW: SignedDuration = SignedDuration::from_mins(5);

/// A client asking to sign in.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceAuthorizationInput {
    /// The device key's public half (Ed25519, base64 of 32 bytes).
    pub public_key: String,
    /// The device's name (its host name by default).
    pub name: String,
}

/// What the client shows the person: where to go and which code to check.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceAuthorizationStart {
    /// The daemon's secret for polling. Never shown to the person or logged.
    pub device_code: String,
    /// The short code the person checks (or types) in the browser.
    pub user_code: String,
    /// Where the person signs in and approves.
    pub verification_uri: String,
    /// The same, with the code filled in.
    pub verification_uri_complete: String,
    /// Seconds until the request expires.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
}

impl std::fmt::Debug for DeviceAuthorizationStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorizationStart")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .finish_non_exhaustive()
    }
}

/// A daemon polling for the outcome.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTokenInput {
    /// The device code from the start of the sign-in.
    pub device_code: String,
}

/// A person's answer to a client sign-in.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceApproval {
    /// The code the client showed.
    pub user_code: String,
    /// Approve (`true`) or deny (`false`).
    pub approve: bool,
}

/// A client sign-in waiting for a person, as the approval page shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PendingDevice {
    /// The code the client showed.
    pub user_code: String,
    /// The device's name.
    pub name: String,
    /// A short fingerprint of the device key.
    pub fingerprint: String,
    /// The address the request came from.
    pub source: Option<String>,
    /// When the client asked.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When the request expires.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// `waiting`, `approved`, `denied` or `expired`.
    pub state: String,
}

/// A device session handed to a daemon. Its secret is shown only here.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeviceSession {
    /// The device.
    pub device_id: DeviceId,
    /// Its owner.
    pub user_id: UserId,
    /// The owner's e-mail address.
    pub user_name: String,
    /// The session secret. Keep it 0600; never log it.
    pub session: String,
    /// When it ends unless renewed.
    #[schema(value_type = String, format = DateTime)]
    pub session_expires_at: Timestamp,
}

impl std::fmt::Debug for DeviceSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("session_expires_at", &self.session_expires_at)
            .finish_non_exhaustive()
    }
}

/// A device enrolled with an enrollment key: the device's fields, and its first session in
/// the fields of a [`DeviceSession`] (`device_id`, `user_name`, `session`,
/// `session_expires_at`; `user_id` is the device's).
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrolledDevice {
    /// The device.
    #[serde(flatten)]
    pub device: Device,
    /// The device again, as in a [`DeviceSession`].
    pub device_id: DeviceId,
    /// The owner's e-mail address.
    pub user_name: String,
    /// The session secret. Keep it 0600; never log it.
    pub session: String,
    /// When it ends unless renewed.
    #[schema(value_type = String, format = DateTime)]
    pub session_expires_at: Timestamp,
}

impl std::fmt::Debug for EnrolledDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolledDevice")
            .field("device", &self.device)
            .field("session_expires_at", &self.session_expires_at)
            .finish_non_exhaustive()
    }
}

/// A connected client's valid session, with its user and device.
#[derive(Debug, Clone)]
pub struct ClientContext {
    pub(crate) session: DeviceSessionRecord,
    /// The user.
    pub user: User,
    /// The device.
    pub device: Device,
}

impl ClientContext {
    /// The actor for audit records: the user, acting through this device.
    pub fn actor(&self) -> Actor {
        Actor {
            id: subject("device", self.device.id),
            name: format!("{} on {}", self.user.email, self.device.name),
            role: Role::User,
        }
    }

    /// When the session ends unless renewed.
    pub fn expires_at(&self) -> Timestamp {
        self.session.expires_at
    }
}

/// Why a device session is not valid, for the client to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionProblem {
    /// Unknown, ended or expired: sign in again.
    Ended,
    /// The device is disabled.
    DeviceDisabled,
    /// The user is disabled.
    UserDisabled,
}

/// Eight characters from an alphabet without vowels or look-alikes, as `XXXX-XXXX`.
fn user_code() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// A typed user code in its stored form: upper case, dash in place.
fn normalize_user_code(code: &str) -> String {
    let chars: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if chars.len() == 8 {
        format!("{}-{}", &chars[..4], &chars[4..])
    } else {
        chars
    }
}

fn authorization_state(a: &DeviceAuthorization, now: Timestamp) -> &'static str {
    match a.approved {
        Some(true) => "approved",
        Some(false) => "denied",
        None if a.expires_at <= now => "expired",
        None => "waiting",
    }
}

impl Service {
    /// Starts a client sign-in for a device key: the daemon keeps the device code and
    /// polls; the person opens the verification URI. `base_url` is where browsers reach
    /// the controller (the configured public URL wins).
    pub async fn start_device_authorization(
        &self,
        input: DeviceAuthorizationInput,
        source: Option<IpAddr>,
        base_url: &str,
    ) -> Result<DeviceAuthorizationStart> {
        let public_key = input.public_key.trim().to_owned();
        proto::device::check_public_key(&public_key).map_err(|_| {
            invalid(
                "public_key",
                "must be an Ed25519 public key (base64, 32 bytes)",
            )
        })?;
        model::validate_name("name", &input.name).map_err(ServiceError::Invalid)?;
        let name = input.name.trim().to_owned();
        let now = now();
        let device_code = secrets::generate("pdc_");
        let mut tx = self.store.begin().await?;
        store::purge_device_authorizations(&mut tx, now).await?;
        let mut auth = DeviceAuthorization {
            id: uuid::Uuid::now_v7(),
            user_code: user_code(),
            public_key,
            name,
            source: source.map(|s| s.to_string()),
            created_at: now,
            expires_at: now + DEVICE_AUTHORIZATION_TTL,
            last_poll_at: None,
            user_id: None,
            decided_at: None,
            approved: None,
            mfa_at: None,
            provider: None,
            consumed_at: None,
        };
        // A user code collides about once in 25 billion; try a few before giving up.
        let mut attempts = 0;
        loop {
            match store::insert_device_authorization(&mut tx, &auth, &secrets::hash(&device_code))
                .await
            {
                Ok(()) => break,
                Err(store::StoreError::Duplicate(_)) if attempts < 4 => {
                    attempts += 1;
                    auth.user_code = user_code();
                }
                Err(e) => return Err(e.into()),
            }
        }
        tx.commit().await?;
        // A public URL made from a wildcard listening address is no use to a browser; the
        // address the daemon reached us at is better then.
        let base = self
            .public_url
            .as_deref()
            .filter(|u| !u.contains("://0.0.0.0") && !u.contains("://[::]"))
            .unwrap_or(base_url)
            .trim_end_matches('/')
            .to_owned();
        Ok(DeviceAuthorizationStart {
            device_code,
            verification_uri: format!("{base}/device"),
            verification_uri_complete: format!("{base}/device?code={}", auth.user_code),
            user_code: auth.user_code,
            expires_in: DEVICE_AUTHORIZATION_TTL.as_secs().unsigned_abs(),
            interval: DEVICE_POLL_INTERVAL.as_secs(),
        })
    }

    /// A client sign-in as the approval page shows it to a signed-in person.
    pub async fn device_authorization(
        &self,
        _signed_in: &SignedIn,
        user_code: &str,
    ) -> Result<PendingDevice> {
        let mut c = self.store.conn().await?;
        let a = store::device_authorization_by_user_code(&mut c, &normalize_user_code(user_code))
            .await?
            .ok_or_else(|| invalid("user_code", "no sign-in is waiting with this code"))?;
        Ok(PendingDevice {
            state: authorization_state(&a, now()).to_owned(),
            fingerprint: proto::device::fingerprint(&a.public_key),
            user_code: a.user_code,
            name: a.name,
            source: a.source,
            created_at: a.created_at,
            expires_at: a.expires_at,
        })
    }

    /// A signed-in person approves or denies a client sign-in. Approving makes the device
    /// theirs; the MFA of their browser session carries over to the device session.
    pub async fn approve_device_authorization(
        &self,
        signed_in: &SignedIn,
        user_code: &str,
        approve: bool,
    ) -> Result<()> {
        let actor = signed_in.actor();
        let now = now();
        let mut tx = self.store.begin().await?;
        let mut a =
            store::device_authorization_by_user_code(&mut tx, &normalize_user_code(user_code))
                .await?
                .ok_or_else(|| invalid("user_code", "no sign-in is waiting with this code"))?;
        match authorization_state(&a, now) {
            "waiting" => {}
            "expired" => {
                return Err(invalid(
                    "user_code",
                    "this sign-in expired: run `postern login` again",
                ));
            }
            _ => {
                return Err(invalid("user_code", "this sign-in was already answered"));
            }
        }
        // The provider of the approving session itself; the user's last sign-in only for a
        // session from before sessions recorded it.
        let provider = match &signed_in.session.provider {
            Some(p) => Some(p.clone()),
            None => store::last_sign_in(&mut tx, signed_in.user.id).await?.0,
        };
        a.user_id = Some(signed_in.user.id);
        a.decided_at = Some(now);
        a.approved = Some(approve);
        a.mfa_at = signed_in.session.mfa_at;
        a.provider = Some(provider.unwrap_or_else(|| "local".to_owned()));
        if !store::decide_device_authorization(&mut tx, &a).await? {
            return Err(invalid("user_code", "this sign-in was already answered"));
        }
        self.audit(
            &mut tx,
            &actor,
            if approve {
                "device.sign_in_approved"
            } else {
                "device.sign_in_denied"
            },
            subject("user", signed_in.user.id),
            serde_json::json!({ "name": a.name, "fingerprint": proto::device::fingerprint(&a.public_key), "source": a.source }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The daemon's poll: the device session once the person approved, otherwise the
    /// device flow's error (`authorization_pending`, `slow_down`, `access_denied`,
    /// `expired_token`). An approved sign-in yields exactly one session.
    pub async fn poll_device_authorization(&self, device_code: &str) -> Result<DeviceSession> {
        let now = now();
        let mut tx = self.store.begin().await?;
        let a = store::device_authorization_by_code(&mut tx, &secrets::hash(device_code))
            .await?
            .ok_or(ServiceError::DeviceFlow {
                code: "expired_token",
                message: "this sign-in is unknown or expired: run `postern login` again",
            })?;
        let too_soon = a
            .last_poll_at
            .is_some_and(|at| now.duration_since(at) < SignedDuration::from_millis(500));
        store::touch_device_authorization(&mut tx, a.id, now).await?;
        match authorization_state(&a, now) {
            "waiting" => {
                tx.commit().await?;
                return Err(if too_soon {
                    ServiceError::DeviceFlow {
                        code: "slow_down",
                        message: "polling too fast: wait longer between polls",
                    }
                } else {
                    ServiceError::DeviceFlow {
                        code: "authorization_pending",
                        message: "waiting for the person to sign in and approve",
                    }
                });
            }
            "expired" => {
                return Err(ServiceError::DeviceFlow {
                    code: "expired_token",
                    message: "nobody approved this sign-in in time: run `postern login` again",
                });
            }
            "denied" => {
                return Err(ServiceError::DeviceFlow {
                    code: "access_denied",
                    message: "the sign-in was denied",
                });
            }
            _ => {}
        }
        if !store::consume_device_authorization(&mut tx, a.id, now).await? {
            return Err(ServiceError::DeviceFlow {
                code: "expired_token",
                message: "this sign-in was already used: run `postern login` again",
            });
        }
        let user_id = a.user_id.ok_or(ServiceError::DeviceFlow {
            code: "access_denied",
            message: "the sign-in has no user",
        })?;
        let user = store::get_user(&mut tx, user_id)
            .await?
            .ok_or(ServiceError::DeviceFlow {
                code: "access_denied",
                message: "the user who approved no longer exists",
            })?;
        if user.disabled {
            return Err(ServiceError::DeviceFlow {
                code: "access_denied",
                message: "the user who approved is disabled",
            });
        }
        let actor = Actor {
            id: subject("user", user.id),
            name: user.email.clone(),
            role: user.role,
        };
        let device = match store::device_by_public_key(&mut tx, &a.public_key).await? {
            Some(d) if d.user_id != user.id => {
                return Err(ServiceError::DeviceFlow {
                    code: "access_denied",
                    message: "this device is enrolled for another user: an admin must remove it first",
                });
            }
            Some(d) if d.disabled => {
                return Err(ServiceError::DeviceFlow {
                    code: "access_denied",
                    message: "this device is disabled: ask an admin",
                });
            }
            Some(d) => {
                // Signing in again replaces the device's earlier sessions.
                store::end_device_sessions(&mut tx, Some(d.id), None, now, "signed in again")
                    .await?;
                d
            }
            None => {
                self.insert_device_in(&mut tx, &actor, user.id, &a.name, &a.public_key)
                    .await?
            }
        };
        let session = self
            .create_device_session(
                &mut tx,
                &user,
                &device,
                a.mfa_at,
                a.provider.as_deref(),
                now,
            )
            .await?;
        self.audit(
            &mut tx,
            &actor,
            "device.signed_in",
            subject("device", device.id),
            serde_json::json!({ "user": user.id, "provider": a.provider, "mfa_at": a.mfa_at }),
        )
        .await?;
        tx.commit().await?;
        Ok(session)
    }

    /// Enrolls a device with an enrollment key instead of a browser sign-in, and starts
    /// its session.
    pub async fn enroll_with_key(
        &self,
        key: &str,
        device_name: &str,
        public_key: &str,
    ) -> Result<EnrolledDevice> {
        let now = now();
        let mut tx = self.store.begin().await?;
        let k = store::consume_enrollment_key(&mut tx, &secrets::hash(key), now)
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the enrollment key is unknown, used, revoked or expired",
            ))?;
        let actor = Actor {
            id: subject("enrollment_key", k.id),
            name: "enrollment key".into(),
            role: Role::User,
        };
        let device = self
            .insert_device_in(&mut tx, &actor, k.user_id, device_name, public_key)
            .await?;
        let user = store::get_user(&mut tx, k.user_id)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let session = self
            .create_device_session(&mut tx, &user, &device, None, Some("enrollment_key"), now)
            .await?;
        tx.commit().await?;
        Ok(EnrolledDevice {
            device_id: device.id,
            device,
            user_name: session.user_name,
            session: session.session,
            session_expires_at: session.session_expires_at,
        })
    }

    async fn create_device_session(
        &self,
        c: &mut store::Conn,
        user: &User,
        device: &Device,
        mfa_at: Option<Timestamp>,
        provider: Option<&str>,
        now: Timestamp,
    ) -> Result<DeviceSession> {
        let secret = secrets::generate("pds_");
        let record = DeviceSessionRecord {
            id: uuid::Uuid::now_v7(),
            device_id: device.id,
            user_id: user.id,
            created_at: now,
            renewed_at: now,
            expires_at: (now + self.device_session_ttl).min(now + DEVICE_SESSION_MAX),
            absolute_expires_at: now + DEVICE_SESSION_MAX,
            mfa_at,
            provider: provider.unwrap_or("local").to_owned(),
            ended_at: None,
        };
        store::insert_device_session(c, &record, &secrets::hash(&secret)).await?;
        Ok(DeviceSession {
            device_id: device.id,
            user_id: user.id,
            user_name: user.email.clone(),
            session: secret,
            session_expires_at: record.expires_at,
        })
    }

    /// The valid session behind a daemon's secret, or why there is none.
    pub async fn device_session(
        &self,
        device: DeviceId,
        secret: &str,
    ) -> Result<std::result::Result<ClientContext, SessionProblem>> {
        let now = now();
        let mut c = self.store.conn().await?;
        let Some(session) = store::device_session_by_token(&mut c, &secrets::hash(secret)).await?
        else {
            return Ok(Err(SessionProblem::Ended));
        };
        if session.device_id != device
            || session.ended_at.is_some()
            || session.expires_at <= now
            || session.absolute_expires_at <= now
        {
            return Ok(Err(SessionProblem::Ended));
        }
        let (Some(user), Some(device)) = (
            store::get_user(&mut c, session.user_id).await?,
            store::get_device(&mut c, session.device_id).await?,
        ) else {
            return Ok(Err(SessionProblem::Ended));
        };
        if user.disabled {
            return Ok(Err(SessionProblem::UserDisabled));
        }
        if device.disabled {
            return Ok(Err(SessionProblem::DeviceDisabled));
        }
        Ok(Ok(ClientContext {
            session,
            user,
            device,
        }))
    }

    /// Checks that a connected client's session is still valid (not ended or expired, user
    /// and device enabled), refreshing what the context knows of them.
    pub async fn device_session_by_id(
        &self,
        ctx: &mut ClientContext,
    ) -> Result<std::result::Result<(), SessionProblem>> {
        let now = now();
        let mut c = self.store.conn().await?;
        let Some(session) = store::device_session_by_id(&mut c, ctx.session.id).await? else {
            return Ok(Err(SessionProblem::Ended));
        };
        if session.ended_at.is_some()
            || session.expires_at <= now
            || session.absolute_expires_at <= now
        {
            return Ok(Err(SessionProblem::Ended));
        }
        let (Some(user), Some(device)) = (
            store::get_user(&mut c, session.user_id).await?,
            store::get_device(&mut c, session.device_id).await?,
        ) else {
            return Ok(Err(SessionProblem::Ended));
        };
        if user.disabled {
            return Ok(Err(SessionProblem::UserDisabled));
        }
        if device.disabled {
            return Ok(Err(SessionProblem::DeviceDisabled));
        }
        ctx.session = session;
        ctx.user = user;
        ctx.device = device;
        Ok(Ok(()))
    }

    /// Replaces a session's secret and moves its expiry (never past its absolute end).
    pub async fn renew_device_session(
        &self,
        ctx: &mut ClientContext,
    ) -> Result<(String, Timestamp)> {
        let now = now();
        let secret = secrets::generate("pds_");
        let expires_at = (now + self.device_session_ttl).min(ctx.session.absolute_expires_at);
        let mut tx = self.store.begin().await?;
        if !store::renew_device_session(
            &mut tx,
            ctx.session.id,
            &secrets::hash(&secret),
            now,
            expires_at,
        )
        .await?
        {
            return Err(ServiceError::Unauthorized("the device session has ended"));
        }
        tx.commit().await?;
        ctx.session.expires_at = expires_at;
        ctx.session.renewed_at = now;
        Ok((secret, expires_at))
    }

    /// Ends a device session at the daemon's sign-out, revoking the device's grants.
    pub async fn sign_out_device(&self, ctx: &ClientContext) -> Result<()> {
        let actor = ctx.actor();
        let now = now();
        let mut tx = self.store.begin().await?;
        store::end_device_sessions(&mut tx, Some(ctx.device.id), None, now, "signed out").await?;
        self.audit(
            &mut tx,
            &actor,
            "device.signed_out",
            subject("device", ctx.device.id),
            serde_json::json!({ "user": ctx.user.id }),
        )
        .await?;
        let revoked = self
            .revoke_in(
                &mut tx,
                &actor,
                GrantFilter::for_device(ctx.device.id),
                "signed out",
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        self.announce_sessions_ended(Some(ctx.device.id), None, "signed out");
        Ok(())
    }

    /// Ends the device sessions of a device or user in `tx` (a disabled or deleted user or
    /// device); call [`Service::announce_sessions_ended`] after committing.
    pub(crate) async fn end_device_sessions_in(
        &self,
        c: &mut store::Conn,
        device: Option<DeviceId>,
        user: Option<UserId>,
        reason: &str,
    ) -> Result<u64> {
        Ok(store::end_device_sessions(c, device, user, now(), reason).await?)
    }

    /// Tells connected clients that their sessions ended.
    pub(crate) fn announce_sessions_ended(
        &self,
        device: Option<DeviceId>,
        user: Option<UserId>,
        reason: &str,
    ) {
        self.bus.sessions_ended(device, user, reason);
    }

    /// The resources a user may reach: those an enabled allow policy gives one of their
    /// groups. Conditions (time, posture, MFA) are checked when access is requested; the
    /// client routes all of them.
    pub async fn client_resources(&self, user: UserId) -> Result<Vec<ClientResource>> {
        let mut c = self.store.conn().await?;
        let groups = store::groups_of_user(&mut c, user).await?;
        let policies = store::list_policies(&mut c).await?;
        let wanted: std::collections::HashSet<ResourceId> = policies
            .iter()
            .filter(|p| {
                !p.disabled && p.action == PolicyAction::Allow && groups.contains(&p.group_id)
            })
            .map(|p| p.resource_id)
            .collect();
        Ok(store::list_resources(&mut c, None)
            .await?
            .into_iter()
            .filter(|r| wanted.contains(&r.id))
            .map(|r| ClientResource {
                id: r.id,
                name: r.name,
                addresses: r.addresses,
                ports: r.ports,
            })
            .collect())
    }

    /// The process names posture profiles look for, so clients report on them.
    pub async fn posture_processes(&self) -> Result<Vec<String>> {
        let mut c = self.store.conn().await?;
        let mut names: Vec<String> = store::list_profiles(&mut c)
            .await?
            .into_iter()
            .flat_map(|p| p.required_processes)
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The device's tunnel address, leased for as long as its session lasts.
    pub async fn client_tunnel_address(&self, ctx: &ClientContext) -> Result<IpAddr> {
        let now = now();
        let mut tx = self.store.begin().await?;
        let address = self
            .allocate_tunnel_address(&mut tx, ctx.device.id, ctx.session.expires_at, now)
            .await?;
        store::touch_device(&mut tx, ctx.device.id, now).await?;
        tx.commit().await?;
        Ok(address)
    }

    /// A connected client's own access request: the user and MFA come from its session,
    /// the posture from the signed report it sent along (when it sent one).
    pub async fn client_request_access(
        &self,
        ctx: &ClientContext,
        resource: ResourceId,
        public_key: &str,
        posture: Option<&SignedReport>,
        source: IpAddr,
    ) -> Result<AccessOutcome> {
        if let Some(report) = posture {
            self.accept_posture(ctx, report).await?;
        }
        let request = DecisionRequest {
            user_id: ctx.user.id,
            device_id: ctx.device.id,
            resource_id: resource,
            source: source.to_string(),
            identity_provider: Some(ctx.session.provider.clone()),
            last_mfa_at: ctx.session.mfa_at,
        };
        self.issue_access(&ctx.actor(), request, public_key).await
    }

    /// A device releases a grant it no longer needs.
    pub async fn release_grant(&self, ctx: &ClientContext, grant: GrantId) -> Result<()> {
        let mut tx = self.store.begin().await?;
        let revoked = self
            .revoke_in(
                &mut tx,
                &ctx.actor(),
                GrantFilter {
                    grant: Some(grant),
                    device: Some(ctx.device.id),
                    ..Default::default()
                },
                "released by the device",
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        Ok(())
    }

    /// Accepts a signed posture report: signed by this device's key, for this device,
    /// fresh, and newer than the last one accepted. Then re-evaluates every live grant of
    /// the device and revokes those it no longer passes, with the reasons.
    pub async fn accept_posture(
        &self,
        ctx: &ClientContext,
        signed: &SignedReport,
    ) -> Result<model::PostureReport> {
        let now = now();
        let report = signed
            .verify(&ctx.device.public_key, ctx.device.id, now, POSTURE_MAX_SKEW)
            .map_err(|e| invalid("posture", e.to_string()))?;
        let mut tx = self.store.begin().await?;
        if !store::advance_posture_seq(&mut tx, ctx.device.id, signed.seq).await? {
            return Err(invalid(
                "posture",
                "the posture report is a replay (its sequence number is not newer)",
            ));
        }
        store::set_posture(&mut tx, ctx.device.id, &report).await?;
        let changed = self
            .reevaluate_in(
                &mut tx,
                &ctx.actor(),
                &Cause::new("posture.reported", "device", ctx.device.id),
                GrantFilter::for_device(ctx.device.id),
            )
            .await?;
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        self.bus.emit(ControlEvent::PostureChanged(ctx.device.id));
        Ok(report)
    }

    /// Why a grant was revoked, as recorded; `None` when it was not.
    pub(crate) async fn grant_revoke_reason(&self, grant: GrantId) -> Result<Option<String>> {
        let mut c = self.store.conn().await?;
        Ok(store::grant_revoke_reason(&mut c, grant).await?)
    }

    /// The ids of a device's live grants.
    pub(crate) async fn live_grant_ids(
        &self,
        device: DeviceId,
    ) -> Result<std::collections::HashSet<GrantId>> {
        let mut c = self.store.conn().await?;
        let filter = GrantFilter {
            device: Some(device),
            live_at: Some(now()),
            ..Default::default()
        };
        Ok(store::list_grants(&mut c, &filter)
            .await?
            .into_iter()
            .map(|g| g.id)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_are_readable_and_normalized() {
        let code = user_code();
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
        assert!(
            code.chars()
                .all(|c| c == '-' || "BCDFGHJKLMNPQRSTVWXZ".contains(c))
        );
        assert_eq!(
            normalize_user_code(&code.to_lowercase().replace('-', " ")),
            code
        );
        assert_ne!(user_code(), user_code());
    }

    #[test]
    fn an_enrolled_device_names_each_field_once() {
        let device = Device {
            id: DeviceId::new(),
            user_id: UserId::new(),
            name: "build".into(),
            public_key: "pk".into(),
            disabled: false,
            created_at: Timestamp::UNIX_EPOCH,
            last_seen_at: None,
        };
        let enrolled = EnrolledDevice {
            device_id: device.id,
            device,
            user_name: "ann@example.com".into(),
            session: "pds_secret".into(),
            session_expires_at: Timestamp::UNIX_EPOCH,
        };
        let text = serde_json::to_string(&enrolled).unwrap();
        assert_eq!(text.matches("\"user_id\"").count(), 1, "{text}");
        assert!(!format!("{enrolled:?}").contains("pds_secret"));
    }
}
