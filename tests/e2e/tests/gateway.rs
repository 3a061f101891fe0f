//! The gateway end to end, in namespaces this test creates: the real controller, the real
//! gateway started through its container entrypoint, two resource hosts with servers on two
//! ports, and Debian's `wireguard-go` as the client, configured from an issued grant.

#![allow(clippy::unwrap_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use e2e::client::{Ticker, echo_server};
use e2e::deploy::{Controller, Gateway, connect_client, provision};
use e2e::topology::{CLIENT, GATEWAY_PUBLIC, RESOURCE_1, RESOURCE_2, Topology};
use e2e::wg::{KeyPair, Peer, WireguardGo};
use e2e::{Netns, wait_for};
use serde_json::json;

/// The gateway tests' echo: a line comes back within 1.5 s.
fn echo(ns: &Netns, target: &str, port: u16) -> anyhow::Result<()> {
    e2e::client::echo(ns, target, port, Duration::from_millis(1500))
}

fn wait_echo(ns: &Netns, target: &str, port: u16, timeout: Duration) -> bool {
    wait_for(timeout, || echo(ns, target, port).ok()).is_some()
}

/// Sends datagrams to the gateway's WireGuard port from inside the client namespace and
/// returns how many bytes came back within `wait`.
fn bytes_back_from_gateway(
    t: &Topology,
    datagrams: Vec<Vec<u8>>,
    wait: Duration,
) -> anyhow::Result<usize> {
    t.client.block_on(async move {
        tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            let sock = UdpSocket::bind(format!("{CLIENT}:0"))?;
            for d in &datagrams {
                sock.send_to(d, format!("{GATEWAY_PUBLIC}:51820"))?;
            }
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            let (mut total, deadline, mut buf) = (0, Instant::now() + wait, [0u8; 2048]);
            while Instant::now() < deadline {
                if let Ok((n, _)) = sock.recv_from(&mut buf) {
                    total += n;
                }
            }
            Ok(total)
        })
        .await?
    })?
}

fn transfer_rx(t: &Topology, interface: &str) -> anyhow::Result<u64> {
    let out = t
        .client
        .command("wg")
        .args(["show", interface, "transfer"])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum())
}

