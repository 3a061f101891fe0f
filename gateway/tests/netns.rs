//! The real `postern-gateway` binary in a network namespace this test creates (connected to
//! nothing): the TUN device comes up with its address and route, masquerade is installed,
//! `/healthz` answers, `/readyz` is 503 without a controller, and SIGTERM stops the process
//! cleanly, removing its nftables table and its TUN device. Run once with command-line
//! arguments and once through `deploy/gateway/entrypoint.sh` configured by environment
//! variables, dropping to `nobody` with only CAP_NET_ADMIN. And once against a stand-in
//! controller in the namespace: enrollment, full sync, `/readyz` 200, a WireGuard client
//! reaching an echo server through the gateway, and a revocation that cuts it off.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::controller::{Controller, STEP};
use common::wg::Client;
use common::{Namespace, http_get, run, spawn_in_namespace};
use model::{GatewayId, GrantId};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use packet::{IpPacket, PacketBuilder};
use proto::{ControllerMessage, GatewayMessage, GrantSpec};
use tokio::net::UdpSocket;
use tunnel::{ClientConfig, ClientTunnel};

const TUN: &str = "pgt0";
const HTTP: &str = "127.0.0.1:9090";
const TABLE: &str = "postern_pgt0";
/// Nothing listens there: the gateway runs without a controller.
const CONTROLLER: &str = "https://127.0.0.1:9";
const FINGERPRINT: &str = "AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB:AB";

fn gateway_bin() -> &'static str {
    env!("CARGO_BIN_EXE_postern-gateway")
}

fn entrypoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/gateway/entrypoint.sh")
}

