//! How the daemon trusts the controller: a pinned SHA-256 fingerprint of its certificate
//! (`--fingerprint`), extra CA certificates (`--ca-file`), or the web PKI roots. The same
//! trust serves HTTPS (sign-in) and QUIC (the control channel); the `trust` crate holds it.

pub use trust::{Fingerprint, TlsError, Trust, client_config, explain};
