//! The store contract: every test runs against SQLite and against PostgreSQL
//! (`POSTERN_TEST_POSTGRES_URL`, which `scripts/test` provides).

use jiff::{SignedDuration, Timestamp};
use model::*;

use super::*;
use crate::testing::postgres;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    t("2026-11-25T09:00:00Z")
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open_sqlite(dir.path()).await.unwrap(), dir)
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite().await;
                    super::$name(&store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::postgres().await else { return };
                    super::$name(&db.store).await;
                }
            )*
        }
    };
}

contract!(
    sites_round_trip_and_refuse_duplicates,
    gateway_tokens_are_single_use_and_expire,
    gateways_are_found_by_credential,
    resources_keep_addresses_and_ports,
    groups_members_and_cascades,
    devices_keep_their_posture,
    enrollment_keys_obey_use_rules,
    profiles_and_policies_round_trip,
    foreign_keys_are_enforced,
    grants_filter_and_revoke_only_live_ones,
    api_tokens_and_setup_codes,
    audit_filters_and_orders,
    rolled_back_transactions_leave_nothing,
    live_grants_carry_their_preshared_keys,
    tunnel_addresses_are_leased_to_one_device,
    local_credentials_lock_and_replay,
    recovery_codes_are_single_use,
    web_sessions_end_and_cascade,
    sign_ins_record_provider_and_mfa,
    identity_providers_keep_secrets_apart,
    pending_oidc_logins_are_single_use,
    oidc_identities_are_unique_per_issuer_and_subject,
    device_sign_ins_are_decided_once_and_used_once,
    device_sessions_renew_and_end,
    identity_providers_update_and_reseal,
    identities_list_move_and_delete,
    plaintext_totp_secrets_are_found_and_resealed,
    web_sessions_end_by_provider,
);

async fn site(s: &Store, name: &str) -> Site {
    let site = Site {
        id: SiteId::new(),
        name: name.into(),
        created_at: now(),
    };
    let mut tx = s.begin().await.unwrap();
    insert_site(&mut tx, &site).await.unwrap();
    tx.commit().await.unwrap();
    site
}

async fn user(s: &Store, email: &str) -> User {
    let u = User {
        id: UserId::new(),
        email: email.into(),
        name: "U".into(),
        role: Role::User,
        disabled: false,
        created_at: now(),
    };
    let mut tx = s.begin().await.unwrap();
    insert_user(&mut tx, &u).await.unwrap();
    tx.commit().await.unwrap();
    u
}

async fn resource(s: &Store, site: SiteId, name: &str) -> Resource {
    let r = Resource {
        id: ResourceId::new(),
        name: name.into(),
        site_id: site,
        addresses: vec![
            parse_address("10.0.5.20").unwrap(),
            parse_address("fd00:5::/64").unwrap(),
        ],
        ports: vec![
            "tcp/22".parse().unwrap(),
            "tcp/8000-8080".parse().unwrap(),
            "icmp".parse().unwrap(),
        ],
        created_at: now(),
    };
    let mut tx = s.begin().await.unwrap();
    insert_resource(&mut tx, &r).await.unwrap();
    tx.commit().await.unwrap();
    r
}

async fn sites_round_trip_and_refuse_duplicates(s: &Store) {
    let a = site(s, "hq").await;
    let mut c = s.conn().await.unwrap();
    assert_eq!(get_site(&mut c, a.id).await.unwrap(), Some(a.clone()));
    let dup = Site {
        id: SiteId::new(),
        name: "hq".into(),
        created_at: now(),
    };
    assert!(matches!(
        insert_site(&mut c, &dup).await,
        Err(StoreError::Duplicate(_))
    ));
    let renamed = Site {
        name: "head office".into(),
        ..a.clone()
    };
    update_site(&mut c, &renamed).await.unwrap();
    assert_eq!(list_sites(&mut c).await.unwrap(), vec![renamed]);
    assert!(delete_site(&mut c, a.id).await.unwrap());
    assert!(!delete_site(&mut c, a.id).await.unwrap());
    assert_eq!(get_site(&mut c, a.id).await.unwrap(), None);
}

async fn gateway_tokens_are_single_use_and_expire(s: &Store) {
    let a = site(s, "hq").await;
    let mut c = s.conn().await.unwrap();
    let token = GatewayToken {
        id: TokenId::new(),
        site_id: a.id,
        created_at: now(),
        expires_at: now() + SignedDuration::from_hours(1),
        used_at: None,
        gateway_id: None,
    };
    insert_gateway_token(&mut c, &token, "hash-1")
        .await
        .unwrap();
    let late = now() + SignedDuration::from_hours(2);
    assert_eq!(
        consume_gateway_token(&mut c, "hash-1", GatewayId::new(), late)
            .await
            .unwrap(),
        None,
        "expired"
    );
    let g = GatewayId::new();
    assert_eq!(
        consume_gateway_token(&mut c, "hash-1", g, now())
            .await
            .unwrap(),
        Some(a.id)
    );
    assert_eq!(
        consume_gateway_token(&mut c, "hash-1", GatewayId::new(), now())
            .await
            .unwrap(),
        None,
        "replayed"
    );
    assert_eq!(
        consume_gateway_token(&mut c, "unknown", GatewayId::new(), now())
            .await
            .unwrap(),
        None
    );
    let listed = list_gateway_tokens(&mut c, a.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].gateway_id, Some(g));
    assert_eq!(listed[0].used_at, Some(now()));
}

async fn gateways_are_found_by_credential(s: &Store) {
    let a = site(s, "hq").await;
    let mut c = s.conn().await.unwrap();
    let g = Gateway {
        id: GatewayId::new(),
        site_id: a.id,
        name: "gw-1".into(),
        public_key: None,
        endpoint: Some("192.0.2.1:51820".into()),
        disabled: false,
        online: false,
        last_seen_at: None,
        created_at: now(),
    };
    insert_gateway(&mut c, &g, "cred-hash").await.unwrap();
    assert_eq!(
        gateway_by_credential(&mut c, "cred-hash").await.unwrap(),
        Some(g.clone())
    );
    assert_eq!(gateway_by_credential(&mut c, "other").await.unwrap(), None);
    let same_name = Gateway {
        id: GatewayId::new(),
        ..g.clone()
    };
    assert!(matches!(
        insert_gateway(&mut c, &same_name, "cred-2").await,
        Err(StoreError::Duplicate(_))
    ));
    let changed = Gateway {
        disabled: true,
        public_key: Some("pk".into()),
        last_seen_at: Some(now()),
        ..g.clone()
    };
    update_gateway(&mut c, &changed).await.unwrap();
    assert_eq!(get_gateway(&mut c, g.id).await.unwrap(), Some(changed));
    assert_eq!(
        list_gateways(&mut c, Some(SiteId::new())).await.unwrap(),
        vec![]
    );
    assert!(delete_gateway(&mut c, g.id).await.unwrap());
}

