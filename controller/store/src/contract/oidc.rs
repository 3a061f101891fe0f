//! The store contract: OIDC identity providers, sign-ins in flight and identities.

use super::*;

contract!(
    identity_providers_keep_secrets_apart,
    pending_oidc_logins_are_single_use,
    oidc_identities_are_unique_per_issuer_and_subject,
    identity_providers_update_and_reseal,
    identities_list_move_and_delete,
);

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
