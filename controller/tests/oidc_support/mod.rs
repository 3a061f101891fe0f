//! What the OIDC tests share: the real provider, a controller on loopback, a browser
//! driven over HTTP, and the objects the tests make.

#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub(crate) use std::path::PathBuf;
pub(crate) use std::process::Stdio;

pub(crate) use controller::{AppState, ConfigFile, SecretKey, Service, SetupInput, Store, router};
pub(crate) use reqwest::{Method, StatusCode};
pub(crate) use serde_json::{Value, json};
pub(crate) use tokio::io::AsyncBufReadExt;

pub(crate) const CLIENT_ID: &str = "postern-test";
pub(crate) const CLIENT_SECRET: &str = "a-client-secret-for-tests-only";

pub(crate) fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/oidc-provider")
}

/// Installs the npm package once (scripts/test does it too; this keeps `cargo test` alone
/// working on a machine with node and npm).
pub(crate) fn ensure_installed() {
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
pub(crate) struct Idp {
    pub(crate) issuer: String,
    pub(crate) _child: tokio::process::Child,
}

impl Idp {
    pub(crate) async fn spawn(script: &str, args: &[&str]) -> Self {
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
    pub(crate) async fn real(redirect_uris: &str) -> Self {
        Self::spawn("provider.js", &[redirect_uris, CLIENT_ID, CLIENT_SECRET]).await
    }

    /// The broken provider for token-level attacks.
    pub(crate) async fn fake() -> Self {
        Self::spawn("fake-provider.js", &[CLIENT_ID]).await
    }
}

pub(crate) struct Controller {
    pub(crate) base: String,
    pub(crate) admin: String,
    pub(crate) http: reqwest::Client,
    pub(crate) service: Service,
    pub(crate) dir: tempfile::TempDir,
}

impl Controller {
    pub(crate) async fn start() -> Self {
        Self::start_with_key(SecretKey::random()).await
    }

    pub(crate) async fn start_with_key(key: SecretKey) -> Self {
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

    pub(crate) fn callback_uri(&self, provider: &str) -> String {
        format!("{}/auth/oidc/{provider}/callback", self.base)
    }

    pub(crate) async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
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

    pub(crate) async fn add_provider(&self, name: &str, issuer: &str) -> Value {
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
    pub(crate) async fn begin(&self, provider: &str) -> (String, String) {
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
    pub(crate) async fn callback(&self, url: &str, binding: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(url);
        if let Some(b) = binding {
            req = req.header("cookie", format!("__Host-postern_oidc={b}"));
        }
        req.send().await.unwrap()
    }

    pub(crate) async fn failures(&self, reason: &str) -> usize {
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

    pub(crate) async fn me(&self, session: &str) -> Value {
        let res = self.me_response(session).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    /// The status of `/auth/me` for a browser session.
    pub(crate) async fn me_status(&self, session: &str) -> StatusCode {
        self.me_response(session).await.status()
    }

    pub(crate) async fn me_response(&self, session: &str) -> reqwest::Response {
        self.http
            .get(format!("{}/api/v1/auth/me", self.base))
            .header("cookie", format!("__Host-postern_session={session}"))
            .send()
            .await
            .unwrap()
    }
}

/// The body of a failed sign-in as a browser sees it: an HTML page, not cached, not framed.
pub(crate) async fn html_failure(res: reqwest::Response) -> String {
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

pub(crate) fn cookie_value(res: &reqwest::Response, name: &str) -> Option<String> {
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
pub(crate) async fn browse_to_callback(authorize_url: &str, controller_base: &str) -> String {
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

pub(crate) fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    u.query_pairs_mut().append_pair(key, value);
    u.to_string()
}

pub(crate) fn without_params(url: &str, keys: &[&str]) -> String {
    let mut u = reqwest::Url::parse(url).unwrap();
    let kept: Vec<(String, String)> = u
        .query_pairs()
        .filter(|(k, _)| !keys.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    u.query_pairs_mut().clear().extend_pairs(kept);
    u.to_string()
}

pub(crate) fn query_param(url: &str, key: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A whole sign-in as `user` at the real provider; the session cookie's value.
pub(crate) async fn sign_in(c: &Controller, provider: &str, user: &str) -> String {
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

pub(crate) fn base64_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

impl Controller {
    /// The same API call with another bearer token.
    pub(crate) async fn api_as(
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

    pub(crate) async fn audit_count(&self, kind: &str) -> usize {
        let (_, events) = self
            .api(Method::GET, &format!("/audit?kind={kind}&limit=500"), None)
            .await;
        events.as_array().unwrap().len()
    }

    /// The raw stored value of one column, straight from the database.
    pub(crate) async fn raw(&self, sql: &str) -> Vec<String> {
        let mut c = self.service.store().conn().await.unwrap();
        sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&mut *c)
            .await
            .unwrap()
    }
}

pub(crate) fn id_of(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}

/// Signs a client in through the device authorization flow, approved from the browser
/// session `session`; returns its device and what `/device-auth/token` answered.
pub(crate) async fn client_session(c: &Controller, session: &str) -> (model::DeviceId, Value) {
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

pub(crate) async fn policy_with(
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

pub(crate) async fn resource(c: &Controller, site: &Value, name: &str, address: &str) -> Value {
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
