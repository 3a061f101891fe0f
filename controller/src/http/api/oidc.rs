//! The browser side of OIDC sign-in: `/auth/oidc/{provider}/start` redirects to the provider
//! and sets the cookie that binds the sign-in to this browser; `/auth/oidc/{provider}/callback`
//! finishes it, sets the session cookie and redirects to `/`. A person's browser is what
//! follows these links, so failures answer with a small self-contained HTML page that says
//! what went wrong and links to a new attempt (a client that asks for JSON gets the API's
//! JSON error).

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::reply::{session_cookie_header, with_cookie};
use super::{ApiError, AppState};
use crate::app::{OIDC_BROWSER_COOKIE, OIDC_LOGIN_TTL, OidcCallback};

fn browser_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == OIDC_BROWSER_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

fn browser_cookie_header(token: &str) -> String {
    format!(
        "{OIDC_BROWSER_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        OIDC_LOGIN_TTL.as_secs()
    )
}

fn cleared_browser_cookie() -> String {
    format!("{OIDC_BROWSER_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0")
}

fn see_other(to: &str) -> Response {
    let mut res = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = header::HeaderValue::from_str(to) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    accept.contains("application/json") && !accept.contains("text/html")
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The failure of a sign-in as the person's browser should see it: an HTML page with the
/// reason and a link to start again, or the JSON error for a client that asks for JSON.
fn failure(headers: &HeaderMap, provider: &str, e: crate::app::ServiceError) -> Response {
    let retry = !matches!(e, crate::app::ServiceError::NotFound(_))
        && !provider.is_empty()
        && provider
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let error = ApiError::from(e);
    if wants_json(headers) {
        return error.into_response();
    }
    let status = error.status;
    let message = escape(&error.detail.message);
    let again = if retry {
        format!(
            "<p><a href=\"/auth/oidc/{provider}/start\">Sign in with {} again</a></p>",
            escape(provider)
        )
    } else {
        String::new()
    };
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Sign-in failed · Postern</title></head>\
         <body><main><h1>Sign-in failed</h1><p id=\"reason\">{message}</p>{again}\
         <p><a href=\"/signin\">Back to the sign-in page</a></p></main></body></html>\n"
    );
    let mut res = (status, axum::response::Html(body)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        header::HeaderValue::from_static("no-referrer"),
    );
    res
}

/// Starts a sign-in with the named identity provider.
pub(super) async fn start(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
) -> Response {
    match s.service.oidc_start(&provider).await {
        Ok(start) => with_cookie(
            see_other(&start.redirect_to),
            browser_cookie_header(&start.browser_token),
        ),
        Err(e) => failure(&headers, &provider, e),
    }
}

/// Finishes a sign-in: the provider redirects the browser here.
pub(super) async fn callback(
    State(s): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    Query(params): Query<OidcCallback>,
) -> Response {
    match s
        .service
        .oidc_callback(&provider, params, browser_cookie(&headers))
        .await
    {
        Ok(session) => {
            let res = with_cookie(see_other("/"), session_cookie_header(&session.token));
            with_cookie(res, cleared_browser_cookie())
        }
        Err(e) => with_cookie(failure(&headers, &provider, e), cleared_browser_cookie()),
    }
}
