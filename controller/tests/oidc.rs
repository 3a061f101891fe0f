//! OIDC single sign-on against a real OpenID provider: the certified `oidc-provider` npm
//! package (tests/oidc-provider/provider.js) on 127.0.0.1, driven over HTTP like a browser.
//! Token-level attacks, which a certified provider never makes, come from a deliberately
//! broken provider (tests/oidc-provider/fake-provider.js) that signs crafted ID tokens.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;

use controller::{AppState, ConfigFile, SecretKey, Service, SetupInput, Store, router};
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
    service: Service,
    dir: tempfile::TempDir,
}

impl Controller {
    async fn start() -> Self {
        Self::start_with_key(SecretKey::random()).await
    }

    async fn start_with_key(key: SecretKey) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let service = Service::new(store)
            .with_public_url(base.clone())
            .with_secret_key(key);
        let code = service.prepare_setup().await.unwrap().unwrap();
        let setup = service
            .complete_setup(SetupInput {
                code,
                email: "admin@example.com".into(),
                name: "Admin".into(),
            })
            .await
            .unwrap();
        let app = router(AppState {
            service: service.clone(),
            control_fingerprint: None,
        });
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
            service,
            dir,
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
        let res = self.me_response(session).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// The status of `/auth/me` for a browser session.
    async fn me_status(&self, session: &str) -> StatusCode {
        self.me_response(session).await.status()
    }

    async fn me_response(&self, session: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v1/auth/me", self.base))
            .header("cookie", format!("__Host-postern_session={session}"))
            .send()
            .await
            .unwrap()
    }
}

/// The body of a failed sign-in as a browser sees it: an HTML page, not cached, not framed.
async fn html_failure(res: reqwest::Response) -> String {
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let body = res.text().await.unwrap();
    assert!(body.contains("<h1>Sign-in failed</h1>"), "{body}");
    assert!(!body.contains("<script"), "{body}");
    body
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

impl Controller {
    /// The same API call with another bearer token.
    async fn api_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn audit_count(&self, kind: &str) -> usize {
        let (_, events) = self
            .api(Method::GET, &format!("/audit?kind={kind}&limit=500"), None)
            .await;
        events.as_array().unwrap().len()
    }

    /// The raw stored value of one column, straight from the database.
    async fn raw(&self, sql: &str) -> Vec<String> {
        let mut c = self.service.store().conn().await.unwrap();
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&mut *c)
            .await
            .unwrap()
    }
}

fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

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

/// Signs a client in through the device authorization flow, approved from the browser
/// session `session`; returns its device and what `/device-auth/token` answered.
async fn client_session(c: &Controller, session: &str) -> (model::DeviceId, Value) {
    use proto::device::DeviceKey;

    let key = DeviceKey::generate();
    let (status, start) = c
        .api(
            Method::POST,
            "/device-auth",
            Some(json!({"public_key": key.public_key(), "name": "laptop"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{start}");
    let res = c
        .http
        .post(format!("{}/api/v1/device-auth/approve", c.base))
        .header("cookie", format!("__Host-postern_session={session}"))
        .json(&json!({"user_code": start["user_code"], "approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::NO_CONTENT,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let (status, device_session) = c
        .api(
            Method::POST,
            "/device-auth/token",
            Some(json!({"device_code": start["device_code"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{device_session}");

    let device_id = device_session["device_id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (device_id, device_session)
}

async fn policy_with(
    c: &Controller,
    name: &str,
    group: &Value,
    resource: &Value,
    conditions: Value,
) {
    let (status, p) = c
        .api(
            Method::POST,
            "/policies",
            Some(json!({"name": name, "group_id": group["id"], "resource_id": resource["id"], "conditions": conditions})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
}

async fn resource(c: &Controller, site: &Value, name: &str, address: &str) -> Value {
    let (status, r) = c
        .api(
            Method::POST,
            "/resources",
            Some(json!({"name": name, "site_id": site["id"], "addresses": [address], "ports": ["tcp/443"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    r
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
