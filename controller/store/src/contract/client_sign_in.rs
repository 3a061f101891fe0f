//! The store contract: client sign-in, device authorizations and device sessions.

use super::*;

contract!(
    device_sign_ins_are_decided_once_and_used_once,
    device_sessions_renew_and_end,
);

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
