//! The data plane's event loop on a real TUN device and UDP socket, inside a network
//! namespace this test creates: a WireGuard client (the tunnel crate's `ClientTunnel`) on
//! loopback handshakes with the gateway, reaches a UDP echo server on the granted port of a
//! resource address (on the namespace's loopback), is refused with ICMP on another
//! port, and is cut off at once when the grant is removed.

// Test helpers outside #[test] functions may unwrap too.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::wg::Client;
use common::{Namespace, in_namespace};
use gateway::{DataPlane, DataPlaneHandle};
use model::{Admission, GrantId};
use packet::{IpPacket, PacketBuilder, Transport};
use tokio::net::UdpSocket;
use tunnel::{ClientConfig, ClientTunnel, GatewayConfig, GatewayTunnel, GrantConfig};

const TUN: &str = "pgd0";
const RESOURCE: &str = "10.0.5.20";
const CLIENT_ADDRESS: &str = "100.64.0.2";
const STEP: Duration = Duration::from_secs(5);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn udp(dst_port: u16, payload: &[u8]) -> Vec<u8> {
    PacketBuilder::udp(ip(CLIENT_ADDRESS), ip(RESOURCE), 40000, dst_port).build(payload)
}

fn grant(client_public: [u8; 32], psk: [u8; 32]) -> GrantConfig {
    GrantConfig {
        id: GrantId::new(),
        public_key: client_public,
        preshared_key: psk,
        tunnel_address: ip(CLIENT_ADDRESS),
        admission: Admission::new(
            vec![format!("{RESOURCE}/32").parse().unwrap()],
            vec!["udp/7777".parse().unwrap()],
        ),
        expires_at: jiff::Timestamp::now() + jiff::SignedDuration::from_secs(600),
    }
}

async fn scenario() {
    let gateway_key = [0x11; 32];
    let client_key = [0x22; 32];
    let psk = [0x33; 32];

    let socket = gateway::bind_udp(0).unwrap();
    let port = socket.local_addr().unwrap().port();
    let tun =
        gateway::open_tun(TUN, ip("100.127.255.254"), "100.64.0.0/10".parse().unwrap()).unwrap();
    let core = GatewayTunnel::new(GatewayConfig::new(gateway_key), Instant::now());
    let (plane, handle): (DataPlane, DataPlaneHandle) =
        DataPlane::new(core, socket, tun, gateway::DEFAULT_CONTROLLER_GRACE);
    let plane = tokio::spawn(plane.run());

    let echo = UdpSocket::bind((ip(RESOURCE), 7777)).await.unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let mut reply = b"pong:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = echo.send_to(&reply, from).await;
        }
    });

    let g = grant(tunnel::public_key(&client_key), psk);
    handle.add(g.clone()).await.unwrap().unwrap();

    let gateway_addr = SocketAddr::new(ip("127.0.0.1"), port);
    let mut client = Client {
        tunnel: ClientTunnel::new(
            ClientConfig {
                grant: g.id,
                private_key: client_key,
                gateway_public_key: tunnel::public_key(&gateway_key),
                preshared_key: psk,
                gateway: gateway_addr,
                persistent_keepalive: None,
                index: 7,
            },
            Instant::now(),
        ),
        socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        buf: vec![0; 65535],
        out: vec![0; 65535 + tunnel::OVERHEAD],
        tx: Vec::new(),
    };

    // The first packet starts the handshake and is delivered once it completes.
    client.send(&udp(7777, b"ping")).await;
    let reply = client
        .receive(STEP)
        .await
        .expect("an echo through the tunnel");
    let parsed = IpPacket::parse(&reply).unwrap();
    assert_eq!(parsed.src(), ip(RESOURCE));
    assert_eq!(parsed.dst(), ip(CLIENT_ADDRESS));
    assert_eq!(parsed.transport().src_port(), Some(7777));
    assert!(
        parsed.payload().ends_with(b"pong:ping"),
        "{:?}",
        parsed.payload()
    );

    // Another port of the same address is outside the grant: ICMP administratively prohibited.
    client.send(&udp(7778, b"nope")).await;
    let reply = client.receive(STEP).await.expect("an ICMP refusal");
    let parsed = IpPacket::parse(&reply).unwrap();
    assert_eq!(parsed.src(), ip(RESOURCE));
    let Transport::Icmp { kind, code } = parsed.transport() else {
        panic!("expected ICMP, got {:?}", parsed.transport());
    };
    assert_eq!((kind, code), (3, 13), "administratively prohibited");

    let s = handle.snapshot().await.unwrap();
    assert_eq!(s.grants, 1);
    assert_eq!(s.stats.handshakes, 1);
    assert!(
        s.stats.rx_packets >= 1 && s.stats.tx_packets >= 1,
        "{:?}",
        s.stats
    );
    assert_eq!(s.stats.drops.outside_resource, 1);

    // Revocation: the very next packet gets nothing back.
    assert!(handle.remove(g.id).await.unwrap());
    client.send(&udp(7777, b"after")).await;
    assert_eq!(client.receive(Duration::from_millis(500)).await, None);
    let s = handle.snapshot().await.unwrap();
    assert_eq!(s.grants, 0);
    assert!(s.stats.drops.unknown_index >= 1, "{:?}", s.stats.drops);

    drop(handle);
    tokio::time::timeout(STEP, plane)
        .await
        .expect("the data plane stops when its handles are gone")
        .unwrap()
        .unwrap();
}

#[test]
fn traffic_flows_is_filtered_and_stops_on_revocation() {
    let ns = Namespace::new();
    ns.exec(&["ip", "addr", "add", &format!("{RESOURCE}/32"), "dev", "lo"]);
    in_namespace(&ns.name, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), scenario())
                    .await
                    .expect("the scenario finishes in time");
            });
    });
    drop(ns);
}
