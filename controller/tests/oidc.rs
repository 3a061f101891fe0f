//! OIDC single sign-on against a real OpenID provider: the certified `oidc-provider` npm
//! package (tests/oidc-provider/provider.js) on 127.0.0.1, driven over HTTP like a browser.
//! Token-level attacks, which a certified provider never makes, come from a deliberately
//! broken provider (tests/oidc-provider/fake-provider.js) that signs crafted ID tokens.

#![allow(clippy::unwrap_used)]

mod oidc_support;

use oidc_support::*;

#[tokio::test]
async fn sign_in_maps_groups_and_a_policy_on_the_group_allows() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    let provider = c.add_provider("corp", &idp.issuer).await;
    assert!(provider.get("client_secret").is_none(), "{provider}");
    let (_, listed) = c.api(Method::GET, "/identity-providers", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(CLIENT_SECRET), "{listed}");

    let (_, site) = c
        .api(Method::POST, "/sites", Some(json!({"name": "hq"})))
        .await;
    let (_, db) = c.api(Method::POST, "/resources", Some(json!({"name": "db", "site_id": site["id"], "addresses": ["10.0.5.20"], "ports": ["tcp/5432"]}))).await;
    let (_, eng) = c
        .api(
            Method::POST,
            "/groups",
            Some(json!({"name": "engineering"})),
        )
        .await;
    let (status, policy) = c.api(Method::POST, "/policies", Some(json!({"name": "eng-db", "group_id": eng["id"], "resource_id": db["id"], "max_session_secs": 3600}))).await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");

    // The start URL carries PKCE S256, state and nonce.
    let (authorize, _) = c.begin("corp").await;
    assert_eq!(
        query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    for p in ["code_challenge", "state", "nonce"] {
        assert!(
            query_param(&authorize, p).is_some_and(|v| v.len() >= 16),
            "{p}"
        );
    }

    let session = sign_in(&c, "corp", "alice").await;
    let me = c.me(&session).await;
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(me["identity_provider"], "corp");
    assert!(me["last_mfa_at"].is_string(), "amr carried MFA: {me}");
    assert!(me["session"]["mfa_at"].is_string(), "{me}");
    let alice = me["user"].clone();

    let (_, members) = c
        .api(
            Method::GET,
            &format!("/groups/{}/members", eng["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(members[0]["id"], alice["id"], "{members}");

    // A device of hers, and a decision through the group's policy.
    let (_, key) = c
        .api(
            Method::POST,
            "/enrollment-keys",
            Some(json!({"user_id": alice["id"]})),
        )
        .await;
    let (status, device) = c.api(Method::POST, "/devices/enroll", Some(json!({"enrollment_key": key["secret"], "name": "laptop", "public_key": base64_key(7)}))).await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let decide = json!({"user_id": alice["id"], "device_id": device["id"], "resource_id": db["id"], "source": "192.0.2.10", "identity_provider": "corp", "last_mfa_at": me["last_mfa_at"]});
    let (status, allow) = c
        .api(Method::POST, "/decisions", Some(decide.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{allow}");
    assert_eq!(allow["outcome"], "allow", "{allow}");

    // Signing in again finds the same user; a group the provider drops is removed, a
    // membership an admin made stays.
    let (_, ops) = c
        .api(Method::POST, "/groups", Some(json!({"name": "ops"})))
        .await;
    let (status, _) = c
        .api(
            Method::POST,
            &format!("/groups/{}/members", ops["id"].as_str().unwrap()),
            Some(json!({"user_id": alice["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let res = reqwest::Client::new()
        .put(format!(
            "{}/test/groups/alice?groups=ops,everyone",
            idp.issuer
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let again = sign_in(&c, "corp", "alice").await;
    assert_ne!(again, session, "a new session id at every sign-in");
    assert_eq!(c.me(&again).await["user"]["id"], alice["id"]);
    let (_, members) = c
        .api(
            Method::GET,
            &format!("/groups/{}/members", eng["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(members, json!([]), "engineering membership refreshed away");
    let (_, members) = c
        .api(
            Method::GET,
            &format!("/groups/{}/members", ops["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(members[0]["id"], alice["id"], "{members}");
    let (_, deny) = c.api(Method::POST, "/decisions", Some(decide)).await;
    assert_eq!(deny["outcome"], "deny", "{deny}");

    // Without MFA in amr, no MFA time is recorded.
    let bob = sign_in(&c, "corp", "bob").await;
    let me = c.me(&bob).await;
    assert!(me["last_mfa_at"].is_null(), "{me}");
}

#[tokio::test]
async fn the_same_email_at_two_providers_is_two_users() {
    let c = Controller::start().await;
    let one = Idp::real(&c.callback_uri("one")).await;
    let two = Idp::real(&c.callback_uri("two")).await;
    c.add_provider("one", &one.issuer).await;
    c.add_provider("two", &two.issuer).await;
    let a = c.me(&sign_in(&c, "one", "alice").await).await;
    let b = c.me(&sign_in(&c, "two", "alice").await).await;
    assert_ne!(a["user"]["id"], b["user"]["id"]);
    assert_eq!(a["user"]["email"], "alice@example.com");
    assert_eq!(b["identity_provider"], "two");
    let a2 = c.me(&sign_in(&c, "one", "alice").await).await;
    assert_eq!(a2["user"]["id"], a["user"]["id"]);

    // A disabled user's provider sign-in fails closed.
    let (status, _) = c
        .api(
            Method::PATCH,
            &format!("/users/{}", a["user"]["id"].as_str().unwrap()),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (authorize, binding) = c.begin("one").await;
    let callback =
        browse_to_callback(&with_param(&authorize, "login_hint", "alice"), &c.base).await;
    let res = c.callback(&callback, Some(&binding)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&res, "__Host-postern_session").is_none());
    assert_eq!(c.failures("user disabled").await, 1);
}

#[tokio::test]
async fn state_must_be_present_ours_and_single_use() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    c.add_provider("corp", &idp.issuer).await;

    // Missing state.
    let (authorize, binding) = c.begin("corp").await;
    let callback =
        browse_to_callback(&with_param(&authorize, "login_hint", "alice"), &c.base).await;
    let code = query_param(&callback, "code").unwrap();
    let res = c
        .callback(
            &format!("{}?code={code}", c.callback_uri("corp")),
            Some(&binding),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&res, "__Host-postern_session").is_none());
    let body = html_failure(res).await;
    assert!(body.contains("start the sign-in again"), "{body}");
    assert!(
        body.contains("href=\"/auth/oidc/corp/start\""),
        "a link to try again: {body}"
    );
    assert_eq!(c.failures("missing state").await, 1);

    // A client that asks for JSON gets the API's error.
    let res = c
        .http
        .get(format!("{}?code={code}", c.callback_uri("corp")))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    assert_eq!(c.failures("missing state").await, 2);

    // A made-up state.
    let res = c
        .callback(
            &format!("{}?code={code}&state=forged", c.callback_uri("corp")),
            Some(&binding),
        )
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(c.failures("unknown or already used state").await, 1);

    // A real state started by another browser (login CSRF): refused, and spent.
    let (authorize, _attacker_binding) = c.begin("corp").await;
    let callback = browse_to_callback(&with_param(&authorize, "login_hint", "bob"), &c.base).await;
    let (_, victim_binding) = c.begin("corp").await;
    let res = c.callback(&callback, Some(&victim_binding)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&res, "__Host-postern_session").is_none());
    let res = c.callback(&callback, None).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(c.failures("state of another browser").await, 1);

    // A code (and its state) used twice.
    let (authorize, binding) = c.begin("corp").await;
    let callback =
        browse_to_callback(&with_param(&authorize, "login_hint", "alice"), &c.base).await;
    let res = c.callback(&callback, Some(&binding)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let res = c.callback(&callback, Some(&binding)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&res, "__Host-postern_session").is_none());
    assert_eq!(c.failures("unknown or already used state").await, 3);
}

#[tokio::test]
async fn the_provider_requires_pkce_and_its_refusal_fails_closed() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    c.add_provider("corp", &idp.issuer).await;
    let (authorize, binding) = c.begin("corp").await;
    let stripped = without_params(&authorize, &["code_challenge", "code_challenge_method"]);
    let callback = browse_to_callback(&with_param(&stripped, "login_hint", "alice"), &c.base).await;
    assert!(query_param(&callback, "code").is_none(), "{callback}");
    assert!(query_param(&callback, "error").is_some(), "{callback}");
    let res = c.callback(&callback, Some(&binding)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_value(&res, "__Host-postern_session").is_none());
    assert_eq!(c.failures("provider returned an error").await, 1);
}

#[tokio::test]
async fn crafted_id_tokens_are_refused() {
    let c = Controller::start().await;
    let idp = Idp::fake().await;
    c.add_provider("fake", &idp.issuer).await;
    let (_, eng) = c
        .api(
            Method::POST,
            "/groups",
            Some(json!({"name": "engineering"})),
        )
        .await;

    let cases = [
        ("wrong_nonce", "nonce mismatch"),
        ("wrong_aud", "wrong audience"),
        ("wrong_iss", "wrong issuer"),
        ("expired", "expired ID token"),
        ("unknown_kid", "unknown key id"),
        ("alg_none", "unsigned ID token (alg none)"),
        ("bad_signature", "bad signature"),
    ];
    for (mode, reason) in cases {
        let (authorize, binding) = c.begin("fake").await;
        let callback = browse_to_callback(&with_param(&authorize, "mode", mode), &c.base).await;
        let res = c.callback(&callback, Some(&binding)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{mode}");
        assert!(
            cookie_value(&res, "__Host-postern_session").is_none(),
            "{mode}"
        );
        let body = html_failure(res).await;
        assert!(body.contains("Sign-in failed"), "{mode}: {body}");
        assert_eq!(c.failures(reason).await, 1, "{mode} audited as `{reason}`");
    }
    // A response that names another issuer (mix-up, RFC 9207) is refused before the code
    // is even exchanged.
    let (authorize, binding) = c.begin("fake").await;
    let callback = browse_to_callback(&with_param(&authorize, "mode", "mixup"), &c.base).await;
    let res = c.callback(&callback, Some(&binding)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(c.failures("wrong issuer").await, 2);

    let (_, members) = c
        .api(
            Method::GET,
            &format!("/groups/{}/members", eng["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(members, json!([]), "no attack made a user or a membership");
    let (_, users) = c.api(Method::GET, "/users", None).await;
    assert_eq!(
        users.as_array().unwrap().len(),
        1,
        "only the admin: {users}"
    );

    // The same provider's well-formed token signs in: the refusals above are the checks.
    let (authorize, binding) = c.begin("fake").await;
    let callback = browse_to_callback(&with_param(&authorize, "mode", "good"), &c.base).await;
    let res = c.callback(&callback, Some(&binding)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert!(cookie_value(&res, "__Host-postern_session").is_some());
}

#[tokio::test]
async fn identity_providers_are_admin_configured_and_checked() {
    let c = Controller::start().await;
    for (body, field) in [
        (
            json!({"name": "x", "issuer": "http://idp.example.com", "client_id": "a", "client_secret": "b"}),
            "issuer",
        ),
        (
            json!({"name": "bad name", "issuer": "https://idp.example.com", "client_id": "a", "client_secret": "b"}),
            "name",
        ),
        (
            json!({"name": "x", "issuer": "https://idp.example.com", "client_id": "a", "client_secret": ""}),
            "client_secret",
        ),
    ] {
        let (status, err) = c.api(Method::POST, "/identity-providers", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
        assert_eq!(err["error"]["field"], field);
    }
    let p = c.add_provider("corp", "https://idp.example.com").await;
    assert_eq!(p["groups_claim"], "groups");
    let (status, _) = c
        .api(
            Method::POST,
            "/identity-providers",
            Some(json!({"name": "corp", "issuer": "https://other.example.com", "client_id": "a", "client_secret": "b"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (_, audit) = c.api(Method::GET, "/audit?limit=500", None).await;
    assert!(!audit.to_string().contains(CLIENT_SECRET));
    let (status, _) = c
        .api(
            Method::DELETE,
            &format!("/identity-providers/{}", p["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let res = c
        .http
        .get(format!("{}/auth/oidc/corp/start", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn providers_from_the_config_file_are_upserted_audited_and_read_only() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    let secret_file = c.dir.path().join("corp-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    let config = |scopes: &str| {
        format!(
            "[[identity_providers]]\nname = \"corp\"\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\nscopes = [{scopes}]\n",
            idp.issuer,
            secret_file.display()
        )
    };
    let apply = |text: String| {
        let service = c.service.clone();
        async move {
            let file = ConfigFile::parse(&text, "postern.toml").unwrap();
            let inputs = file.identity_provider_inputs("postern.toml").unwrap();
            service
                .apply_identity_config("postern.toml", inputs)
                .await
                .unwrap()
        }
    };
    let report = apply(config("\"email\", \"profile\", \"groups\"")).await;
    assert_eq!(report.created, vec!["corp".to_owned()]);
    let (_, listed) = c.api(Method::GET, "/identity-providers", None).await;
    assert_eq!(listed[0]["config_managed"], true, "{listed}");
    let id = listed[0]["id"].as_str().unwrap().to_owned();

    // It signs in (the secret came from its file).
    let me = c.me(&sign_in(&c, "corp", "alice").await).await;
    assert_eq!(me["identity_provider"], "corp");

    // The API refuses to delete or replace it, saying where it is managed.
    let (status, err) = c
        .api(Method::DELETE, &format!("/identity-providers/{id}"), None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file"),
        "{err}"
    );
    let (status, err) = c
        .api(
            Method::POST,
            "/identity-providers",
            Some(json!({"name": "corp", "issuer": "https://x.example.com", "client_id": "a", "client_secret": "b"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("config file")
    );

    // Applying the same file again changes nothing; a change is an update; both audited as
    // the config, never with the secret.
    let report = apply(config("\"email\", \"profile\", \"groups\"")).await;
    assert_eq!(report.unchanged, vec!["corp".to_owned()]);
    let report = apply(config("\"email\", \"groups\"")).await;
    assert_eq!(report.updated, vec!["corp".to_owned()]);
    let (_, events) = c
        .api(Method::GET, "/audit?kind=identity_provider.&limit=50", None)
        .await;
    let by_config: Vec<&Value> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "config")
        .collect();
    assert_eq!(by_config.len(), 2, "{events}");
    assert!(!events.to_string().contains(CLIENT_SECRET));
    let (_, listed) = c.api(Method::GET, "/identity-providers", None).await;
    assert_eq!(listed[0]["scopes"], json!(["email", "groups"]));
    assert_eq!(listed[0]["id"], id.as_str(), "updated in place");

    // An invalid provider changes nothing; one the file drops is removed.
    let bad = ConfigFile::parse(
        "[[identity_providers]]\nname = \"corp\"\nissuer = \"http://idp.example.com\"\nclient_id = \"a\"\nclient_secret = \"b\"\n",
        "postern.toml",
    )
    .unwrap()
    .identity_provider_inputs("postern.toml")
    .unwrap();
    let err = c
        .service
        .apply_identity_config("postern.toml", bad)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("issuer"), "{err}");
    let report = apply(String::new()).await;
    assert_eq!(report.deleted, vec!["corp".to_owned()]);
    let (_, listed) = c.api(Method::GET, "/identity-providers", None).await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn a_bad_config_file_stops_the_controller_with_the_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("postern.toml");
    std::fs::write(
        &config,
        "[[identity_providers]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\nclient_id = \"a\"\nclient_secret_fil = \"/x\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_postern-controller"))
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("POSTERN_CONFIG")
        .env_remove("POSTERN_DATABASE_URL")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client_secret_fil"), "{err}");
    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains("postern.toml"), "{err}");
}

#[tokio::test]
async fn client_secrets_are_sealed_at_rest_and_a_wrong_key_fails_closed() {
    let c = Controller::start().await;
    let idp = Idp::real(&c.callback_uri("corp")).await;
    c.add_provider("corp", &idp.issuer).await;
    let stored = c.raw("SELECT client_secret FROM identity_providers").await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].starts_with("enc:v1:"), "{}", stored[0]);
    assert!(!stored[0].contains(CLIENT_SECRET));
    sign_in(&c, "corp", "alice").await;

    // The same database under another key: the secret does not open, and sign-in says why.
    let other = c.service.clone().with_secret_key(SecretKey::random());
    let err = other.oidc_start("corp").await.unwrap_err().to_string();
    assert!(err.contains("secret key"), "{err}");

    // A legacy plaintext secret still works, and is sealed at the next start.
    let mut conn = c.service.store().conn().await.unwrap();
    sqlx::query("UPDATE identity_providers SET client_secret = $1")
        .bind(CLIENT_SECRET)
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    sign_in(&c, "corp", "alice").await;
    assert_eq!(c.service.seal_plaintext_secrets().await.unwrap(), 1);
    let stored = c.raw("SELECT client_secret FROM identity_providers").await;
    assert!(stored[0].starts_with("enc:v1:"), "{}", stored[0]);
    sign_in(&c, "corp", "alice").await;
}

#[tokio::test]
async fn discovery_and_keys_are_cached_and_refreshed_on_an_unknown_key() {
    let c = Controller::start().await;
    let idp = Idp::fake().await;
    c.add_provider("fake", &idp.issuer).await;
    let counts = || async {
        reqwest::get(format!("{}/test/counts", idp.issuer))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let cr = &c;
    let sign_in_fake = |mode: &'static str| async move {
        let c = cr;
        let (authorize, binding) = c.begin("fake").await;
        let callback = browse_to_callback(&with_param(&authorize, "mode", mode), &c.base).await;
        c.callback(&callback, Some(&binding)).await.status()
    };
    for _ in 0..3 {
        assert_eq!(sign_in_fake("good").await, StatusCode::SEE_OTHER);
    }
    let n = counts().await;
    assert_eq!(n["token"], 3, "{n}");
    assert_eq!(n["discovery"], 1, "discovery once for three sign-ins: {n}");
    assert_eq!(n["jwks"], 1, "{n}");

    // The provider rotates its key: the first token with the new key id refreshes the keys.
    let res = reqwest::Client::new()
        .post(format!("{}/test/rotate", idp.issuer))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sign_in_fake("good").await, StatusCode::SEE_OTHER);
    let n = counts().await;
    assert_eq!(n["jwks"], 2, "{n}");
    assert_eq!(n["discovery"], 1, "{n}");

    // A key nobody publishes fails closed, and does not make the keys be fetched again
    // within a minute.
    assert_eq!(sign_in_fake("unknown_kid").await, StatusCode::UNAUTHORIZED);
    assert_eq!(sign_in_fake("unknown_kid").await, StatusCode::UNAUTHORIZED);
    let n = counts().await;
    assert_eq!(n["jwks"], 2, "{n}");
    assert_eq!(c.failures("unknown key id").await, 2);
}
