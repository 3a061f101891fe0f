//! The control link's TLS client configuration: TLS 1.3 with the ring provider, ALPN
//! `postern-control/1`, and either web PKI verification or a pinned certificate.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};

use crate::config::Fingerprint;
use crate::control::ALPN;

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate did not have the pinned fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("the controller's certificate does not have the pinned fingerprint")]
struct FingerprintMismatch;

/// A TLS client configuration for the control link. With `pin`, only the certificate with
/// that SHA-256 fingerprint is accepted (host name and expiry are not checked: the pin is
/// the trust decision), but the handshake signature is still verified against it.
pub fn client_config(pin: Option<Fingerprint>) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = match pin {
        Some(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier::new(
                fingerprint,
                algorithms,
            )))
            .with_no_client_auth(),
        None => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// Accepts exactly the server certificate whose DER has a given SHA-256 fingerprint.
#[derive(Debug)]
pub struct PinnedVerifier {
    fingerprint: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    /// A verifier pinning `fingerprint` that checks handshake signatures with `algorithms`.
    pub fn new(fingerprint: Fingerprint, algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self {
            fingerprint,
            algorithms,
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Fingerprint::of(end_entity.as_ref());
        let equal = seen
            .0
            .iter()
            .zip(self.fingerprint.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if equal {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(FingerprintMismatch)),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verifier(pin: Fingerprint) -> PinnedVerifier {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        PinnedVerifier::new(pin, algorithms)
    }

    fn cert() -> CertificateDer<'static> {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        c.cert.der().clone()
    }

    #[test]
    fn accepts_the_pinned_certificate() {
        let der = cert();
        let v = verifier(Fingerprint::of(&der));
        let name = ServerName::try_from("localhost").unwrap();
        assert!(
            v.verify_server_cert(&der, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
    }

    #[test]
    fn rejects_another_certificate() {
        let pinned = cert();
        let other = cert();
        let v = verifier(Fingerprint::of(&pinned));
        let name = ServerName::try_from("localhost").unwrap();
        let err = v
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("FingerprintMismatch"), "{err}");
    }

    #[test]
    fn configs_build_with_alpn() {
        for pin in [None, Some(Fingerprint([1; 32]))] {
            let c = client_config(pin).unwrap();
            assert_eq!(c.alpn_protocols, vec![b"postern-control/1".to_vec()]);
            assert!(quinn::crypto::rustls::QuicClientConfig::try_from(c).is_ok());
        }
    }
}
