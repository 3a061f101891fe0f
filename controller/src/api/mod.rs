//! The REST API under `/api/v1`: JSON in and out, bearer tokens, an OpenAPI document
//! generated from these handlers at `/api/v1/openapi.json`.

mod device;
mod extract;
mod handlers;
mod oidc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;

use crate::service::{Service, ServiceError};

pub(crate) use extract::Auth;

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The application services.
    pub service: Service,
    /// The SHA-256 fingerprint of the controller's TLS certificate, which the gateway
    /// enrollment page puts into the `docker run` command it shows.
    pub control_fingerprint: Option<String>,
}

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
        match e {
            ServiceError::Invalid(f) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                Some(f.field.clone()),
                format!("{}: {}", f.field, f.message),
            ),
            ServiceError::NotFound(what) => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                format!("{what} not found"),
            ),
            ServiceError::Conflict { field, message } => Self::new(
                StatusCode::CONFLICT,
                "conflict",
                field.map(str::to_owned),
                message,
            ),
            ServiceError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", None, m),
            ServiceError::Unauthorized(m) => {
                Self::new(StatusCode::UNAUTHORIZED, "unauthorized", None, m)
            }
            ServiceError::Locked(m) => Self::new(StatusCode::TOO_MANY_REQUESTS, "locked", None, m),
            ServiceError::Unavailable(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", None, m)
            }
            ServiceError::DeviceFlow { code, message } => {
                Self::new(StatusCode::BAD_REQUEST, code, None, message)
            }
            ServiceError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    None,
                    "internal error; see the controller's log",
                )
            }
        }
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
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::local::SESSION_COOKIE,
            ))),
        );
    }
}

/// The HTTP application: `/healthz`, the API and its OpenAPI document.
pub fn router(state: AppState) -> Router {
    let (api, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", handlers::routes())
        .split_for_parts();
    let doc = std::sync::Arc::new(doc);
    api.route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
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
        .merge(crate::web::routes())
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", None, "no such endpoint")
        })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
