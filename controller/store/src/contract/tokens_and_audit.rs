//! The store contract: API tokens and the setup code, the audit log, transactions.

use super::*;

contract!(
    api_tokens_and_setup_codes,
    audit_filters_and_orders,
    rolled_back_transactions_leave_nothing,
);

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
