//! The daemon's state directory: the device key (`device.key`), the device session
//! (`session.json`) and the paused flag (`paused`). Secrets are written 0600, atomically
//! (a temporary file in the same directory, then a rename), and read back with errors that
//! name the file and say what to do.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jiff::Timestamp;
use model::{DeviceId, GrantId, UserId};
use proto::device::DeviceKey;
use serde::{Deserialize, Serialize};

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists but does not hold what it should.
    #[error("{path} is malformed ({why}); delete it and run `postern login` again")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A secret file can be read by other users.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// A device session as the daemon stores it: where it signed in, and the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// The controller's base URL (`https://host:port`).
    pub controller: String,
    /// The pinned SHA-256 fingerprint of the controller's certificate, when pinned.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// Extra CA certificates (PEM) to trust for the controller, when given at login.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// The device.
    pub device_id: DeviceId,
    /// The signed-in user.
    pub user_id: UserId,
    /// Their name, for status.
    pub user_name: String,
    /// The session secret. Never logged.
    pub session: String,
    /// When the secret was issued (renewal starts at half its lifetime).
    pub issued_at: Timestamp,
    /// When it ends unless renewed.
    pub expires_at: Timestamp,
    /// The OS user id that signed in: only they and root may control the daemon.
    pub uid: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("controller", &self.controller)
            .field("device_id", &self.device_id)
            .field("user_id", &self.user_id)
            .field("expires_at", &self.expires_at)
            .field("uid", &self.uid)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// When to ask for a fresh secret: once half of its lifetime has passed.
    pub fn renew_at(&self) -> Timestamp {
        let life = self.expires_at.duration_since(self.issued_at);
        self.issued_at + life / 2
    }

    /// Whether the session has ended at `now`.
    pub fn expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }
}

/// The daemon's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

const KEY_FILE: &str = "device.key";
const SESSION_FILE: &str = "session.json";
const PAUSED_FILE: &str = "paused";
const GRANTS_FILE: &str = "grants.json";

impl StateDir {
    /// The state directory at `dir`, created 0700 if missing.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let io = |source| StateError::Io {
            path: dir.to_owned(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The path of a file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The device key, generated and stored on first use.
    pub fn device_key(&self) -> Result<DeviceKey, StateError> {
        let path = self.path(KEY_FILE);
        match read_secret(&path)? {
            Some(text) => parse_key(&path, &text),
            None => {
                let key = DeviceKey::generate();
                let mut text = STANDARD.encode(key.to_bytes());
                text.push('\n');
                write_secret(&path, text.as_bytes())?;
                tracing::info!(fingerprint = %key.fingerprint(), "made a new device key");
                Ok(key)
            }
        }
    }

    /// The stored session, if any.
    pub fn session(&self) -> Result<Option<Session>, StateError> {
        let path = self.path(SESSION_FILE);
        let Some(text) = read_secret(&path)? else {
            return Ok(None);
        };
        parse_session(&path, &text).map(Some)
    }

    /// Stores the session atomically, 0600.
    pub fn save_session(&self, session: &Session) -> Result<(), StateError> {
        let path = self.path(SESSION_FILE);
        let text = serde_json::to_vec_pretty(session).map_err(|e| StateError::Malformed {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_secret(&path, &text)
    }

    /// Forgets the session (logout).
    pub fn clear_session(&self) -> Result<(), StateError> {
        remove(&self.path(SESSION_FILE))
    }

    /// The grants the daemon held when it last wrote them: after a crash, these are released
    /// at the next connection so the gateway forgets their peers. A malformed file counts as
    /// empty.
    pub fn grants(&self) -> Vec<GrantId> {
        let path = self.path(GRANTS_FILE);
        match read_secret(&path) {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring a malformed grants file");
                Vec::new()
            }),
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the grants file");
                Vec::new()
            }
        }
    }

    /// Records the grants the daemon holds.
    pub fn save_grants(&self, grants: &[GrantId]) -> Result<(), StateError> {
        let path = self.path(GRANTS_FILE);
        if grants.is_empty() {
            return remove(&path);
        }
        let text = serde_json::to_vec(grants).map_err(|e| StateError::Malformed {
            path: path.clone(),
            why: e.to_string(),
        })?;
        write_secret(&path, &text)
    }

    /// Whether the user paused the client with `postern down`.
    pub fn paused(&self) -> bool {
        self.path(PAUSED_FILE).exists()
    }

