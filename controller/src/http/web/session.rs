//! Who is signed in, and whether a form really comes from our own page.
//!
//! - Pages read the `__Host-postern_session` cookie through the [`Ctx`] extractor; without a
//!   valid session they redirect to the sign-in page (and back afterwards).
//! - Every state-changing request goes through [`Form`], which refuses it unless it comes
//!   from this origin (`Sec-Fetch-Site`, `Origin`) and carries the synchronizer token: an
//!   HMAC of the session's secret, so it is tied to the session, needs no server state and
//!   cannot be read by another site.
//! - Before sign-in (the sign-in and setup forms) the token is a random value in the
//!   `__Host-postern_csrf` cookie, posted back in the form (double submit), again next to
//!   the origin check.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use serde::Deserialize;
use sha2::Sha256;

use super::{WebError, WebResult, page, see_other};
use crate::app::{Actor, ServiceError, SetupInput};
use crate::app::{
    LoginInput, MIN_PASSWORD_CHARS, PasswordInput, SESSION_COOKIE, SESSION_LIFETIME, SignedIn,
};
use crate::http::AppState;

/// The cookie that carries a one-time notice to the next page.
pub(crate) const FLASH_COOKIE: &str = "__Host-postern_flash";
/// The cookie of the form token before sign-in.
pub(crate) const ANON_CSRF_COOKIE: &str = "__Host-postern_csrf";
/// The form field of the synchronizer token.
pub(crate) const CSRF_FIELD: &str = "_csrf";

// ---------------------------------------------------------------- cookies

/// The value of cookie `name` among a request's cookies.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

pub(crate) fn append_cookie(res: &mut Response, cookie: String) {
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn set_cookie(name: &str, value: &str, max_age: u64) -> String {
    format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={max_age}")
}

pub(crate) fn cleared_cookie(name: &str) -> String {
    set_cookie(name, "", 0)
}

fn session_cookie(token: &str) -> String {
    set_cookie(
        SESSION_COOKIE,
        token,
        SESSION_LIFETIME.as_secs().unsigned_abs(),
    )
}

pub(crate) fn flash_cookie(notice: &str) -> String {
    let value = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(notice.as_bytes());
    set_cookie(FLASH_COOKIE, &value, 60)
}

fn read_flash(headers: &HeaderMap) -> Option<String> {
    let raw = cookie(headers, FLASH_COOKIE)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()?;
    String::from_utf8(bytes)
        .ok()
        .map(|s| s.chars().take(200).collect())
}

// ---------------------------------------------------------------- tokens and origins

/// The synchronizer token of a session: HMAC-SHA256 keyed with the session cookie's secret.
pub(crate) fn csrf_token(session_secret: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(session_secret.as_bytes()) {
        Ok(m) => m,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return String::new(),
    };
    mac.update(b"postern web form token v1");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

fn same_bytes(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && !a.is_empty()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Refuses a state-changing request that a browser marks as coming from another site, or
/// whose `Origin` is not this host.
pub(crate) fn check_origin(parts: &Parts) -> Result<(), WebError> {
    let refuse = |why: &str| {
        WebError::new(
            StatusCode::FORBIDDEN,
            format!(
                "This form was not sent from a Postern page ({why}). Reload the page and try again."
            ),
        )
    };
    if let Some(site) = parts.headers.get("sec-fetch-site") {
        match site.to_str().unwrap_or_default() {
            "same-origin" | "none" => {}
            other => return Err(refuse(&format!("Sec-Fetch-Site: {other}"))),
        }
    }
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or_default();
        let host = super::request_host(&parts.headers, &parts.uri).unwrap_or_default();
        let ours = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"))
            .is_some_and(|h| !host.is_empty() && h.eq_ignore_ascii_case(&host));
        if !ours {
            return Err(refuse("foreign Origin"));
        }
    }
    Ok(())
}

/// A local path to go to after sign-in; anything else becomes `/`.
pub(crate) fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.len() < 2048
                && !n.chars().any(|c| c.is_control() || c == '\\') =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

// ---------------------------------------------------------------- the signed-in request

/// A signed-in request: the user, their actor and the form token of their session.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) me: SignedIn,
    pub(crate) actor: Actor,
    pub(crate) csrf: String,
    flash: Option<String>,
}

impl Ctx {
    /// The page frame for this user.
    pub(crate) fn chrome(&self, title: &str, active: &'static str) -> ui::Chrome {
        ui::Chrome {
            user_name: self.me.user.name.clone(),
            user_email: self.me.user.email.clone(),
            role: self.me.user.role.as_str().to_owned(),
            csrf: self.csrf.clone(),
            flash: self.flash.clone(),
            ..ui::Chrome::new(title, active)
        }
    }

    /// Whether the user may read everything (admin or auditor).
    pub(crate) fn is_reader(&self) -> bool {
        matches!(self.me.user.role, model::Role::Admin | model::Role::Auditor)
    }
}

async fn signed_in(headers: &HeaderMap, state: &AppState) -> Option<(Ctx, String)> {
    let token = cookie(headers, SESSION_COOKIE)?;
    let me = state.service.web_session(token).await.ok()?;
    Some((
        Ctx {
            actor: me.actor(),
            me,
            csrf: csrf_token(token),
            flash: read_flash(headers),
        },
        token.to_owned(),
    ))
}

fn to_signin(parts: &Parts) -> Response {
    let here = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if here == "/" {
        return see_other("/signin");
    }
    let q = super::query_of(&[("next", &here)]);
    see_other(&format!("/signin?{q}"))
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match signed_in(&parts.headers, state).await {
            Some((ctx, _)) => Ok(ctx),
            None => Err(to_signin(parts)),
        }
    }
}

