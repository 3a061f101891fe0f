//! The application services: every rule about the controller's objects lives here once, in
//! one file per object family, over a small kernel ([`Service`], [`Actor`], the error type,
//! the audit and revocation helpers). The shells (HTTP, QUIC, the replicas' notifications)
//! call these; these reach the database through the `store` crate and gateways, clients
//! and other replicas only through the `bus`. Each write is one transaction that includes
//! its audit record, so a rejected request changes nothing.

mod access;
mod accounts;
mod addressing;
mod audit;
mod client_devices;
mod decisions;
mod devices;
mod discovery;
mod gateway_links;
mod grants;
mod identities;
mod inventory;
mod kernel;
mod live;
mod lockout;
mod people;
mod policies;
mod posture;
mod replicas;
mod setup;
mod sso;
mod views;

pub(crate) use access::check_wireguard_key;
pub use access::{AccessGrant, AccessOutcome, AccessRequest};
pub use accounts::{
    LOCAL_PROVIDER, LoginInput, MIN_PASSWORD_CHARS, Me, NewSession, PasswordChange, PasswordInput,
    RECOVERY_CODE_COUNT, RecoveryCodes, SESSION_COOKIE, SESSION_IDLE_TIMEOUT, SESSION_LIFETIME,
    SignedIn, TotpCode, TotpEnrollment,
};
pub(crate) use addressing::default_tunnel_network;
pub use audit::AUDIT_PENDING_WINDOW;
pub(crate) use audit::SEAL_INTERVAL;
pub use client_devices::{
    ClientContext, DEVICE_AUTHORIZATION_TTL, DEVICE_POLL_INTERVAL, DEVICE_SESSION_MAX,
    DeviceApproval, DeviceAuthorizationInput, DeviceAuthorizationStart, DeviceSession,
    DeviceTokenInput, EnrolledDevice, POSTURE_MAX_SKEW, PendingDevice, SessionProblem,
};
pub use decisions::DecisionRequest;
pub use devices::{DevicePatch, EnrollInput, EnrollmentKeyInput};
pub use inventory::{GatewayPatch, GatewayTokenInput, ResourceInput, SiteInput};
pub(crate) use kernel::now;
pub use kernel::{
    Actor, DEFAULT_ACK_TIMEOUT, DEFAULT_DEVICE_SESSION_TTL, DEFAULT_TUNNEL_NETWORK, Issued,
    Service, ServiceError,
};
pub use lockout::{LOCKOUT, MAX_FAILED_SIGN_INS};
pub use people::{GroupInput, MemberInput, UserInput, UserPatch};
pub use policies::{ConditionsInput, PolicyInput};
pub use posture::PostureProfileInput;
pub(crate) use replicas::ReplicaChannel;
pub use setup::{SetupInput, SetupResult, TokenInput};
pub use sso::{
    IdentityConfigReport, IdentityLink, IdentityProviderInput, LinkIdentityInput,
    OIDC_BROWSER_COOKIE, OIDC_LOGIN_TTL, OidcCallback, OidcStart,
};
/// The records the services answer with, as the store keeps them.
pub(crate) use store::{
    ApiToken, AuditEvent, AuditFilter, EnrollmentKey, GatewayToken, GrantFilter, Identity,
    IdentityProvider,
};
pub use views::MyAccess;
