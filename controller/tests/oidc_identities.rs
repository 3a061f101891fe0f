//! Identities and clients through OIDC against the real provider (see `oidc.rs`): linking
//! identities of two providers into one user, decisions on the stored sign-in, clients
//! approved from an OIDC session, and deleting a provider signing everyone out.

#![allow(clippy::unwrap_used)]

mod oidc_support;

use oidc_support::*;

#[tokio::test]
async fn an_admin_links_identities_of_two_providers_into_one_user() {
    let c = Controller::start().await;
    let one = Idp::real(&c.callback_uri("one")).await;
    let two = Idp::real(&c.callback_uri("two")).await;
    c.add_provider("one", &one.issuer).await;
    c.add_provider("two", &two.issuer).await;
    let a = c.me(&sign_in(&c, "one", "alice").await).await["user"].clone();
    let b = c.me(&sign_in(&c, "two", "alice").await).await["user"].clone();
    assert_ne!(
        a["id"], b["id"],
        "the same e-mail at two providers is two users"
    );

    let (status, listed) = c
        .api(
            Method::GET,
            &format!("/users/{}/identities", id_of(&a)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed = listed.as_array().unwrap().clone();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["provider"], "one");
    assert_eq!(listed[0]["issuer"], one.issuer.as_str());
    assert_eq!(listed[0]["subject"], "alice");
    assert_eq!(listed[0]["email"], "alice@example.com");
    assert!(listed[0]["last_sign_in_at"].is_string());
    let (_, of_b) = c
        .api(
            Method::GET,
            &format!("/users/{}/identities", id_of(&b)),
            None,
        )
        .await;
    let two_identity = of_b[0]["id"].as_str().unwrap().to_owned();

    // Auditors read identities but do not link them.
    let (status, auditor) = c
        .api(
            Method::POST,
            "/tokens",
            Some(json!({"name": "audit", "role": "auditor"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{auditor}");
    let auditor = auditor["secret"].as_str().unwrap();
    let (status, _) = c
        .api_as(
            auditor,
            Method::GET,
            &format!("/users/{}/identities", id_of(&a)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let link = json!({"identity_id": two_identity});
    let (status, _) = c
        .api_as(
            auditor,
            Method::POST,
            &format!("/users/{}/identities", id_of(&a)),
            Some(link.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, linked) = c
        .api(
            Method::POST,
            &format!("/users/{}/identities", id_of(&a)),
            Some(link.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    assert_eq!(linked["identity"]["user_id"], a["id"]);
    assert_eq!(linked["previous_user_id"], b["id"]);
    assert_eq!(linked["previous_user_can_sign_in"], false);
    assert_eq!(c.audit_count("identity.linked").await, 1);
    let (status, _) = c
        .api(
            Method::POST,
            &format!("/users/{}/identities", id_of(&a)),
            Some(link),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "already linked");

    // Either provider now lands on one user.
    let via_two = c.me(&sign_in(&c, "two", "alice").await).await;
    assert_eq!(via_two["user"]["id"], a["id"]);
    assert_eq!(via_two["identity_provider"], "two");
    let via_one = c.me(&sign_in(&c, "one", "alice").await).await;
    assert_eq!(via_one["user"]["id"], a["id"]);
    let (_, both) = c
        .api(
            Method::GET,
            &format!("/users/{}/identities", id_of(&a)),
            None,
        )
        .await;
    assert_eq!(both.as_array().unwrap().len(), 2);

    // Unlinking forgets the identity: its next sign-in makes a new user. The last way to
    // sign in cannot be unlinked.
    let (status, _) = c
        .api(
            Method::DELETE,
            &format!("/users/{}/identities/{two_identity}", id_of(&a)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(c.audit_count("identity.unlinked").await, 1);
    let fresh = c.me(&sign_in(&c, "two", "alice").await).await;
    assert_ne!(fresh["user"]["id"], a["id"]);
    assert_ne!(fresh["user"]["id"], b["id"]);
    let one_identity = both
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == "one")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, err) = c
        .api(
            Method::DELETE,
            &format!("/users/{}/identities/{one_identity}", id_of(&a)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("only way to sign in"),
        "{err}"
    );
    let (status, _) = c
        .api(
            Method::DELETE,
            &format!("/users/{}/identities/{one_identity}", id_of(&b)),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not that user's identity");
}

#[tokio::test]
async fn decisions_use_the_stored_sign_in_unless_the_request_says_otherwise() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    c.add_provider("corp", &idp.issuer).await;
    let (_, site) = c
        .api(Method::POST, "/sites", Some(json!({"name": "hq"})))
        .await;
    let (_, eng) = c
        .api(
            Method::POST,
            "/groups",
            Some(json!({"name": "engineering"})),
        )
        .await;
    let app = resource(&c, &site, "app", "10.0.5.30").await;
    policy_with(
        &c,
        "corp-mfa",
        &eng,
        &app,
        json!({"identity_provider": "corp", "max_mfa_age_secs": 3600}),
    )
    .await;
    let alice = c.me(&sign_in(&c, "corp", "alice").await).await["user"].clone();
    let (_, key) = c
        .api(
            Method::POST,
            "/enrollment-keys",
            Some(json!({"user_id": alice["id"]})),
        )
        .await;
    let (_, device) = c.api(Method::POST, "/devices/enroll", Some(json!({"enrollment_key": key["secret"], "name": "laptop", "public_key": base64_key(9)}))).await;
    let cr = &c;
    let ask = |extra: Value| {
        let mut body = json!({"user_id": alice["id"], "device_id": device["id"], "resource_id": app["id"], "source": "192.0.2.10"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        async move { cr.api(Method::POST, "/decisions", Some(body)).await.1 }
    };
    // Left out: her last sign-in (corp, with MFA from amr/auth_time) decides.
    let d = ask(json!({})).await;
    assert_eq!(d["outcome"], "allow", "{d}");
    // Explicit values still win.
    let d = ask(json!({"identity_provider": "local"})).await;
    assert_eq!(d["outcome"], "deny", "{d}");
    let stale = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(3);
    let d = ask(json!({"last_mfa_at": stale.to_string()})).await;
    assert_eq!(d["outcome"], "deny", "{d}");
    assert!(d.to_string().contains("sign in again"), "{d}");

    // Access requests fill in the same way: allowed (no gateway is online, so 503 after an
    // allow decision), and denied with an explicit stale MFA.
    let access = json!({"user_id": alice["id"], "device_id": device["id"], "resource_id": app["id"], "source": "192.0.2.10", "public_key": base64_key(10)});
    let (status, body) = c.api(Method::POST, "/access", Some(access.clone())).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let mut stale_access = access;
    stale_access["last_mfa_at"] = json!(stale.to_string());
    let (status, body) = c.api(Method::POST, "/access", Some(stale_access)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn a_client_approved_from_an_oidc_session_carries_its_provider_and_mfa() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    c.add_provider("corp", &idp.issuer).await;
    let (_, site) = c
        .api(Method::POST, "/sites", Some(json!({"name": "hq"})))
        .await;
    let (_, eng) = c
        .api(
            Method::POST,
            "/groups",
            Some(json!({"name": "engineering"})),
        )
        .await;
    let fresh = resource(&c, &site, "fresh", "10.0.6.1").await;
    let strict = resource(&c, &site, "strict", "10.0.6.2").await;
    let elsewhere = resource(&c, &site, "elsewhere", "10.0.6.3").await;
    policy_with(
        &c,
        "p-fresh",
        &eng,
        &fresh,
        json!({"identity_provider": "corp", "max_mfa_age_secs": 3600}),
    )
    .await;
    policy_with(
        &c,
        "p-strict",
        &eng,
        &strict,
        json!({"identity_provider": "corp", "max_mfa_age_secs": 1}),
    )
    .await;
    policy_with(
        &c,
        "p-elsewhere",
        &eng,
        &elsewhere,
        json!({"identity_provider": "other-idp"}),
    )
    .await;

    let session = sign_in(&c, "corp", "alice").await;
    // A later sign-in of hers elsewhere (say, a local account) does not change what the
    // approval from this browser session carries.
    let mut conn = c.service.store().conn().await.unwrap();
    sqlx::query("UPDATE users SET last_provider = 'local'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let (device_id, device_session) = client_session(&c, &session).await;
    let ctx = c
        .service
        .device_session(device_id, device_session["session"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let source: std::net::IpAddr = "192.0.2.20".parse().unwrap();
    let ask = |resource: &Value, key_byte: u8| {
        let id = resource["id"].as_str().unwrap().parse().unwrap();
        let service = c.service.clone();
        let ctx = &ctx;
        async move {
            service
                .client_request_access(ctx, id, &base64_key(key_byte), None, source)
                .await
        }
    };
    // Allowed by provider and fresh MFA: it goes on to look for a gateway (none is online).
    let err = ask(&fresh, 20).await.unwrap_err();
    assert!(err.to_string().contains("gateway"), "{err}");
    let (_, allowed) = c
        .api(Method::GET, "/audit?kind=decision.allow&limit=50", None)
        .await;
    assert_eq!(allowed.as_array().unwrap().len(), 1, "{allowed}");
    assert_eq!(allowed[0]["details"]["resource"], fresh["id"]);

    match ask(&elsewhere, 21).await.unwrap() {
        controller::AccessOutcome::Denied { reasons } => {
            assert!(!reasons.is_empty());
        }
        other => panic!("another provider's policy allowed: {other:?}"),
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    match ask(&strict, 22).await.unwrap() {
        controller::AccessOutcome::Denied { reasons } => {
            let text = format!("{reasons:?}");
            assert!(text.contains("sign in again"), "{text}");
        }
        other => panic!("a stale MFA was accepted: {other:?}"),
    }

    // Unlinking the identity this client signed in with ends the client's session (and its
    // grants) with it; she keeps a password to sign in with.
    let alice = ctx.user.id;
    let (status, body) = c
        .api(
            Method::PUT,
            &format!("/users/{alice}/password"),
            Some(json!({"password": "correct horse battery staple"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, identities) = c
        .api(Method::GET, &format!("/users/{alice}/identities"), None)
        .await;
    let corp = identities
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["provider"] == "corp")
        .unwrap_or_else(|| panic!("{identities}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut events = c.service.subscribe();
    let (status, body) = c
        .api(
            Method::DELETE,
            &format!("/users/{alice}/identities/{corp}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let ended = c
        .service
        .device_session(device_id, device_session["session"].as_str().unwrap())
        .await
        .unwrap();
    assert!(ended.is_err(), "the client's session outlived its identity");
    let told = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        loop {
            if let Ok(controller::ControlEvent::SessionsEnded { device, reason, .. }) =
                events.recv().await
            {
                return (device, reason);
            }
        }
    })
    .await
    .expect("connected clients are told");
    assert_eq!(told, (Some(device_id), "identity unlinked".to_owned()));
    let (_, audit) = c
        .api(Method::GET, "/audit?kind=identity.unlinked", None)
        .await;
    assert_eq!(
        audit[0]["details"]["devices_signed_out"],
        json!([device_id]),
        "{audit}"
    );
}

#[tokio::test]
async fn deleting_a_provider_signs_out_everyone_who_signed_in_through_it() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    c.add_provider("corp", &idp.issuer).await;
    let session = sign_in(&c, "corp", "alice").await;
    let (device, client) = client_session(&c, &session).await;
    let secret = client["session"].as_str().unwrap().to_owned();
    assert!(
        c.service
            .device_session(device, &secret)
            .await
            .unwrap()
            .is_ok()
    );
    let me = c.me_status(&session).await;
    assert_eq!(me, StatusCode::OK);

    let (_, providers) = c.api(Method::GET, "/identity-providers", None).await;
    let corp = providers
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "corp")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut events = c.service.subscribe();
    let (status, body) = c
        .api(Method::DELETE, &format!("/identity-providers/{corp}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    assert!(
        c.service
            .device_session(device, &secret)
            .await
            .unwrap()
            .is_err(),
        "the client stayed signed in"
    );
    let me = c.me_status(&session).await;
    assert_eq!(me, StatusCode::UNAUTHORIZED, "the browser stayed signed in");
    let told = tokio::time::timeout(std::time::Duration::from_secs(1), async {
        loop {
            if let Ok(controller::ControlEvent::SessionsEnded { device, .. }) = events.recv().await
            {
                return device;
            }
        }
    })
    .await
    .expect("connected clients are told");
    assert_eq!(told, Some(device));
    let (_, audit) = c
        .api(Method::GET, "/audit?kind=identity_provider.deleted", None)
        .await;
    assert_eq!(audit[0]["details"]["devices_signed_out"], json!([device]));
    assert_eq!(audit[0]["details"]["sessions_ended"], json!(1), "{audit}");
}