/// A posted form of a signed-in user, checked for origin and synchronizer token.
#[derive(Debug)]
pub(crate) struct Form {
    pub(crate) ctx: Ctx,
    pairs: Vec<(String, String)>,
}

impl Form {
    /// The first value of `name`, trimmed; empty when absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// The value of `name` unless it is empty.
    pub(crate) fn opt(&self, name: &str) -> Option<String> {
        Some(self.get(name))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// Whether checkbox `name` is checked.
    pub(crate) fn checked(&self, name: &str) -> bool {
        matches!(self.get(name), "on" | "true" | "yes")
    }

    /// Whether the user confirmed a destructive action.
    pub(crate) fn confirmed(&self) -> bool {
        self.get("confirm") == "yes"
    }

    /// The values to fill the form in again (secrets left out).
    pub(crate) fn values(&self) -> ui::FormValues {
        ui::FormValues::from_pairs(
            self.pairs
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        CSRF_FIELD | "password" | "client_secret" | "confirm"
                    )
                })
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
    }
}

fn parse_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn form_body(
    req: Request,
    state: &AppState,
) -> Result<(Parts, Vec<(String, String)>), Response> {
    let (parts, body) = req.into_parts();
    check_origin(&parts).map_err(IntoResponse::into_response)?;
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
        .await
        .map_err(|e| WebError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response())?;
    Ok((parts, parse_pairs(&bytes)))
}

impl FromRequest<AppState> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, pairs) = form_body(req, state).await?;
        let Some((ctx, _)) = signed_in(&parts.headers, state).await else {
            return Err(see_other("/signin"));
        };
        let sent = pairs
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map_or("", |(_, v)| v.as_str());
        if !same_bytes(sent, &ctx.csrf) {
            return Err(WebError::new(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or stale. Reload the page and try again.",
            )
            .within(&ctx)
            .into_response());
        }
        Ok(Form { ctx, pairs })
    }
}

/// A form posted before sign-in, checked for origin and the double-submitted token.
pub(crate) struct AnonForm {
    pairs: Vec<(String, String)>,
    headers: HeaderMap,
}

impl AnonForm {
    fn get(&self, name: &str) -> &str {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

impl FromRequest<AppState> for AnonForm {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (parts, pairs) = form_body(req, state).await?;
        let expected = cookie(&parts.headers, ANON_CSRF_COOKIE).unwrap_or_default();
        let sent = pairs
            .iter()
            .find(|(k, _)| k == CSRF_FIELD)
            .map_or("", |(_, v)| v.as_str());
        if !same_bytes(sent, expected) {
            return Err(WebError::new(
                StatusCode::FORBIDDEN,
                "The form's security token is missing or stale (are cookies on?). Reload the page and try again.",
            )
            .into_response());
        }
        Ok(AnonForm {
            pairs,
            headers: parts.headers,
        })
    }
}

/// The pre-sign-in token of this browser, and the cookie to set when it is new.
fn anon_token(headers: &HeaderMap) -> (String, Option<String>) {
    match cookie(headers, ANON_CSRF_COOKIE) {
        Some(t) if t.len() >= 32 => (t.to_owned(), None),
        _ => {
            let mut bytes = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut bytes);
            let t = hex::encode(bytes);
            let c = set_cookie(ANON_CSRF_COOKIE, &t, 3600);
            (t, Some(c))
        }
    }
}

