//! The sans-IO WireGuard tunnel core shared by gateways and clients: one boringtun `Tunn`
//! per grant, the gateway's per-packet entitlement filter (inner source must be the grant's
//! tunnel address; destination, protocol and port must be admitted by the grant's
//! [`model::Admission`], read out of a packet by [`admits`], which the client's router uses
//! too),
//! routing of datagrams to grants by handshake key and receiver index, handshake rate
//! limiting, grant expiry, and a matching client-side tunnel. It does no IO and never reads
//! the clock: every input carries `now`, outputs are polled. See [`GatewayTunnel`] for the
//! loop contract and the time model.

mod client;
mod clock;
mod filter;
mod gateway;
mod output;
mod stats;

pub use client::{ClientConfig, ClientEvent, ClientTunnel};
pub use filter::admits;
pub use gateway::{Event, GatewayConfig, GatewayTunnel, GrantConfig, GrantError};
pub use output::Transmit;
pub use stats::{DropCounters, DropReason, Stats};

/// Bytes WireGuard adds around an IP packet: a caller's output buffer for an encapsulated
/// packet needs `packet.len() + OVERHEAD` bytes, and never fewer than [`MIN_BUFFER`].
pub const OVERHEAD: usize = 32;

/// The smallest output buffer any input may be given (a handshake initiation is 148 bytes).
pub const MIN_BUFFER: usize = 148;

/// The x25519 public key for a private key, both as raw 32 bytes.
pub fn public_key(private_key: &[u8; 32]) -> [u8; 32] {
    let secret = boringtun::x25519::StaticSecret::from(*private_key);
    boringtun::x25519::PublicKey::from(&secret).to_bytes()
}
