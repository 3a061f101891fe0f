use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
            utoipa::ToSchema,
        )]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh id, ordered by creation time (UUIDv7).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

typed_id!(
    /// Identifies a site.
    SiteId,
    /// Identifies an enrolled gateway.
    GatewayId,
    /// Identifies a resource.
    ResourceId,
    /// Identifies a user.
    UserId,
    /// Identifies a group.
    GroupId,
    /// Identifies an enrolled device.
    DeviceId,
    /// Identifies a policy.
    PolicyId,
    /// Identifies a posture profile.
    PostureProfileId,
    /// Identifies a grant.
    GrantId,
    /// Identifies an enrollment key.
    EnrollmentKeyId,
    /// Identifies an API token or gateway enrollment token.
    TokenId,
    /// Identifies an audit event.
    AuditEventId,
);
