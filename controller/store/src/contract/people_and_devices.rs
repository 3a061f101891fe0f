//! The store contract: groups and their members, devices and their posture, enrollment
//! keys.

use super::*;

contract!(
    groups_members_and_cascades,
    devices_keep_their_posture,
    enrollment_keys_obey_use_rules,
);

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
