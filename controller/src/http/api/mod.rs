//! The REST API under `/api/v1`: JSON in and out, bearer tokens, an OpenAPI document
//! generated from these handlers at `/api/v1/openapi.json`.

mod device;
mod extract;
mod handlers;
mod oidc;
mod reply;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use super::AppState;
use super::error::{Failure, classify};
use crate::app::ServiceError;

pub(crate) use extract::Auth;

/// The error body every failing request gets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    /// The error.
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// A stable code: `invalid`, `malformed`, `unauthorized`, `forbidden`, `not_found`,
    /// `conflict`, `locked`, `unavailable`, `internal`.
    pub(crate) code: &'static str,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    /// What happened, in words a person can act on.
    pub(crate) message: String,
}

/// An error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            detail: ErrorDetail {
                code,
                field,
                message: message.into(),
            },
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        let Failure {
            status,
            code,
            field,
            message,
        } = classify(e);
        Self::new(status, code, field, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(ErrorBody { error: self.detail })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Postern controller API", description = "Sites, gateways, resources, users, groups, devices, posture profiles, policies, grants and the audit log."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::app::SESSION_COOKIE))),
        );
    }
}

/// The REST API's routes, the OIDC redirects and the OpenAPI document.
pub(crate) fn routes() -> Router<AppState> {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", handlers::routes().merge(device::routes()))
        .split_for_parts();
    let doc = std::sync::Arc::new(doc);
    api.route(
        "/auth/oidc/{provider}/start",
        axum::routing::get(oidc::start),
    )
    .route(
        "/auth/oidc/{provider}/callback",
        axum::routing::get(oidc::callback),
    )
    .route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
}

/// The answer to a path no route serves.
pub(crate) fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", None, "no such endpoint")
}