async fn resources_keep_addresses_and_ports(s: &Store) {
    let a = site(s, "hq").await;
    let r = resource(s, a.id, "db").await;
    let mut c = s.conn().await.unwrap();
    assert_eq!(get_resource(&mut c, r.id).await.unwrap(), Some(r.clone()));
    let changed = Resource {
        ports: vec![],
        addresses: vec![parse_address("10.9.0.0/16").unwrap()],
        ..r.clone()
    };
    update_resource(&mut c, &changed).await.unwrap();
    assert_eq!(
        list_resources(&mut c, Some(a.id)).await.unwrap(),
        vec![changed]
    );
    assert!(matches!(
        insert_resource(
            &mut c,
            &Resource {
                id: ResourceId::new(),
                ..r.clone()
            }
        )
        .await,
        Err(StoreError::Duplicate(_))
    ));
}

async fn groups_members_and_cascades(s: &Store) {
    let u = user(s, "ann@example.com").await;
    let v = user(s, "bob@example.com").await;
    let g = Group {
        id: GroupId::new(),
        name: "eng".into(),
        description: "".into(),
        created_at: now(),
    };
    let mut c = s.conn().await.unwrap();
    insert_group(&mut c, &g).await.unwrap();
    assert!(add_member(&mut c, g.id, u.id, now()).await.unwrap());
    assert!(
        !add_member(&mut c, g.id, u.id, now()).await.unwrap(),
        "already a member"
    );
    assert!(add_member(&mut c, g.id, v.id, now()).await.unwrap());
    assert_eq!(
        group_members(&mut c, g.id).await.unwrap(),
        vec![u.clone(), v.clone()]
    );
    assert_eq!(groups_of_user(&mut c, u.id).await.unwrap(), vec![g.id]);
    assert!(remove_member(&mut c, g.id, v.id).await.unwrap());
    assert!(!remove_member(&mut c, g.id, v.id).await.unwrap());
    // Deleting a user removes their memberships and devices.
    let d = Device {
        id: DeviceId::new(),
        user_id: u.id,
        name: "laptop".into(),
        public_key: "pk-ann".into(),
        disabled: false,
        created_at: now(),
        last_seen_at: None,
    };
    insert_device(&mut c, &d).await.unwrap();
    assert!(delete_user(&mut c, u.id).await.unwrap());
    assert_eq!(group_members(&mut c, g.id).await.unwrap(), vec![]);
    assert_eq!(get_device(&mut c, d.id).await.unwrap(), None);
}

async fn devices_keep_their_posture(s: &Store) {
    let u = user(s, "ann@example.com").await;
    let mut c = s.conn().await.unwrap();
    let d = Device {
        id: DeviceId::new(),
        user_id: u.id,
        name: "laptop".into(),
        public_key: "pk".into(),
        disabled: false,
        created_at: now(),
        last_seen_at: None,
    };
    insert_device(&mut c, &d).await.unwrap();
    assert_eq!(get_posture(&mut c, d.id).await.unwrap(), None);
    let report = PostureReport {
        collected_at: now(),
        os_name: Some("debian".into()),
        os_version: Some("12".into()),
        kernel_version: None,
        disk_encryption: CheckState::Pass,
        firewall: CheckState::Fail,
        secure_boot: CheckState::Unknown,
        screen_lock: CheckState::Unknown,
        processes: vec!["falcon-sensor".into()],
        client_version: Some("0.1.0".into()),
        hostname: Some("laptop".into()),
        serial: None,
    };
    set_posture(&mut c, d.id, &report).await.unwrap();
    assert_eq!(get_posture(&mut c, d.id).await.unwrap(), Some(report));
    let dup = Device {
        id: DeviceId::new(),
        ..d.clone()
    };
    assert!(
        matches!(
            insert_device(&mut c, &dup).await,
            Err(StoreError::Duplicate(_))
        ),
        "one key, one device"
    );
    let disabled = Device {
        disabled: true,
        ..d.clone()
    };
    update_device(&mut c, &disabled).await.unwrap();
    assert_eq!(
        list_devices(&mut c, Some(u.id)).await.unwrap(),
        vec![disabled]
    );
}

