//! A WireGuard client for tests: the tunnel crate's `ClientTunnel` on a loopback UDP socket.

use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tunnel::ClientTunnel;

/// A client tunnel with its UDP socket.
pub(crate) struct Client {
    pub(crate) tunnel: ClientTunnel,
    pub(crate) socket: UdpSocket,
    pub(crate) buf: Vec<u8>,
    pub(crate) out: Vec<u8>,
    pub(crate) tx: Vec<u8>,
}

impl Client {
    pub(crate) async fn flush(&mut self) {
        while let Some(dst) = self.tunnel.poll_transmit(&mut self.tx) {
            self.socket.send_to(&self.tx, dst).await.unwrap();
        }
    }

    /// Sends an IP packet into the tunnel.
    pub(crate) async fn send(&mut self, packet: &[u8]) {
        if let Some(t) = self
            .tunnel
            .handle_tun_input(packet, Instant::now(), &mut self.out)
        {
            let (dst, payload) = (t.dst, t.payload.to_vec());
            self.socket.send_to(&payload, dst).await.unwrap();
        }
        self.flush().await;
    }

    /// The next IP packet out of the tunnel, or `None` if none arrives within `limit`.
    pub(crate) async fn receive(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let tick = self
                .tunnel
                .poll_timeout()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(deadline)
                .min(deadline);
            tokio::select! {
                r = self.socket.recv_from(&mut self.buf) => {
                    let (n, from) = r.unwrap();
                    let packet = self
                        .tunnel
                        .handle_network_input(from, &self.buf[..n], Instant::now(), &mut self.out)
                        .map(<[u8]>::to_vec);
                    self.flush().await;
                    if packet.is_some() {
                        return packet;
                    }
                }
                () = tokio::time::sleep_until(tick) => {
                    if tokio::time::Instant::now() >= deadline {
                        return None;
                    }
                    self.tunnel.handle_timeout(Instant::now());
                    self.flush().await;
                }
            }
        }
    }
}
