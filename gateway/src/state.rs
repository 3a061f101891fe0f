//! The state directory: the durable credential from enrollment and the gateway's WireGuard
//! private key, each in a file only the gateway's user can read (mode 0600).

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore;

const CREDENTIAL: &str = "credential";
const PRIVATE_KEY: &str = "private_key";

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file or the directory could not be read, written or created.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// The private key file does not hold a base64 x25519 key.
    #[error("{0}: not a base64 WireGuard private key")]
    BadPrivateKey(PathBuf),
}

/// The gateway's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens the directory, creating it (mode 0700) if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StateError::Io {
                path: dir.clone(),
                source,
            })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The durable credential, if the gateway has enrolled.
    pub fn credential(&self) -> Result<Option<String>, StateError> {
        let credential = self.read(CREDENTIAL)?.map(|c| c.trim().to_owned());
        Ok(credential.filter(|c| !c.is_empty()))
    }

    /// Keeps the credential from enrollment.
    pub fn store_credential(&self, credential: &str) -> Result<(), StateError> {
        self.write(CREDENTIAL, credential.as_bytes())
    }

    /// The gateway's WireGuard private key, made (once) if there is none.
    pub fn private_key(&self) -> Result<[u8; 32], StateError> {
        if let Some(text) = self.read(PRIVATE_KEY)? {
            return decode_key(&text)
                .ok_or_else(|| StateError::BadPrivateKey(self.dir.join(PRIVATE_KEY)));
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        self.write(PRIVATE_KEY, encode_key(&key).as_bytes())?;
        tracing::info!(dir = %self.dir.display(), "made a new WireGuard key pair");
        Ok(key)
    }

    /// Reads a file, tightening its mode to 0600 if others could read it.
    fn read(&self, name: &str) -> Result<Option<String>, StateError> {
        let path = self.dir.join(name);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let mode = fs::metadata(&path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "secret file was readable by others; set it to 0600");
            fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(io)?;
        }
        Ok(Some(text))
    }

    /// Replaces a file atomically with a new one of mode 0600.
    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }
}

/// Decodes the private key file: base64 of 32 bytes, as `wg genkey` writes it.
fn decode_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

/// Encodes a private key as `wg genkey` does.
fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip() {
        let k = [0xA5; 32];
        assert_eq!(decode_key(&encode_key(&k)), Some(k));
        assert_eq!(decode_key(&format!("{}\n", encode_key(&k))), Some(k));
        assert_eq!(decode_key(&STANDARD.encode([1u8; 31])), None);
        assert_eq!(decode_key("not base64!"), None);
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn credential_is_kept_private() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path().join("state")).unwrap();
        assert_eq!(mode(state.path()), 0o700);
        assert_eq!(state.credential().unwrap(), None);
        state.store_credential("cred-1").unwrap();
        assert_eq!(state.credential().unwrap().as_deref(), Some("cred-1"));
        assert_eq!(mode(&state.path().join(CREDENTIAL)), 0o600);
        state.store_credential("cred-2").unwrap();
        assert_eq!(state.credential().unwrap().as_deref(), Some("cred-2"));
        assert_eq!(mode(&state.path().join(CREDENTIAL)), 0o600);
    }

    #[test]
    fn private_key_is_made_once() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let a = state.private_key().unwrap();
        let b = StateDir::open(tmp.path()).unwrap().private_key().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, [0; 32]);
        assert_eq!(mode(&tmp.path().join(PRIVATE_KEY)), 0o600);
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CREDENTIAL);
        fs::write(&path, "cred\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        assert_eq!(state.credential().unwrap().as_deref(), Some("cred"));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn rejects_a_corrupt_key() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join(PRIVATE_KEY), "garbage").unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        assert!(matches!(
            state.private_key(),
            Err(StateError::BadPrivateKey(_))
        ));
    }
}
