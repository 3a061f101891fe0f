//! The events the rest of the controller reacts to, fanned out in memory.

use model::{DeviceId, Grant, UserId};

/// Something that happened which other parts of the controller react to: every gateway
/// control connection subscribes and pushes the revocations of its grants.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlEvent {
    /// A grant was revoked; its gateway must drop the peer.
    GrantRevoked(Grant),
    /// Device sessions ended (sign-out, a disabled user or device): connected clients of
    /// that device or user must be disconnected.
    SessionsEnded {
        /// Only this device's sessions, when set.
        device: Option<DeviceId>,
        /// Only this user's sessions, when set.
        user: Option<UserId>,
        /// Why, for people.
        reason: String,
    },
    /// A device's posture report was accepted (its live grants were re-evaluated).
    PostureChanged(DeviceId),
    /// Events may have been lost (the replicas' notifications were interrupted): every link
    /// must resynchronise from the database.
    Resync,
}
