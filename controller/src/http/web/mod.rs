//! The admin web UI's HTTP side: the HTML pages of the `ui` crate, served on the controller's
//! HTTPS port next to the REST API. Every page reads and writes through the same application
//! services as the API, so each rule lives once; this module only turns forms into service
//! inputs and service results into view models.
//!
//! Safety: every response carries a strict Content-Security-Policy (no inline script or
//! style), `nosniff`, `Referrer-Policy: same-origin` (not `no-referrer`, under which browsers
//! send `Origin: null` with our own forms) and `frame-ancestors 'none'`; every state-changing request
//! must come from this origin (`Origin`/`Sec-Fetch-Site`) and carry the synchronizer token
//! derived from the session (see [`session`]).

mod access;
mod audit;
mod device;
mod inventory;
mod names;
mod people;
mod policies;
mod session;

#[cfg(test)]
mod tests;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use ui::Template;

use super::AppState;
use super::error::classify;
use crate::app::ServiceError;

pub(crate) use session::{Ctx, Form};

/// The Content-Security-Policy of every page: our own files only, no inline anything, no
/// framing, forms post only to us.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The pages, the static files and the security headers around them.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(inventory::dashboard))
        .route("/static/{file}", get(static_file))
        .route("/signin", get(session::signin_page).post(session::signin))
        .route("/signout", post(session::signout))
        .route("/setup", get(session::setup_page).post(session::setup))
        .route("/sites", get(inventory::sites).post(inventory::create_site))
        .route(
            "/sites/{id}",
            get(inventory::site).post(inventory::update_site),
        )
        .route("/sites/{id}/delete", post(inventory::delete_site))
        .route(
            "/sites/{id}/gateway-tokens",
            post(inventory::create_gateway_token),
        )
        .route("/gateways/{id}/{action}", post(inventory::gateway_action))
        .route(
            "/resources",
            get(inventory::resources).post(inventory::create_resource),
        )
        .route(
            "/resources/{id}",
            get(inventory::resource).post(inventory::update_resource),
        )
        .route("/resources/{id}/delete", post(inventory::delete_resource))
        .route("/users", get(people::users).post(people::create_user))
        .route("/users/{id}", get(people::user).post(people::update_user))
        .route("/users/{id}/{action}", post(people::user_action))
        .route("/groups", get(people::groups).post(people::create_group))
        .route(
            "/groups/{id}",
            get(people::group).post(people::update_group),
        )
        .route("/groups/{id}/delete", post(people::delete_group))
        .route("/groups/{id}/members", post(people::add_member))
        .route(
            "/groups/{id}/members/{user}/remove",
            post(people::remove_member),
        )
        .route(
            "/policies",
            get(policies::policies).post(policies::create_policy),
        )
        .route(
            "/policies/{id}",
            get(policies::policy).post(policies::update_policy),
        )
        .route("/policies/{id}/delete", post(policies::delete_policy))
        .route(
            "/posture",
            get(policies::posture).post(policies::create_profile),
        )
        .route(
            "/posture/{id}",
            get(policies::profile).post(policies::update_profile),
        )
        .route("/posture/{id}/delete", post(policies::delete_profile))
        .route("/devices", get(access::devices))
        .route("/devices/{id}/{action}", post(access::device_action))
        .route("/grants", get(access::grants))
        .route("/grants/{id}/revoke", post(access::revoke_grant))
        .route("/my", get(access::my_access))
        .route("/audit", get(audit::audit))
        .route("/audit/export", get(audit::export))
        .route("/settings", get(audit::settings))
        .route("/settings/identity-providers", post(audit::create_provider))
        .route(
            "/settings/identity-providers/{id}/delete",
            post(audit::delete_provider),
        )
        .route("/settings/tokens", post(audit::create_token))
        .route("/settings/tokens/{id}/revoke", post(audit::revoke_token))
        .route("/device", get(device::show))
        .route("/device/{decision}", post(device::decide))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Adds the security headers to every web response, and clears a flash notice once a page
/// has shown it.
async fn security_headers(req: Request, next: Next) -> Response {
    let had_flash = session::cookie(req.headers(), session::FLASH_COOKIE).is_some();
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    let is_html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/html"));
    if is_html {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if had_flash && res.status() == StatusCode::OK {
            session::append_cookie(&mut res, session::cleared_cookie(session::FLASH_COOKIE));
        }
    }
    res
}

async fn static_file(Path(file): Path<String>) -> Response {
    match ui::assets::lookup(&file) {
        Some((content_type, body)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

// ---------------------------------------------------------------- responses

/// Renders a page with a status.
pub(crate) fn render<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the page failed; see the controller's log\n",
            )
                .into_response()
        }
    }
}