    /// Records `postern down` / `postern up` across restarts.
    pub fn set_paused(&self, paused: bool) -> Result<(), StateError> {
        let path = self.path(PAUSED_FILE);
        if paused {
            write_secret(&path, b"")
        } else {
            remove(&path)
        }
    }
}

fn remove(path: &Path) -> Result<(), StateError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_key(path: &Path, text: &str) -> Result<DeviceKey, StateError> {
    let bytes: [u8; 32] = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| StateError::Malformed {
            path: path.to_owned(),
            why: "expected base64 of 32 bytes".into(),
        })?;
    Ok(DeviceKey::from_bytes(&bytes))
}

/// Parses a session file's text.
pub fn parse_session(path: &Path, text: &str) -> Result<Session, StateError> {
    serde_json::from_str(text).map_err(|e| StateError::Malformed {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// Reads a secret file; `None` if it does not exist. Refuses files others can read.
fn read_secret(path: &Path) -> Result<Option<String>, StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StateError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let bytes = fs::read(path).map_err(io)?;
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| StateError::Malformed {
            path: path.to_owned(),
            why: "not UTF-8 text".into(),
        })
}

/// Writes a file 0600 through a temporary file and a rename, so readers never see half.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension("tmp");
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            controller: "https://10.0.0.1:8443".into(),
            fingerprint: Some("AB".repeat(32)),
            ca_pem: None,
            device_id: DeviceId::new(),
            user_id: UserId::new(),
            user_name: "Ann".into(),
            session: "very-secret".into(),
            issued_at: "2026-11-25T12:00:00Z".parse().unwrap(),
            expires_at: "2026-11-25T14:00:00Z".parse().unwrap(),
            uid: 1000,
        }
    }

    #[test]
    fn sessions_are_stored_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert_eq!(state.session().unwrap(), None);
        let s = session();
        state.save_session(&s).unwrap();
        let mode = fs::metadata(state.path(SESSION_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(state.session().unwrap(), Some(s));
        state.clear_session().unwrap();
        assert_eq!(state.session().unwrap(), None);
        state.clear_session().unwrap();
    }

    #[test]
    fn the_device_key_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let a = state.device_key().unwrap();
        let b = state.device_key().unwrap();
        assert_eq!(a.public_key(), b.public_key());
        let mode = fs::metadata(state.path(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }

    #[test]
    fn garbage_gets_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        write_secret(&state.path(SESSION_FILE), b"{not json").unwrap();
        let err = state.session().unwrap_err().to_string();
        assert!(err.contains("session.json is malformed"), "{err}");
        assert!(err.contains("postern login"), "{err}");
        write_secret(&state.path(SESSION_FILE), br#"{"controller": 3}"#).unwrap();
        assert!(matches!(
            state.session().unwrap_err(),
            StateError::Malformed { .. }
        ));
        write_secret(&state.path(KEY_FILE), b"short").unwrap();
        let err = state.device_key().unwrap_err().to_string();
        assert!(err.contains("device.key is malformed"), "{err}");
        write_secret(&state.path(KEY_FILE), &[0xff, 0xfe]).unwrap();
        assert!(
            state
                .device_key()
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
    }

    #[test]
    fn files_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        state.save_session(&session()).unwrap();
        fs::set_permissions(state.path(SESSION_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = state.session().unwrap_err();
        assert!(
            matches!(err, StateError::TooOpen { mode: 0o644, .. }),
            "{err}"
        );
    }

    #[test]
    fn renewal_starts_at_half_life_and_debug_hides_the_secret() {
        let s = session();
        assert_eq!(
            s.renew_at(),
            "2026-11-25T13:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(!s.expired("2026-11-25T13:59:59Z".parse().unwrap()));
        assert!(s.expired("2026-11-25T14:00:00Z".parse().unwrap()));
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn grants_are_remembered_and_garbage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(state.grants().is_empty());
        let ids = vec![GrantId::new(), GrantId::new()];
        state.save_grants(&ids).unwrap();
        assert_eq!(state.grants(), ids);
        state.save_grants(&[]).unwrap();
        assert!(!state.path(GRANTS_FILE).exists());
        write_secret(&state.path(GRANTS_FILE), b"[1,2").unwrap();
        assert!(state.grants().is_empty());
    }

    #[test]
    fn paused_flag_persists() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        assert!(!state.paused());
        state.set_paused(true).unwrap();
        assert!(StateDir::open(dir.path()).unwrap().paused());
        state.set_paused(false).unwrap();
        assert!(!state.paused());
    }
}
