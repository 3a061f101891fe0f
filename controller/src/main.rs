//! `postern-controller`: the thin binary around the `controller` library.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use controller::{Actor, ServeConfig, Service, TokenInput};

/// The Postern controller: identity, devices, policy decisions, grants, REST API and audit.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `controller=debug`.
    #[arg(long, env = "POSTERN_LOG", default_value = "info", global = true)]
    log: String,
}

#[derive(Args, Debug, Clone)]
struct StoreArgs {
    /// The data directory (SQLite database, generated TLS certificate).
    #[arg(long, env = "POSTERN_DATA_DIR", default_value = "./postern-data")]
    data_dir: PathBuf,
    /// Use PostgreSQL instead of the embedded SQLite: `postgres://user:pass@host/db`.
    #[arg(long, env = "POSTERN_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

use clap::Args;

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller's HTTPS server.
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// The address to listen on.
        #[arg(long, env = "POSTERN_LISTEN", default_value = "0.0.0.0:8443")]
        listen: SocketAddr,
        /// A PEM certificate chain; without it a self-signed one is made in the data directory.
        #[arg(long, env = "POSTERN_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, env = "POSTERN_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Extra DNS names or addresses for the self-signed certificate (comma-separated).
        #[arg(long, env = "POSTERN_TLS_NAMES", value_delimiter = ',')]
        tls_names: Vec<String>,
        /// Serve plain HTTP instead of HTTPS. Only for local development.
        #[arg(long, env = "POSTERN_INSECURE_HTTP")]
        insecure_http: bool,
        /// The network devices' tunnel addresses come from.
        #[arg(long, env = "POSTERN_TUNNEL_NETWORK", default_value = controller::DEFAULT_TUNNEL_NETWORK)]
        tunnel_network: ipnet::IpNet,
        /// The URL browsers reach the controller at, for OIDC redirect URIs
        /// (`{url}/auth/oidc/{provider}/callback`); by default made from --listen.
        #[arg(long, env = "POSTERN_PUBLIC_URL")]
        public_url: Option<String>,
        /// How long a client's device session lasts without renewal, in seconds (clients
        /// renew it while connected).
        #[arg(long, env = "POSTERN_DEVICE_SESSION_TTL", default_value_t = 12 * 3600)]
        device_session_ttl: u64,
        /// How often clients send posture reports, in seconds (0: only with access requests).
        #[arg(long, env = "POSTERN_POSTURE_INTERVAL", default_value_t = 60)]
        posture_interval: u64,
        /// A TOML config file with identity providers (`[[identity_providers]]`), created or
        /// updated by name at every start and then read-only through the API.
        #[arg(long, env = "POSTERN_CONFIG")]
        config: Option<PathBuf>,
        /// The key TOTP secrets and identity providers' client secrets are encrypted under
        /// (32 bytes, raw or base64); default `<data-dir>/secret.key`, created (mode 0600) on
        /// first start. Back it up with the database: without it those secrets are lost.
        /// Several replicas on one PostgreSQL database must all use the same key file.
        #[arg(long, env = "POSTERN_SECRET_KEY_FILE")]
        secret_key_file: Option<PathBuf>,
    },
    /// Administrative commands run on the controller's host.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand, Debug)]
enum AuditCommand {
    /// Check the audit log's hash chain: prints how many events it verified and the chain
    /// head (keep a copy elsewhere to anchor it), or names the first broken event and exits
    /// with status 1. Read-only.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// How long, in seconds, an event may wait to be sealed into the chain before it
        /// counts as broken rather than pending.
        #[arg(long, default_value_t = controller::AUDIT_PENDING_WINDOW.as_secs())]
        pending_seconds: u64,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an API token for automation and print it (shown once).
    CreateToken {
        #[command(flatten)]
        store: StoreArgs,
        /// What the token may do.
        #[arg(long, env = "POSTERN_TOKEN_ROLE", value_enum, default_value = "admin")]
        role: TokenRole,
        /// What the token is for.
        #[arg(long, env = "POSTERN_TOKEN_NAME", default_value = "automation")]
        name: String,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
enum TokenRole {
    Admin,
    Auditor,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&cli.log).context("parsing --log")?)
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve {
            store,
            listen,
            tls_cert,
            tls_key,
            tls_names,
            insecure_http,
            tunnel_network,
            public_url,
            device_session_ttl,
            posture_interval,
            config,
            secret_key_file,
        } => {
            let config = ServeConfig {
                listen,
                data_dir: store.data_dir,
                database_url: store.database_url,
                tls_cert,
                tls_key,
                tls_names,
                insecure_http,
                tunnel_network,
                public_url,
                device_session_ttl: std::time::Duration::from_secs(device_session_ttl),
                posture_interval: std::time::Duration::from_secs(posture_interval),
                config_file: config,
                secret_key_file,
            };
            controller::serve(config, shutdown_signal()).await
        }
        Command::Admin {
            command: AdminCommand::CreateToken { store, role, name },
        } => {
            let store =
                controller::open_store(&store.data_dir, store.database_url.as_deref()).await?;
            let service = Service::new(store.clone());
            let role = match role {
                TokenRole::Admin => model::Role::Admin,
                TokenRole::Auditor => model::Role::Auditor,
            };
            let issued = service
                .create_token(&Actor::cli(), TokenInput { name, role })
                .await
                .context("creating the token")?;
            service
                .seal_audit()
                .await
                .context("sealing the audit event")?;
            store.close().await;
            println!("{}", issued.secret);
            Ok(())
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    store,
                    pending_seconds,
                },
        } => {
            let db = store.data_dir.join("postern.db");
            if store.database_url.is_none() && !db.exists() {
                anyhow::bail!("no database at {} (wrong --data-dir?)", db.display());
            }
            let store =
                controller::open_store(&store.data_dir, store.database_url.as_deref()).await?;
            let service = Service::new(store.clone());
            let report = service
                .verify_audit_chain(std::time::Duration::from_secs(pending_seconds))
                .await
                .context("verifying the audit log")?;
            store.close().await;
            let mut extra = Vec::new();
            if report.before_chain > 0 {
                extra.push(format!("{} from before the chain", report.before_chain));
            }
            if report.pending > 0 {
                extra.push(format!("{} pending sealing", report.pending));
            }
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" ({})", extra.join(", "))
            };
            match report.broken {
                None => {
                    println!(
                        "audit chain intact: {} events verified{extra}; head #{} {}",
                        report.verified, report.head_seq, report.head_hash
                    );
                    Ok(())
                }
                Some(broken) => {
                    let at = match &broken.event {
                        Some(e) => format!(
                            "event {} (id {}, at {}, kind {})",
                            e.seq
                                .map_or_else(|| "unsealed".to_owned(), |s| format!("#{s}")),
                            e.id,
                            e.at,
                            e.kind
                        ),
                        None => "its start".to_owned(),
                    };
                    eprintln!(
                        "audit chain BROKEN at {at}: {}; {} events before it verified{extra}",
                        broken.problem, report.verified
                    );
                    std::process::exit(1);
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
