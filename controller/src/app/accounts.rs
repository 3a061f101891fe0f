//! Local accounts and web sessions: argon2id passwords, TOTP (RFC 6238) with replay
//! protection, one-time recovery codes, the temporary lockout after repeated failures, and
//! the browser's session behind the `__Host-postern_session` cookie. Every function that
//! depends on time takes `now`, so tests can move the clock.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use jiff::{SignedDuration, Timestamp};
use model::{User, UserId};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::kernel::{Actor, Service, ServiceError, invalid, subject};
use super::lockout::{LOCKOUT, MAX_FAILED_SIGN_INS, UnknownOutcome};
use crate::secrets;
use crate::totp;
use store::{self, LocalCredentials, Tx, WebSession};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The name of the web session cookie (the `__Host-` prefix makes browsers insist on
/// `Secure`, `Path=/` and no `Domain`).
pub const SESSION_COOKIE: &str = "__Host-postern_session";
/// How long a web session may go unused before it ends.
pub const SESSION_IDLE_TIMEOUT: SignedDuration = SignedDuration::from_mins(30);
/// How long a web session lasts at most, however much it is used.
pub const SESSION_LIFETIME: SignedDuration = SignedDuration::from_hours(12);
/// How many recovery codes a user gets at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// The shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The identity provider name of local accounts.
pub const LOCAL_PROVIDER: &str = "local";

const WRONG_CREDENTIALS: &str = "the e-mail address or password is wrong";
const MFA_REQUIRED: &str =
    "enter the code from your authenticator app (totp) or a recovery code (recovery_code)";
const WRONG_CODE: &str = "the code is wrong or was already used";
const SESSION_INVALID: &str = "the session is unknown, ended or expired: sign in again";

// ---------------------------------------------------------------- inputs and outputs

/// A sign-in with a local account.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginInput {
    /// The account's e-mail address.
    pub email: String,
    /// Its password.
    pub password: String,
    /// The current code from the authenticator app, when TOTP is set up.
    #[serde(default)]
    pub totp: Option<String>,
    /// A one-time recovery code instead of the TOTP code.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

impl std::fmt::Debug for LoginInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginInput")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// A password an admin sets for a user.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordInput {
    /// The new password (at least 12 characters).
    pub password: String,
}

impl std::fmt::Debug for PasswordInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordInput { .. }")
    }
}

/// A signed-in user's change of their own password.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The password now.
    pub current_password: String,
    /// The new password (at least 12 characters).
    pub new_password: String,
}

impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordChange { .. }")
    }
}

/// A TOTP code.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    /// The current 6-digit code from the authenticator app.
    pub code: String,
}

impl std::fmt::Debug for TotpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpCode { .. }")
    }
}

/// A new TOTP secret to put into an authenticator app, shown once. It takes effect when
/// confirmed with a code.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TotpEnrollment {
    /// The secret, base32, for typing in by hand.
    pub secret: String,
    /// The `otpauth://` URI authenticator apps read.
    pub otpauth_uri: String,
    /// The URI as a QR code (SVG).
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpEnrollment { .. }")
    }
}

/// One-time recovery codes, shown once; each replaces one TOTP code once.
#[derive(Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// The codes.
    pub codes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecoveryCodes({} codes)", self.codes.len())
    }
}

/// The signed-in user and their session.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Me {
    /// The user.
    pub user: User,
    /// The web session.
    pub session: WebSession,
    /// The identity provider of their last sign-in (`local` for a local account).
    pub identity_provider: Option<String>,
    /// When they last completed MFA.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_mfa_at: Option<Timestamp>,
    /// Whether TOTP is set up for their local account.
    pub totp_enabled: bool,
    /// How many unused recovery codes they have.
    pub recovery_codes_left: i64,
}

/// A session made by a sign-in: the cookie's secret value and who signed in.
#[derive(Clone)]
pub struct NewSession {
    /// The session secret for the cookie; kept by the controller only as a hash.
    pub token: String,
    /// Who signed in.
    pub me: Me,
}

