//! The one mapping of [`ServiceError`] to HTTP: status, stable code, field and message. The
//! REST API sends it as JSON, the web UI as a page; database text never leaves the log.

use axum::http::StatusCode;

use crate::app::ServiceError;

/// What an HTTP answer says about a failed service call.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: StatusCode,
    /// A stable code: `invalid`, `not_found`, `conflict`, `forbidden`, `unauthorized`,
    /// `locked`, `unavailable`, a device flow error, `internal`.
    pub(crate) code: &'static str,
    /// The request field at fault, when one is.
    pub(crate) field: Option<String>,
    /// What happened, in words a person can act on.
    pub(crate) message: String,
}

/// Maps a service error to its HTTP answer.
pub(crate) fn classify(e: ServiceError) -> Failure {
    let (status, code, field) = match &e {
        ServiceError::Invalid(f) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            Some(f.field.clone()),
        ),
        ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
        ServiceError::Conflict { field, .. } => {
            (StatusCode::CONFLICT, "conflict", field.map(str::to_owned))
        }
        ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden", None),
        ServiceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", None),
        ServiceError::Locked { .. } => (StatusCode::TOO_MANY_REQUESTS, "locked", None),
        ServiceError::DeviceFlow { code, .. } => (StatusCode::BAD_REQUEST, *code, None),
        ServiceError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        e if e.is_unavailable() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
    };
    let message = match e {
        ServiceError::Invalid(f) => format!("{}: {}", f.field, f.message),
        ServiceError::Store(e) => {
            tracing::error!(error = %e, "store failure");
            "internal error; see the controller's log".to_owned()
        }
        e => e.to_string(),
    };
    Failure {
        status,
        code,
        field,
        message,
    }
}
