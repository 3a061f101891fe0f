//! The store contract: posture profiles and policies, foreign keys, grants and tunnel
//! addresses.

use super::*;

contract!(
    profiles_and_policies_round_trip,
    foreign_keys_are_enforced,
    grants_filter_and_revoke_only_live_ones,
    live_grants_carry_their_preshared_keys,
    tunnel_addresses_are_leased_to_one_device,
);

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
