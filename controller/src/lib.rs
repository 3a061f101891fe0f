//! The Postern controller: identity, devices, policy decisions, grants, the REST API, the
//! web UI and the audit log, over the `store` (SQLite or PostgreSQL). This crate does IO;
//! the decision logic itself is the pure `policy` crate.
//!
//! Its modules form a one-way stack (the layering test in `tests/layers.rs` keeps it so):
//!
//! - [`serve`] builds the store, the bus, the services and the endpoints, once;
//! - shells: `http` (REST API and web UI), `control` (QUIC links of gateways and
//!   clients), `cluster` (the replicas' `LISTEN`/`NOTIFY`), `timers` (grants end on time);
//!   they call the services only;
//! - `app`: the application services, one file per object family over a small kernel;
//! - `bus`: the in-memory fan-out to gateway and client links and other replicas;
//! - `store`: SQL only; and the leaves `crypto`, `secrets`, `totp`, `tls`.

mod app;
mod bus;
mod cluster;
mod config;
mod control;
mod crypto;
mod http;
mod secrets;
mod timers;
mod tls;
mod totp;

// The storage layer is the `store` crate; `store::…` names it throughout.
use ::store;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

pub use app::{
    AUDIT_PENDING_WINDOW, AccessGrant, AccessOutcome, AccessRequest, Actor, ClientContext,
    ConditionsInput, DEFAULT_ACK_TIMEOUT, DEFAULT_DEVICE_SESSION_TTL, DEFAULT_TUNNEL_NETWORK,
    DEVICE_AUTHORIZATION_TTL, DEVICE_POLL_INTERVAL, DEVICE_SESSION_MAX, DecisionRequest,
    DeviceApproval, DeviceAuthorizationInput, DeviceAuthorizationStart, DevicePatch, DeviceSession,
    DeviceTokenInput, EnrollInput, EnrolledDevice, EnrollmentKeyInput, GatewayPatch,
    GatewayTokenInput, GroupInput, IdentityConfigReport, IdentityLink, IdentityProviderInput,
    Issued, LOCAL_PROVIDER, LOCKOUT, LinkIdentityInput, LoginInput, MAX_FAILED_SIGN_INS,
    MIN_PASSWORD_CHARS, Me, MemberInput, MyAccess, NewSession, OIDC_BROWSER_COOKIE, OIDC_LOGIN_TTL,
    OidcCallback, OidcStart, POSTURE_MAX_SKEW, PasswordChange, PasswordInput, PendingDevice,
    PolicyInput, PostureProfileInput, RECOVERY_CODE_COUNT, RecoveryCodes, ResourceInput,
    SESSION_COOKIE, SESSION_IDLE_TIMEOUT, SESSION_LIFETIME, Service, ServiceError, SessionProblem,
    SetupInput, SetupResult, SignedIn, SiteInput, TokenInput, TotpCode, TotpEnrollment, UserInput,
    UserPatch,
};
pub use bus::ControlEvent;
pub use cluster::ClusterError;
pub use config::{ConfigFile, ProviderConfig};
pub use control::{CONTROL_ALPN, ControlEndpoint};
pub use crypto::{SecretError, SecretKey};
pub use http::{AppState, router};
pub use store::{
    ApiToken, AuditEvent, AuditFilter, Backend, EnrollmentKey, GatewayToken, GrantFilter, Identity,
    IdentityProvider, Store, StoreError, WebSession,
};
pub use tls::{TlsIdentity, fingerprint_of_der};
pub use totp::code_at as totp_code_at;

/// How to run the controller's server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen for HTTPS (or HTTP with `insecure_http`).
    pub listen: SocketAddr,
    /// The data directory: SQLite database, generated TLS identity.
    pub data_dir: PathBuf,
    /// A `postgres://` URL to use instead of SQLite.
    pub database_url: Option<String>,
    /// An operator-provided certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Extra DNS names or addresses for a generated certificate.
    pub tls_names: Vec<String>,
    /// Serve plain HTTP (local development only). The QUIC control endpoint still uses TLS,
    /// with the self-signed certificate.
    pub insecure_http: bool,
    /// The network devices' tunnel addresses come from (default `100.64.0.0/10`).
    pub tunnel_network: ipnet::IpNet,
    /// The URL browsers reach the controller at (OIDC redirect URIs); by default made from
    /// the listening address.
    pub public_url: Option<String>,
    /// How long a device session lasts without renewal.
    pub device_session_ttl: std::time::Duration,
    /// How often clients send posture reports (zero: never).
    pub posture_interval: std::time::Duration,
    /// The config file (TOML) with identity providers to create or update at start.
    pub config_file: Option<PathBuf>,
    /// The file holding the key secrets are sealed under at rest; by default
    /// `<data_dir>/secret.key`, made on first start.
    pub secret_key_file: Option<PathBuf>,
}

impl ServeConfig {
    /// A configuration with defaults: HTTPS with a self-signed certificate, SQLite in
    /// `data_dir`, tunnel addresses from `100.64.0.0/10`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            database_url: None,
            tls_cert: None,
            tls_key: None,
            tls_names: Vec::new(),
            insecure_http: false,
            tunnel_network: app::default_tunnel_network(),
            public_url: None,
            device_session_ttl: DEFAULT_DEVICE_SESSION_TTL.unsigned_abs(),
            posture_interval: std::time::Duration::from_secs(60),
            config_file: None,
            secret_key_file: None,
        }
    }
}

