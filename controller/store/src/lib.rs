//! The Postern controller's storage, and nothing else: the SQL the controller runs, over
//! SQLite (the embedded default) and PostgreSQL through sqlx's `Any` driver, and the
//! migrations that make the schema. This crate does IO against the database; it knows
//! nothing of the controller (no services, rules, API or audit policy), only tables, rows
//! and transactions. Each read or write runs on the connection it is given, so that a caller
//! can put several of them, and the audit row, in one transaction.
//!
//! SQL here is portable: `$N` placeholders, TEXT ids, BIGINT milliseconds, BIGINT flags,
//! JSON in TEXT.

mod audit;
mod audit_chain;
mod client_sign_in;
mod codec;
mod database;
mod devices;
mod grants;
mod inventory;
mod local_accounts;
mod oidc;
mod people;
mod policies;
mod posture;
mod resources;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tokens;
mod tunnel_addresses;

pub use audit::{AuditEvent, AuditFilter, append_audit, query_audit};
pub use audit_chain::{
    AuditVerification, BrokenLink, ChainEvent, ChainProblem, GENESIS_HASH, seal_audit, verify_audit,
};
pub use client_sign_in::{
    DeviceAuthorization, DeviceSessionRecord, consume_device_authorization,
    decide_device_authorization, device_authorization_by_code, device_authorization_by_user_code,
    device_session_by_id, device_session_by_token, end_device_sessions,
    end_provider_device_sessions, insert_device_authorization, insert_device_session,
    purge_device_authorizations, renew_device_session, touch_device_authorization,
};
pub use database::{Backend, Conn, Store, StoreError, Tx};
pub use devices::{
    EnrollmentKey, consume_enrollment_key, delete_device, device_by_public_key, get_device,
    insert_device, insert_enrollment_key, list_devices, list_enrollment_keys,
    revoke_enrollment_key, touch_device, update_device,
};
pub use grants::{
    DecisionFacts, GrantFilter, due_grants, end_grant, get_grant, grant_revoke_reason,
    insert_grant, list_grants, list_grants_with_facts, live_grant_counts, live_grant_with_key,
    live_grants_with_keys, next_grant_end, public_key_in_use, revoke_grants, set_decision_facts,
    set_grant_policy, set_preshared_key, shorten_grant,
};
pub use inventory::{
    GatewayToken, consume_gateway_token, delete_gateway, delete_site, gateway_by_credential,
    gateway_seen, get_gateway, get_site, insert_gateway, insert_gateway_token, insert_site,
    list_gateway_tokens, list_gateways, list_sites, update_gateway, update_site,
};
#[cfg(any(test, feature = "testing"))]
pub use local_accounts::list_web_sessions;
pub use local_accounts::{
    LocalCredentials, WebSession, accept_totp_step, add_failed_attempt, clear_failures, clear_totp,
    confirm_totp, end_provider_web_sessions, end_user_web_sessions, end_web_session,
    get_credentials, insert_web_session, last_sign_in, lock_account, plaintext_totp_secrets,
    record_mfa, record_sign_in, replace_recovery_codes, reseal_totp_secret, set_password_hash,
    set_pending_totp, set_web_session_mfa, touch_web_session, unused_recovery_codes,
    use_recovery_code, web_session_by_token,
};
pub use oidc::{
    Identity, IdentityProvider, OidcIdentity, PendingLogin, add_provider_group, delete_identity,
    delete_provider, get_identity, get_provider, group_id_by_name, identity_user, insert_identity,
    insert_pending_login, insert_provider, list_identities, list_providers, move_identity,
    provider_by_name, provider_groups, provider_secrets, remove_provider_group,
    reseal_provider_secret, take_pending_login, touch_identity, update_provider,
};
pub use people::{
    add_member, count_admins, delete_group, delete_user, get_group, get_user, group_members,
    groups_of_user, insert_group, insert_user, list_groups, list_users, remove_member,
    update_group, update_user, user_by_email,
};
pub use policies::{
    PolicyRef, delete_policy, get_policy, insert_policy, list_policies, policies_for_resource,
    policies_referencing, update_policy,
};
pub use posture::{
    advance_posture_seq, delete_profile, get_posture, get_profile, insert_profile, list_profiles,
    profiles_by_id, set_posture, update_profile,
};
pub use resources::{
    delete_resource, get_resource, insert_resource, list_resources, update_resource,
};
pub use tokens::{
    ApiToken, consume_setup_code, insert_api_token, list_api_tokens, put_setup_code,
    revoke_api_token, use_api_token,
};
pub use tunnel_addresses::{claim_tunnel_address, device_tunnel_address, leased_tunnel_addresses};

#[cfg(test)]
mod contract;
