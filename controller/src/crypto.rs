//! Secrets the controller must read back — TOTP secrets and identity providers' client
//! secrets — sealed at rest with ChaCha20-Poly1305 under the controller's secret key. The
//! stored form is `enc:v1:<base64(nonce ‖ ciphertext)>`, bound to the row it belongs to by
//! associated data, so a sealed value copied into another row does not open. A stored value
//! without the prefix is a legacy plaintext: it is read as it is and sealed at the next write.
//! Only [`SecretKey::load_or_create`] does IO (the key file).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

/// The prefix of a sealed value (version 1: ChaCha20-Poly1305, 96-bit random nonce).
const SEALED_V1: &str = "enc:v1:";
const NONCE_LEN: usize = 12;

/// Why a stored secret could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The value is sealed, but not under this key (or was altered, or belongs to another row).
    #[error(
        "a stored secret cannot be decrypted: the controller's secret key (--secret-key-file) is \
         not the one it was encrypted with, or the value was altered"
    )]
    WrongKey,
    /// The value has the sealed prefix but is not valid base64 of a nonce and a ciphertext.
    #[error("a stored secret is malformed (bad `enc:v1:` value)")]
    Malformed,
    /// The value is sealed in a format this controller does not know.
    #[error(
        "a stored secret uses an unknown encryption format; is this controller older than the data?"
    )]
    UnknownFormat,
}

/// The 256-bit key secrets are sealed under. Never logged.
#[derive(Clone)]
pub struct SecretKey(Arc<Key>);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Arc::new(Key::from(bytes)))
    }

    /// A fresh random key (a controller without a key file, e.g. in tests: what it seals does
    /// not survive it).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Reads the key file (32 raw bytes, or their base64 on one line), or creates it with 32
    /// random bytes, readable by the owner only, when it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        match std::fs::read(path) {
            Ok(bytes) => Self::parse(&bytes).with_context(|| {
                format!(
                    "reading the secret key {}: it must hold 32 bytes, raw or base64",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::random();
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                match options.open(path) {
                    Ok(mut file) => {
                        use std::io::Write;
                        file.write_all(key.0.as_slice())
                            .and_then(|()| file.sync_all())
                            .with_context(|| {
                                format!("writing the secret key {}", path.display())
                            })?;
                        tracing::info!(path = %path.display(), "created a new secret key");
                        Ok(key)
                    }
                    // Another replica or process made it in between: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        Self::load_or_create(path)
                    }
                    Err(e) => Err(e)
                        .with_context(|| format!("creating the secret key {}", path.display())),
                }
            }
            Err(e) => Err(e).with_context(|| format!("reading the secret key {}", path.display())),
        }
    }

    fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
            return Ok(Self::from_bytes(raw));
        }
        let text = std::str::from_utf8(bytes).context("neither 32 raw bytes nor base64 text")?;
        let decoded = STANDARD
            .decode(text.trim())
            .context("neither 32 raw bytes nor base64 text")?;
        let raw = <[u8; 32]>::try_from(decoded.as_slice())
            .map_err(|_| anyhow::anyhow!("the base64 text does not decode to 32 bytes"))?;
        Ok(Self::from_bytes(raw))
    }

    /// Seals `plaintext` for the row `context` names (e.g. `totp:<user id>`).
    pub(crate) fn seal(&self, context: &str, plaintext: &str) -> String {
        let cipher = ChaCha20Poly1305::new(&self.0);
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        // Encryption with a valid key and nonce cannot fail for inputs of this size.
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        format!("{SEALED_V1}{}", STANDARD.encode(out))
    }

    /// Opens a stored value of the row `context` names: a sealed one with this key, a legacy
    /// plaintext one as it is.
    pub(crate) fn open(&self, context: &str, stored: &str) -> Result<String, SecretError> {
        let Some(body) = stored.strip_prefix(SEALED_V1) else {
            if stored.starts_with("enc:") {
                return Err(SecretError::UnknownFormat);
            }
            return Ok(stored.to_owned());
        };
        let bytes = STANDARD.decode(body).map_err(|_| SecretError::Malformed)?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(SecretError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = ChaCha20Poly1305::new(&self.0)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::WrongKey)?;
        String::from_utf8(plaintext).map_err(|_| SecretError::Malformed)
    }
}

/// Whether a stored value is sealed (not a legacy plaintext).
pub(crate) fn is_sealed(stored: &str) -> bool {
    stored.starts_with("enc:")
}

/// The associated data of a user's TOTP secret.
pub(crate) fn totp_context(user: model::UserId) -> String {
    format!("local_credentials.totp_secret:{user}")
}

/// The associated data of an identity provider's client secret.
pub(crate) fn client_secret_context(provider: uuid::Uuid) -> String {
    format!("identity_providers.client_secret:{provider}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sealed_values_open_with_the_same_key_and_row_only() {
        let key = SecretKey::random();
        let sealed = key.seal("row:1", "JBSWY3DPEHPK3PXP");
        assert!(sealed.starts_with("enc:v1:"));
        assert!(!sealed.contains("JBSWY3DPEHPK3PXP"));
        assert_ne!(sealed, key.seal("row:1", "JBSWY3DPEHPK3PXP"), "fresh nonce");
        assert_eq!(key.open("row:1", &sealed).unwrap(), "JBSWY3DPEHPK3PXP");
        assert_eq!(key.open("row:2", &sealed), Err(SecretError::WrongKey));
        assert_eq!(
            SecretKey::random().open("row:1", &sealed),
            Err(SecretError::WrongKey)
        );
        assert_eq!(key.open("row:1", "enc:v1:!!"), Err(SecretError::Malformed));
        assert_eq!(
            key.open("row:1", "enc:v2:AAAA"),
            Err(SecretError::UnknownFormat)
        );
    }

    #[test]
    fn legacy_plaintext_reads_as_it_is() {
        let key = SecretKey::random();
        assert_eq!(key.open("row:1", "plain").unwrap(), "plain");
        assert!(!is_sealed("plain"));
    }

    #[test]
    fn the_key_file_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let a = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let b = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(b.open("r", &a.seal("r", "x")).unwrap(), "x");

        let text = dir.path().join("b64.key");
        std::fs::write(&text, format!("{}\n", STANDARD.encode([7u8; 32]))).unwrap();
        let c = SecretKey::load_or_create(&text).unwrap();
        assert_eq!(
            SecretKey::from_bytes([7u8; 32])
                .open("r", &c.seal("r", "y"))
                .unwrap(),
            "y"
        );
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "short").unwrap();
        let err = format!("{:#}", SecretKey::load_or_create(&bad).unwrap_err());
        assert!(err.contains("32 bytes"), "{err}");
    }
}