impl std::fmt::Debug for NewSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSession")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

/// A request's valid web session and its user.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The user.
    pub user: User,
    /// Their session.
    pub session: WebSession,
}

impl SignedIn {
    /// The actor for audit records and permission checks.
    pub fn actor(&self) -> Actor {
        Actor {
            id: subject("user", self.user.id),
            name: self.user.email.clone(),
            role: self.user.role,
        }
    }
}

// ---------------------------------------------------------------- helpers

fn check_password(field: &str, password: &str) -> Result<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(invalid(
            field,
            format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        ));
    }
    if password.len() > 1024 {
        return Err(invalid(field, "must be at most 1024 bytes"));
    }
    Ok(())
}

async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| ServiceError::PasswordHashing(e.to_string()))
    })
    .await
    .map_err(|e| ServiceError::PasswordHashing(e.to_string()))?
}

/// Checks a password against a PHC string; without one, spends the same effort against a
/// hash of nothing, so an unknown account takes as long as a wrong password.
async fn verify_password(password: String, phc: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        static DUMMY: OnceLock<String> = OnceLock::new();
        let dummy = DUMMY.get_or_init(|| {
            let salt = SaltString::generate(&mut OsRng);
            Argon2::default()
                .hash_password(b"no such account", &salt)
                .map(|h| h.to_string())
                .unwrap_or_default()
        });
        let (phc, real) = match &phc {
            Some(p) => (p.as_str(), true),
            None => (dummy.as_str(), false),
        };
        let ok = PasswordHash::new(phc).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
        ok && real
    })
    .await
    .unwrap_or(false)
}

fn recovery_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 10];
    OsRng.fill_bytes(&mut bytes);
    let chars: String = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..5], &chars[5..])
}

fn hash_recovery_code(user: UserId, code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    secrets::hash(&format!("recovery:{user}:{normal}"))
}

fn otpauth_uri(email: &str, secret: &str) -> String {
    let mut label = String::new();
    for b in email.bytes() {
        if b.is_ascii_alphanumeric() || b"@.-_~+".contains(&b) {
            label.push(b as char);
        } else {
            label.push_str(&format!("%{b:02X}"));
        }
    }
    format!("otpauth://totp/Postern:{label}?secret={secret}&issuer=Postern")
}

