//! OIDC single sign-on: identity providers configured by admins, and the authorization code
//! flow with PKCE (S256), `state` and `nonce` through the `openidconnect` crate. A sign-in
//! identifies a person by (issuer, subject), never by e-mail alone, refreshes the group
//! memberships the provider's group claim makes, records MFA from `amr`/`acr`, and ends in
//! the same web session a local sign-in makes. Every failure fails closed and is audited.
//! This module does IO (discovery, the token endpoint, the store).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::{SignedDuration, Timestamp};
use model::{Role, User, UserId};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::Deserialize;
use std::time::Instant;

use super::accounts::{Me, NewSession, SESSION_LIFETIME, SignedIn};
use super::kernel::{Actor, Service, ServiceError, invalid, subject};
use super::live::{Cause, Reevaluation};
use crate::crypto;
use crate::secrets;
use store::{
    self, GrantFilter, Identity, IdentityProvider, OidcIdentity, PendingLogin, WebSession,
};

type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The cookie that binds a sign-in in flight to the browser that started it (`SameSite=Lax`:
/// the provider's redirect back is a cross-site navigation).
pub const OIDC_BROWSER_COOKIE: &str = "__Host-postern_oidc";
/// How long a sign-in may take between the redirect to the provider and its callback.
pub const OIDC_LOGIN_TTL: SignedDuration = SignedDuration::from_mins(10);

/// `amr` values that mean more than one factor (RFC 8176).
const MFA_AMR: &[&str] = &[
    "mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris", "retina", "sc",
];

// ---------------------------------------------------------------- inputs and outputs

/// An identity provider to add.
#[derive(Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityProviderInput {
    /// A unique name (letters, digits, `-`, `_`), used in the sign-in URL.
    pub name: String,
    /// The issuer URL (discovery base). `https`, or `http` for a loopback address only.
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret; write-only, never returned or logged.
    pub client_secret: String,
    /// The ID token claim listing the user's groups (default `groups`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Scopes to request besides `openid` (default `email profile`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for IdentityProviderInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityProviderInput")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// What applying the config file's identity providers did, by provider name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityConfigReport {
    /// Providers made.
    pub created: Vec<String>,
    /// Providers changed (or taken over from the API).
    pub updated: Vec<String>,
    /// Providers already as the file says.
    pub unchanged: Vec<String>,
    /// Providers the file managed and no longer names, removed.
    pub deleted: Vec<String>,
}

/// An identity to link to a user.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIdentityInput {
    /// The identity's id (from `GET /users/{id}/identities` of the user it signs in as now).
    pub identity_id: uuid::Uuid,
}

/// A linked identity, and what became of the user it signed in as before.
#[derive(Debug, Clone, serde::Serialize, Deserialize, utoipa::ToSchema)]
pub struct IdentityLink {
    /// The identity, now this user's.
    pub identity: Identity,
    /// The user it signed in as before.
    #[schema(value_type = String)]
    pub previous_user_id: UserId,
    /// Whether that user can still sign in (another identity or a password); when not, their
    /// web sessions were ended, and an admin may delete them.
    pub previous_user_can_sign_in: bool,
}

/// Where to send the browser to sign in, and the browser binding for its cookie.
#[derive(Clone)]
pub struct OidcStart {
    /// The provider's authorization URL.
    pub redirect_to: String,
    /// The value of the `__Host-postern_oidc` cookie.
    pub browser_token: String,
}

impl std::fmt::Debug for OidcStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OidcStart { .. }")
    }
}

/// What the provider sent back to the callback.
#[derive(Clone, Default, Deserialize)]
pub struct OidcCallback {
    /// The authorization code.
    pub code: Option<String>,
    /// The state the sign-in started with.
    pub state: Option<String>,
    /// The issuer of the response (RFC 9207), when the provider says it.
    pub iss: Option<String>,
    /// An error from the provider.
    pub error: Option<String>,
    /// Its description.
    pub error_description: Option<String>,
}

impl std::fmt::Debug for OidcCallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcCallback")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// Why an OIDC sign-in failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    NoState,
    UnknownState,
    ForeignState,
    ExpiredState,
    ProviderMismatch,
    ProviderError,
    NoCode,
    Discovery,
    TokenExchange,
    NoIdToken,
    Expired,
    Audience,
    Issuer,
    Nonce,
    Signature,
    UnknownKey,
    Unsigned,
    InvalidToken,
    Disabled,
}

