//! How gateways and clients trust the controller: a pinned SHA-256 fingerprint of its
//! certificate (as the controller prints it at start), extra CA certificates, or the web PKI
//! roots. The same trust serves HTTPS (the client's sign-in) and QUIC (the control channels).
//!
//! Only TLS 1.3 is offered, with the ring provider.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER encoding.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

/// Why a fingerprint was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a certificate fingerprint: use the 64 hex digits (colons allowed) the controller prints at start"
)]
pub struct BadFingerprint(pub String);

impl FromStr for Fingerprint {
    type Err = BadFingerprint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFingerprint(s.to_owned());
        let s = s.trim();
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let hex: Vec<u8> = s.bytes().filter(|b| !matches!(b, b':' | b' ')).collect();
        if hex.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
            let digit = |b: u8| (b as char).to_digit(16).ok_or_else(bad);
            *o = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Ok(Self(out))
    }
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The CA file holds no usable certificate.
    #[error("the CA file holds no PEM certificate")]
    NoCertificates,
    /// A certificate in the CA file was refused.
    #[error("the CA file: {0}")]
    BadCa(String),
}

/// How to trust the controller.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Accept exactly the certificate with this fingerprint.
    pub pin: Option<Fingerprint>,
    /// Otherwise, these CA certificates (PEM), and the web PKI roots when none.
    pub ca_pem: Option<String>,
}

/// A TLS 1.3 client configuration trusting the controller as `trust` says, with `alpn`.
pub fn client_config(trust: &Trust, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut config = if let Some(pin) = trust.pin {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                fingerprint: pin,
                algorithms,
            }))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &trust.ca_pem {
            Some(pem) => {
                let mut any = false;
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert.map_err(|e| TlsError::BadCa(e.to_string()))?;
                    roots
                        .add(cert)
                        .map_err(|e| TlsError::BadCa(e.to_string()))?;
                    any = true;
                }
                if !any {
                    return Err(TlsError::NoCertificates);
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(config)
}

/// The certificate did not have the pinned fingerprint.
#[derive(Debug, thiserror::Error)]
#[error("the controller's certificate does not have the pinned fingerprint")]
struct FingerprintMismatch;

/// Accepts exactly the server certificate whose DER has a given SHA-256 fingerprint (host
/// name and expiry are not checked: the pin is the trust decision), and still verifies the
/// handshake signature against it.
#[derive(Debug)]
struct PinnedVerifier {
    fingerprint: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
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

/// Turns a TLS failure somewhere in an error chain into advice a person can act on.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut e: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cur) = e {
        let text = cur.to_string();
        if text.contains("FingerprintMismatch") || text.contains("pinned fingerprint") {
            return Some(
                "the controller's certificate does not match the pinned fingerprint: check --fingerprint against what the controller printed",
            );
        }
        if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
            return Some(
                "the controller's certificate is not trusted: pass --fingerprint or --ca-file",
            );
        }
        e = cur.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert() -> CertificateDer<'static> {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        c.cert.der().clone()
    }

    fn verifier(pin: Fingerprint) -> PinnedVerifier {
        PinnedVerifier {
            fingerprint: pin,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }

    #[test]
    fn fingerprints_parse_in_the_printed_form_and_round_trip() {
        let f = Fingerprint([0xab; 32]);
        let printed = f.to_string();
        assert_eq!(printed.parse::<Fingerprint>().unwrap(), f);
        assert_eq!(printed.replace(':', "").parse::<Fingerprint>().unwrap(), f);
        assert_eq!(
            format!("sha256:{}", printed.to_lowercase())
                .parse::<Fingerprint>()
                .unwrap(),
            f
        );
        let err = "abc".parse::<Fingerprint>().unwrap_err().to_string();
        assert!(err.contains("64 hex digits"), "{err}");
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn the_pin_accepts_its_certificate_only() {
        let (der, other) = (cert(), cert());
        let v = verifier(Fingerprint::of(&der));
        let name = ServerName::try_from("localhost").unwrap();
        assert!(
            v.verify_server_cert(&der, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        let err = v
            .verify_server_cert(&other, &[], &name, &[], UnixTime::now())
            .unwrap_err();
        assert!(explain(&err).unwrap().contains("--fingerprint"), "{err}");
    }

    #[test]
    fn configs_build_for_every_kind_of_trust() {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = c.cert.pem();
        for trust in [
            Trust::default(),
            Trust {
                pin: Some(Fingerprint([1; 32])),
                ca_pem: None,
            },
            Trust {
                pin: None,
                ca_pem: Some(pem),
            },
        ] {
            let c = client_config(&trust, &[b"postern-client/1"]).unwrap();
            assert_eq!(c.alpn_protocols, vec![b"postern-client/1".to_vec()]);
            assert!(quinn::crypto::rustls::QuicClientConfig::try_from(c).is_ok());
        }
        let err = client_config(
            &Trust {
                pin: None,
                ca_pem: Some("garbage".into()),
            },
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::NoCertificates), "{err}");
    }
}
