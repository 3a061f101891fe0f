//! The device key: an Ed25519 key pair made on the device at first use. Its private half
//! never leaves the device; the controller knows the public half from enrollment. The key
//! proves possession at every control connection (it signs the controller's fresh nonce)
//! and signs posture reports.
//!
//! Every signature covers a context string first, so a signature made for one purpose can
//! never be replayed as another.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use jiff::Timestamp;
use model::{DeviceId, PostureReport};
use serde::{Deserialize, Serialize};

/// What a control-connection proof signs, before the nonce and the device id.
const AUTH_CONTEXT: &[u8] = b"postern device auth v1\0";
/// What a posture report signature signs, before the device id, sequence and report.
const POSTURE_CONTEXT: &[u8] = b"postern posture report v1\0";

/// The device's key pair. Debug output never shows the private half.
#[derive(Clone)]
pub struct DeviceKey(SigningKey);

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DeviceKey")
            .field(&self.public_key())
            .finish()
    }
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not base64 of 32 bytes, or not a valid Ed25519 point.
    #[error("the device key is malformed")]
    BadKey,
    /// The signature is not base64 of 64 bytes.
    #[error("the signature is malformed")]
    Malformed,
    /// The signature does not verify with the device's key.
    #[error("the signature does not match the device's key")]
    Mismatch,
}

impl DeviceKey {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key pair from its 32 secret bytes.
    pub fn from_bytes(secret: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(secret))
    }

    /// The 32 secret bytes, for storing in a 0600 file. Never send or log them.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public key as base64 (32 bytes), the form the controller registers.
    pub fn public_key(&self) -> String {
        STANDARD.encode(self.0.verifying_key().to_bytes())
    }

    /// A short, readable fingerprint of the public key (for approval pages).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    /// Proves possession of the key for a control connection: signs the controller's nonce
    /// together with the device id.
    pub fn sign_challenge(&self, device: DeviceId, nonce: &[u8]) -> String {
        let sig = self.0.sign(&challenge_message(device, nonce));
        STANDARD.encode(sig.to_bytes())
    }

    /// Signs a posture report: the report is bound to this device and to `seq`, which
    /// must grow with every report the device sends.
    pub fn sign_report(&self, device: DeviceId, seq: u64, report: PostureReport) -> SignedReport {
        let body = serde_json::to_string(&report).unwrap_or_default();
        let sig = self.0.sign(&report_message(device, seq, &body));
        SignedReport {
            device_id: device,
            seq,
            body,
            signature: STANDARD.encode(sig.to_bytes()),
        }
    }
}

