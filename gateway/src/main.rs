//! `postern-gateway`: the data plane next to private servers. This binary parses its
//! arguments, sets up the TUN device, the UDP socket, masquerade and the local HTTP
//! endpoints, and runs the data plane and the control link from the `gateway` library until
//! SIGTERM or SIGINT, then removes what it set up.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use gateway::{
    Args, Config, ControlLink, ControlLinkConfig, DataPlane, Masquerade, StateDir, Status,
};
use rand::RngCore;
use tokio::signal::unix::{SignalKind, signal};
use tunnel::{GatewayConfig, GatewayTunnel};

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("POSTERN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = Args::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
        .and_then(|rt| rt.block_on(run(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "postern-gateway stopped");
            eprintln!("postern-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = args
        .resolve(hostname, gateway::first_address)
        .context("invalid configuration")?;
    tracing::info!(
        name = %config.name,
        controller = %config.controller,
        endpoint = %config.endpoint,
        tun = %config.tun_name,
        tunnel_network = %config.tunnel_network,
        pinned = config.fingerprint.is_some(),
        masquerade = config.masquerade,
        controller_grace_s = config.controller_grace.as_secs_f64(),
        "starting postern-gateway"
    );
    let state = StateDir::open(&config.state_dir).context("opening the state directory")?;
    let private_key = state
        .private_key()
        .context("loading the gateway's WireGuard private key")?;
    if state
        .credential()
        .context("reading the credential")?
        .is_none()
        && config.token.is_none()
    {
        anyhow::bail!(
            "this gateway has not enrolled yet ({} holds no credential): give the one-time token with --token or POSTERN_TOKEN",
            state.path().display()
        );
    }
    let tls = gateway::client_config(config.fingerprint).context("building the TLS settings")?;

    let socket = gateway::bind_udp(config.listen_port)
        .with_context(|| format!("binding UDP port {}", config.listen_port))?;
    let tun = gateway::open_tun(&config.tun_name, config.tun_address, config.tunnel_network)
        .with_context(|| {
            format!(
                "creating the TUN device {} (needs CAP_NET_ADMIN and /dev/net/tun)",
                config.tun_name
            )
        })?;
    tracing::info!(tun = %config.tun_name, address = %config.tun_address, port = config.listen_port, "data plane up");
    // Dropping the guard on any early return below removes the rule again.
    let masquerade = if config.masquerade {
        gateway::enable_forwarding(config.tunnel_network).context("enabling IP forwarding")?;
        Some(
            Masquerade::install(&config.tun_name, config.tunnel_network)
                .context("installing the masquerade rule")?,
        )
    } else {
        None
    };

    let mut gateway_config = GatewayConfig::new(private_key);
    gateway_config.seed = rand::rngs::OsRng.next_u64();
    let tunnel = GatewayTunnel::new(gateway_config, Instant::now());
    let public_key = tunnel.public_key();
    let (plane, handle) = DataPlane::new(tunnel, socket, tun, config.controller_grace);
    let status = Arc::new(Status::default());

    let listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("listening for HTTP on {}", config.http_listen))?;
    let app = gateway::http::router(status.clone(), handle.clone());
    let mut http = tokio::spawn(async move { axum::serve(listener, app).await });

    let link = ControlLink::new(link_config(&config, tls, public_key), state, handle, status)
        .context("setting up the control link")?;
    let mut plane = tokio::spawn(plane.run());
    let mut control = tokio::spawn(link.run());

    let mut sigterm = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    let outcome = tokio::select! {
        _ = sigterm.recv() => {
            tracing::info!("SIGTERM received, shutting down");
            Ok(())
        }
        _ = sigint.recv() => {
            tracing::info!("SIGINT received, shutting down");
            Ok(())
        }
        r = &mut plane => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the data plane stopped")),
            Ok(Err(e)) => Err(e).context("the data plane failed"),
            Err(e) => Err(e).context("the data plane task failed"),
        },
        r = &mut control => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the control link stopped")),
            Ok(Err(e)) => Err(e).context("the control link failed"),
            Err(e) => Err(e).context("the control link task failed"),
        },
        r = &mut http => match r {
            Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped")),
            Ok(Err(e)) => Err(e).context("the HTTP server failed"),
            Err(e) => Err(e).context("the HTTP server task failed"),
        },
    };
    for task in [
        control.abort_handle(),
        http.abort_handle(),
        plane.abort_handle(),
    ] {
        task.abort();
    }
    // Wait for the tasks to drop what they own: the TUN device goes away with the data plane.
    let _ = control.await;
    let _ = http.await;
    let _ = plane.await;
    if let Some(m) = masquerade {
        let table = m.table().to_owned();
        if let Err(e) = m.remove() {
            tracing::warn!(table, error = %e, "could not remove the masquerade rule");
        }
    }
    tracing::info!("stopped");
    outcome
}

fn link_config(
    config: &Config,
    tls: rustls::ClientConfig,
    public_key: [u8; 32],
) -> ControlLinkConfig {
    ControlLinkConfig {
        controller: config.controller.clone(),
        tls,
        token: config.token.clone(),
        name: config.name.clone(),
        public_key,
        endpoint: config.endpoint.clone(),
    }
}
