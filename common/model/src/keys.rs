//! WireGuard keys as they travel: 32 bytes, written as standard, padded base64 (44
//! characters, as `wg` prints them). They are decoded once, where they enter (a message's
//! deserialization, a parsed string), and are bytes from then on.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The length of every WireGuard key, in bytes.
const LEN: usize = 32;

/// Why a text is not a WireGuard key. Never shows the text: it may be a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not standard, padded base64.
    #[error("not a base64 WireGuard key (standard alphabet, padded, as `wg` prints it)")]
    NotBase64,
    /// The text decodes to another number of bytes than 32.
    #[error("{0} bytes of base64: a WireGuard key is 32 bytes (44 characters)")]
    WrongLength(usize),
}

/// Decodes a key: surrounding whitespace is ignored; only the canonical encoding of 32 bytes
/// is accepted, so [`encode`] gives back the same text.
fn decode(text: &str) -> Result<[u8; LEN], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::NotBase64)?;
    let n = bytes.len();
    bytes.try_into().map_err(|_| KeyError::WrongLength(n))
}

fn encode(key: &[u8; LEN]) -> String {
    STANDARD.encode(key)
}

/// A WireGuard (x25519) public key: a device's per-grant key or a gateway's key. Shown and
/// sent as its base64 text.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WgKey([u8; LEN]);

impl WgKey {
    /// The key of these 32 bytes.
    pub const fn from_bytes(bytes: [u8; LEN]) -> Self {
        Self(bytes)
    }

    /// The key's 32 bytes.
    pub const fn to_bytes(&self) -> [u8; LEN] {
        self.0
    }
}

impl From<[u8; LEN]> for WgKey {
    fn from(bytes: [u8; LEN]) -> Self {
        Self(bytes)
    }
}

impl FromStr for WgKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(Self)
    }
}

impl fmt::Display for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode(&self.0))
    }
}

impl fmt::Debug for WgKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WgKey").field(&encode(&self.0)).finish()
    }
}

impl Serialize for WgKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WgKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("public key: {e}")))
    }
}

/// A WireGuard preshared key: the secret one grant's tunnel mixes into its handshake. Sent
/// as its base64 text, which only [`PresharedKey::to_base64`] and serialization write:
/// there is no `Display`, so a key cannot end up in a log line by a `%key`, and `Debug`
/// shows `PresharedKey(<secret>)`.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey([u8; LEN]);

impl PresharedKey {
    /// The key of these 32 bytes.
    pub const fn from_bytes(bytes: [u8; LEN]) -> Self {
        Self(bytes)
    }

    /// The key's 32 bytes.
    pub const fn to_bytes(&self) -> [u8; LEN] {
        self.0
    }

    /// The key as base64, the form it travels and is stored in. Keep it secret.
    pub fn to_base64(&self) -> String {
        encode(&self.0)
    }
}

impl From<[u8; LEN]> for PresharedKey {
    fn from(bytes: [u8; LEN]) -> Self {
        Self(bytes)
    }
}

impl FromStr for PresharedKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        decode(s).map(Self)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<secret>)")
    }
}

impl Serialize for PresharedKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PresharedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| serde::de::Error::custom(format!("preshared key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use test_case::test_case;

    #[test]
    fn wg_keys_read_and_write_wg_text() {
        // `wg genkey | wg pubkey` style text, with the whitespace a file or a paste adds.
        let text = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
        let key: WgKey = format!(" {text}\n").parse().unwrap();
        assert_eq!(key.to_string(), text);
        assert_eq!(key.to_bytes()[0], 0xc5);
        assert_eq!(WgKey::from(key.to_bytes()), key);
        assert_eq!(format!("{key:?}"), format!("WgKey(\"{text}\")"));
    }

    #[test_case("not base64!", KeyError::NotBase64; "not base64")]
    #[test_case("", KeyError::WrongLength(0); "empty")]
    #[test_case("AAAA", KeyError::WrongLength(3); "short")]
    #[test_case(&STANDARD.encode([1u8; 31]), KeyError::WrongLength(31); "31 bytes")]
    #[test_case(&STANDARD.encode([1u8; 33]), KeyError::WrongLength(33); "33 bytes")]
    #[test_case("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg", KeyError::NotBase64; "unpadded")]
    #[test_case("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh=", KeyError::NotBase64; "non-canonical")]
    #[test_case("xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=x", KeyError::NotBase64; "trailing garbage")]
    fn malformed_keys_are_refused(text: &str, err: KeyError) {
        assert_eq!(text.parse::<WgKey>(), Err(err));
        assert_eq!(text.parse::<PresharedKey>(), Err(err));
    }

    #[test]
    fn serde_uses_the_same_text_and_errors_name_the_key_but_not_its_text() {
        let psk = PresharedKey::from([9; 32]);
        let json = serde_json::to_string(&psk).unwrap();
        assert_eq!(json, format!("\"{}\"", STANDARD.encode([9u8; 32])));
        assert_eq!(serde_json::from_str::<PresharedKey>(&json).unwrap(), psk);
        let pk = WgKey::from([7; 32]);
        let json = serde_json::to_string(&pk).unwrap();
        assert_eq!(json, format!("\"{}\"", STANDARD.encode([7u8; 32])));
        assert_eq!(serde_json::from_str::<WgKey>(&json).unwrap(), pk);

        let err = serde_json::from_str::<PresharedKey>("\"c2VjcmV0\"").unwrap_err();
        assert!(
            err.to_string().starts_with("preshared key: 6 bytes"),
            "{err}"
        );
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        let err = serde_json::from_str::<WgKey>("\"nope\"").unwrap_err();
        assert!(err.to_string().starts_with("public key: "), "{err}");
        assert!(serde_json::from_str::<WgKey>("5").is_err());
    }

    #[test]
    fn preshared_keys_never_show_in_debug() {
        let psk = PresharedKey::from([0xA5; 32]);
        let shown = format!("{psk:?} {:?}", Some(&psk));
        assert!(!shown.contains(&psk.to_base64()), "{shown}");
        assert!(shown.contains("<secret>"));
    }

    proptest! {
        /// Text round-trips byte for byte: what a peer sent is what is sent on.
        #[test]
        fn text_round_trips(bytes in any::<[u8; 32]>()) {
            let text = STANDARD.encode(bytes);
            let key: WgKey = text.parse().unwrap();
            prop_assert_eq!(key.to_bytes(), bytes);
            prop_assert_eq!(key.to_string(), text.clone());
            let psk: PresharedKey = text.parse().unwrap();
            prop_assert_eq!(psk.to_base64(), text);
        }
    }
}
