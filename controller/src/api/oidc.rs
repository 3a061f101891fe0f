//! The browser side of OIDC sign-in: `/auth/oidc/{provider}/start` redirects to the provider
//! and sets the cookie that binds the sign-in to this browser; `/auth/oidc/{provider}/callback`
//! finishes it, sets the session cookie and redirects to `/`. Failures answer with a JSON
//! error that says what went wrong.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::handlers::{session_cookie_header, with_cookie};
use super::{ApiError, AppState};
use crate::oidc::{OIDC_BROWSER_COOKIE, OIDC_LOGIN_TTL, OidcCallback};

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

/// Starts a sign-in with the named identity provider.
pub(super) async fn start(
    State(s): State<AppState>,
    Path(provider): Path<String>,
) -> Result<Response, ApiError> {
    let start = s.service.oidc_start(&provider).await?;
    Ok(with_cookie(
        see_other(&start.redirect_to),
        browser_cookie_header(&start.browser_token),
    ))
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
        Err(e) => with_cookie(ApiError::from(e).into_response(), cleared_browser_cookie()),
    }
}