impl Failure {
    fn reason(self) -> &'static str {
        match self {
            Self::NoState => "missing state",
            Self::UnknownState => "unknown or already used state",
            Self::ForeignState => "state of another browser",
            Self::ExpiredState => "expired state",
            Self::ProviderMismatch => "state of another provider",
            Self::ProviderError => "provider returned an error",
            Self::NoCode => "missing code",
            Self::Discovery => "discovery failed",
            Self::TokenExchange => "code exchange failed",
            Self::NoIdToken => "no ID token",
            Self::Expired => "expired ID token",
            Self::Audience => "wrong audience",
            Self::Issuer => "wrong issuer",
            Self::Nonce => "nonce mismatch",
            Self::Signature => "bad signature",
            Self::UnknownKey => "unknown key id",
            Self::Unsigned => "unsigned ID token (alg none)",
            Self::InvalidToken => "invalid ID token",
            Self::Disabled => "user disabled",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Self::NoState | Self::UnknownState | Self::ForeignState | Self::ExpiredState => {
                "this sign-in link is unknown, expired, already used or was started in another browser: start the sign-in again"
            }
            Self::ProviderMismatch => "this sign-in was started with another identity provider",
            Self::ProviderError => "the identity provider refused the sign-in",
            Self::NoCode => "the identity provider sent no authorization code",
            Self::Discovery => "the identity provider cannot be reached or is misconfigured",
            Self::TokenExchange => {
                "the identity provider refused the authorization code (it may have been used already)"
            }
            Self::NoIdToken => "the identity provider sent no ID token",
            Self::Expired => "the identity provider's ID token has expired",
            Self::Audience => "the ID token was not issued for this controller (wrong audience)",
            Self::Issuer => "the ID token was not issued by this identity provider (wrong issuer)",
            Self::Nonce => "the ID token does not belong to this sign-in (nonce mismatch)",
            Self::Signature => "the ID token's signature is not valid",
            Self::UnknownKey => {
                "the ID token is signed with a key the identity provider does not publish"
            }
            Self::Unsigned => "the ID token is not signed",
            Self::InvalidToken => "the ID token is not valid",
            Self::Disabled => "this account is disabled",
        }
    }
}

fn classify(e: &openidconnect::ClaimsVerificationError) -> Failure {
    use openidconnect::{ClaimsVerificationError as C, SignatureVerificationError as S};
    match e {
        C::Expired(_) => Failure::Expired,
        C::InvalidAudience(_) => Failure::Audience,
        C::InvalidIssuer(_) => Failure::Issuer,
        C::InvalidNonce(_) => Failure::Nonce,
        C::SignatureVerification(S::NoSignature) => Failure::Unsigned,
        C::SignatureVerification(S::DisallowedAlg(_)) => Failure::Unsigned,
        C::SignatureVerification(S::NoMatchingKey) => Failure::UnknownKey,
        C::SignatureVerification(_) => Failure::Signature,
        _ => Failure::InvalidToken,
    }
}

// ---------------------------------------------------------------- helpers

pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Checks an issuer URL: `https`, or `http` on a loopback address (tests, local providers).
pub(super) fn check_issuer(issuer: &str) -> Result<()> {
    let rest = if let Some(r) = issuer.strip_prefix("https://") {
        r
    } else if let Some(r) = issuer.strip_prefix("http://") {
        let authority = r.split('/').next().unwrap_or_default();
        let host = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => &authority[..i],
            _ => authority,
        };
        if !is_loopback_host(host) {
            return Err(invalid(
                "issuer",
                "must use https (http is allowed for a loopback address only)",
            ));
        }
        r
    } else {
        return Err(invalid("issuer", "must be an https URL"));
    };
    if rest.is_empty() || rest.starts_with('/') || IssuerUrl::new(issuer.to_owned()).is_err() {
        return Err(invalid("issuer", "is not a valid URL"));
    }
    Ok(())
}