/// Opens the store the configuration names, creating the data directory when needed.
pub async fn open_store(
    data_dir: &std::path::Path,
    database_url: Option<&str>,
) -> anyhow::Result<Store> {
    match database_url {
        Some(url) => Store::connect(url)
            .await
            .context("connecting to the database"),
        None => {
            create_private_dir(data_dir)?;
            Store::open_sqlite(data_dir)
                .await
                .with_context(|| format!("opening the SQLite database in {}", data_dir.display()))
        }
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

/// Runs the controller until `shutdown` resolves. Prints, for the person who started it, the
/// URL, the certificate fingerprint and (until the first admin exists) the setup code.
pub async fn serve(
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    create_private_dir(&config.data_dir)?;
    // Read the config file before anything else, so that a mistake in it stops the start.
    let identity_config = match &config.config_file {
        Some(path) => {
            let origin = path.display().to_string();
            let file = ConfigFile::load(path)?;
            Some((origin.clone(), file.identity_provider_inputs(&origin)?))
        }
        None => None,
    };
    let secret_key_path = config
        .secret_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join("secret.key"));
    let secret_key = SecretKey::load_or_create(&secret_key_path)?;
    let store = open_store(&config.data_dir, config.database_url.as_deref()).await?;
    let public_url = config.public_url.clone().unwrap_or_else(|| {
        let scheme = if config.insecure_http {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{}", config.listen)
    });
    let service = Service::new(store.clone())
        .with_tunnel_network(config.tunnel_network)
        .context("--tunnel-network")?
        .with_public_url(public_url)
        .with_device_session_ttl(config.device_session_ttl)
        .with_posture_interval(config.posture_interval)
        .with_secret_key(secret_key);
    service
        .seal_plaintext_secrets()
        .await
        .context("sealing secrets stored in plain text")?;
    // On PostgreSQL, other replicas may share the database: hear of their changes.
    cluster::start(&service)
        .await
        .context("joining the other controller replicas")?;
    if let Some((origin, providers)) = identity_config {
        let report = service
            .apply_identity_config(&origin, providers)
            .await
            .with_context(|| format!("applying the identity providers of {origin}"))?;
        tracing::info!(
            created = ?report.created,
            updated = ?report.updated,
            deleted = ?report.deleted,
            unchanged = report.unchanged.len(),
            "identity providers from the config file"
        );
    }
    // Time is a change too: grants end on time, with the reasons.
    let timer = timers::start(service.clone());
    // Audit events join the hash chain right after their transaction commits.
    let sealer = timers::start_audit_sealer(service.clone());
    let setup_code = service
        .prepare_setup()
        .await
        .context("preparing first-run setup")?;

    let std_listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("listening on {}", config.listen))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    // QUIC always needs TLS: with plain HTTP it uses the self-signed certificate.
    let identity = if config.insecure_http {
        tls::load_or_create(None, None, &config.data_dir, &config.tls_names)?
    } else {
        tls::load_or_create(
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            &config.data_dir,
            &config.tls_names,
        )?
    };
    let app = router(AppState {
        service: service.clone(),
        control_fingerprint: Some(identity.fingerprint.clone()),
    });
    let control = ControlEndpoint::start(service.clone(), addr, &identity)?;
    let quic = control.closer();
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        quic.close(quinn::VarInt::from_u32(0), b"controller shutting down");
        h.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });

    let backend = match store.backend() {
        Backend::Sqlite => format!("SQLite in {}", config.data_dir.display()),
        Backend::Postgres => "PostgreSQL".to_owned(),
    };
    let result = if config.insecure_http {
        println!(
            "postern-controller listening on http://{addr} (plain HTTP: local development only)"
        );
        print_setup(setup_code.as_deref(), &format!("http://{addr}"));
        println!(
            "gateway control (QUIC) on udp/{addr}, TLS certificate SHA-256 fingerprint: {}",
            identity.fingerprint
        );
        println!("storage: {backend}");
        tracing::warn!("serving plain HTTP; use TLS anywhere but a developer machine");
        axum_server::from_tcp(std_listener)
            .handle(handle)
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
    } else {
        let rustls_config = axum_server::tls_rustls::RustlsConfig::from_pem_file(
            &identity.cert_path,
            &identity.key_path,
        )
        .await
        .context("loading the TLS certificate and key")?;
        println!("postern-controller listening on https://{addr}");
        println!(
            "TLS certificate SHA-256 fingerprint{}: {}",
            if identity.self_signed {
                " (self-signed; pin it in gateways and clients)"
            } else {
                ""
            },
            identity.fingerprint
        );
        print_setup(setup_code.as_deref(), &format!("https://{addr}"));
        println!("gateway control (QUIC) on udp/{addr}");
        println!("storage: {backend}");
        axum_server::from_tcp_rustls(std_listener, rustls_config)
            .handle(handle)
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
    };
    control.shutdown().await;
    timer.abort();
    sealer.abort();
    if let Err(e) = service.seal_audit().await {
        tracing::warn!(error = %e, "sealing the last audit events");
    }
    store.close().await;
    result.context("serving HTTP")
}

fn print_setup(code: Option<&str>, base: &str) {
    use std::io::Write;
    if let Some(code) = code {
        println!("first start: no admin exists yet. One-time setup code: {code}");
        println!(
            "create the first admin with:\n  curl -k -X POST {base}/api/v1/setup -H 'content-type: application/json' \\\n    -d '{{\"code\": \"{code}\", \"email\": \"you@example.com\", \"name\": \"Your Name\"}}'"
        );
        println!("the answer holds an admin API token, shown once.");
    }
    let _ = std::io::stdout().flush();
}
