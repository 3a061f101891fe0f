//! Client sign-in endpoints: the device authorization flow (start, poll, approve) and
//! enrollment with a key. Thin calls into [`crate::device`].

use std::net::{IpAddr, SocketAddr};

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{Body, Session};
use super::{ApiError, AppState, ErrorBody};
use crate::app::EnrollInput;
use crate::app::{
    DeviceApproval, DeviceAuthorizationInput, DeviceAuthorizationStart, DeviceSession,
    DeviceTokenInput, EnrolledDevice, PendingDevice,
};

/// The address a request came from, when the server recorded it.
pub(super) struct Peer(pub(super) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Where the browser reached us, for links the client prints: `https://<Host>`.
fn base_url(headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })
        .unwrap_or("localhost");
    format!("https://{host}")
}

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(token))
        .routes(routes!(approve))
        .routes(routes!(pending))
        .routes(routes!(enroll_device))
}

/// Starts a client sign-in (device authorization): the daemon polls with the device code;
/// the person opens the verification URI, signs in and approves.
#[utoipa::path(post, path = "/device-auth", tag = "devices", security(()), request_body = DeviceAuthorizationInput,
    responses((status = 200, body = DeviceAuthorizationStart), (status = 422, body = ErrorBody)))]
async fn start(
    State(s): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Body(input): Body<DeviceAuthorizationInput>,
) -> Result<Json<DeviceAuthorizationStart>, ApiError> {
    Ok(Json(
        s.service
            .start_device_authorization(input, peer, &base_url(&headers))
            .await?,
    ))
}

/// The daemon's poll: the device session once approved, otherwise 400 with
/// `authorization_pending`, `slow_down`, `access_denied` or `expired_token`.
#[utoipa::path(post, path = "/device-auth/token", tag = "devices", security(()), request_body = DeviceTokenInput,
    responses((status = 200, body = DeviceSession), (status = 400, body = ErrorBody)))]
async fn token(
    State(s): State<AppState>,
    Body(input): Body<DeviceTokenInput>,
) -> Result<Json<DeviceSession>, ApiError> {
    Ok(Json(
        s.service
            .poll_device_authorization(&input.device_code)
            .await?,
    ))
}

/// The signed-in person approves or denies a client sign-in.
#[utoipa::path(post, path = "/device-auth/approve", tag = "devices", security(("session" = [])), request_body = DeviceApproval,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn approve(
    State(s): State<AppState>,
    Session(me): Session,
    Body(input): Body<DeviceApproval>,
) -> Result<Response, ApiError> {
    s.service
        .approve_device_authorization(&me, &input.user_code, input.approve)
        .await?;
    Ok(super::reply::no_content())
}

/// A client sign-in waiting for approval, as the approval page shows it.
#[utoipa::path(get, path = "/device-auth/{user_code}", tag = "devices", security(("session" = [])),
    params(("user_code" = String, Path)),
    responses((status = 200, body = PendingDevice), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn pending(
    State(s): State<AppState>,
    Session(me): Session,
    Path(code): Path<String>,
) -> Result<Json<PendingDevice>, ApiError> {
    Ok(Json(s.service.device_authorization(&me, &code).await?))
}

/// Enrolls a device with an enrollment key (servers, CI, automation: no browser) and
/// starts its session.
#[utoipa::path(post, path = "/devices/enroll", tag = "devices", security(()), request_body = EnrollInput,
    responses((status = 201, body = EnrolledDevice), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn enroll_device(
    State(s): State<AppState>,
    Body(input): Body<EnrollInput>,
) -> Result<Response, ApiError> {
    Ok(super::reply::created(
        s.service
            .enroll_with_key(&input.enrollment_key, &input.name, &input.public_key)
            .await?,
    ))
}