/// The claims a verified ID token carries beyond the standard ones, read from its payload.
fn payload(id_token: &str) -> serde_json::Value {
    id_token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn string_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// When the ID token shows a multi-factor authentication: at `auth_time`, or now.
fn mfa_time(claims: &serde_json::Value, now: Timestamp) -> Option<Timestamp> {
    let amr = string_list(&claims["amr"]);
    let acr = claims["acr"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mfa = amr.iter().any(|a| MFA_AMR.contains(&a.as_str()))
        || acr.contains("mfa")
        || acr.contains("multi-factor")
        || acr.contains("multifactor");
    if !mfa {
        return None;
    }
    let at = claims["auth_time"]
        .as_i64()
        .and_then(|s| Timestamp::from_second(s).ok())
        .filter(|t| *t <= now)
        .unwrap_or(now);
    Some(at)
}

fn sign_in_actor(provider: &str) -> Actor {
    Actor {
        id: "anonymous".into(),
        name: format!("oidc:{provider}"),
        role: Role::User,
    }
}

/// Admins and auditors may read users' identities.
pub(super) fn require_reader(actor: &Actor) -> Result<()> {
    match actor.role {
        Role::Admin | Role::Auditor => Ok(()),
        Role::User => Err(ServiceError::Forbidden(
            "this needs the admin or auditor role".into(),
        )),
    }
}

/// The refusal of an API change to a provider the config file manages.
pub(super) fn config_managed_error(name: &str) -> ServiceError {
    ServiceError::Conflict {
        field: None,
        message: format!(
            "the identity provider `{name}` is managed by the controller's config file \
             (--config): change or remove it there and restart the controller"
        ),
    }
}

/// Checks a provider's settings and makes the provider they describe (a new id).
pub(crate) fn checked_provider(
    input: IdentityProviderInput,
    now: Timestamp,
) -> Result<IdentityProvider> {
    let name = input.name.trim().to_owned();
    if !valid_name(&name) {
        return Err(invalid(
            "name",
            "must be 1 to 64 letters, digits, `-` or `_`",
        ));
    }
    let issuer = input.issuer.trim().to_owned();
    check_issuer(&issuer)?;
    if input.client_id.trim().is_empty() {
        return Err(invalid("client_id", "must not be empty"));
    }
    if input.client_secret.is_empty() {
        return Err(invalid("client_secret", "must not be empty"));
    }
    let groups_claim = input
        .groups_claim
        .map(|g| g.trim().to_owned())
        .unwrap_or_else(|| "groups".into());
    if groups_claim.is_empty() {
        return Err(invalid("groups_claim", "must not be empty"));
    }
    let scopes: Vec<String> = input
        .scopes
        .unwrap_or_else(|| vec!["email".into(), "profile".into()])
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && s != "openid")
        .collect();
    if scopes.iter().any(|s| {
        !s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    }) {
        return Err(invalid("scopes", "a scope may only hold printable ASCII"));
    }
    Ok(IdentityProvider {
        id: uuid::Uuid::now_v7(),
        name,
        issuer,
        client_id: input.client_id.trim().to_owned(),
        groups_claim,
        scopes,
        created_at: now,
        config_managed: false,
    })
}

// ---------------------------------------------------------------- the services

impl Service {
    /// A provider by name with its client secret, opened.
    async fn provider(&self, name: &str) -> Result<(IdentityProvider, String)> {
        let (provider, stored) = store::provider_by_name(&mut *self.store.conn().await?, name)
            .await?
            .ok_or(ServiceError::NotFound("identity provider"))?;
        let secret = self
            .secret_key
            .open(&crypto::client_secret_context(provider.id), &stored)
            .map_err(|e| {
                tracing::error!(provider = %provider.name, error = %e, "opening a client secret");
                ServiceError::SecretUnreadable {
                    what: format!("the client secret of identity provider `{}`", provider.name),
                    error: e.to_string(),
                }
            })?;
        Ok((provider, secret))
    }

    /// The stored (sealed) form of a provider's client secret.
    pub(crate) fn seal_client_secret(&self, provider: uuid::Uuid, secret: &str) -> String {
        self.secret_key
            .seal(&crypto::client_secret_context(provider), secret)
    }

    fn redirect_uri(&self, provider: &str) -> Result<RedirectUrl> {
        let base = self
            .public_url
            .as_deref()
            .ok_or_else(|| ServiceError::NoPublicUrl)?;
        RedirectUrl::new(format!(
            "{}/auth/oidc/{provider}/callback",
            base.trim_end_matches('/')
        ))
        .map_err(|e| ServiceError::BadPublicUrl(e.to_string()))
    }

    /// The provider's metadata and signing keys: from the cache while fresh, otherwise by
    /// discovery (which the cache then keeps for [`DISCOVERY_TTL`]).
    async fn discover(&self, provider: &IdentityProvider) -> Result<CoreProviderMetadata, Failure> {
        if let Some(m) = self.oidc_cache.get(provider, Instant::now()) {
            return Ok(m);
        }
        let issuer = IssuerUrl::new(provider.issuer.clone()).map_err(|_| Failure::Discovery)?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.oidc_http)
            .await
            .map_err(|e| {
                tracing::warn!(provider = %provider.name, error = %e, "OIDC discovery failed");
                Failure::Discovery
            })?;
        // The endpoints follow the issuer's rule: https, or http on a loopback address.
        let mut endpoints = vec![
            metadata.authorization_endpoint().url().as_str(),
            metadata.jwks_uri().url().as_str(),
        ];
        if let Some(token) = metadata.token_endpoint() {
            endpoints.push(token.url().as_str());
        }
        if endpoints.iter().any(|u| check_issuer(u).is_err()) {
            tracing::warn!(provider = %provider.name, "OIDC discovery names a plain-http endpoint off loopback");
            return Err(Failure::Discovery);
        }
        self.oidc_cache
            .put(provider, metadata.clone(), Instant::now());
        Ok(metadata)
    }

    /// Fetches the provider's signing keys again after an ID token named a key the cached set
    /// lacks (the provider rotated its keys), at most once per [`KEY_REFRESH_INTERVAL`]. The
    /// refreshed metadata, or `None` when a refresh is not allowed yet or failed.
    async fn refresh_keys(
        &self,
        provider: &IdentityProvider,
        metadata: CoreProviderMetadata,
    ) -> Option<CoreProviderMetadata> {
        if !self.oidc_cache.may_refresh_keys(provider, Instant::now()) {
            return None;
        }
        match openidconnect::JsonWebKeySet::fetch_async(metadata.jwks_uri(), &self.oidc_http).await
        {
            Ok(jwks) => {
                let metadata = metadata.set_jwks(jwks);
                self.oidc_cache.put_keys(provider, metadata.clone());
                Some(metadata)
            }
            Err(e) => {
                tracing::warn!(provider = %provider.name, error = %e, "refreshing the OIDC signing keys failed");
                None
            }
        }
    }

    async fn audit_oidc_failure(&self, provider: &str, failure: Failure, detail: Option<String>) {
        let result: Result<()> = async {
            let mut tx = self.store.begin().await?;
            self.audit(
                &mut tx,
                &sign_in_actor(provider),
                "auth.login_failed",
                format!("identity_provider:{provider}"),
                serde_json::json!({ "provider": provider, "reason": failure.reason(), "detail": detail }),
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "recording a failed OIDC sign-in");
        }
        tracing::info!(provider, reason = failure.reason(), "OIDC sign-in refused");
    }

    async fn fail(&self, provider: &str, failure: Failure, detail: Option<String>) -> ServiceError {
        self.audit_oidc_failure(provider, failure, detail).await;
        ServiceError::Unauthorized(failure.message())
    }

    /// Starts a sign-in with the named provider: discovery, then a new `state`, `nonce` and
    /// PKCE verifier kept server-side for [`OIDC_LOGIN_TTL`], single use.
    pub async fn oidc_start(&self, provider_name: &str) -> Result<OidcStart> {
        let (provider, secret) = self.provider(provider_name).await?;
        let redirect = self.redirect_uri(&provider.name)?;
        let metadata = match self.discover(&provider).await {
            Ok(m) => m,
            Err(f) => return Err(self.fail(&provider.name, f, None).await),
        };
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in &provider.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let browser_token = secrets::generate("pob_");
        let now = super::kernel::now();
        let pending = PendingLogin {
            provider_id: provider.id,
            browser_hash: secrets::hash(&browser_token),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            expires_at: now.checked_add(OIDC_LOGIN_TTL).unwrap_or(Timestamp::MAX),
        };
        let mut tx = self.store.begin().await?;
        store::insert_pending_login(&mut tx, &secrets::hash(state.secret()), &pending, now).await?;
        tx.commit().await?;
        Ok(OidcStart {
            redirect_to: url.to_string(),
            browser_token,
        })
    }

    /// Finishes a sign-in at the callback: the state (single use, this browser's, this
    /// provider's, unexpired), the code exchange with the PKCE verifier, the ID token
    /// (signature, issuer, audience, expiry, nonce), then the identity, its groups and a new
    /// web session.
    pub async fn oidc_callback(
        &self,
        provider_name: &str,
        callback: OidcCallback,
        browser_token: Option<&str>,
    ) -> Result<NewSession> {
        if !valid_name(provider_name) {
            return Err(ServiceError::NotFound("identity provider"));
        }
        let now = super::kernel::now();
        let Some(state) = callback.state.as_deref().filter(|s| !s.is_empty()) else {
            return Err(self.fail(provider_name, Failure::NoState, None).await);
        };
        let pending = {
            let mut tx = self.store.begin().await?;
            let p = store::take_pending_login(&mut tx, &secrets::hash(state)).await?;
            tx.commit().await?;
            p
        };
        let Some(pending) = pending else {
            return Err(self.fail(provider_name, Failure::UnknownState, None).await);
        };
        if browser_token.map(secrets::hash).as_deref() != Some(pending.browser_hash.as_str()) {
            return Err(self.fail(provider_name, Failure::ForeignState, None).await);
        }
        if now >= pending.expires_at {
            return Err(self.fail(provider_name, Failure::ExpiredState, None).await);
        }
        let (provider, secret) = self.provider(provider_name).await?;
        if provider.id != pending.provider_id {
            return Err(self
                .fail(provider_name, Failure::ProviderMismatch, None)
                .await);
        }
        if callback
            .iss
            .as_deref()
            .is_some_and(|iss| iss.trim_end_matches('/') != provider.issuer.trim_end_matches('/'))
        {
            return Err(self
                .fail(
                    &provider.name,
                    Failure::Issuer,
                    Some("iss parameter".into()),
                )
                .await);
        }
        if let Some(error) = callback.error {
            let detail = match callback.error_description {
                Some(d) => format!("{error}: {d}"),
                None => error,
            };
            return Err(self
                .fail(&provider.name, Failure::ProviderError, Some(detail))
                .await);
        }
        let Some(code) = callback.code.filter(|c| !c.is_empty()) else {
            return Err(self.fail(&provider.name, Failure::NoCode, None).await);
        };
        let redirect = self.redirect_uri(&provider.name)?;
        let metadata = match self.discover(&provider).await {
            Ok(m) => m,
            Err(f) => return Err(self.fail(&provider.name, f, None).await),
        };
        let client = CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(provider.client_id.clone()),
            Some(ClientSecret::new(secret)),
        )
        .set_redirect_uri(redirect);
        let request = match client.exchange_code(AuthorizationCode::new(code)) {
            Ok(r) => r,
            Err(e) => {
                return Err(self
                    .fail(&provider.name, Failure::Discovery, Some(e.to_string()))
                    .await);
            }
        };
        let response = match request
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
            .request_async(&self.oidc_http)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let detail = match &e {
                    openidconnect::RequestTokenError::ServerResponse(r) => r.to_string(),
                    other => other.to_string(),
                };
                return Err(self
                    .fail(&provider.name, Failure::TokenExchange, Some(detail))
                    .await);
            }
        };
        let Some(id_token) = response.id_token() else {
            return Err(self.fail(&provider.name, Failure::NoIdToken, None).await);
        };
        let nonce = Nonce::new(pending.nonce);
        let mut claims = id_token
            .claims(&client.id_token_verifier(), &nonce)
            .cloned();
        if let Err(e) = &claims
            && classify(e) == Failure::UnknownKey
            && let Some(refreshed) = self.refresh_keys(&provider, metadata).await
        {
            let client = CoreClient::from_provider_metadata(
                refreshed,
                ClientId::new(provider.client_id.clone()),
                None,
            );
            claims = id_token
                .claims(&client.id_token_verifier(), &nonce)
                .cloned();
        }
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                let failure = classify(&e);
                return Err(self
                    .fail(&provider.name, failure, Some(e.to_string()))
                    .await);
            }
        };
        let issuer = claims.issuer().to_string();
        let sub = claims.subject().to_string();
        let email = claims.email().map(|e| e.to_string().to_lowercase());
        let name = claims
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string());
        let raw = payload(&id_token.to_string());
        let groups = string_list(&raw[provider.groups_claim.as_str()]);
        let mfa_at = mfa_time(&raw, now);
        self.oidc_sign_in(
            &provider,
            SignIn {
                issuer: &issuer,
                subject: &sub,
                email: email.as_deref(),
                name: name.as_deref(),
                groups: &groups,
                mfa_at,
                now,
            },
        )
        .await
    }

    async fn oidc_sign_in(&self, provider: &IdentityProvider, s: SignIn<'_>) -> Result<NewSession> {
        let mut tx = self.store.begin().await?;
        let existing = store::identity_user(&mut tx, s.issuer, s.subject).await?;
        let (user, created) = match existing {
            Some(id) => {
                let user = store::get_user(&mut tx, id)
                    .await?
                    .ok_or(ServiceError::NotFound("user"))?;
                store::touch_identity(&mut tx, s.issuer, s.subject, s.email, s.now).await?;
                (user, false)
            }
            None => {
                let email = self.free_email(&mut tx, provider, &s).await?;
                let user = User {
                    id: UserId::new(),
                    email,
                    name: s
                        .name
                        .map(str::to_owned)
                        .or_else(|| s.email.map(str::to_owned))
                        .unwrap_or_else(|| s.subject.to_owned()),
                    role: Role::User,
                    disabled: false,
                    created_at: s.now,
                };
                store::insert_user(&mut tx, &user).await?;
                store::insert_identity(
                    &mut tx,
                    &OidcIdentity {
                        issuer: s.issuer,
                        subject: s.subject,
                        provider_id: provider.id,
                        user_id: user.id,
                        email: s.email,
                    },
                    s.now,
                )
                .await?;
                (user, true)
            }
        };
        if user.disabled {
            drop(tx);
            return Err(self.fail(&provider.name, Failure::Disabled, None).await);
        }
        let actor = Actor {
            id: subject("user", user.id),
            name: user.email.clone(),
            role: user.role,
        };
        if created {
            self.audit(
                &mut tx,
                &actor,
                "user.created",
                subject("user", user.id),
                serde_json::json!({ "email": user.email, "provider": provider.name, "issuer": s.issuer, "subject": s.subject }),
            )
            .await?;
        }
        let (added, removed) = self
            .sync_groups(&mut tx, provider, user.id, s.groups, s.now)
            .await?;

        let token = secrets::generate("pws_");
        let session = WebSession {
            id: uuid::Uuid::now_v7(),
            user_id: user.id,
            created_at: s.now,
            last_seen_at: s.now,
            expires_at: s
                .now
                .checked_add(SESSION_LIFETIME)
                .unwrap_or(Timestamp::MAX),
            mfa_at: s.mfa_at,
            ended_at: None,
            provider: Some(provider.name.clone()),
        };
        store::insert_web_session(&mut tx, &session, &secrets::hash(&token)).await?;
        store::record_sign_in(&mut tx, user.id, &provider.name, s.mfa_at).await?;
        self.audit(
            &mut tx,
            &actor,
            "auth.login_succeeded",
            subject("user", user.id),
            serde_json::json!({
                "provider": provider.name,
                "issuer": s.issuer,
                "mfa": s.mfa_at.is_some(),
                "session": session.id,
                "groups_added": added,
                "groups_removed": removed,
            }),
        )
        .await?;
        // Memberships the provider's groups claim added or removed change decisions: a
        // removed group's allow or an added group's deny applies to live access now.
        let changed = if added.is_empty() && removed.is_empty() {
            Reevaluation::default()
        } else {
            self.reevaluate_in(
                &mut tx,
                &actor,
                &Cause::new("group.synced", "user", user.id),
                GrantFilter::for_user(user.id),
            )
            .await?
        };
        tx.commit().await?;
        self.announce_reevaluation(changed).await;
        tracing::info!(user = %user.id, session = %session.id, provider = %provider.name, "signed in with OIDC");
        let me: Me = self
            .me(&SignedIn {
                user,
                session: session.clone(),
            })
            .await?;
        Ok(NewSession { token, me })
    }

    /// An e-mail address for a new user: the provider's, unless another user has it (the
    /// same address at another provider is another person until an admin links them).
    async fn free_email(
        &self,
        tx: &mut store::Tx,
        provider: &IdentityProvider,
        s: &SignIn<'_>,
    ) -> Result<String> {
        let fallback = format!("{}@{}.oidc.invalid", s.subject, provider.name);
        let candidates: Vec<String> = match s.email {
            Some(e) => {
                let tagged = match e.split_once('@') {
                    Some((local, domain)) => format!("{local}+{}@{domain}", provider.name),
                    None => format!("{e}+{}", provider.name),
                };
                vec![e.to_owned(), tagged, fallback]
            }
            None => vec![fallback],
        };
        for c in &candidates {
            if store::user_by_email(tx, c).await?.is_none() {
                return Ok(c.clone());
            }
        }
        Ok(format!(
            "{}@{}.oidc.invalid",
            uuid::Uuid::now_v7(),
            provider.name
        ))
    }

    /// Makes the user's memberships that came from this provider match its group claim: adds
    /// the existing groups it names, removes those it no longer names. Memberships an admin
    /// made are never removed; groups are not created from claims.
    async fn sync_groups(
        &self,
        tx: &mut store::Tx,
        provider: &IdentityProvider,
        user: UserId,
        claimed: &[String],
        now: Timestamp,
    ) -> Result<(Vec<String>, Vec<String>)> {
        let mut wanted = Vec::new();
        for name in claimed {
            match store::group_id_by_name(tx, name).await? {
                Some(g) => wanted.push((g, name.clone())),
                None => {
                    tracing::debug!(provider = %provider.name, group = %name, "claimed group does not exist")
                }
            }
        }
        let held = store::provider_groups(tx, provider.id, user).await?;
        let mut added = Vec::new();
        for (g, name) in &wanted {
            if held.contains(g) {
                continue;
            }
            if store::add_member(tx, *g, user, now).await? {
                store::add_provider_group(tx, provider.id, user, *g).await?;
                added.push(name.clone());
            }
        }
        let mut removed = Vec::new();
        for g in held {
            if wanted.iter().any(|(w, _)| *w == g) {
                continue;
            }
            store::remove_member(tx, g, user).await?;
            store::remove_provider_group(tx, provider.id, user, g).await?;
            removed.push(g.to_string());
        }
        Ok((added, removed))
    }
}