#[test]
fn gateway_enforces_grants_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let t = Topology::new().unwrap();
    let _servers = [
        echo_server(&t.resource1, RESOURCE_1, 8080, dir.path()).unwrap(),
        echo_server(&t.resource1, RESOURCE_1, 9090, dir.path()).unwrap(),
        echo_server(&t.resource2, RESOURCE_2, 8080, dir.path()).unwrap(),
    ];
    let mut ctl = Controller::start(&t, dir.path()).unwrap();
    let site = ctl
        .api
        .ok("POST", "/api/v1/sites", Some(json!({"name": "hq"})))
        .unwrap();
    let mut gw = Gateway::start(&t, &ctl, site["id"].as_str().unwrap(), dir.path()).unwrap();
    let ids = provision(&ctl, site["id"].as_str().unwrap(), &["tcp/8080"]).unwrap();

    // Default deny: before any grant, nothing crosses.
    assert!(
        echo(&t.client, RESOURCE_1, 8080).is_err(),
        "no route and no grant yet"
    );

    let client = connect_client(&t, &ctl, &ids, dir.path(), "wgc").unwrap();
    assert!(
        wait_echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(10)),
        "the granted port answers: {}",
        gw.log()
    );

    // Only the granted port of the granted resource.
    let err = echo(&t.client, RESOURCE_1, 9090).unwrap_err().to_string();
    assert!(!err.contains("came back"), "another port is refused: {err}");
    assert!(
        echo(&t.client, RESOURCE_2, 8080).is_err(),
        "another resource is refused"
    );
    assert!(
        gw.metric(&t, "postern_gateway_icmp_sent_total").unwrap() >= 1.0,
        "the client was told (ICMP administratively prohibited)"
    );

    // A spoofed inner source is dropped.
    t.client
        .ip(&["addr", "add", "100.64.200.200/32", "dev", "wgc"])
        .unwrap();
    t.client
        .ip(&[
            "route",
            "replace",
            "10.77.2.0/24",
            "dev",
            "wgc",
            "src",
            "100.64.200.200",
        ])
        .unwrap();
    assert!(
        echo(&t.client, RESOURCE_1, 8080).is_err(),
        "spoofed source reaches nothing"
    );
    let tunnel_address = client.grant["tunnel_address"].as_str().unwrap();
    t.client
        .ip(&[
            "route",
            "replace",
            "10.77.2.0/24",
            "dev",
            "wgc",
            "src",
            tunnel_address,
        ])
        .unwrap();
    let metrics = gw.metrics(&t).unwrap();
    assert!(
        metrics.lines().any(|l| l
            .starts_with("postern_gateway_dropped_total{reason=\"spoofed_source\"}")
            && !l.ends_with(" 0")),
        "spoofed drops are counted:\n{metrics}"
    );

    // An unknown key gets no handshake answer, and random UDP gets nothing at all.
    let stranger = KeyPair::generate().unwrap();
    let _wgx = WireguardGo::start(
        &t.client,
        "wgx",
        &stranger.private,
        None,
        "100.64.201.1/32",
        &[Peer {
            public_key: client.grant["gateway_public_key"]
                .as_str()
                .unwrap()
                .to_owned(),
            preshared_key: None,
            endpoint: Some(format!("{GATEWAY_PUBLIC}:51820")),
            allowed_ips: vec!["10.77.99.0/24".into()],
        }],
        dir.path(),
    )
    .unwrap();
    t.client
        .ip(&["route", "replace", "10.77.99.0/24", "dev", "wgx"])
        .unwrap();
    let _ = t.client.sh("ping -c 3 -i 0.3 -W 1 10.77.99.1");
    assert_eq!(
        transfer_rx(&t, "wgx").unwrap(),
        0,
        "zero bytes back to an unknown key"
    );
    let garbage: Vec<Vec<u8>> = (0..200u32)
        .map(|i| {
            let mut d = vec![(i % 5) as u8, 0, 0, 0];
            d.extend((0..(i % 180)).map(|j| (i * 31 + j) as u8));
            d
        })
        .collect();
    assert_eq!(
        bytes_back_from_gateway(&t, garbage, Duration::from_secs(1)).unwrap(),
        0,
        "zero bytes back to random UDP"
    );

    // With the controller stopped, existing grants keep working.
    ctl.stop().unwrap();
    assert!(
        wait_echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(5)),
        "grant survives a controller outage"
    );
    ctl.restart(&t).unwrap();

    // A gateway restart: its key and the grant come back, the client handshakes again.
    gw.restart(&t).unwrap();
    assert!(
        wait_echo(&t.client, RESOURCE_1, 8080, Duration::from_secs(40)),
        "traffic resumes after a gateway restart: {}",
        gw.log()
    );

    // Revocation stops an open TCP connection within one second.
    let ticker = Ticker::start(&t.client, RESOURCE_1, 8080);
    let first = ticker
        .next(Duration::from_secs(5))
        .expect("the open connection echoes");
    assert!(first.elapsed() < Duration::from_secs(5));
    let grant_id = client.grant["grant_id"].as_str().unwrap();
    let revoke_started = Instant::now();
    ctl.api
        .ok("DELETE", &format!("/api/v1/grants/{grant_id}"), None)
        .unwrap();
    let revoked_at = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let last = ticker.last().unwrap_or(first);
    drop(ticker);
    let cut = last.saturating_duration_since(revoked_at);
    eprintln!(
        "revocation: API call took {:?}; last echo on the open connection {:?} after the call started",
        revoked_at - revoke_started,
        last.saturating_duration_since(revoke_started)
    );
    assert!(
        cut < Duration::from_secs(1),
        "the open connection stopped {cut:?} after revocation"
    );
    assert!(
        echo(&t.client, RESOURCE_1, 8080).is_err(),
        "new connections fail too"
    );
    assert_eq!(gw.metric(&t, "postern_gateway_peers").unwrap(), 0.0);
}
