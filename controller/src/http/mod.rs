//! The HTTPS shell: the router that serves the REST API ([`api`]) and the admin web UI
//! ([`web`]) side by side, the state their handlers share, and the one mapping of the
//! application services' errors to HTTP ([`error`]). Handlers call the application
//! services only; they never touch the store.

mod api;
mod error;
mod web;

use axum::Router;

use crate::app::Service;

/// Shared state of the HTTP handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The application services.
    pub service: Service,
    /// The SHA-256 fingerprint of the controller's TLS certificate, which the gateway
    /// enrollment page puts into the `docker run` command it shows.
    pub control_fingerprint: Option<String>,
}

/// The HTTP application: `/healthz`, the API and its OpenAPI document, the OIDC redirects,
/// the web UI.
pub fn router(state: AppState) -> Router {
    api::routes()
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .merge(web::routes())
        .fallback(|| async { api::not_found() })
        .layer(tower_http::limit::RequestBodyLimitLayer::new(1024 * 1024))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}
