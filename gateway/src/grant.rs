//! Turning the controller's [`GrantSpec`] into the tunnel core's [`GrantConfig`].

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use model::{Admission, GrantId};
use proto::GrantSpec;
use tunnel::GrantConfig;

/// Why a grant from the controller could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantSpecError {
    /// The device's public key is not 32 bytes of base64.
    #[error("grant {0}: the public key is not 32 bytes of base64")]
    BadPublicKey(GrantId),
    /// The preshared key is not 32 bytes of base64.
    #[error("grant {0}: the preshared key is not 32 bytes of base64")]
    BadPresharedKey(GrantId),
    /// The grant reaches no address at all.
    #[error("grant {0} has no destination addresses")]
    NoAddresses(GrantId),
}

/// The tunnel core's view of a grant: the peer's keys and what the grant admits.
pub fn grant_config(spec: &GrantSpec) -> Result<GrantConfig, GrantSpecError> {
    let public_key = decode_key(&spec.public_key).ok_or(GrantSpecError::BadPublicKey(spec.id))?;
    let preshared_key =
        decode_key(&spec.preshared_key).ok_or(GrantSpecError::BadPresharedKey(spec.id))?;
    if spec.addresses.is_empty() {
        return Err(GrantSpecError::NoAddresses(spec.id));
    }
    Ok(GrantConfig {
        id: spec.id,
        public_key,
        preshared_key,
        tunnel_address: spec.tunnel_address,
        admission: Admission::new(
            spec.addresses.iter().map(|n| n.trunc()).collect(),
            spec.ports.clone(),
        ),
        expires_at: spec.expires_at,
    })
}

/// Decodes a base64 WireGuard key (standard alphabet, padded, as `wg` prints them).
pub(crate) fn decode_key(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    // 44 base64 characters decode to 33 bytes of room; a 32-byte key fits exactly.
    let mut buf = [0u8; 33];
    let n = STANDARD.decode_slice(text.trim(), &mut buf).ok()?;
    if n != 32 {
        return None;
    }
    out.copy_from_slice(&buf[..32]);
    Some(out)
}

/// Encodes a WireGuard key as base64.
pub(crate) fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Protocol;
    use std::net::IpAddr;

    fn spec() -> GrantSpec {
        GrantSpec {
            id: GrantId::new(),
            public_key: encode_key(&[7; 32]),
            preshared_key: encode_key(&[9; 32]),
            tunnel_address: "100.64.0.2".parse().unwrap(),
            addresses: vec![
                "10.0.5.20/32".parse().unwrap(),
                "10.0.6.7/24".parse().unwrap(),
            ],
            ports: vec!["tcp/22".parse().unwrap(), "udp/53".parse().unwrap()],
            expires_at: "2026-11-25T10:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn converts_a_grant() {
        let s = spec();
        let g = grant_config(&s).unwrap();
        assert_eq!(g.id, s.id);
        assert_eq!(g.public_key, [7; 32]);
        assert_eq!(g.preshared_key, [9; 32]);
        assert_eq!(g.tunnel_address, s.tunnel_address);
        assert_eq!(g.expires_at, s.expires_at);
        let r = &g.admission;
        assert_eq!(r.addresses[1], "10.0.6.0/24".parse().unwrap());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(r.admits(ip("10.0.5.20"), Protocol::Tcp, 22));
        assert!(r.admits(ip("10.0.6.200"), Protocol::Udp, 53));
        assert!(!r.admits(ip("10.0.5.20"), Protocol::Tcp, 23));
        assert!(!r.admits(ip("10.0.5.21"), Protocol::Tcp, 22));
    }

    #[test]
    fn rejects_bad_keys() {
        let mut s = spec();
        s.public_key = "not base64!".into();
        assert_eq!(grant_config(&s), Err(GrantSpecError::BadPublicKey(s.id)));
        let mut s = spec();
        s.preshared_key = STANDARD.encode([1u8; 31]);
        assert_eq!(grant_config(&s), Err(GrantSpecError::BadPresharedKey(s.id)));
        let mut s = spec();
        s.preshared_key = STANDARD.encode([1u8; 33]);
        assert_eq!(grant_config(&s), Err(GrantSpecError::BadPresharedKey(s.id)));
        let mut s = spec();
        s.addresses.clear();
        assert_eq!(grant_config(&s), Err(GrantSpecError::NoAddresses(s.id)));
    }

    #[test]
    fn errors_do_not_show_keys() {
        let mut s = spec();
        s.preshared_key = "c2VjcmV0".into();
        let err = grant_config(&s).unwrap_err().to_string();
        assert!(!err.contains("c2VjcmV0"));
    }

    #[test]
    fn key_round_trip() {
        let k = [0xA5; 32];
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
    }
}
