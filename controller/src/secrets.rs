//! Secrets the controller hands out once (API tokens, enrollment keys, gateway tokens, the
//! setup code) and keeps only as SHA-256 hashes. They are random 256-bit values, so a plain
//! hash is enough: there is nothing to guess.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// A fresh secret with a readable prefix saying what it is (`pst_` API token, `pek_`
/// enrollment key, `pgt_` gateway token, `pgc_` gateway credential).
pub(crate) fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A short one-time code for people to type: 4 groups of 4 from an unambiguous alphabet.
pub(crate) fn setup_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The stored form of a secret.
pub(crate) fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.trim().as_bytes()))
}

/// The stored form of a setup code: case and dashes do not matter when typed.
pub(crate) fn hash_setup_code(code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hash(&normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_prefixed() {
        let a = generate("pst_");
        let b = generate("pst_");
        assert!(a.starts_with("pst_"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43);
    }

    #[test]
    fn setup_code_survives_sloppy_typing() {
        let code = setup_code();
        assert_eq!(code.len(), 19);
        let sloppy = code.to_lowercase().replace('-', " ");
        assert_eq!(hash_setup_code(&code), hash_setup_code(&sloppy));
    }
}