struct SignIn<'a> {
    issuer: &'a str,
    subject: &'a str,
    email: Option<&'a str>,
    name: Option<&'a str>,
    groups: &'a [String],
    mfa_at: Option<Timestamp>,
    now: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_need_https_except_on_loopback() {
        assert!(check_issuer("https://idp.example.com").is_ok());
        assert!(check_issuer("http://127.0.0.1:8080").is_ok());
        assert!(check_issuer("http://[::1]:8080/realm").is_ok());
        assert!(check_issuer("http://localhost:9000").is_ok());
        assert!(check_issuer("http://idp.example.com").is_err());
        assert!(check_issuer("http://127.0.0.1.evil.com").is_err());
        assert!(check_issuer("ftp://idp.example.com").is_err());
        assert!(check_issuer("https://").is_err());
    }

    #[test]
    fn mfa_comes_from_amr_or_acr() {
        let now = Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH);
        let pwd = serde_json::json!({ "amr": ["pwd"] });
        assert_eq!(mfa_time(&pwd, now), None);
        let otp = serde_json::json!({ "amr": ["pwd", "otp"], "auth_time": 1_699_999_000 });
        assert_eq!(
            mfa_time(&otp, now).map(|t| t.as_second()),
            Some(1_699_999_000)
        );
        let acr = serde_json::json!({ "acr": "urn:example:mfa" });
        assert_eq!(mfa_time(&acr, now), Some(now));
        let future = serde_json::json!({ "amr": ["mfa"], "auth_time": 1_800_000_000 });
        assert_eq!(mfa_time(&future, now), Some(now));
    }
}
