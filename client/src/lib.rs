//! The Postern client: the `postern` command line and the daemon behind it. The daemon holds
//! the device key and session, keeps a QUIC control link to the controller, routes the
//! resources the user may reach into a TUN device and opens one WireGuard tunnel per grant
//! when an application first uses a resource. [`router`] is the data path's sans-IO core;
//! [`daemon`] is its IO shell (tokio, tun-rs, quinn, the local socket); [`cli`] is the
//! command line.

pub mod cli;
pub mod control;
pub mod daemon;
pub mod http;
pub mod ipc;
pub mod posture;
pub mod router;
pub mod state;
pub mod system;
pub mod tls;
