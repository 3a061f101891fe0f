//! The control link's TLS client configuration: TLS 1.3, ALPN `postern-control/1`, and
//! either web PKI verification or a pinned certificate (see the `trust` crate).

pub use trust::TlsError;

use crate::config::Fingerprint;

/// A TLS client configuration for the control link. With `pin`, only the certificate with
/// that SHA-256 fingerprint is accepted (host name and expiry are not checked: the pin is
/// the trust decision), but the handshake signature is still verified against it.
pub fn client_config(pin: Option<Fingerprint>) -> Result<rustls::ClientConfig, TlsError> {
    let trust = trust::Trust { pin, ca_pem: None };
    trust::client_config(&trust, &[proto::GATEWAY_ALPN])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build_with_the_control_alpn() {
        for pin in [None, Some(Fingerprint([1; 32]))] {
            let c = client_config(pin).unwrap();
            assert_eq!(c.alpn_protocols, vec![b"postern-control/1".to_vec()]);
            assert!(quinn::crypto::rustls::QuicClientConfig::try_from(c).is_ok());
        }
    }
}
