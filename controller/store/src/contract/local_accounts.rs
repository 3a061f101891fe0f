//! The store contract: local accounts: credentials, recovery codes, web sessions and
//! sign-ins.

use super::*;

contract!(
    local_credentials_lock_and_replay,
    recovery_codes_are_single_use,
    web_sessions_end_and_cascade,
    sign_ins_record_provider_and_mfa,
    plaintext_totp_secrets_are_found_and_resealed,
    web_sessions_end_by_provider,
);

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
