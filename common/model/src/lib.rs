//! The Postern object model: typed ids, sites, resources, users, devices, policies,
//! posture profiles and reports, grants, and the parsing and validation rules for their
//! fields, with what a grant admits ([`Admission`]: the one rule the gateway enforces and the
//! client routes by) and WireGuard keys decoded once from their base64 text ([`WgKey`],
//! [`PresharedKey`]). Shared by the controller, gateways and clients. No IO.

mod admission;
mod ids;
mod keys;
mod object;
mod ports;
mod posture;
mod schedule;

pub use admission::Admission;
pub use ids::{
    AuditEventId, DeviceId, EnrollmentKeyId, GatewayId, GrantId, GroupId, PolicyId,
    PostureProfileId, ResourceId, SiteId, TokenId, UserId,
};
pub use keys::{KeyError, PresharedKey, WgKey};
pub use object::{
    Conditions, Device, Gateway, Grant, Group, Policy, PolicyAction, Resource, Role, Site, User,
    parse_address, validate_name,
};
pub use ports::{PortParseError, PortRule, Protocol};
pub use posture::{CheckState, PostureProfile, PostureReport, compare_versions};
pub use schedule::{Clock, ScheduleError, TimeWindow, Weekday, time_zone};

/// A field-level validation failure: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The JSON path of the field, e.g. `addresses[1]`.
    pub field: String,
    /// What is wrong, in words a person can act on.
    pub message: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