/// A short fingerprint of a base64 public key: the first 8 bytes in hex pairs.
pub fn fingerprint(public_key: &str) -> String {
    let bytes = STANDARD.decode(public_key.trim()).unwrap_or_default();
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn challenge_message(device: DeviceId, nonce: &[u8]) -> Vec<u8> {
    let mut m = AUTH_CONTEXT.to_vec();
    m.extend_from_slice(device.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(nonce);
    m
}

fn report_message(device: DeviceId, seq: u64, body: &str) -> Vec<u8> {
    let mut m = POSTURE_CONTEXT.to_vec();
    m.extend_from_slice(device.to_string().as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(body.as_bytes());
    m
}

fn verifying_key(public_key: &str) -> Result<VerifyingKey, SignatureError> {
    let bytes: [u8; 32] = STANDARD
        .decode(public_key.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::BadKey)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| SignatureError::BadKey)
}

fn signature(sig: &str) -> Result<Signature, SignatureError> {
    let bytes: [u8; 64] = STANDARD
        .decode(sig.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::Malformed)?;
    Ok(Signature::from_bytes(&bytes))
}

/// Checks a base64 public key is a valid Ed25519 key.
pub fn check_public_key(public_key: &str) -> Result<(), SignatureError> {
    verifying_key(public_key).map(|_| ())
}

/// Verifies a control-connection proof made by [`DeviceKey::sign_challenge`].
pub fn verify_challenge(
    public_key: &str,
    device: DeviceId,
    nonce: &[u8],
    sig: &str,
) -> Result<(), SignatureError> {
    verifying_key(public_key)?
        .verify_strict(&challenge_message(device, nonce), &signature(sig)?)
        .map_err(|_| SignatureError::Mismatch)
}

/// A posture report as the device signed it. The report travels as the exact JSON text
/// that was signed, so verification never depends on re-serialising.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedReport {
    /// The device that made and signed it.
    pub device_id: DeviceId,
    /// Grows with every report of this device; the controller refuses one not greater than
    /// the last it accepted (a replay).
    pub seq: u64,
    /// The report as JSON text.
    pub body: String,
    /// Ed25519 signature (base64) over the context, device id, `seq` and `body`.
    pub signature: String,
}

/// Why a signed report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The signature is missing, malformed, or made by another key.
    #[error("the posture report is not signed by this device: {0}")]
    Signature(#[from] SignatureError),
    /// The report names another device.
    #[error("the posture report belongs to another device")]
    WrongDevice,
    /// The body is not a posture report.
    #[error("the posture report is malformed")]
    Malformed,
    /// Collected too long ago, or in the future beyond the allowed skew.
    #[error("the posture report was collected at {0}, which is too old or in the future")]
    Stale(Timestamp),
}

impl SignedReport {
    /// Verifies the signature with the device's registered public key, that it names
    /// `device`, and that it was collected within `max_age` of `now` (and not more than
    /// `max_age` ahead). Replay (sequence) checks are the caller's: they need state.
    pub fn verify(
        &self,
        public_key: &str,
        device: DeviceId,
        now: Timestamp,
        max_age: jiff::SignedDuration,
    ) -> Result<PostureReport, ReportError> {
        if self.device_id != device {
            return Err(ReportError::WrongDevice);
        }
        verifying_key(public_key)?
            .verify_strict(
                &report_message(self.device_id, self.seq, &self.body),
                &signature(&self.signature)?,
            )
            .map_err(|_| ReportError::Signature(SignatureError::Mismatch))?;
        let report: PostureReport =
            serde_json::from_str(&self.body).map_err(|_| ReportError::Malformed)?;
        let age = now.duration_since(report.collected_at);
        if age > max_age || age < -max_age {
            return Err(ReportError::Stale(report.collected_at));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at: Timestamp) -> PostureReport {
        PostureReport {
            collected_at: at,
            os_name: Some("debian".into()),
            os_version: Some("12".into()),
            kernel_version: None,
            disk_encryption: model::CheckState::Pass,
            firewall: model::CheckState::Fail,
            secure_boot: model::CheckState::Unknown,
            screen_lock: model::CheckState::Unknown,
            processes: vec![],
            client_version: Some("0.1.0".into()),
            hostname: Some("laptop".into()),
            serial: None,
        }
    }

    #[test]
    fn challenge_proofs_bind_key_device_and_nonce() {
        let key = DeviceKey::generate();
        let other = DeviceKey::generate();
        let device = DeviceId::new();
        let sig = key.sign_challenge(device, b"nonce-1");
        assert_eq!(
            verify_challenge(&key.public_key(), device, b"nonce-1", &sig),
            Ok(())
        );
        assert_eq!(
            verify_challenge(&key.public_key(), device, b"nonce-2", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_challenge(&key.public_key(), DeviceId::new(), b"nonce-1", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_challenge(&other.public_key(), device, b"nonce-1", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_challenge(&key.public_key(), device, b"nonce-1", "AAAA"),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify_challenge("not a key", device, b"nonce-1", &sig),
            Err(SignatureError::BadKey)
        );
    }

    #[test]
    fn keys_round_trip_and_hide_their_secret() {
        let key = DeviceKey::generate();
        let again = DeviceKey::from_bytes(&key.to_bytes());
        assert_eq!(key.public_key(), again.public_key());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&STANDARD.encode(key.to_bytes())));
        assert_eq!(key.fingerprint().len(), 8 * 3 - 1);
    }

    #[test]
    fn reports_verify_only_for_their_device_and_within_age() {
        let key = DeviceKey::generate();
        let device = DeviceId::new();
        let now: Timestamp = "2026-11-25T12:00:00Z".parse().unwrap();
        let max = jiff::SignedDuration::from_secs(60);
        let signed = key.sign_report(device, 7, report(now));
        assert_eq!(
            signed.verify(&key.public_key(), device, now, max),
            Ok(report(now))
        );
        // Another device's key.
        let other = DeviceKey::generate();
        assert!(matches!(
            signed.verify(&other.public_key(), device, now, max),
            Err(ReportError::Signature(SignatureError::Mismatch))
        ));
        // Named for another device.
        assert_eq!(
            signed.verify(&key.public_key(), DeviceId::new(), now, max),
            Err(ReportError::WrongDevice)
        );
        // Tampered body or sequence.
        let mut tampered = signed.clone();
        tampered.body = tampered.body.replace("\"fail\"", "\"pass\"");
        assert!(
            tampered
                .verify(&key.public_key(), device, now, max)
                .is_err()
        );
        let mut reseq = signed.clone();
        reseq.seq = 8;
        assert!(reseq.verify(&key.public_key(), device, now, max).is_err());
        // Unsigned.
        let mut unsigned = signed.clone();
        unsigned.signature = String::new();
        assert!(matches!(
            unsigned.verify(&key.public_key(), device, now, max),
            Err(ReportError::Signature(SignatureError::Malformed))
        ));
        // Stale and future.
        let later = now + jiff::SignedDuration::from_secs(61);
        assert!(matches!(
            signed.verify(&key.public_key(), device, later, max),
            Err(ReportError::Stale(_))
        ));
        let earlier = now - jiff::SignedDuration::from_secs(61);
        assert!(matches!(
            signed.verify(&key.public_key(), device, earlier, max),
            Err(ReportError::Stale(_))
        ));
    }
}