fn anon_chrome(title: &str, csrf: String) -> ui::Chrome {
    ui::Chrome {
        csrf,
        ..ui::Chrome::new(title, "")
    }
}

async fn setup_done(state: &AppState) -> Result<bool, WebError> {
    Ok(state.service.setup_done().await?)
}

// ---------------------------------------------------------------- sign-in and sign-out

#[derive(Debug, Deserialize)]
pub(crate) struct SignInQuery {
    next: Option<String>,
}

async fn providers(state: &AppState) -> Vec<ui::Link> {
    state
        .service
        .list_identity_providers(&Actor::system())
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|p| ui::Link {
            href: format!("/auth/oidc/{}/start", p.name),
            label: p.name,
        })
        .collect()
}

fn with_anon_cookie(mut res: Response, cookie: Option<String>) -> Response {
    if let Some(c) = cookie {
        append_cookie(&mut res, c);
    }
    res
}

/// The sign-in page.
pub(crate) async fn signin_page(
    State(state): State<AppState>,
    Query(q): Query<SignInQuery>,
    headers: HeaderMap,
) -> WebResult {
    let next = safe_next(q.next.as_deref());
    if signed_in(&headers, &state).await.is_some() {
        return Ok(see_other(&next));
    }
    if !setup_done(&state).await? {
        return Ok(see_other("/setup"));
    }
    let (token, new_cookie) = anon_token(&headers);
    let flash = read_flash(&headers);
    let res = page(&ui::SignInPage {
        chrome: ui::Chrome {
            flash,
            ..anon_chrome("Sign in", token)
        },
        email: String::new(),
        error: None,
        providers: providers(&state).await,
        next,
        totp_step: false,
        password: String::new(),
    });
    Ok(with_anon_cookie(res, new_cookie))
}

/// Signs in with a local account; asks for the authenticator code when the account has one.
pub(crate) async fn signin(State(state): State<AppState>, form: AnonForm) -> WebResult {
    let next = safe_next(Some(form.get("next")));
    let email = form.get("email").trim().to_owned();
    let password = form.get("password").to_owned();
    let totp = Some(form.get("totp").replace(' ', "")).filter(|s| !s.is_empty());
    let recovery_code = Some(form.get("recovery_code").trim().to_owned()).filter(|s| !s.is_empty());
    let second_step = totp.is_some() || recovery_code.is_some();
    let input = LoginInput {
        email: email.clone(),
        password: password.clone(),
        totp,
        recovery_code,
    };
    let (csrf, _) = anon_token(&form.headers);
    let again = |status: StatusCode, error: Option<String>, totp_step: bool, providers| {
        super::render(
            status,
            &ui::SignInPage {
                chrome: anon_chrome("Sign in", csrf.clone()),
                email: email.clone(),
                error,
                providers,
                next: next.clone(),
                totp_step,
                password: if totp_step {
                    password.clone()
                } else {
                    String::new()
                },
            },
        )
    };
    match state.service.login(input).await {
        Ok(session) => {
            let mut res = see_other(&next);
            append_cookie(&mut res, session_cookie(&session.token));
            append_cookie(&mut res, cleared_cookie(ANON_CSRF_COOKIE));
            Ok(res)
        }
        // The password was right and the account has TOTP: ask for the code.
        Err(ServiceError::Unauthorized(m)) if !second_step && m.contains("(totp)") => {
            Ok(again(StatusCode::OK, None, true, Vec::new()))
        }
        Err(ServiceError::Unauthorized(m)) => Ok(again(
            StatusCode::UNAUTHORIZED,
            Some(super::capitalize(m)),
            second_step,
            if second_step {
                Vec::new()
            } else {
                providers(&state).await
            },
        )),
        Err(e @ ServiceError::Locked { .. }) => Ok(again(
            StatusCode::TOO_MANY_REQUESTS,
            Some(super::capitalize(&e.to_string())),
            false,
            providers(&state).await,
        )),
        Err(e) => Err(e.into()),
    }
}