fn qr_svg(data: &str) -> Result<String> {
    let code =
        qrcode::QrCode::new(data.as_bytes()).map_err(|e| ServiceError::QrCode(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .build())
}

fn locked_error(until: Timestamp) -> ServiceError {
    ServiceError::Locked { until }
}

fn anonymous() -> Actor {
    Actor {
        id: "anonymous".into(),
        name: "sign-in".into(),
        role: model::Role::User,
    }
}

fn user_actor(user: &User) -> Actor {
    Actor {
        id: subject("user", user.id),
        name: user.email.clone(),
        role: user.role,
    }
}

fn unix_secs(t: Timestamp) -> i64 {
    t.as_second()
}

/// The time step of `code` for `secret` that is later than `last`, if any; `Err(true)` when
/// the code is right but already used (a replay), `Err(false)` when it is wrong.
fn fresh_step(
    secret: &str,
    code: &str,
    last: Option<i64>,
    now: Timestamp,
) -> std::result::Result<i64, bool> {
    let Some(key) = totp::base32_decode(secret) else {
        return Err(false);
    };
    let steps = totp::matching_steps(&key, code, unix_secs(now));
    if steps.is_empty() {
        return Err(false);
    }
    steps
        .into_iter()
        .find(|s| last.is_none_or(|l| *s > l))
        .ok_or(true)
}

// ---------------------------------------------------------------- the services

impl Service {
    async fn credentials(&self, user: UserId) -> Result<Option<LocalCredentials>> {
        let creds = store::get_credentials(&mut *self.store.conn().await?, user).await?;
        creds.map(|c| self.open_credentials(c)).transpose()
    }

    /// Opens the sealed TOTP secret of stored credentials. A secret that does not open (the
    /// secret key is not the one it was sealed with) fails closed: no sign-in with it.
    fn open_credentials(&self, mut creds: LocalCredentials) -> Result<LocalCredentials> {
        if let Some(stored) = creds.totp_secret.take() {
            let secret = self
                .secret_key
                .open(&crate::crypto::totp_context(creds.user_id), &stored)
                .map_err(|e| {
                    tracing::error!(user = %creds.user_id, error = %e, "opening a TOTP secret");
                    ServiceError::SecretUnreadable {
                        what: "this account's authenticator secret".into(),
                        error: e.to_string(),
                    }
                })?;
            creds.totp_secret = Some(secret);
        }
        Ok(creds)
    }

    /// Records a failed sign-in of a known user inside `tx`, locks the account at the limit,
    /// commits, and returns the error to answer with.
    async fn sign_in_failed(
        &self,
        mut tx: Tx,
        user: &User,
        reason: &str,
        now: Timestamp,
        message: &'static str,
    ) -> ServiceError {
        let result: Result<ServiceError> = async {
            let actor = user_actor(user);
            let failures = store::add_failed_attempt(&mut tx, user.id).await?;
            self.audit(
                &mut tx,
                &actor,
                "auth.login_failed",
                subject("user", user.id),
                serde_json::json!({ "provider": LOCAL_PROVIDER, "reason": reason, "failed_attempts": failures }),
            )
            .await?;
            let error = if failures >= MAX_FAILED_SIGN_INS {
                let until = now.checked_add(LOCKOUT).unwrap_or(Timestamp::MAX);
                store::lock_account(&mut tx, user.id, until).await?;
                self.audit(
                    &mut tx,
                    &actor,
                    "auth.locked",
                    subject("user", user.id),
                    serde_json::json!({ "until": until, "failed_attempts": failures }),
                )
                .await?;
                tracing::info!(user = %user.id, "account locked after repeated failed sign-ins");
                locked_error(until)
            } else {
                ServiceError::Unauthorized(message)
            };
            tx.commit().await?;
            Ok(error)
        }
        .await;
        result.unwrap_or_else(|e| e)
    }

    async fn audit_anonymous(
        &self,
        email: &str,
        kind: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.store.begin().await?;
        self.audit(
            &mut tx,
            &anonymous(),
            kind,
            format!("email:{email}"),
            details,
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Answers a sign-in for an address without a local account exactly as a wrong password
    /// for a real one, lockout included.
    async fn unknown_sign_in(&self, email: &str, now: Timestamp) -> ServiceError {
        let reason = "unknown account or no local password";
        let result: Result<ServiceError> = async {
            match self.unknown_sign_ins.fail(email, now) {
                UnknownOutcome::StillLocked(until) => {
                    self.audit_anonymous(
                        email,
                        "auth.login_failed",
                        serde_json::json!({ "provider": LOCAL_PROVIDER, "reason": "locked", "locked_until": until }),
                    )
                    .await?;
                    Ok(locked_error(until))
                }
                UnknownOutcome::Failed => {
                    self.audit_anonymous(
                        email,
                        "auth.login_failed",
                        serde_json::json!({ "provider": LOCAL_PROVIDER, "reason": reason }),
                    )
                    .await?;
                    Ok(ServiceError::Unauthorized(WRONG_CREDENTIALS))
                }
                UnknownOutcome::Locked(until) => {
                    self.audit_anonymous(
                        email,
                        "auth.login_failed",
                        serde_json::json!({ "provider": LOCAL_PROVIDER, "reason": reason }),
                    )
                    .await?;
                    self.audit_anonymous(
                        email,
                        "auth.locked",
                        serde_json::json!({ "until": until, "failed_attempts": MAX_FAILED_SIGN_INS }),
                    )
                    .await?;
                    Ok(locked_error(until))
                }
            }
        }
        .await;
        result.unwrap_or_else(|e| e)
    }

    /// Signs in with a local account now.
    pub async fn login(&self, input: LoginInput) -> Result<NewSession> {
        self.login_at(input, super::kernel::now()).await
    }

    /// Signs in with a local account at `now`: password, then (when TOTP is set up) a fresh
    /// TOTP code or an unused recovery code. Makes a new web session.
    pub async fn login_at(&self, input: LoginInput, now: Timestamp) -> Result<NewSession> {
        let email = input.email.trim().to_lowercase();
        let (user, creds) = {
            let mut c = self.store.conn().await?;
            let user = store::user_by_email(&mut c, &email).await?;
            let creds = match &user {
                Some(u) => store::get_credentials(&mut c, u.id).await?,
                None => None,
            };
            let creds = creds.map(|c| self.open_credentials(c)).transpose()?;
            (user, creds)
        };
        let password_hash = creds.as_ref().and_then(|c| c.password_hash.clone());
        let (Some(user), Some(creds), Some(_)) = (user, creds, password_hash.as_ref()) else {
            if self.unknown_sign_ins.locked_until(&email, now).is_none() {
                verify_password(input.password, None).await;
            }
            return Err(self.unknown_sign_in(&email, now).await);
        };
        if let Some(until) = creds.locked_until.filter(|u| *u > now) {
            let mut tx = self.store.begin().await?;
            self.audit(
                &mut tx,
                &user_actor(&user),
                "auth.login_failed",
                subject("user", user.id),
                serde_json::json!({ "provider": LOCAL_PROVIDER, "reason": "locked", "locked_until": until }),
            )
            .await?;
            tx.commit().await?;
            return Err(locked_error(until));
        }
        if !verify_password(input.password, password_hash).await {
            let tx = self.store.begin().await?;
            return Err(self
                .sign_in_failed(tx, &user, "wrong password", now, WRONG_CREDENTIALS)
                .await);
        }
        if user.disabled {
            self.audit_anonymous(
                &email,
                "auth.login_failed",
                serde_json::json!({ "provider": LOCAL_PROVIDER, "reason": "user disabled" }),
            )
            .await?;
            return Err(ServiceError::Unauthorized("this account is disabled"));
        }

        let mut tx = self.store.begin().await?;
        let mfa = if creds.totp_confirmed {
            match (input.totp.as_deref(), input.recovery_code.as_deref()) {
                (Some(code), _) => {
                    let secret = creds.totp_secret.as_deref().unwrap_or_default();
                    match fresh_step(secret, code, creds.totp_last_step, now) {
                        Ok(step) if store::accept_totp_step(&mut tx, user.id, step).await? => {
                            "totp"
                        }
                        Ok(_) | Err(true) => {
                            return Err(self
                                .sign_in_failed(tx, &user, "replayed TOTP code", now, WRONG_CODE)
                                .await);
                        }
                        Err(false) => {
                            return Err(self
                                .sign_in_failed(tx, &user, "wrong TOTP code", now, WRONG_CODE)
                                .await);
                        }
                    }
                }
                (None, Some(code)) => {
                    let hash = hash_recovery_code(user.id, code);
                    if !store::use_recovery_code(&mut tx, user.id, &hash, now).await? {
                        return Err(self
                            .sign_in_failed(
                                tx,
                                &user,
                                "wrong or used recovery code",
                                now,
                                WRONG_CODE,
                            )
                            .await);
                    }
                    "recovery_code"
                }
                (None, None) => return Err(ServiceError::Unauthorized(MFA_REQUIRED)),
            }
        } else {
            "none"
        };
        let mfa_at = (mfa != "none").then_some(now);

        store::clear_failures(&mut tx, user.id).await?;
        let token = secrets::generate("pws_");
        let session = WebSession {
            id: uuid::Uuid::now_v7(),
            user_id: user.id,
            created_at: now,
            last_seen_at: now,
            expires_at: now.checked_add(SESSION_LIFETIME).unwrap_or(Timestamp::MAX),
            mfa_at,
            ended_at: None,
            provider: Some(LOCAL_PROVIDER.to_owned()),
        };
        store::insert_web_session(&mut tx, &session, &secrets::hash(&token)).await?;
        store::record_sign_in(&mut tx, user.id, LOCAL_PROVIDER, mfa_at).await?;
        self.audit(
            &mut tx,
            &user_actor(&user),
            "auth.login_succeeded",
            subject("user", user.id),
            serde_json::json!({ "provider": LOCAL_PROVIDER, "mfa": mfa, "session": session.id }),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(user = %user.id, session = %session.id, mfa, "signed in");
        let me = self
            .me(&SignedIn {
                user,
                session: session.clone(),
            })
            .await?;
        Ok(NewSession { token, me })
    }

    /// The valid session behind a cookie value now.
    pub async fn web_session(&self, token: &str) -> Result<SignedIn> {
        self.web_session_at(token, super::kernel::now()).await
    }

    /// The valid session behind a cookie value at `now`, marked used. A session past its
    /// idle or absolute timeout, or of a disabled user, is ended.
    pub async fn web_session_at(&self, token: &str, now: Timestamp) -> Result<SignedIn> {
        let mut c = self.store.conn().await?;
        let Some(mut session) = store::web_session_by_token(&mut c, &secrets::hash(token)).await?
        else {
            return Err(ServiceError::Unauthorized(SESSION_INVALID));
        };
        if session.ended_at.is_some() {
            return Err(ServiceError::Unauthorized(SESSION_INVALID));
        }
        let user = store::get_user(&mut c, session.user_id).await?;
        drop(c);
        let idle_until = session
            .last_seen_at
            .checked_add(SESSION_IDLE_TIMEOUT)
            .unwrap_or(Timestamp::MAX);
        let end_reason = match &user {
            _ if now >= session.expires_at => Some("expired"),
            _ if now >= idle_until => Some("idle"),
            None => Some("user deleted"),
            Some(u) if u.disabled => Some("user disabled"),
            Some(_) => None,
        };
        if let Some(reason) = end_reason {
            let mut tx = self.store.begin().await?;
            if store::end_web_session(&mut tx, session.id, now, reason).await? {
                self.audit(
                    &mut tx,
                    &Actor::system(),
                    "auth.session_ended",
                    subject("user", session.user_id),
                    serde_json::json!({ "session": session.id, "reason": reason }),
                )
                .await?;
            }
            tx.commit().await?;
            return Err(ServiceError::Unauthorized(SESSION_INVALID));
        }
        let Some(user) = user else {
            return Err(ServiceError::Unauthorized(SESSION_INVALID));
        };
        store::touch_web_session(&mut *self.store.conn().await?, session.id, now).await?;
        if now > session.last_seen_at {
            session.last_seen_at = now;
        }
        Ok(SignedIn { user, session })
    }

    /// Who is signed in.
    pub async fn me(&self, s: &SignedIn) -> Result<Me> {
        let mut c = self.store.conn().await?;
        let (identity_provider, last_mfa_at) = store::last_sign_in(&mut c, s.user.id).await?;
        let totp_enabled = store::get_credentials(&mut c, s.user.id)
            .await?
            .is_some_and(|c| c.totp_confirmed);
        let recovery_codes_left = store::unused_recovery_codes(&mut c, s.user.id).await?;
        Ok(Me {
            user: s.user.clone(),
            session: s.session.clone(),
            identity_provider,
            last_mfa_at,
            totp_enabled,
            recovery_codes_left,
        })
    }

    /// Ends the session (sign-out).
    pub async fn logout(&self, s: &SignedIn) -> Result<()> {
        let mut tx = self.store.begin().await?;
        store::end_web_session(&mut tx, s.session.id, super::kernel::now(), "signed out").await?;
        self.audit(
            &mut tx,
            &s.actor(),
            "auth.logout",
            subject("user", s.user.id),
            serde_json::json!({ "session": s.session.id }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Sets or resets a user's local password (admins only). Clears a lockout and ends the
    /// user's web sessions.
    pub async fn set_password(
        &self,
        actor: &Actor,
        user: UserId,
        input: PasswordInput,
    ) -> Result<()> {
        Self::require_admin(actor)?;
        check_password("password", &input.password)?;
        store::get_user(&mut *self.store.conn().await?, user)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let hash = hash_password(input.password).await?;
        let now = super::kernel::now();
        let mut tx = self.store.begin().await?;
        store::get_user(&mut tx, user)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        store::set_password_hash(&mut tx, user, &hash, now).await?;
        let ended =
            store::end_user_web_sessions(&mut tx, user, None, now, "password reset").await?;
        self.audit(
            &mut tx,
            actor,
            "user.password_set",
            subject("user", user),
            serde_json::json!({ "sessions_ended": ended }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Changes the signed-in user's own password; their other web sessions end.
    pub async fn change_password(&self, s: &SignedIn, input: PasswordChange) -> Result<()> {
        check_password("new_password", &input.new_password)?;
        let hash = self
            .credentials(s.user.id)
            .await?
            .and_then(|c| c.password_hash);
        let now = super::kernel::now();
        if !verify_password(input.current_password, hash).await {
            let tx = self.store.begin().await?;
            return Err(self
                .sign_in_failed(
                    tx,
                    &s.user,
                    "wrong current password at password change",
                    now,
                    "the current password is wrong",
                )
                .await);
        }
        let new_hash = hash_password(input.new_password).await?;
        let mut tx = self.store.begin().await?;
        store::set_password_hash(&mut tx, s.user.id, &new_hash, now).await?;
        let ended = store::end_user_web_sessions(
            &mut tx,
            s.user.id,
            Some(s.session.id),
            now,
            "password changed",
        )
        .await?;
        self.audit(
            &mut tx,
            &s.actor(),
            "auth.password_changed",
            subject("user", s.user.id),
            serde_json::json!({ "sessions_ended": ended }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts TOTP enrollment for the signed-in user: a new secret, its otpauth URI and QR
    /// code. Nothing changes at sign-in until it is confirmed.
    pub async fn start_totp(&self, s: &SignedIn) -> Result<TotpEnrollment> {
        if self
            .credentials(s.user.id)
            .await?
            .is_some_and(|c| c.totp_confirmed)
        {
            return Err(ServiceError::Conflict {
                field: None,
                message: "TOTP is already set up; an admin can reset it".into(),
            });
        }
        let mut key = [0u8; 20];
        OsRng.fill_bytes(&mut key);
        let secret = totp::base32_encode(&key);
        let otpauth_uri = otpauth_uri(&s.user.email, &secret);
        let qr_svg = qr_svg(&otpauth_uri)?;
        let mut tx = self.store.begin().await?;
        let sealed = self
            .secret_key
            .seal(&crate::crypto::totp_context(s.user.id), &secret);
        store::set_pending_totp(&mut tx, s.user.id, &sealed, super::kernel::now()).await?;
        self.audit(
            &mut tx,
            &s.actor(),
            "auth.totp_enrollment_started",
            subject("user", s.user.id),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(TotpEnrollment {
            secret,
            otpauth_uri,
            qr_svg,
        })
    }

    /// Confirms TOTP enrollment with a current code at `now`, and issues recovery codes.
    pub async fn confirm_totp_at(
        &self,
        s: &SignedIn,
        input: TotpCode,
        now: Timestamp,
    ) -> Result<RecoveryCodes> {
        let creds = self.credentials(s.user.id).await?;
        let Some(secret) = creds
            .as_ref()
            .filter(|c| !c.totp_confirmed)
            .and_then(|c| c.totp_secret.clone())
        else {
            return Err(ServiceError::Conflict {
                field: None,
                message: "no TOTP enrollment is pending: start one first".into(),
            });
        };
        let step = fresh_step(&secret, &input.code, None, now)
            .map_err(|_| invalid("code", "the code is wrong; check the clock of your device"))?;
        let mut tx = self.store.begin().await?;
        if !store::confirm_totp(&mut tx, s.user.id, step, now).await? {
            return Err(ServiceError::Conflict {
                field: None,
                message: "no TOTP enrollment is pending: start one first".into(),
            });
        }
        let codes = self.issue_recovery_codes(&mut tx, s.user.id, now).await?;
        store::record_mfa(&mut tx, s.user.id, now).await?;
        store::set_web_session_mfa(&mut tx, s.session.id, now).await?;
        self.audit(
            &mut tx,
            &s.actor(),
            "auth.totp_confirmed",
            subject("user", s.user.id),
            serde_json::json!({ "recovery_codes": codes.codes.len() }),
        )
        .await?;
        tx.commit().await?;
        Ok(codes)
    }

    async fn issue_recovery_codes(
        &self,
        tx: &mut Tx,
        user: UserId,
        now: Timestamp,
    ) -> Result<RecoveryCodes> {
        let codes: Vec<String> = (0..RECOVERY_CODE_COUNT).map(|_| recovery_code()).collect();
        let hashes: Vec<String> = codes.iter().map(|c| hash_recovery_code(user, c)).collect();
        store::replace_recovery_codes(tx, user, &hashes, now).await?;
        Ok(RecoveryCodes { codes })
    }

    /// Replaces the signed-in user's recovery codes, proven with a current TOTP code at `now`.
    pub async fn new_recovery_codes_at(
        &self,
        s: &SignedIn,
        input: TotpCode,
        now: Timestamp,
    ) -> Result<RecoveryCodes> {
        let creds = self
            .credentials(s.user.id)
            .await?
            .filter(|c| c.totp_confirmed)
            .ok_or_else(|| ServiceError::Conflict {
                field: None,
                message: "TOTP is not set up".into(),
            })?;
        let secret = creds.totp_secret.as_deref().unwrap_or_default();
        let step = fresh_step(secret, &input.code, creds.totp_last_step, now)
            .map_err(|_| invalid("code", WRONG_CODE))?;
        let mut tx = self.store.begin().await?;
        if !store::accept_totp_step(&mut tx, s.user.id, step).await? {
            return Err(invalid("code", WRONG_CODE));
        }
        let codes = self.issue_recovery_codes(&mut tx, s.user.id, now).await?;
        store::record_mfa(&mut tx, s.user.id, now).await?;
        store::set_web_session_mfa(&mut tx, s.session.id, now).await?;
        self.audit(
            &mut tx,
            &s.actor(),
            "auth.recovery_codes_created",
            subject("user", s.user.id),
            serde_json::json!({ "recovery_codes": codes.codes.len() }),
        )
        .await?;
        tx.commit().await?;
        Ok(codes)
    }

    /// Removes a user's TOTP and recovery codes (admins only), e.g. after a lost phone.
    pub async fn reset_totp(&self, actor: &Actor, user: UserId) -> Result<()> {
        Self::require_admin(actor)?;
        let now = super::kernel::now();
        let mut tx = self.store.begin().await?;
        store::get_user(&mut tx, user)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        store::clear_totp(&mut tx, user, now).await?;
        self.audit(
            &mut tx,
            actor,
            "user.totp_reset",
            subject("user", user),
            serde_json::json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends a user's web sessions inside `tx` and audits it (used when they are disabled).
    pub(crate) async fn end_sessions_in(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        user: UserId,
        reason: &str,
    ) -> Result<u64> {
        let ended =
            store::end_user_web_sessions(tx, user, None, super::kernel::now(), reason).await?;
        if ended > 0 {
            self.audit(
                tx,
                actor,
                "auth.sessions_ended",
                subject("user", user),
                serde_json::json!({ "sessions": ended, "reason": reason }),
            )
            .await?;
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests;
