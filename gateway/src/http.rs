//! The local HTTP endpoints: `GET /healthz` (the process is alive), `GET /readyz` (200 only
//! while connected to the controller with the last full sync applied, else 503) and
//! `GET /metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::control::Status;
use crate::dataplane::DataPlaneHandle;

/// How long `/metrics` waits for the data plane's counters.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone)]
struct AppState {
    status: Arc<Status>,
    dataplane: DataPlaneHandle,
}

/// The health and metrics routes.
pub fn router(status: Arc<Status>, dataplane: DataPlaneHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(AppState { status, dataplane })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.status.ready() {
        (StatusCode::OK, "ready\n")
    } else if s.status.connected() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the full sync\n",
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not connected to the controller\n",
        )
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let snapshot = tokio::time::timeout(SNAPSHOT_TIMEOUT, s.dataplane.snapshot())
        .await
        .ok()
        .and_then(Result::ok);
    let mut body = String::with_capacity(4096);
    crate::metrics::render(
        snapshot.as_ref(),
        s.status.connected(),
        s.status.synced(),
        &mut body,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