/// Signs out.
pub(crate) async fn signout(State(state): State<AppState>, form: Form) -> WebResult {
    state.service.logout(&form.ctx.me).await?;
    let mut res = see_other("/signin");
    append_cookie(&mut res, cleared_cookie(SESSION_COOKIE));
    Ok(res)
}

// ---------------------------------------------------------------- first-run setup

/// The first-run setup page; after setup it leads to sign-in.
pub(crate) async fn setup_page(State(state): State<AppState>, headers: HeaderMap) -> WebResult {
    if setup_done(&state).await? {
        return Ok(see_other("/signin"));
    }
    let (token, new_cookie) = anon_token(&headers);
    let res = page(&ui::SetupPage {
        chrome: anon_chrome("Set up Postern", token),
        values: ui::FormValues::default(),
        errors: ui::FormErrors::none(),
    });
    Ok(with_anon_cookie(res, new_cookie))
}

/// Creates the first admin with the setup code, gives them the password, signs them in and
/// shows their API token once.
pub(crate) async fn setup(State(state): State<AppState>, form: AnonForm) -> WebResult {
    let (csrf, _) = anon_token(&form.headers);
    let mut values = ui::FormValues::default();
    for k in ["code", "name", "email"] {
        values.set(k, form.get(k).trim());
    }
    let again = |errors: ui::FormErrors| {
        super::invalid_page(&ui::SetupPage {
            chrome: anon_chrome("Set up Postern", csrf.clone()),
            values: values.clone(),
            errors,
        })
    };
    let password = form.get("password").to_owned();
    // Checked before the code is spent, so a short password cannot leave an admin without one.
    if password.chars().count() < MIN_PASSWORD_CHARS || password.len() > 1024 {
        return Ok(again(ui::FormErrors::field(
            "password",
            format!("must be {MIN_PASSWORD_CHARS} to 1024 characters"),
        )));
    }
    let email = form.get("email").trim().to_owned();
    let result = state
        .service
        .complete_setup(SetupInput {
            code: form.get("code").trim().to_owned(),
            email: email.clone(),
            name: form.get("name").trim().to_owned(),
        })
        .await;
    let setup = match result {
        Ok(s) => s,
        Err(ServiceError::Unauthorized(m)) => {
            return Ok(again(ui::FormErrors::field("code", m)));
        }
        Err(ServiceError::Invalid(f)) => {
            return Ok(again(ui::FormErrors::field(f.field, f.message)));
        }
        Err(e) => return Err(e.into()),
    };
    let actor = state.service.authenticate(&setup.token).await?;
    state
        .service
        .set_password(
            &actor,
            setup.user.id,
            PasswordInput {
                password: password.clone(),
            },
        )
        .await?;
    let session = state
        .service
        .login(LoginInput {
            email: setup.user.email.clone(),
            password,
            totp: None,
            recovery_code: None,
        })
        .await?;
    let chrome = ui::Chrome {
        user_name: setup.user.name.clone(),
        user_email: setup.user.email.clone(),
        role: setup.user.role.as_str().to_owned(),
        csrf: csrf_token(&session.token),
        ..ui::Chrome::new("Welcome", "dashboard")
    };
    let mut res = page(&ui::SetupDonePage {
        chrome,
        email: setup.user.email,
        token: setup.token,
    });
    append_cookie(&mut res, session_cookie(&session.token));
    append_cookie(&mut res, cleared_cookie(ANON_CSRF_COOKIE));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_local() {
        assert_eq!(safe_next(Some("/grants?q=a")), "/grants?q=a");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn tokens_are_tied_to_the_session() {
        let a = csrf_token("pws_a");
        assert_eq!(a, csrf_token("pws_a"));
        assert_ne!(a, csrf_token("pws_b"));
        assert!(same_bytes(&a, &csrf_token("pws_a")));
        assert!(!same_bytes("", ""), "an empty token never matches");
    }
}