async fn enrollment_keys_obey_use_rules(s: &Store) {
    let u = user(s, "ann@example.com").await;
    let mut c = s.conn().await.unwrap();
    let key = |reusable| EnrollmentKey {
        id: EnrollmentKeyId::new(),
        user_id: u.id,
        reusable,
        created_at: now(),
        expires_at: now() + SignedDuration::from_hours(1),
        used_at: None,
        revoked_at: None,
    };
    let once = key(false);
    let many = key(true);
    let revoked = key(true);
    insert_enrollment_key(&mut c, &once, "once").await.unwrap();
    insert_enrollment_key(&mut c, &many, "many").await.unwrap();
    insert_enrollment_key(&mut c, &revoked, "revoked")
        .await
        .unwrap();
    assert!(
        revoke_enrollment_key(&mut c, revoked.id, now())
            .await
            .unwrap()
    );
    assert!(
        consume_enrollment_key(&mut c, "once", now())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        consume_enrollment_key(&mut c, "once", now())
            .await
            .unwrap()
            .is_none(),
        "one-time key replayed"
    );
    assert!(
        consume_enrollment_key(&mut c, "many", now())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        consume_enrollment_key(&mut c, "many", now())
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        consume_enrollment_key(&mut c, "many", now() + SignedDuration::from_hours(2))
            .await
            .unwrap()
            .is_none(),
        "expired"
    );
    assert!(
        consume_enrollment_key(&mut c, "revoked", now())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(list_enrollment_keys(&mut c).await.unwrap().len(), 3);
}

async fn profiles_and_policies_round_trip(s: &Store) {
    let a = site(s, "hq").await;
    let r = resource(s, a.id, "db").await;
    let mut c = s.conn().await.unwrap();
    let profile = PostureProfile {
        id: PostureProfileId::new(),
        name: "strict".into(),
        min_os_versions: [("debian".to_owned(), "12".to_owned())].into(),
        require_disk_encryption: true,
        require_firewall: true,
        require_secure_boot: false,
        require_screen_lock: false,
        required_processes: vec!["edr".into()],
        min_client_version: Some("0.1.0".into()),
        serial_allowlist: vec![],
        max_report_age_secs: Some(300),
    };
    insert_profile(&mut c, &profile, now()).await.unwrap();
    assert_eq!(
        profiles_by_id(&mut c).await.unwrap().get(&profile.id),
        Some(&profile)
    );
    let g = Group {
        id: GroupId::new(),
        name: "eng".into(),
        description: "".into(),
        created_at: now(),
    };
    insert_group(&mut c, &g).await.unwrap();
    let p = Policy {
        id: PolicyId::new(),
        name: "eng to db".into(),
        group_id: g.id,
        resource_id: r.id,
        action: PolicyAction::Allow,
        conditions: Conditions {
            posture_profile_id: Some(profile.id),
            time_windows: vec![TimeWindow {
                days: vec![Weekday::Mon, Weekday::Fri],
                start: "09:00".parse().unwrap(),
                end: "18:00".parse().unwrap(),
            }],
            time_zone: Some("Europe/Berlin".into()),
            source_cidrs: vec![parse_address("192.0.2.0/24").unwrap()],
            max_mfa_age_secs: Some(3600),
            identity_provider: Some("okta".into()),
        },
        max_session_secs: 28_800,
        disabled: false,
        created_at: now(),
    };
    insert_policy(&mut c, &p).await.unwrap();
    assert_eq!(get_policy(&mut c, p.id).await.unwrap(), Some(p.clone()));
    assert_eq!(
        policies_for_resource(&mut c, r.id).await.unwrap(),
        vec![p.clone()]
    );
    assert_eq!(
        policies_referencing(&mut c, PolicyRef::Group, &g.id.to_string())
            .await
            .unwrap(),
        vec!["eng to db".to_owned()]
    );
    let deny = Policy {
        action: PolicyAction::Deny,
        disabled: true,
        ..p.clone()
    };
    update_policy(&mut c, &deny).await.unwrap();
    assert_eq!(list_policies(&mut c).await.unwrap(), vec![deny]);
    assert!(delete_policy(&mut c, p.id).await.unwrap());
    assert!(delete_profile(&mut c, profile.id).await.unwrap());
}

async fn foreign_keys_are_enforced(s: &Store) {
    let mut c = s.conn().await.unwrap();
    let orphan = Resource {
        id: ResourceId::new(),
        name: "orphan".into(),
        site_id: SiteId::new(),
        addresses: vec![],
        ports: vec![],
        created_at: now(),
    };
    assert!(matches!(
        insert_resource(&mut c, &orphan).await,
        Err(StoreError::Referenced(_))
    ));
    let a = site(s, "hq").await;
    resource(s, a.id, "db").await;
    let mut c = s.conn().await.unwrap();
    assert!(
        matches!(
            delete_site(&mut c, a.id).await,
            Err(StoreError::Referenced(_))
        ),
        "a site with resources stays"
    );
}

fn grant(device: DeviceId, resource: ResourceId, expires_at: Timestamp) -> Grant {
    Grant {
        id: GrantId::new(),
        device_id: device,
        user_id: UserId::new(),
        resource_id: resource,
        policy_id: PolicyId::new(),
        gateway_id: GatewayId::new(),
        public_key: format!("pk-{}", uuid::Uuid::new_v4()),
        tunnel_address: "100.64.0.7".parse().unwrap(),
        created_at: now(),
        expires_at,
        revoked_at: None,
    }
}

async fn grants_filter_and_revoke_only_live_ones(s: &Store) {
    let mut c = s.conn().await.unwrap();
    let (d1, d2) = (DeviceId::new(), DeviceId::new());
    let r = ResourceId::new();
    let live = grant(d1, r, now() + SignedDuration::from_hours(1));
    let expired = grant(d1, r, now() - SignedDuration::from_secs(1));
    let other = grant(d2, r, now() + SignedDuration::from_hours(1));
    for g in [&live, &expired, &other] {
        insert_grant(&mut c, g).await.unwrap();
    }
    let at_now = GrantFilter {
        live_at: Some(now()),
        ..Default::default()
    };
    let mut ids: Vec<_> = list_grants(&mut c, &at_now)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    ids.sort();
    let mut want = vec![live.id, other.id];
    want.sort();
    assert_eq!(ids, want);
    let by_device = GrantFilter::for_device(d1);
    assert_eq!(
        list_grants(&mut c, &by_device).await.unwrap().len(),
        2,
        "history includes the expired one"
    );
    let revoked = revoke_grants(&mut c, &by_device, now(), "device disabled")
        .await
        .unwrap();
    assert_eq!(
        revoked.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![live.id]
    );
    assert_eq!(
        get_grant(&mut c, live.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(now())
    );
    assert!(
        revoke_grants(&mut c, &by_device, now(), "again")
            .await
            .unwrap()
            .is_empty(),
        "revocation is idempotent"
    );
    let one = GrantFilter::for_grant(other.id);
    assert_eq!(
        revoke_grants(&mut c, &one, now(), "admin")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(list_grants(&mut c, &at_now).await.unwrap().is_empty());
}

async fn live_grants_carry_their_preshared_keys(s: &Store) {
    let mut c = s.conn().await.unwrap();
    let r = ResourceId::new();
    let live = grant(DeviceId::new(), r, now() + SignedDuration::from_hours(1));
    let gateway = live.gateway_id;
    let expired = Grant {
        gateway_id: gateway,
        ..grant(DeviceId::new(), r, now() - SignedDuration::from_secs(1))
    };
    let other = grant(DeviceId::new(), r, now() + SignedDuration::from_hours(1));
    for (g, psk) in [
        (&live, "psk-live"),
        (&expired, "psk-old"),
        (&other, "psk-other"),
    ] {
        insert_grant(&mut c, g).await.unwrap();
        set_preshared_key(&mut c, g.id, psk).await.unwrap();
    }
    let with_keys = live_grants_with_keys(&mut c, gateway, now()).await.unwrap();
    assert_eq!(with_keys, vec![(live.clone(), "psk-live".to_owned())]);
    let counts = live_grant_counts(&mut c, now()).await.unwrap();
    assert_eq!(counts.get(&gateway), Some(&1));
    assert_eq!(counts.get(&other.gateway_id), Some(&1));
    assert!(
        public_key_in_use(&mut c, &live.public_key, now())
            .await
            .unwrap()
    );
    assert!(
        !public_key_in_use(&mut c, &expired.public_key, now())
            .await
            .unwrap()
    );

    let one = GrantFilter::for_grant(live.id);
    revoke_grants(&mut c, &one, now(), "admin").await.unwrap();
    assert!(
        live_grants_with_keys(&mut c, gateway, now())
            .await
            .unwrap()
            .is_empty()
    );
    let key: Option<String> = sqlx::query_scalar("SELECT preshared_key FROM grants WHERE id = $1")
        .bind(live.id.to_string())
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(key, None, "revocation forgets the preshared key");
}

async fn tunnel_addresses_are_leased_to_one_device(s: &Store) {
    let mut c = s.conn().await.unwrap();
    let (a, b) = (DeviceId::new(), DeviceId::new());
    let addr: std::net::IpAddr = "100.64.0.9".parse().unwrap();
    let hour = now() + SignedDuration::from_hours(1);
    assert!(
        claim_tunnel_address(&mut c, addr, a, hour, now())
            .await
            .unwrap()
    );
    assert!(
        !claim_tunnel_address(&mut c, addr, b, hour, now())
            .await
            .unwrap(),
        "another device's live lease holds"
    );
    let two = now() + SignedDuration::from_hours(2);
    assert!(
        claim_tunnel_address(&mut c, addr, a, two, now())
            .await
            .unwrap(),
        "the holder extends its lease"
    );
    assert!(
        claim_tunnel_address(&mut c, addr, a, hour, now())
            .await
            .unwrap(),
        "a shorter claim by the holder keeps the longer lease"
    );
    assert_eq!(
        device_tunnel_address(&mut c, a, now()).await.unwrap(),
        Some(addr)
    );
    assert_eq!(device_tunnel_address(&mut c, b, now()).await.unwrap(), None);
    assert_eq!(
        leased_tunnel_addresses(&mut c, now()).await.unwrap(),
        vec![addr]
    );
    let later = now() + SignedDuration::from_hours(3);
    assert!(
        claim_tunnel_address(
            &mut c,
            addr,
            b,
            later + SignedDuration::from_hours(1),
            later
        )
        .await
        .unwrap(),
        "an expired lease is free again"
    );
    assert_eq!(device_tunnel_address(&mut c, a, later).await.unwrap(), None);
}

async fn api_tokens_and_setup_codes(s: &Store) {
    let mut c = s.conn().await.unwrap();
    let token = ApiToken {
        id: TokenId::new(),
        name: "ci".into(),
        role: Role::Auditor,
        user_id: None,
        created_at: now(),
        last_used_at: None,
        revoked_at: None,
    };
    insert_api_token(&mut c, &token, "tok-hash").await.unwrap();
    let used = use_api_token(&mut c, "tok-hash", now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.role, Role::Auditor);
    assert_eq!(
        list_api_tokens(&mut c).await.unwrap()[0].last_used_at,
        Some(now())
    );
    assert!(
        use_api_token(&mut c, "nope", now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(revoke_api_token(&mut c, token.id, now()).await.unwrap());
    assert!(
        use_api_token(&mut c, "tok-hash", now())
            .await
            .unwrap()
            .is_none(),
        "revoked"
    );

    put_setup_code(&mut c, "code-1", now()).await.unwrap();
    put_setup_code(&mut c, "code-2", now()).await.unwrap();
    assert!(
        !consume_setup_code(&mut c, "code-1", now()).await.unwrap(),
        "replaced"
    );
    assert!(consume_setup_code(&mut c, "code-2", now()).await.unwrap());
    assert!(
        !consume_setup_code(&mut c, "code-2", now()).await.unwrap(),
        "single use"
    );
}

async fn audit_filters_and_orders(s: &Store) {
    let mut c = s.conn().await.unwrap();
    let ev = |minute: i64, actor: &str, kind: &str, subject: &str| AuditEvent {
        id: AuditEventId::new(),
        at: now() + SignedDuration::from_mins(minute),
        actor: actor.into(),
        actor_name: actor.into(),
        kind: kind.into(),
        subject: subject.into(),
        details: serde_json::json!({ "minute": minute }),
    };
    let events = [
        ev(0, "token:a", "site.created", "site:1"),
        ev(1, "user:b", "decision.allow", "resource:1"),
        ev(2, "user:b", "decision.deny", "resource:2"),
        ev(3, "token:a", "resource.created", "resource:2"),
    ];
    for e in &events {
        append_audit(&mut c, e).await.unwrap();
    }
    let q = |f: AuditFilter| AuditFilter { limit: 100, ..f };
    let all = query_audit(&mut c, &q(AuditFilter::default()))
        .await
        .unwrap();
    assert_eq!(
        all.iter()
            .map(|e| e.details["minute"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![3, 2, 1, 0],
        "newest first"
    );
    assert_eq!(all[3], events[0]);
    let decisions = query_audit(
        &mut c,
        &q(AuditFilter {
            kind: Some("decision.".into()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(decisions.len(), 2);
    let by_actor = query_audit(
        &mut c,
        &q(AuditFilter {
            actor: Some("token:a".into()),
            subject: Some("resource:2".into()),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(by_actor, vec![events[3].clone()]);
    let window = query_audit(
        &mut c,
        &q(AuditFilter {
            since: Some(now() + SignedDuration::from_mins(1)),
            until: Some(now() + SignedDuration::from_mins(3)),
            ..Default::default()
        }),
    )
    .await
    .unwrap();
    assert_eq!(window.len(), 2);
    let limited = query_audit(
        &mut c,
        &AuditFilter {
            limit: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(limited, vec![events[3].clone()]);
}

async fn rolled_back_transactions_leave_nothing(s: &Store) {
    {
        let mut tx = s.begin().await.unwrap();
        insert_site(
            &mut tx,
            &Site {
                id: SiteId::new(),
                name: "ghost".into(),
                created_at: now(),
            },
        )
        .await
        .unwrap();
        // Dropped without commit.
    }
    let mut c = s.conn().await.unwrap();
    assert!(list_sites(&mut c).await.unwrap().is_empty());
}

// ---------------------------------------------------------------- local accounts

async fn local_credentials_lock_and_replay(s: &Store) {
    let u = user(s, "cred@example.com").await;
    let mut c = s.begin().await.unwrap();
    assert!(get_credentials(&mut c, u.id).await.unwrap().is_none());
    set_password_hash(
        &mut c,
        u.id,
        "$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA",
        now(),
    )
    .await
    .unwrap();
    let cred = get_credentials(&mut c, u.id).await.unwrap().unwrap();
    assert_eq!(
        cred.password_hash.as_deref(),
        Some("$argon2id$v=19$m=1,t=1,p=1$c2FsdA$aGFzaA")
    );
    assert!(!cred.totp_confirmed);
    assert_eq!(cred.failed_attempts, 0);

    // TOTP: pending, then confirmed with a step; only later steps are accepted after that.
    set_pending_totp(&mut c, u.id, "JBSWY3DPEHPK3PXP", now())
        .await
        .unwrap();
    assert!(
        !accept_totp_step(&mut c, u.id, 10).await.unwrap(),
        "unconfirmed"
    );
    assert!(confirm_totp(&mut c, u.id, 10, now()).await.unwrap());
    assert!(
        !confirm_totp(&mut c, u.id, 11, now()).await.unwrap(),
        "confirmed once"
    );
    assert!(!accept_totp_step(&mut c, u.id, 10).await.unwrap(), "replay");
    assert!(!accept_totp_step(&mut c, u.id, 9).await.unwrap(), "older");
    assert!(accept_totp_step(&mut c, u.id, 11).await.unwrap());
    let cred = get_credentials(&mut c, u.id).await.unwrap().unwrap();
    assert!(cred.totp_confirmed);
    assert_eq!(cred.totp_last_step, Some(11));
    assert_eq!(cred.totp_secret.as_deref(), Some("JBSWY3DPEHPK3PXP"));
    // Setting a password keeps TOTP.
    set_password_hash(&mut c, u.id, "other", now())
        .await
        .unwrap();
    assert!(
        get_credentials(&mut c, u.id)
            .await
            .unwrap()
            .unwrap()
            .totp_confirmed
    );

    // Failures count up, a lock resets the count, a success clears both.
    for n in 1..=3 {
        assert_eq!(add_failed_attempt(&mut c, u.id).await.unwrap(), n);
    }
    let until = now() + SignedDuration::from_mins(15);
    lock_account(&mut c, u.id, until).await.unwrap();
    let cred = get_credentials(&mut c, u.id).await.unwrap().unwrap();
    assert_eq!((cred.failed_attempts, cred.locked_until), (0, Some(until)));
    add_failed_attempt(&mut c, u.id).await.unwrap();
    clear_failures(&mut c, u.id).await.unwrap();
    let cred = get_credentials(&mut c, u.id).await.unwrap().unwrap();
    assert_eq!((cred.failed_attempts, cred.locked_until), (0, None));
    // A password reset clears a lockout too.
    lock_account(&mut c, u.id, until).await.unwrap();
    set_password_hash(&mut c, u.id, "reset", now())
        .await
        .unwrap();
    assert_eq!(
        get_credentials(&mut c, u.id)
            .await
            .unwrap()
            .unwrap()
            .locked_until,
        None
    );

    clear_totp(&mut c, u.id, now()).await.unwrap();
    let cred = get_credentials(&mut c, u.id).await.unwrap().unwrap();
    assert!(!cred.totp_confirmed && cred.totp_secret.is_none() && cred.totp_last_step.is_none());
    c.commit().await.unwrap();
}

async fn recovery_codes_are_single_use(s: &Store) {
    let u = user(s, "rc@example.com").await;
    let other = user(s, "rc2@example.com").await;
    let mut c = s.begin().await.unwrap();
    let hashes: Vec<String> = (0..10).map(|i| format!("hash-{i}")).collect();
    replace_recovery_codes(&mut c, u.id, &hashes, now())
        .await
        .unwrap();
    assert_eq!(unused_recovery_codes(&mut c, u.id).await.unwrap(), 10);
    assert!(
        !use_recovery_code(&mut c, other.id, "hash-1", now())
            .await
            .unwrap(),
        "not theirs"
    );
    assert!(
        use_recovery_code(&mut c, u.id, "hash-1", now())
            .await
            .unwrap()
    );
    assert!(
        !use_recovery_code(&mut c, u.id, "hash-1", now())
            .await
            .unwrap(),
        "used twice"
    );
    assert!(
        !use_recovery_code(&mut c, u.id, "nope", now())
            .await
            .unwrap()
    );
    assert_eq!(unused_recovery_codes(&mut c, u.id).await.unwrap(), 9);
    replace_recovery_codes(&mut c, u.id, &["fresh".to_owned()], now())
        .await
        .unwrap();
    assert_eq!(unused_recovery_codes(&mut c, u.id).await.unwrap(), 1);
    assert!(
        !use_recovery_code(&mut c, u.id, "hash-2", now())
            .await
            .unwrap(),
        "replaced"
    );
    c.commit().await.unwrap();
}

fn web_session(u: UserId, created: Timestamp) -> WebSession {
    WebSession {
        id: uuid::Uuid::now_v7(),
        user_id: u,
        created_at: created,
        last_seen_at: created,
        expires_at: created + SignedDuration::from_hours(12),
        mfa_at: None,
        ended_at: None,
        provider: Some("local".into()),
    }
}

async fn web_sessions_end_and_cascade(s: &Store) {
    let u = user(s, "ws@example.com").await;
    let a = web_session(u.id, now());
    let b = web_session(u.id, now());
    let d = web_session(u.id, now());
    let mut c = s.begin().await.unwrap();
    insert_web_session(&mut c, &a, "hash-a").await.unwrap();
    insert_web_session(&mut c, &b, "hash-b").await.unwrap();
    insert_web_session(&mut c, &d, "hash-d").await.unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    assert!(matches!(
        insert_web_session(&mut c, &web_session(u.id, now()), "hash-a").await,
        Err(StoreError::Duplicate(_))
    ));
    drop(c);

    let mut c = s.begin().await.unwrap();
    assert_eq!(
        web_session_by_token(&mut c, "hash-a").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(web_session_by_token(&mut c, "nope").await.unwrap(), None);
    let later = now() + SignedDuration::from_mins(5);
    touch_web_session(&mut c, a.id, later).await.unwrap();
    touch_web_session(&mut c, a.id, now()).await.unwrap();
    set_web_session_mfa(&mut c, a.id, later).await.unwrap();
    let got = web_session_by_token(&mut c, "hash-a")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.last_seen_at, got.mfa_at), (later, Some(later)));

    assert!(
        end_web_session(&mut c, b.id, later, "signed out")
            .await
            .unwrap()
    );
    assert!(
        !end_web_session(&mut c, b.id, later, "signed out")
            .await
            .unwrap()
    );
    assert_eq!(
        end_user_web_sessions(&mut c, u.id, Some(a.id), later, "password changed")
            .await
            .unwrap(),
        1
    );
    assert!(
        web_session_by_token(&mut c, "hash-a")
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );
    assert_eq!(
        web_session_by_token(&mut c, "hash-d")
            .await
            .unwrap()
            .unwrap()
            .ended_at,
        Some(later)
    );
    assert_eq!(
        end_user_web_sessions(&mut c, u.id, None, later, "disabled")
            .await
            .unwrap(),
        1
    );
    assert_eq!(list_web_sessions(&mut c, u.id).await.unwrap().len(), 3);
    assert!(
        list_web_sessions(&mut c, u.id)
            .await
            .unwrap()
            .iter()
            .all(|s| s.ended_at.is_some())
    );

    set_password_hash(&mut c, u.id, "h", now()).await.unwrap();
    replace_recovery_codes(&mut c, u.id, &["x".to_owned()], now())
        .await
        .unwrap();
    assert!(delete_user(&mut c, u.id).await.unwrap());
    assert!(list_web_sessions(&mut c, u.id).await.unwrap().is_empty());
    assert!(get_credentials(&mut c, u.id).await.unwrap().is_none());
    assert_eq!(unused_recovery_codes(&mut c, u.id).await.unwrap(), 0);
    c.commit().await.unwrap();
}

async fn sign_ins_record_provider_and_mfa(s: &Store) {
    let u = user(s, "Sign@Example.com").await;
    let mut c = s.begin().await.unwrap();
    assert_eq!(last_sign_in(&mut c, u.id).await.unwrap(), (None, None));
    let mfa = now() + SignedDuration::from_mins(1);
    record_sign_in(&mut c, u.id, "local", Some(mfa))
        .await
        .unwrap();
    assert_eq!(
        last_sign_in(&mut c, u.id).await.unwrap(),
        (Some("local".to_owned()), Some(mfa))
    );
    // A sign-in without MFA keeps the last MFA time.
    record_sign_in(&mut c, u.id, "oidc:corp", None)
        .await
        .unwrap();
    assert_eq!(
        last_sign_in(&mut c, u.id).await.unwrap(),
        (Some("oidc:corp".to_owned()), Some(mfa))
    );
    assert_eq!(
        user_by_email(&mut c, "Sign@Example.com")
            .await
            .unwrap()
            .map(|x| x.id),
        Some(u.id)
    );
    assert_eq!(
        user_by_email(&mut c, "none@example.com").await.unwrap(),
        None
    );
    c.commit().await.unwrap();
}

fn provider(name: &str) -> IdentityProvider {
    IdentityProvider {
        id: uuid::Uuid::now_v7(),
        name: name.into(),
        issuer: format!("https://{name}.example.com"),
        client_id: "postern".into(),
        groups_claim: "groups".into(),
        scopes: vec!["email".into(), "profile".into()],
        created_at: now(),
        config_managed: false,
    }
}

async fn identity_providers_keep_secrets_apart(s: &Store) {
    let p = provider("corp");
    let mut c = s.begin().await.unwrap();
    insert_provider(&mut c, &p, "s3cret").await.unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    assert!(matches!(
        insert_provider(&mut c, &provider("corp"), "x").await,
        Err(StoreError::Duplicate(_))
    ));
    drop(c);
    let mut c = s.begin().await.unwrap();
    assert_eq!(list_providers(&mut c).await.unwrap(), vec![p.clone()]);
    assert_eq!(
        provider_by_name(&mut c, "corp").await.unwrap(),
        Some((p.clone(), "s3cret".to_owned()))
    );
    assert_eq!(get_provider(&mut c, p.id).await.unwrap(), Some(p.clone()));
    assert!(delete_provider(&mut c, p.id).await.unwrap());
    assert!(!delete_provider(&mut c, p.id).await.unwrap());
    assert_eq!(provider_by_name(&mut c, "corp").await.unwrap(), None);
    c.commit().await.unwrap();
}

async fn pending_oidc_logins_are_single_use(s: &Store) {
    let login = PendingLogin {
        provider_id: uuid::Uuid::now_v7(),
        browser_hash: "browser".into(),
        nonce: "nonce".into(),
        pkce_verifier: "verifier".into(),
        expires_at: now() + SignedDuration::from_mins(10),
    };
    let mut c = s.begin().await.unwrap();
    insert_pending_login(&mut c, "state", &login, now())
        .await
        .unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    assert_eq!(
        take_pending_login(&mut c, "state").await.unwrap(),
        Some(login.clone())
    );
    assert_eq!(take_pending_login(&mut c, "state").await.unwrap(), None);
    assert_eq!(take_pending_login(&mut c, "other").await.unwrap(), None);
    c.commit().await.unwrap();
    // Expired ones are swept when a new sign-in starts.
    let mut c = s.begin().await.unwrap();
    insert_pending_login(&mut c, "old", &login, now())
        .await
        .unwrap();
    let later = now() + SignedDuration::from_mins(11);
    insert_pending_login(&mut c, "new", &login, later)
        .await
        .unwrap();
    assert_eq!(take_pending_login(&mut c, "old").await.unwrap(), None);
    c.commit().await.unwrap();
}

async fn oidc_identities_are_unique_per_issuer_and_subject(s: &Store) {
    let p = provider("corp");
    let a = user(s, "a@example.com").await;
    let b = user(s, "b@example.com").await;
    let group = Group {
        id: GroupId::new(),
        name: "eng".into(),
        description: String::new(),
        created_at: now(),
    };
    let mut c = s.begin().await.unwrap();
    insert_group(&mut c, &group).await.unwrap();
    let ident = |user_id, issuer, subject| OidcIdentity {
        issuer,
        subject,
        provider_id: p.id,
        user_id,
        email: Some("a@example.com"),
    };
    insert_identity(&mut c, &ident(a.id, "https://one", "42"), now())
        .await
        .unwrap();
    insert_identity(&mut c, &ident(b.id, "https://two", "42"), now())
        .await
        .unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    assert!(matches!(
        insert_identity(&mut c, &ident(b.id, "https://one", "42"), now()).await,
        Err(StoreError::Duplicate(_))
    ));
    drop(c);
    let mut c = s.begin().await.unwrap();
    assert_eq!(
        identity_user(&mut c, "https://one", "42").await.unwrap(),
        Some(a.id)
    );
    assert_eq!(
        identity_user(&mut c, "https://two", "42").await.unwrap(),
        Some(b.id)
    );
    assert_eq!(
        identity_user(&mut c, "https://one", "43").await.unwrap(),
        None
    );
    touch_identity(&mut c, "https://one", "42", None, now())
        .await
        .unwrap();

    assert_eq!(
        group_id_by_name(&mut c, "eng").await.unwrap(),
        Some(group.id)
    );
    assert_eq!(group_id_by_name(&mut c, "nope").await.unwrap(), None);
    add_provider_group(&mut c, p.id, a.id, group.id)
        .await
        .unwrap();
    assert_eq!(
        provider_groups(&mut c, p.id, a.id).await.unwrap(),
        vec![group.id]
    );
    assert_eq!(provider_groups(&mut c, p.id, b.id).await.unwrap(), vec![]);
    remove_provider_group(&mut c, p.id, a.id, group.id)
        .await
        .unwrap();
    assert_eq!(provider_groups(&mut c, p.id, a.id).await.unwrap(), vec![]);
    c.commit().await.unwrap();
}

async fn device(s: &Store, user: UserId, key: &str) -> Device {
    let d = Device {
        id: DeviceId::new(),
        user_id: user,
        name: "laptop".into(),
        public_key: key.into(),
        disabled: false,
        created_at: now(),
        last_seen_at: None,
    };
    let mut tx = s.begin().await.unwrap();
    insert_device(&mut tx, &d).await.unwrap();
    tx.commit().await.unwrap();
    d
}

async fn device_sign_ins_are_decided_once_and_used_once(s: &Store) {
    let u = user(s, "ann@example.com").await;
    let t = now();
    let mut a = DeviceAuthorization {
        id: uuid::Uuid::now_v7(),
        user_code: "BCDF-GHJK".into(),
        public_key: "pk".into(),
        name: "laptop".into(),
        source: Some("192.0.2.1".into()),
        created_at: t,
        expires_at: t + jiff::SignedDuration::from_mins(10),
        last_poll_at: None,
        user_id: None,
        decided_at: None,
        approved: None,
        mfa_at: None,
        provider: None,
        consumed_at: None,
    };
    let mut c = s.conn().await.unwrap();
    insert_device_authorization(&mut c, &a, "hash1")
        .await
        .unwrap();
    let mut dup = a.clone();
    dup.id = uuid::Uuid::now_v7();
    assert!(matches!(
        insert_device_authorization(&mut c, &dup, "hash2").await,
        Err(StoreError::Duplicate(_))
    ));
    let stored = device_authorization_by_code(&mut c, "hash1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, a);
    assert_eq!(
        device_authorization_by_user_code(&mut c, "BCDF-GHJK")
            .await
            .unwrap(),
        Some(a.clone())
    );
    touch_device_authorization(&mut c, a.id, t).await.unwrap();
    a.user_id = Some(u.id);
    a.decided_at = Some(t);
    a.approved = Some(true);
    a.mfa_at = Some(t);
    a.provider = Some("local".into());
    assert!(decide_device_authorization(&mut c, &a).await.unwrap());
    assert!(
        !decide_device_authorization(&mut c, &a).await.unwrap(),
        "decided twice"
    );
    let stored = device_authorization_by_code(&mut c, "hash1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.approved, Some(true));
    assert_eq!(stored.user_id, Some(u.id));
    assert_eq!(stored.last_poll_at, Some(t));
    assert!(consume_device_authorization(&mut c, a.id, t).await.unwrap());
    assert!(
        !consume_device_authorization(&mut c, a.id, t).await.unwrap(),
        "used twice"
    );
    // Expired ones are purged a day later.
    let later = a.expires_at + jiff::SignedDuration::from_hours(25);
    assert_eq!(purge_device_authorizations(&mut c, later).await.unwrap(), 1);
}

async fn device_sessions_renew_and_end(s: &Store) {
    let u = user(s, "ann@example.com").await;
    let v = user(s, "bob@example.com").await;
    let d1 = device(s, u.id, "k1").await;
    let d2 = device(s, u.id, "k2").await;
    let d3 = device(s, v.id, "k3").await;
    let t = now();
    let mut c = s.conn().await.unwrap();
    let session = |d: &Device| DeviceSessionRecord {
        id: uuid::Uuid::now_v7(),
        device_id: d.id,
        user_id: d.user_id,
        created_at: t,
        renewed_at: t,
        expires_at: t + jiff::SignedDuration::from_hours(1),
        absolute_expires_at: t + jiff::SignedDuration::from_hours(24),
        mfa_at: Some(t),
        provider: "local".into(),
        ended_at: None,
    };
    let (s1, s2, s3) = (session(&d1), session(&d2), session(&d3));
    insert_device_session(&mut c, &s1, "h1").await.unwrap();
    insert_device_session(&mut c, &s2, "h2").await.unwrap();
    insert_device_session(&mut c, &s3, "h3").await.unwrap();
    assert_eq!(
        device_session_by_token(&mut c, "h1").await.unwrap(),
        Some(s1.clone())
    );
    let moved = t + jiff::SignedDuration::from_hours(2);
    assert!(
        renew_device_session(&mut c, s1.id, "h1b", t, moved)
            .await
            .unwrap()
    );
    assert_eq!(device_session_by_token(&mut c, "h1").await.unwrap(), None);
    let renewed = device_session_by_token(&mut c, "h1b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.expires_at, moved);
    // Ending by device touches only that device; by user, all of theirs.
    assert_eq!(
        end_device_sessions(&mut c, Some(d1.id), None, t, "disabled")
            .await
            .unwrap(),
        1
    );
    assert!(
        !renew_device_session(&mut c, s1.id, "h1c", t, moved)
            .await
            .unwrap()
    );
    assert_eq!(
        end_device_sessions(&mut c, None, Some(u.id), t, "disabled")
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        end_device_sessions(&mut c, None, None, t, "nothing")
            .await
            .unwrap(),
        0
    );
    assert!(
        device_session_by_id(&mut c, s2.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_some()
    );
    assert!(
        device_session_by_id(&mut c, s3.id)
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );
    // Posture sequence numbers only grow.
    assert!(advance_posture_seq(&mut c, d3.id, 5).await.unwrap());
    assert!(!advance_posture_seq(&mut c, d3.id, 5).await.unwrap());
    assert!(!advance_posture_seq(&mut c, d3.id, 4).await.unwrap());
    assert!(advance_posture_seq(&mut c, d3.id, 6).await.unwrap());
    assert_eq!(device_by_public_key(&mut c, "k3").await.unwrap(), Some(d3));
}

async fn identity_providers_update_and_reseal(s: &Store) {
    let mut p = provider("managed");
    let mut c = s.begin().await.unwrap();
    insert_provider(&mut c, &p, "plain").await.unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    p.issuer = "https://new.example.com".into();
    p.scopes = vec!["email".into()];
    p.config_managed = true;
    assert!(update_provider(&mut c, &p, "enc:v1:x").await.unwrap());
    assert!(
        !update_provider(&mut c, &provider("missing"), "x")
            .await
            .unwrap()
    );
    assert_eq!(
        provider_by_name(&mut c, "managed").await.unwrap(),
        Some((p.clone(), "enc:v1:x".to_owned()))
    );
    assert!(
        provider_secrets(&mut c)
            .await
            .unwrap()
            .contains(&(p.id, "enc:v1:x".to_owned()))
    );
    assert!(
        !reseal_provider_secret(&mut c, p.id, "stale", "enc:v1:y")
            .await
            .unwrap(),
        "only when the stored value is still the one read"
    );
    assert!(
        reseal_provider_secret(&mut c, p.id, "enc:v1:x", "enc:v1:y")
            .await
            .unwrap()
    );
    assert_eq!(
        provider_by_name(&mut c, "managed")
            .await
            .unwrap()
            .unwrap()
            .1,
        "enc:v1:y"
    );
    c.commit().await.unwrap();
}

async fn identities_list_move_and_delete(s: &Store) {
    let p = provider("idp-move");
    let a = user(s, "move-a@example.com").await;
    let b = user(s, "move-b@example.com").await;
    let mut c = s.begin().await.unwrap();
    insert_provider(&mut c, &p, "x").await.unwrap();
    insert_identity(
        &mut c,
        &OidcIdentity {
            issuer: "https://move",
            subject: "7",
            provider_id: p.id,
            user_id: a.id,
            email: Some("move-a@example.com"),
        },
        now(),
    )
    .await
    .unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    let listed = list_identities(&mut c, a.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    let ident = listed[0].clone();
    assert_eq!(ident.provider.as_deref(), Some("idp-move"));
    assert_eq!(ident.subject, "7");
    assert_eq!(ident.email.as_deref(), Some("move-a@example.com"));
    assert_eq!(
        get_identity(&mut c, ident.id).await.unwrap(),
        Some(ident.clone())
    );
    assert!(move_identity(&mut c, ident.id, b.id).await.unwrap());
    assert!(list_identities(&mut c, a.id).await.unwrap().is_empty());
    assert_eq!(
        identity_user(&mut c, "https://move", "7").await.unwrap(),
        Some(b.id)
    );
    assert!(delete_provider(&mut c, p.id).await.unwrap());
    assert_eq!(
        get_identity(&mut c, ident.id)
            .await
            .unwrap()
            .unwrap()
            .provider,
        None,
        "a removed provider's identities stay, nameless"
    );
    assert!(delete_identity(&mut c, ident.id).await.unwrap());
    assert!(!delete_identity(&mut c, ident.id).await.unwrap());
    assert!(!move_identity(&mut c, ident.id, a.id).await.unwrap());
    assert_eq!(
        identity_user(&mut c, "https://move", "7").await.unwrap(),
        None
    );
    c.commit().await.unwrap();
}

async fn plaintext_totp_secrets_are_found_and_resealed(s: &Store) {
    let a = user(s, "plain-totp@example.com").await;
    let b = user(s, "sealed-totp@example.com").await;
    let mut c = s.begin().await.unwrap();
    set_pending_totp(&mut c, a.id, "JBSWY3DPEHPK3PXP", now())
        .await
        .unwrap();
    set_pending_totp(&mut c, b.id, "enc:v1:abc", now())
        .await
        .unwrap();
    assert!(confirm_totp(&mut c, a.id, 5, now()).await.unwrap());
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    let found = plaintext_totp_secrets(&mut c).await.unwrap();
    assert!(found.contains(&(a.id, "JBSWY3DPEHPK3PXP".to_owned())));
    assert!(!found.iter().any(|(u, _)| *u == b.id));
    assert!(
        reseal_totp_secret(&mut c, a.id, "JBSWY3DPEHPK3PXP", "enc:v1:def")
            .await
            .unwrap()
    );
    assert!(
        !reseal_totp_secret(&mut c, a.id, "JBSWY3DPEHPK3PXP", "enc:v1:ghi")
            .await
            .unwrap()
    );
    let creds = get_credentials(&mut c, a.id).await.unwrap().unwrap();
    assert_eq!(creds.totp_secret.as_deref(), Some("enc:v1:def"));
    assert!(creds.totp_confirmed, "resealing keeps the enrollment");
    assert_eq!(creds.totp_last_step, Some(5));
    assert!(
        !plaintext_totp_secrets(&mut c)
            .await
            .unwrap()
            .iter()
            .any(|(u, _)| *u == a.id)
    );
    c.commit().await.unwrap();
}

async fn web_sessions_end_by_provider(s: &Store) {
    let u = user(s, "ws-provider@example.com").await;
    let local = web_session(u.id, now());
    let corp = WebSession {
        provider: Some("corp".into()),
        ..web_session(u.id, now())
    };
    let mut c = s.begin().await.unwrap();
    insert_web_session(&mut c, &local, "hash-local")
        .await
        .unwrap();
    insert_web_session(&mut c, &corp, "hash-corp")
        .await
        .unwrap();
    c.commit().await.unwrap();
    let mut c = s.begin().await.unwrap();
    assert_eq!(
        web_session_by_token(&mut c, "hash-corp")
            .await
            .unwrap()
            .unwrap()
            .provider
            .as_deref(),
        Some("corp")
    );
    assert_eq!(
        end_provider_web_sessions(&mut c, Some(u.id), "corp", now(), "identity unlinked")
            .await
            .unwrap(),
        1
    );
    assert!(
        web_session_by_token(&mut c, "hash-corp")
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_some()
    );
    assert!(
        web_session_by_token(&mut c, "hash-local")
            .await
            .unwrap()
            .unwrap()
            .ended_at
            .is_none()
    );
    c.commit().await.unwrap();
}
