//! Turning the controller's [`GrantSpec`] into the tunnel core's [`GrantConfig`]. The keys
//! were decoded with the message ([`model::WgKey`], [`model::PresharedKey`]): a grant with a
//! malformed key is a malformed message and never gets here.

use model::{Admission, GrantId};
use proto::GrantSpec;
use tunnel::GrantConfig;

/// Why a grant from the controller could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantSpecError {
    /// The grant reaches no address at all.
    #[error("grant {0} has no destination addresses")]
    NoAddresses(GrantId),
}

/// The tunnel core's view of a grant: the peer's keys and what the grant admits.
pub fn grant_config(spec: &GrantSpec) -> Result<GrantConfig, GrantSpecError> {
    if spec.addresses.is_empty() {
        return Err(GrantSpecError::NoAddresses(spec.id));
    }
    Ok(GrantConfig {
        id: spec.id,
        public_key: spec.public_key.to_bytes(),
        preshared_key: spec.preshared_key.to_bytes(),
        tunnel_address: spec.tunnel_address,
        admission: Admission::new(
            spec.addresses.iter().map(|n| n.trunc()).collect(),
            spec.ports.clone(),
        ),
        expires_at: spec.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use model::{PresharedKey, Protocol, WgKey};
    use std::net::IpAddr;

    fn spec() -> GrantSpec {
        GrantSpec {
            id: GrantId::new(),
            public_key: WgKey::from([7; 32]),
            preshared_key: PresharedKey::from([9; 32]),
            tunnel_address: "100.64.0.2".parse().unwrap(),
            addresses: vec![
                "10.0.5.20/32".parse().unwrap(),
                "10.0.6.7/24".parse().unwrap(),
            ],
            ports: vec!["tcp/22".parse().unwrap(), "udp/53".parse().unwrap()],
            expires_at: "2026-11-25T10:00:00Z".parse().unwrap(),
        }
    }

    /// `spec()` as the controller sends it, with `field` replaced by `text`, decoded.
    fn decoded_with(field: &str, text: &str) -> Result<GrantSpec, serde_json::Error> {
        let mut json = serde_json::to_value(spec()).unwrap();
        json[field] = text.into();
        serde_json::from_value(json)
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
        // Bad keys are refused where the grant is decoded, before it reaches grant_config.
        assert!(decoded_with("public_key", "not base64!").is_err());
        assert!(decoded_with("preshared_key", &STANDARD.encode([1u8; 31])).is_err());
        assert!(decoded_with("preshared_key", &STANDARD.encode([1u8; 33])).is_err());
        let good = decoded_with("preshared_key", &STANDARD.encode([1u8; 32])).unwrap();
        assert_eq!(grant_config(&good).unwrap().preshared_key, [1; 32]);
        let mut s = spec();
        s.addresses.clear();
        assert_eq!(grant_config(&s), Err(GrantSpecError::NoAddresses(s.id)));
    }

    #[test]
    fn errors_do_not_show_keys() {
        let err = decoded_with("preshared_key", "c2VjcmV0")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("c2VjcmV0"));
        assert!(err.contains("preshared key"), "{err}");
    }
}
