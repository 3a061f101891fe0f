//! Access decisions per second and grants issued per second through the controller's
//! services, in process, on a multi-thread runtime with 2 workers, on SQLite and on
//! PostgreSQL:
//!
//! - decisions: `Service::decide` with an admin actor (each decision is audited, one
//!   transaction each), from concurrent tasks, round-robin over 100 users with a device
//!   each;
//! - grants: `Service::request_access` (decision, gateway choice, tunnel address, the grant
//!   and its audit, pushed to the gateway and acknowledged) against a stand-in gateway
//!   connected over the real QUIC control endpoint on loopback, which acknowledges every
//!   message at once. Grants stay live (for an hour), so each row issues among the
//!   grants of the rows before (the table says how many).
//!
//! ```sh
//! cargo bench -p postern-controller --bench decisions
//! ```
//!
//! `POSTERN_BENCH_DECISIONS` sets the decisions per row (default 20000),
//! `POSTERN_BENCH_GRANTS` the grants per row (default 2000), `POSTERN_BENCH_TASKS` the
//! concurrent tasks of each row (default `1,16`). The PostgreSQL rows need
//! `POSTERN_TEST_POSTGRES_URL` (as `scripts/test` sets it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::Engine;
use controller::{
    AccessOutcome, AccessRequest, Actor, CONTROL_ALPN, ControlEndpoint, DecisionRequest,
    GatewayTokenInput, GroupInput, MemberInput, PolicyInput, ResourceInput, Service, SiteInput,
    Store, TlsIdentity, UserInput, fingerprint_of_der,
};
use model::{DeviceId, ResourceId, UserId};
use proto::{ControllerMessage, GatewayMessage};
use rand::RngCore;

const USERS: usize = 100;

fn key() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
        .clamp(1, 1_000_000)
}

/// The objects decisions are made on: users with a device each, in a group whose policy
/// allows them the resource.
struct Company {
    subjects: Vec<(UserId, DeviceId)>,
    resource: ResourceId,
    site: model::SiteId,
}

async fn company(service: &Service) -> anyhow::Result<Company> {
    let admin = Actor::cli();
    let site = service
        .create_site(&admin, SiteInput { name: "hq".into() })
        .await?;
    let resource = service
        .create_resource(
            &admin,
            ResourceInput {
                name: "web".into(),
                site_id: site.id,
                addresses: vec!["10.0.5.20".into()],
                ports: vec!["tcp/443".into()],
            },
        )
        .await?;
    let group = service
        .create_group(
            &admin,
            GroupInput {
                name: "eng".into(),
                description: String::new(),
            },
        )
        .await?;
    service
        .create_policy(
            &admin,
            PolicyInput {
                name: "eng-web".into(),
                group_id: group.id,
                resource_id: resource.id,
                action: model::PolicyAction::Allow,
                conditions: Default::default(),
                max_session_secs: Some(3600),
                disabled: false,
            },
        )
        .await?;
    let mut subjects = Vec::with_capacity(USERS);
    for i in 0..USERS {
        let user = service
            .create_user(
                &admin,
                UserInput {
                    email: format!("user{i}@example.com"),
                    name: format!("User {i}"),
                    role: None,
                },
            )
            .await?;
        service
            .add_member(&admin, group.id, MemberInput { user_id: user.id })
            .await?;
        let device = service
            .register_device(&admin, user.id, "laptop", &key())
            .await?;
        subjects.push((user.id, device.id));
    }
    Ok(Company {
        subjects,
        resource: resource.id,
        site: site.id,
    })
}

/// A gateway over the real QUIC control channel that enrolls, says hello and acknowledges
/// every message at once; it runs until the connection closes.
async fn stand_in_gateway(
    service: &Service,
    site: model::SiteId,
    dir: &std::path::Path,
) -> anyhow::Result<(ControlEndpoint, quinn::Endpoint)> {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem())?;
    std::fs::write(&key_path, certified.key_pair.serialize_pem())?;
    let identity = TlsIdentity {
        cert_path,
        key_path,
        fingerprint: fingerprint_of_der(certified.cert.der()),
        self_signed: true,
    };
    let control = ControlEndpoint::start(
        service.clone(),
        "127.0.0.1:0".parse::<SocketAddr>()?,
        &identity,
    )?;
    let token = service
        .create_gateway_token(&Actor::cli(), site, GatewayTokenInput::default())
        .await?
        .secret;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![CONTROL_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(control.local_addr()?, "localhost")?
        .await?;
    let (mut send, recv) = conn.open_bi().await?;
    let mut frames = proto::stream::FrameReader::new(recv);
    say(
        &mut send,
        &GatewayMessage::Enroll {
            token,
            name: "gw1".into(),
        },
    )
    .await?;
    let ControllerMessage::Enrolled { credential, .. } = frames.next().await? else {
        anyhow::bail!("the stand-in gateway was not enrolled");
    };
    say(
        &mut send,
        &GatewayMessage::Hello {
            credential,
            public_key: key(),
            endpoint: "gw1.example.com:51820".into(),
        },
    )
    .await?;
    let ControllerMessage::FullSync { seq, .. } = frames.next().await? else {
        anyhow::bail!("the stand-in gateway got no full sync");
    };
    say(&mut send, &GatewayMessage::Ack { seq }).await?;
    tokio::spawn(async move {
        while let Ok(msg) = frames.next::<ControllerMessage>().await {
            let seq = match msg {
                ControllerMessage::FullSync { seq, .. }
                | ControllerMessage::GrantAdded { seq, .. }
                | ControllerMessage::GrantRevoked { seq, .. } => seq,
                _ => continue,
            };
            if say(&mut send, &GatewayMessage::Ack { seq }).await.is_err() {
                break;
            }
        }
    });
    Ok((control, endpoint))
}

