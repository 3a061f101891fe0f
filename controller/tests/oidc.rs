//! OIDC single sign-on against a real OpenID provider: the certified `oidc-provider` npm
//! package (tests/oidc-provider/provider.js) on 127.0.0.1, driven over HTTP like a browser.
//! Token-level attacks, which a certified provider never makes, come from a deliberately
//! broken provider (tests/oidc-provider/fake-provider.js) that signs crafted ID tokens.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;

use controller::{AppState, Service, SetupInput, Store, router};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const CLIENT_ID: &str = "postern-test";
const CLIENT_SECRET: &str = "a-client-secret-for-tests-only";

fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc-provider")
}

/// Installs the npm package once (scripts/test does it too; this keeps `cargo test` alone
/// working on a machine with node and npm).
fn ensure_installed() {
    static ONCE: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut done = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return;
    }
    let dir = harness_dir();
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .status()
            .expect("npm must be installed to run the OIDC tests");
        assert!(status.success(), "npm ci in tests/oidc-provider failed");
    }
    *done = true;
}

/// A Node OpenID provider process, killed when dropped.
struct Idp {
    issuer: String,
    _child: tokio::process::Child,
}

impl Idp {
    async fn spawn(script: &str, args: &[&str]) -> Self {
        ensure_installed();
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .args(args)
            .current_dir(harness_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node must be installed to run the OIDC tests");
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), lines.next_line())
            .await
            .expect("the provider did not start in time")
            .unwrap()
            .expect("the provider exited");
        let issuer = line.strip_prefix("issuer ").unwrap().trim().to_owned();
        // Keep reading: the provider logs warnings to stdout, and a closed pipe kills it.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            issuer,
            _child: child,
        }
    }

    /// The real, certified provider.
    async fn real(redirect_uris: &str) -> Self {
        Self::spawn("provider.js", &[redirect_uris, CLIENT_ID, CLIENT_SECRET]).await
    }

    /// The broken provider for token-level attacks.
    async fn fake() -> Self {
        Self::spawn("fake-provider.js", &[CLIENT_ID]).await
    }
}

struct Controller {
    base: String,
    admin: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Controller {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let service = Service::new(store).with_public_url(base.clone());
        let code = service.prepare_setup().await.unwrap().unwrap();
        let setup = service
            .complete_setup(SetupInput {
                code,
                email: "admin@example.com".into(),
                name: "Admin".into(),
            })
            .await
            .unwrap();
        let app = router(AppState { service });
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            admin: setup.token,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    fn callback_uri(&self, provider: &str) -> String {
        format!("{}/auth/oidc/{provider}/callback", self.base)
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn add_provider(&self, name: &str, issuer: &str) -> Value {
        let (status, p) = self
            .api(
                Method::POST,
                "/identity-providers",
                Some(json!({
                    "name": name, "issuer": issuer, "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET, "scopes": ["email", "profile", "groups"],
                })),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{p}");
        p
    }

    /// Starts a sign-in: the provider's authorization URL and the browser binding cookie.
    async fn begin(&self, provider: &str) -> (String, String) {
        let res = self
            .http
            .get(format!("{}/auth/oidc/{provider}/start", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let binding = cookie_value(&res, "__Host-postern_oidc").unwrap();
        (location, binding)
    }

    /// Calls the callback URL with a browser binding; the response.
    async fn callback(&self, url: &str, binding: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(b) = binding {
            req = req.header("cookie", format!("__Host-postern_oidc={b}"));
        }
        req.send().await.unwrap()
    }

    async fn failures(&self, reason: &str) -> usize {
        let (status, events) = self
            .api(Method::GET, "/audit?kind=auth.login_failed&limit=500", None)
            .await;
        assert_eq!(status, StatusCode::OK, "{events}");
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["details"]["reason"] == reason)
            .count()
    }

    async fn me(&self, session: &str) -> Value {
        let res = self
            .http
            .get(format!("{}/api/v1/auth/me", self.base))
            .header("cookie", format!("__Host-postern_session={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }
}

fn cookie_value(res: &reqwest::Response, name: &str) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next())
        .filter_map(|pair| pair.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// A browser at the provider: keeps the provider's cookies and follows its redirects until
/// one leads back to the controller; returns that callback URL.
async fn browse_to_callback(authorize_url: &str, controller_base: &str) -> String {
    let prefix = controller_base.to_owned();
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.url().as_str().starts_with(&prefix) || attempt.previous().len() > 20 {
                attempt.stop()
            } else {
                attempt.follow()
            }
        }))
        .build()
        .unwrap();
    let res = browser.get(authorize_url).send().await.unwrap();
    assert!(
        res.status().is_redirection(),
        "the provider did not redirect back: {} {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with(controller_base), "{location}");
    location
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.query_pairs_mut().append_pair(key, value);
    u.to_string()
}

fn without_params(url: &str, keys: &[&str]) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !keys.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(kept);
    u.to_string()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A whole sign-in as `user` at the real provider; the session cookie's value.
async fn sign_in(c: &Controller, provider: &str, user: &str) -> String {
    let (authorize, binding) = c.begin(provider).await;
    let callback = browse_to_callback(&with_param(&authorize, "login_hint", user), &c.base).await;
    let res = c.callback(&callback, Some(&binding)).await;
    let status = res.status();
    let session = cookie_value(&res, "__Host-postern_session");
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "{}",
        res.text().await.unwrap_or_default()
    );
    assert_eq!(res.headers()["location"], "/");
    session.expect("a session cookie")
}

fn base64_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

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
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("start the sign-in again"),
        "{body}"
    );
    assert_eq!(c.failures("missing state").await, 1);

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
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{mode}: {body}");
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