/// Renders a page with 200, or with 422 when it shows form errors.
pub(crate) fn page<T: Template>(page: &T) -> Response {
    render(StatusCode::OK, page)
}

/// A page answered with form errors.
pub(crate) fn invalid_page<T: Template>(page: &T) -> Response {
    render(StatusCode::UNPROCESSABLE_ENTITY, page)
}

/// A page with a form: 422 when the form has errors, else 200.
pub(crate) fn form_page<T: Template>(page: &T, errors: &ui::FormErrors) -> Response {
    if errors.any() {
        invalid_page(page)
    } else {
        self::page(page)
    }
}

/// Redirects (303) to a local path.
pub(crate) fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Redirects to `to` with a one-time notice shown on the next page.
pub(crate) fn done(to: &str, notice: &str) -> Response {
    let mut res = see_other(to);
    session::append_cookie(&mut res, session::flash_cookie(notice));
    res
}

/// A request that cannot be answered with its page: an error page with a status.
#[derive(Debug)]
pub(crate) struct WebError {
    status: StatusCode,
    message: String,
    chrome: Option<Box<ui::Chrome>>,
}

impl WebError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            chrome: None,
        }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("The {what} does not exist."))
    }

    /// Shows the error inside the signed-in frame.
    pub(crate) fn within(mut self, ctx: &Ctx) -> Self {
        self.chrome = Some(Box::new(ctx.chrome("Error", "")));
        self
    }
}

impl From<ServiceError> for WebError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(what) => Self::not_found(what),
            e => {
                let failure = classify(e);
                let message = match failure.code {
                    // The field's name stays as it is, first.
                    "invalid" | "conflict" => failure.message,
                    "internal" => "Internal error; see the controller's log.".to_owned(),
                    _ => capitalize(&failure.message),
                };
                Self::new(failure.status, message)
            }
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let page = ui::ErrorPage {
            chrome: self
                .chrome
                .map_or_else(|| ui::Chrome::new("Error", ""), |c| *c),
            status: self.status.as_u16(),
            message: self.message,
        };
        render(self.status, &page)
    }
}

pub(crate) type WebResult = Result<Response, WebError>;

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A service error on a form: field and general errors become [`ui::FormErrors`] to show
/// with the form again; anything else is an error page.
pub(crate) fn form_errors(e: ServiceError, ctx: &Ctx) -> Result<ui::FormErrors, WebError> {
    match e {
        ServiceError::Invalid(f) => Ok(ui::FormErrors::field(f.field, f.message)),
        ServiceError::Conflict {
            field: Some(field),
            message,
        } => Ok(ui::FormErrors::field(field, message)),
        ServiceError::Conflict {
            field: None,
            message,
        } => Ok(ui::FormErrors::general(capitalize(&message))),
        e @ ServiceError::Locked { .. } => Ok(ui::FormErrors::general(capitalize(&e.to_string()))),
        e if e.is_unavailable() => Ok(ui::FormErrors::general(capitalize(&e.to_string()))),
        e => Err(WebError::from(e).within(ctx)),
    }
}

/// Splits a list typed into a text box at commas, semicolons and line breaks.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split([',', ';', '\n', '\r'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses a path id; a malformed one is "not found".
pub(crate) fn parse_id<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, WebError> {
    s.parse().map_err(|_| WebError::not_found(what))
}

/// Filters rows by a case-insensitive text query over what `text` returns.
pub(crate) fn matches(q: &str, fields: &[&str]) -> bool {
    let q = q.trim().to_lowercase();
    q.is_empty() || fields.iter().any(|f| f.to_lowercase().contains(&q))
}

/// `q=...` for pager links.
pub(crate) fn query_of(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if !v.is_empty() {
            s.append_pair(k, v);
        }
    }
    s.finish()
}

/// The listing query most tables take: a filter and a page.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    pub(crate) q: String,
    #[serde(default)]
    pub(crate) page: Option<usize>,
}

impl ListQuery {
    /// The page of `rows` this query asks for, and the pager that links the others.
    pub(crate) fn paginate<T>(&self, rows: Vec<T>) -> (Vec<T>, ui::Pager) {
        ui::paginate(
            rows,
            self.page.unwrap_or(1),
            PER_PAGE,
            query_of(&[("q", &self.q)]),
        )
    }
}

/// Rows per page of the long tables.
pub(crate) const PER_PAGE: usize = 25;

/// The host the browser reached us at (`Host`, or the HTTP/2 authority).
pub(crate) fn request_host(headers: &HeaderMap, uri: &axum::http::Uri) -> Option<String> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
}