/// A state directory anyone may traverse to, for the run as `nobody`.
fn state_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Waits for `/healthz`, checks the running gateway without a controller, stops it with
/// SIGTERM and checks that it cleaned up.
fn check_lifecycle(ns: &mut Namespace, expect_user: Option<&str>) {
    wait_healthy(ns);
    check_running(ns, expect_user);
    let (status, body) = ns.get(HTTP, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    let (status, metrics) = ns.get(HTTP, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("postern_gateway_controller_connected 0\n"),
        "{metrics}"
    );
    assert!(metrics.contains("postern_gateway_peers 0\n"), "{metrics}");
    assert!(metrics.contains("postern_gateway_dropped_total{reason=\"unknown_key\"} 0\n"));

    stop_and_check(ns);
}

/// Waits until `/healthz` answers, failing if the gateway exits first.
fn wait_healthy(ns: &mut Namespace) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some((200, body)) = ns.get(HTTP, "/healthz") {
            assert_eq!(body, "ok\n");
            break;
        }
        let child = ns.child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            let out = ns.child.take().unwrap().wait_with_output().unwrap();
            panic!(
                "the gateway exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "/healthz never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checks the TUN device, route, masquerade, forwarding and UDP socket of the running
/// gateway and, optionally, its user and capabilities.
fn check_running(ns: &mut Namespace, expect_user: Option<&str>) {
    let addr = ns.exec(&["ip", "-o", "addr", "show", "dev", TUN]);
    assert!(addr.contains("100.127.255.254/10"), "{addr}");
    let link = ns.exec(&["ip", "-o", "link", "show", "dev", TUN]);
    assert!(link.contains("UP"), "{link}");
    assert!(link.contains("mtu 1420"), "{link}");
    let route = ns.exec(&["ip", "route", "show", "100.64.0.0/10"]);
    assert!(route.contains(&format!("dev {TUN}")), "{route}");
    let table = ns.exec(&["nft", "list", "table", "inet", TABLE]);
    assert!(
        table.contains("ip saddr 100.64.0.0/10 oifname != \"pgt0\" masquerade"),
        "{table}"
    );
    let forwarding = ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(forwarding.trim(), "1");
    let udp = ns.exec(&["ss", "-Huln", "sport", "= :51820"]);
    assert!(!udp.trim().is_empty(), "nothing listens on UDP 51820");

    let pid = ns.child.as_ref().unwrap().id();
    if let Some(user) = expect_user {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned();
        let want = run(Command::new("id").args(["-u", user]));
        assert_eq!(uid, want.trim(), "the gateway runs as {user}");
        let caps = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .unwrap()
            .trim()
            .to_owned();
        assert_eq!(caps, "0000000000001000", "only CAP_NET_ADMIN");
    }
}

/// Stops the gateway with SIGTERM and checks that it exited cleanly and removed its
/// nftables table and TUN device.
fn stop_and_check(ns: &mut Namespace) {
    let pid = ns.child.as_ref().unwrap().id();
    nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM).unwrap();
    let out = wait_with_timeout(ns.child.take().unwrap(), Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
    for secret in ["one-time-token", "tok-env"] {
        assert!(!stderr.contains(secret), "a token was logged: {stderr}");
    }

    assert!(
        !ns.succeeds(&["nft", "list", "table", "inet", TABLE]),
        "the nftables table outlived the gateway"
    );
    assert!(
        !ns.succeeds(&["ip", "link", "show", "dev", TUN]),
        "the TUN device outlived the gateway"
    );
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the gateway did not stop on SIGTERM: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn binary_with_arguments() {
    let mut ns = Namespace::new();
    let state = state_root();
    let state_dir = state.path().join("state");
    let child = ns
        .command(&[
            gateway_bin(),
            "--controller",
            CONTROLLER,
            "--token",
            "one-time-token",
            "--controller-fingerprint",
            FINGERPRINT,
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--endpoint",
            "127.0.0.1:51820",
            "--tun-name",
            TUN,
            "--http-listen",
            HTTP,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ns.child = Some(child);
    check_lifecycle(&mut ns, None);
    let key = state_dir.join("private_key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn entrypoint_with_environment_as_nobody() {
    let mut ns = Namespace::new();
    let state = state_root();
    let state_dir = state.path().join("state");
    let entrypoint = entrypoint();
    // A container runtime gives the container its own /dev with a /dev/net/tun node that
    // anyone may open (access is gated by CAP_NET_ADMIN); some hosts' node is 0600. Do the
    // same in a private mount namespace instead of relying on (or changing) the host's node.
    let script = format!(
        "mount -t tmpfs -o mode=0755 postern-test-dev /dev/net && \
         mknod -m 0666 /dev/net/tun c 10 200 && exec sh {}",
        entrypoint.to_str().unwrap()
    );
    let child = ns
        .command(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ])
        .env("POSTERN_GATEWAY_BIN", gateway_bin())
        .env("POSTERN_RUN_AS", "nobody")
        .env("POSTERN_CONTROLLER", CONTROLLER)
        .env("POSTERN_TOKEN", "tok-env")
        .env("POSTERN_CONTROLLER_FINGERPRINT", FINGERPRINT)
        .env("POSTERN_STATE_DIR", &state_dir)
        .env("POSTERN_ENDPOINT", "127.0.0.1:51820")
        .env("POSTERN_TUN_NAME", TUN)
        .env("POSTERN_HTTP_LISTEN", HTTP)
        .env("POSTERN_NAME", "")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ns.child = Some(child);
    check_lifecycle(&mut ns, Some("nobody"));
    let owner = std::fs::metadata(&state_dir).unwrap();
    let key = std::fs::metadata(state_dir.join("private_key")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(owner.uid(), 65534);
    assert_eq!(key.uid(), 65534);
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}

const CLIENT_KEY: [u8; 32] = [0x22; 32];
const PSK: [u8; 32] = [0x33; 32];

/// The controller's side of the full test, run inside the namespace: enrolls the gateway,
/// syncs one grant, checks readiness, drives a WireGuard client through the gateway to an
/// echo server, then revokes the grant.
async fn controller_script(ctl: Controller) {
    let mut s = ctl.accept().await;
    let GatewayMessage::Enroll { token, name } = s.receive().await else {
        panic!("expected enroll");
    };
    assert_eq!((token.as_str(), name.as_str()), ("one-time-token", "gw-ns"));
    s.send(&ControllerMessage::Enrolled {
        gateway_id: GatewayId::new(),
        credential: "cred-ns".into(),
    })
    .await;
    let GatewayMessage::Hello {
        credential,
        public_key,
        endpoint,
    } = s.receive().await
    else {
        panic!("expected hello");
    };
    assert_eq!(credential, "cred-ns");
    assert_eq!(endpoint, "127.0.0.1:51820");
    let gateway_key = public_key.parse::<model::WgKey>().unwrap().to_bytes();

    let grant = GrantSpec {
        id: GrantId::new(),
        public_key: tunnel::public_key(&CLIENT_KEY).into(),
        preshared_key: PSK.into(),
        tunnel_address: "100.64.0.2".parse().unwrap(),
        addresses: vec!["10.0.5.20/32".parse().unwrap()],
        ports: vec!["udp/7777".parse().unwrap()],
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
    };
    s.send(&ControllerMessage::FullSync {
        seq: 1,
        grants: vec![grant.clone()],
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 1 });
    let (status, body) = http_get(HTTP, "/readyz").unwrap();
    assert_eq!(status, 200, "{body}");

    let echo = UdpSocket::bind("10.0.5.20:7777").await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let mut reply = b"pong:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from).await;
        }
    });
    let mut client = Client {
        tunnel: ClientTunnel::new(
            ClientConfig {
                grant: grant.id,
                private_key: CLIENT_KEY,
                gateway_public_key: gateway_key,
                preshared_key: PSK,
                gateway: "127.0.0.1:51820".parse().unwrap(),
                persistent_keepalive: None,
                index: 9,
            },
            Instant::now(),
        ),
        socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        buf: vec![0; 65535],
        out: vec![0; 65535 + tunnel::OVERHEAD],
        tx: Vec::new(),
    };
    let ping = |payload: &[u8]| {
        PacketBuilder::udp(
            "100.64.0.2".parse().unwrap(),
            "10.0.5.20".parse().unwrap(),
            40000,
            7777,
        )
        .build(payload)
    };
    client.send(&ping(b"ping")).await;
    let reply = client
        .receive(STEP)
        .await
        .expect("an echo through the gateway");
    assert!(
        IpPacket::parse(&reply)
            .unwrap()
            .payload()
            .ends_with(b"pong:ping")
    );

    s.send(&ControllerMessage::GrantRevoked {
        seq: 2,
        id: grant.id,
    })
    .await;
    assert_eq!(s.receive().await, GatewayMessage::Ack { seq: 2 });
    client.send(&ping(b"after")).await;
    assert_eq!(client.receive(Duration::from_millis(500)).await, None);

    let (_, metrics) = http_get(HTTP, "/metrics").unwrap();
    for line in [
        "postern_gateway_controller_connected 1\n",
        "postern_gateway_synced 1\n",
        "postern_gateway_peers 0\n",
        "postern_gateway_handshakes_total 1\n",
    ] {
        assert!(metrics.contains(line), "{line:?} missing in {metrics}");
    }
}

#[test]
fn binary_enrolls_syncs_forwards_and_revokes() {
    let mut ns = Namespace::new();
    ns.exec(&["ip", "addr", "add", "10.0.5.20/32", "dev", "lo"]);
    let state = state_root();
    let state_dir = state.path().join("state");
    let (info_tx, info_rx) = std::sync::mpsc::channel();
    let controller = spawn_in_namespace(&ns.name, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let ctl = Controller::start();
                info_tx
                    .send((ctl.addr().port(), ctl.fingerprint.to_string()))
                    .unwrap();
                tokio::time::timeout(Duration::from_secs(30), controller_script(ctl))
                    .await
                    .expect("the scenario finishes in time");
            });
    });
    let (port, fingerprint) = info_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let child = ns
        .command(&[
            gateway_bin(),
            "--controller",
            &url,
            "--token",
            "one-time-token",
            "--controller-fingerprint",
            &fingerprint,
            "--name",
            "gw-ns",
            "--state-dir",
            state_dir.to_str().unwrap(),
            "--endpoint",
            "127.0.0.1:51820",
            "--tun-name",
            TUN,
            "--http-listen",
            HTTP,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ns.child = Some(child);
    wait_healthy(&mut ns);
    check_running(&mut ns, None);
    if let Err(panic) = controller.join() {
        if let Some(child) = ns.child.take() {
            let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let out = wait_with_timeout(child, Duration::from_secs(10));
            eprintln!("gateway log:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::panic::resume_unwind(panic);
    }
    let credential = std::fs::read_to_string(state_dir.join("credential")).unwrap();
    assert_eq!(credential, "cred-ns");
    stop_and_check(&mut ns);
}