/// Sends one message on the control stream.
async fn say(send: &mut quinn::SendStream, msg: &GatewayMessage) -> anyhow::Result<()> {
    let mut out = Vec::new();
    proto::encode(msg, &mut out);
    send.write_all(&out).await?;
    Ok(())
}

struct Row {
    database: &'static str,
    operation: &'static str,
    tasks: usize,
    count: usize,
    /// Live grants when the row started.
    live: usize,
    wall: Duration,
    latencies: Vec<Duration>,
}

impl Row {
    fn quantile(&self, q: f64) -> Duration {
        let mut t = self.latencies.clone();
        t.sort();
        let i = ((t.len() as f64 - 1.0) * q).round() as usize;
        t.get(i).copied().unwrap_or_default()
    }
}

/// Runs `op(i)` for i in 0..count from `tasks` concurrent tasks; the wall time and each
/// call's latency.
async fn concurrently<F, Fut>(
    tasks: usize,
    count: usize,
    op: F,
) -> anyhow::Result<(Duration, Vec<Duration>)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (op, next) = (op.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(times);
                }
                let t = Instant::now();
                op(i).await?;
                times.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for h in handles {
        latencies.extend(h.await??);
    }
    Ok((started.elapsed(), latencies))
}

async fn rows(database: &'static str, store: Store) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::tempdir()?;
    let service = Service::new(store);
    let c = Arc::new(company(&service).await?);
    let (control, endpoint) = stand_in_gateway(&service, c.site, dir.path()).await?;
    let tasks: Vec<usize> = std::env::var("POSTERN_BENCH_TASKS")
        .unwrap_or_else(|_| "1,16".into())
        .split(',')
        .filter_map(|t| t.trim().parse().ok())
        .map(|t: usize| t.clamp(1, 1024))
        .collect();
    let (decisions, grants) = (
        env_number("POSTERN_BENCH_DECISIONS", 20_000),
        env_number("POSTERN_BENCH_GRANTS", 2_000),
    );
    let mut out = Vec::new();
    for &t in &tasks {
        let (s, c) = (service.clone(), c.clone());
        let (wall, latencies) = concurrently(t, decisions, move |i| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                let (user_id, device_id) = c.subjects[i % c.subjects.len()];
                let req = DecisionRequest {
                    user_id,
                    device_id,
                    resource_id: c.resource,
                    source: "192.0.2.7".into(),
                    identity_provider: None,
                    last_mfa_at: None,
                };
                match s.decide(&Actor::cli(), req).await? {
                    policy::Decision::Allow { .. } => Ok(()),
                    d => anyhow::bail!("denied: {d:?}"),
                }
            }
        })
        .await?;
        out.push(Row {
            database,
            operation: "decisions",
            tasks: t,
            count: decisions,
            live: 0,
            wall,
            latencies,
        });
    }
    for (row, &t) in tasks.iter().enumerate() {
        let (s, c) = (service.clone(), c.clone());
        let (wall, latencies) = concurrently(t, grants, move |i| {
            let (s, c) = (s.clone(), c.clone());
            async move {
                let (user_id, device_id) = c.subjects[i % c.subjects.len()];
                let req = AccessRequest {
                    user_id,
                    device_id,
                    resource_id: c.resource,
                    source: "192.0.2.7".into(),
                    public_key: key(),
                    identity_provider: None,
                    last_mfa_at: None,
                };
                match s.request_access(&Actor::cli(), req).await? {
                    AccessOutcome::Granted(_) => Ok(()),
                    d => anyhow::bail!("not granted: {d:?}"),
                }
            }
        })
        .await?;
        out.push(Row {
            database,
            operation: "grants issued",
            tasks: t,
            count: grants,
            live: row * grants,
            wall,
            latencies,
        });
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"done");
    control.shutdown().await;
    service.store().close().await;
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let all = rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let sqlite = Store::open_sqlite(dir.path())
            .await
            .context("opening SQLite")?;
        let mut all = rows("SQLite", sqlite).await?;
        if let Some(db) = store::testing::postgres().await {
            all.extend(rows("PostgreSQL", db.store.clone()).await?);
            drop(db);
        }
        Ok::<_, anyhow::Error>(all)
    })?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\ncontroller services in process, 2 runtime workers (goal: 20,000 decisions/s on SQLite; load average {})\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "| database | operation | tasks | count | live grants at start | per second | mean ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &all {
        let mean = r.latencies.iter().sum::<Duration>() / r.latencies.len().max(1) as u32;
        println!(
            "| {} | {} | {} | {} | {} | {:.0} | {:.3} | {:.3} |",
            r.database,
            r.operation,
            r.tasks,
            r.count,
            r.live,
            r.count as f64 / r.wall.as_secs_f64(),
            mean.as_secs_f64() * 1000.0,
            r.quantile(0.99).as_secs_f64() * 1000.0,
        );
    }
    Ok(())
}
