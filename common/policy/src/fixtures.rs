//! Builders for tests: a world with one user, their device, one resource and a group.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::str::FromStr;

use jiff::Timestamp;
use model::{
    CheckState, Conditions, Device, GroupId, Policy, PolicyAction, PostureProfile,
    PostureProfileId, PostureReport, Resource, Role, User,
};

use crate::DecisionInput;

/// A typed id from a small number, so tests stay deterministic.
pub(crate) fn id<T: FromStr>(n: u128) -> T
where
    T::Err: Debug,
{
    format!("00000000-0000-0000-0000-{n:012x}").parse().unwrap()
}

pub(crate) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// Wednesday 2026-11-25 10:00 UTC.
pub(crate) const NOW: &str = "2026-11-25T10:00:00Z";

/// Owns everything a [`DecisionInput`] borrows.
#[derive(Debug, Clone)]
pub(crate) struct World {
    pub(crate) user: User,
    pub(crate) groups: Vec<GroupId>,
    pub(crate) device: Device,
    pub(crate) posture: Option<PostureReport>,
    pub(crate) identity_provider: String,
    pub(crate) last_mfa_at: Option<Timestamp>,
    pub(crate) source: IpAddr,
    pub(crate) now: Timestamp,
    pub(crate) resource: Resource,
    pub(crate) policies: Vec<Policy>,
    pub(crate) profiles: BTreeMap<PostureProfileId, PostureProfile>,
}

impl World {
    pub(crate) fn input(&self) -> DecisionInput<'_> {
        DecisionInput {
            user: &self.user,
            user_groups: &self.groups,
            device: &self.device,
            posture: self.posture.as_ref(),
            identity_provider: &self.identity_provider,
            last_mfa_at: self.last_mfa_at,
            source: self.source,
            now: self.now,
            resource: &self.resource,
            policies: &self.policies,
            posture_profiles: &self.profiles,
        }
    }
}

/// The user (id 1) in group 1 on their device (id 1), asking for resource 1 (`db`) at
/// [`NOW`] from 192.0.2.10, with a healthy report from a minute ago; no policies.
pub(crate) fn world() -> World {
    let now = ts(NOW);
    World {
        user: User {
            id: id(1),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            role: Role::User,
            disabled: false,
            created_at: Timestamp::UNIX_EPOCH,
        },
        groups: vec![id(1)],
        device: Device {
            id: id(1),
            user_id: id(1),
            name: "ada-laptop".into(),
            public_key: "AAAA".into(),
            disabled: false,
            created_at: Timestamp::UNIX_EPOCH,
            last_seen_at: None,
        },
        posture: Some(report(ts("2026-11-25T09:59:00Z"))),
        identity_provider: "okta".into(),
        last_mfa_at: Some(ts("2026-11-25T09:00:00Z")),
        source: "192.0.2.10".parse().unwrap(),
        now,
        resource: Resource {
            id: id(1),
            name: "db".into(),
            site_id: id(1),
            addresses: vec!["10.0.5.20/32".parse().unwrap()],
            ports: vec![],
            created_at: Timestamp::UNIX_EPOCH,
        },
        policies: vec![],
        profiles: BTreeMap::new(),
    }
}

/// An enabled policy `n` from group 1 to resource 1, with no conditions and 8-hour sessions.
pub(crate) fn policy(n: u128, action: PolicyAction) -> Policy {
    Policy {
        id: id(n),
        name: format!("policy {n}"),
        group_id: id(1),
        resource_id: id(1),
        action,
        conditions: Conditions::default(),
        max_session_secs: 8 * 3600,
        disabled: false,
        created_at: Timestamp::UNIX_EPOCH,
    }
}

/// A healthy report collected at `collected_at`.
pub(crate) fn report(collected_at: Timestamp) -> PostureReport {
    PostureReport {
        collected_at,
        os_name: Some("debian".into()),
        os_version: Some("12".into()),
        kernel_version: None,
        disk_encryption: CheckState::Pass,
        firewall: CheckState::Pass,
        secure_boot: CheckState::Pass,
        screen_lock: CheckState::Pass,
        processes: vec!["falcon-sensor".into()],
        client_version: Some("0.1.0".into()),
        hostname: None,
        serial: Some("ABC123".into()),
    }
}

/// A profile `n` that requires nothing.
pub(crate) fn profile(n: u128) -> PostureProfile {
    PostureProfile {
        id: id(n),
        name: format!("profile {n}"),
        min_os_versions: BTreeMap::new(),
        require_disk_encryption: false,
        require_firewall: false,
        require_secure_boot: false,
        require_screen_lock: false,
        required_processes: vec![],
        min_client_version: None,
        serial_allowlist: vec![],
        max_report_age_secs: None,
    }
}
