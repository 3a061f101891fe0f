//! The REST API over real HTTPS, against the real `postern-controller` binary: setup,
//! authentication and roles, validation that names the field and changes nothing, audit
//! rows, the OpenAPI document, and secrets kept out of logs.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A running controller, killed and cleaned up when dropped.
struct Controller {
    child: Child,
    base: String,
    setup_code: Option<String>,
    fingerprint: Option<String>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_postern-controller")
}

impl Controller {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra)
    }

    fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Self {
        let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
        let mut child = Command::new(bin())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--log",
                "debug",
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .args(extra)
            .env_remove("POSTERN_DATABASE_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut base, mut setup_code, mut fingerprint) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("postern-controller listening on ") {
                base = Some(rest.split_whitespace().next().unwrap().to_owned());
            }
            if let Some((_, code)) = line.split_once("One-time setup code: ") {
                setup_code = Some(code.trim().to_owned());
            }
            if let Some((_, fp)) =
                line.split_once("fingerprint (self-signed; pin it in gateways and clients): ")
            {
                fingerprint = Some(fp.trim().to_owned());
            }
            if line.starts_with("storage: ") || Instant::now() > deadline {
                break;
            }
        }
        // Keep draining stdout so the controller never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let base = base.expect("the controller printed its address");
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(20));
        if base.starts_with("https") {
            let pem = std::fs::read(dir.path().join("data/tls/cert.pem")).unwrap();
            http = http.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Self {
            child,
            base,
            setup_code,
            fingerprint,
            dir,
            http: http.build().unwrap(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn setup(&self) -> String {
        let code = self
            .setup_code
            .clone()
            .expect("a fresh controller prints a setup code");
        let (status, body) = self
            .call(
                Method::POST,
                "/api/v1/setup",
                None,
                Some(json!({"code": code, "email": "Admin@Example.com", "name": "Ada Admin"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["user"]["email"], "admin@example.com");
        assert_eq!(body["user"]["role"], "admin");
        body["token"].as_str().unwrap().to_owned()
    }

    fn cli_token(&self, role: &str) -> String {
        let out = Command::new(bin())
            .args([
                "admin",
                "create-token",
                "--role",
                role,
                "--name",
                "ci",
                "--data-dir",
            ])
            .arg(self.dir.path().join("data"))
            .env_remove("POSTERN_DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }
}

fn field(body: &Value) -> &str {
    body["error"]["field"].as_str().unwrap_or("")
}

async fn audit_count(c: &Controller, token: &str) -> usize {
    let (status, body) = c
        .call(Method::GET, "/api/v1/audit?limit=10000", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    body.as_array().unwrap().len()
}

#[tokio::test]
async fn setup_code_is_one_time_and_tokens_are_required() {
    let c = Controller::start(&[]);
    assert!(c.base.starts_with("https://"), "TLS by default");
    assert_eq!(
        c.fingerprint.as_deref().map(|f| f.split(':').count()),
        Some(32),
        "SHA-256 fingerprint printed"
    );
    let (status, body) = c.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, Value::String("ok\n".into()))
    );

    let (status, body) = c
        .call(
            Method::POST,
            "/api/v1/setup",
            None,
            Some(json!({"code": "AAAA-BBBB-CCCC-DDDD", "email": "a@example.com", "name": "A"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let token = c.setup().await;
    let code = c.setup_code.clone().unwrap();
    let (status, _) = c
        .call(
            Method::POST,
            "/api/v1/setup",
            None,
            Some(json!({"code": code, "email": "b@example.com", "name": "B"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the setup code works once"
    );

    let res = c
        .http
        .get(format!("{}/api/v1/sites", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let (status, _) = c
        .call(Method::GET, "/api/v1/sites", Some("pst_not-a-token"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = c
        .call(Method::GET, "/api/v1/sites", Some(&token), None)
        .await;
    assert_eq!((status, body), (StatusCode::OK, json!([])));
}

#[tokio::test]
async fn invalid_input_names_the_field_and_changes_nothing() {
    let c = Controller::start(&[]);
    let admin = c.setup().await;
    let (_, site) = c
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(&admin),
            Some(json!({"name": "hq"})),
        )
        .await;
    let site_id = site["id"].as_str().unwrap().to_owned();
    let before = audit_count(&c, &admin).await;

    let cases = [
        (
            json!({"name": "db", "site_id": site_id, "addresses": ["10.0.0.1/24"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "addresses[0]",
            "10.0.0.0/24",
        ),
        (
            json!({"name": "db", "site_id": site_id, "addresses": ["10.0.0.1", "nonsense"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "addresses[1]",
            "not an IP",
        ),
        (
            json!({"name": "db", "site_id": site_id, "addresses": ["10.0.0.1"], "ports": ["tcp/22", "tcp/0"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports[1]",
            "port 0",
        ),
        (
            json!({"name": "db", "site_id": site_id, "addresses": ["10.0.0.1"], "ports": ["tcp/90-80"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports[0]",
            "inverted",
        ),
        (
            json!({"name": "db", "site_id": site_id, "addresses": ["10.0.0.1"], "ports": ["sctp/1"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "ports[0]",
            "unknown protocol",
        ),
        (
            json!({"name": "db", "site_id": "0193a0a0-0000-7000-8000-000000000000", "addresses": ["10.0.0.1"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "site_id",
            "no site",
        ),
        (
            json!({"name": "db", "site_id": "not-a-uuid", "addresses": ["10.0.0.1"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "site_id",
            "UUID",
        ),
        (
            json!({"name": "db", "site_id": site_id, "addresses": ["10.0.0.1"], "colour": "red"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
            "unknown field",
        ),
        (
            json!({"name": "  ", "site_id": site_id, "addresses": ["10.0.0.1"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "name",
            "empty",
        ),
        (
            json!({"name": "db", "site_id": site_id, "addresses": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "addresses",
            "at least one",
        ),
    ];
    for (body, status, want_field, want_text) in cases {
        let (got, err) = c
            .call(
                Method::POST,
                "/api/v1/resources",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(got, status, "{body} -> {err}");
        assert_eq!(field(&err), want_field, "{body} -> {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(want_text),
            "{message:?} should say {want_text:?}"
        );
    }
    let res = c
        .http
        .post(format!("{}/api/v1/resources", c.base))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "malformed JSON");

    let (status, db) = c.call(Method::POST, "/api/v1/resources", Some(&admin), Some(json!({"name": "db", "site_id": site_id, "addresses": ["10.0.5.20", "fd00::/64"], "ports": ["tcp/5432", "icmp"]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{db}");
    assert_eq!(db["addresses"], json!(["10.0.5.20/32", "fd00::/64"]));
    let (status, dup) = c
        .call(
            Method::POST,
            "/api/v1/resources",
            Some(&admin),
            Some(json!({"name": "db", "site_id": site_id, "addresses": ["10.0.5.21"]})),
        )
        .await;
    assert_eq!(
        (status, field(&dup)),
        (StatusCode::CONFLICT, "name"),
        "{dup}"
    );

    // Policies: references and conditions are checked too.
    let (_, group) = c
        .call(
            Method::POST,
            "/api/v1/groups",
            Some(&admin),
            Some(json!({"name": "eng"})),
        )
        .await;
    let policy = |conditions: Value| json!({"name": "eng-db", "group_id": group["id"], "resource_id": db["id"], "conditions": conditions});
    let bad_policies = [
        (
            policy(json!({"time_zone": "Mars/Olympus"})),
            "conditions.time_zone",
        ),
        (
            policy(json!({"time_windows": [{"days": ["mon"], "start": "25:00", "end": "18:00"}]})),
            "conditions.time_windows[0].start",
        ),
        (
            policy(json!({"time_windows": [{"days": [], "start": "09:00", "end": "18:00"}]})),
            "conditions.time_windows[0]",
        ),
        (
            policy(json!({"source_cidrs": ["192.0.2.0/33"]})),
            "conditions.source_cidrs[0]",
        ),
        (
            policy(json!({"posture_profile_id": "0193a0a0-0000-7000-8000-000000000000"})),
            "conditions.posture_profile_id",
        ),
        (
            json!({"name": "x", "group_id": "0193a0a0-0000-7000-8000-000000000000", "resource_id": db["id"]}),
            "group_id",
        ),
        (
            json!({"name": "x", "group_id": group["id"], "resource_id": db["id"], "max_session_secs": 0}),
            "max_session_secs",
        ),
    ];
    for (body, want_field) in bad_policies {
        let (status, err) = c
            .call(
                Method::POST,
                "/api/v1/policies",
                Some(&admin),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, field(&err)),
            (StatusCode::UNPROCESSABLE_ENTITY, want_field),
            "{body} -> {err}"
        );
    }

    let (_, resources) = c
        .call(Method::GET, "/api/v1/resources", Some(&admin), None)
        .await;
    assert_eq!(
        resources.as_array().unwrap().len(),
        1,
        "rejected requests created nothing"
    );
    let (_, policies) = c
        .call(Method::GET, "/api/v1/policies", Some(&admin), None)
        .await;
    assert_eq!(policies, json!([]));
    assert_eq!(
        audit_count(&c, &admin).await,
        before + 2,
        "only the resource and the group were audited"
    );

    let (status, err) = c
        .call(
            Method::GET,
            "/api/v1/resources/not-an-id",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    let (status, err) = c
        .call(
            Method::DELETE,
            &format!("/api/v1/sites/{site_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a site with resources is kept: {err}"
    );
}

#[tokio::test]
async fn auditors_read_everything_and_change_nothing() {
    let c = Controller::start(&[]);
    let admin = c.setup().await;
    let auditor = c.cli_token("auditor");
    assert!(auditor.starts_with("pst_"));
    let (status, _) = c
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(&admin),
            Some(json!({"name": "hq"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = audit_count(&c, &admin).await;
    for path in [
        "/api/v1/sites",
        "/api/v1/resources",
        "/api/v1/users",
        "/api/v1/groups",
        "/api/v1/policies",
        "/api/v1/grants",
        "/api/v1/audit",
        "/api/v1/devices",
        "/api/v1/gateways",
        "/api/v1/posture-profiles",
        "/api/v1/enrollment-keys",
        "/api/v1/tokens",
    ] {
        let (status, body) = c.call(Method::GET, path, Some(&auditor), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let writes = [
        (Method::POST, "/api/v1/sites", json!({"name": "branch"})),
        (
            Method::POST,
            "/api/v1/users",
            json!({"email": "eve@example.com", "name": "Eve"}),
        ),
        (
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "mine", "role": "admin"}),
        ),
        (Method::POST, "/api/v1/groups", json!({"name": "auditors"})),
    ];
    for (method, path, body) in writes {
        let (status, err) = c.call(method, path, Some(&auditor), Some(body)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {err}");
    }
    let (_, sites) = c
        .call(Method::GET, "/api/v1/sites", Some(&admin), None)
        .await;
    assert_eq!(sites.as_array().unwrap().len(), 1);
    assert_eq!(
        audit_count(&c, &admin).await,
        before,
        "forbidden writes left no trace but reads"
    );

    // Tokens are revocable.
    let (_, tokens) = c
        .call(Method::GET, "/api/v1/tokens", Some(&admin), None)
        .await;
    let ci = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "auditor")
        .unwrap();
    assert!(
        ci.get("secret").is_none() && ci.get("token_hash").is_none(),
        "no secret in listings: {ci}"
    );
    let (status, _) = c
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{}", ci["id"].as_str().unwrap()),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = c
        .call(Method::GET, "/api/v1/sites", Some(&auditor), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn decisions_are_audited_and_secrets_stay_out_of_logs() {
    let c = Controller::start(&[]);
    let admin = c.setup().await;
    let call = |m: Method, p: &'static str, b: Value| {
        let admin = admin.clone();
        let c = &c;
        async move { c.call(m, p, Some(&admin), Some(b)).await }
    };
    let (_, site) = call(Method::POST, "/api/v1/sites", json!({"name": "hq"})).await;
    let (status, gw_token) = c
        .call(
            Method::POST,
            &format!(
                "/api/v1/sites/{}/gateway-tokens",
                site["id"].as_str().unwrap()
            ),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{gw_token}");
    let gw_secret = gw_token["secret"].as_str().unwrap().to_owned();
    let (_, db) = call(Method::POST, "/api/v1/resources", json!({"name": "db", "site_id": site["id"], "addresses": ["10.0.5.20"], "ports": ["tcp/5432"]})).await;
    let (_, ann) = call(
        Method::POST,
        "/api/v1/users",
        json!({"email": "ann@example.com", "name": "Ann"}),
    )
    .await;
    let (_, bob) = call(
        Method::POST,
        "/api/v1/users",
        json!({"email": "bob@example.com", "name": "Bob"}),
    )
    .await;
    let (_, eng) = call(Method::POST, "/api/v1/groups", json!({"name": "eng"})).await;
    let (status, _) = c
        .call(
            Method::POST,
            &format!("/api/v1/groups/{}/members", eng["id"].as_str().unwrap()),
            Some(&admin),
            Some(json!({"user_id": ann["id"]})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, policy) = call(Method::POST, "/api/v1/policies", json!({"name": "eng-db", "group_id": eng["id"], "resource_id": db["id"], "max_session_secs": 3600})).await;
    assert_eq!(status, StatusCode::CREATED, "{policy}");

    // Devices enroll with keys; a one-time key works once.
    let mut devices = Vec::new();
    for (user, key_byte) in [(&ann, 1u8), (&bob, 2u8)] {
        let (status, key) = call(
            Method::POST,
            "/api/v1/enrollment-keys",
            json!({"user_id": user["id"]}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        let public_key = base64_key(key_byte);
        let enroll =
            json!({"enrollment_key": key["secret"], "name": "laptop", "public_key": public_key});
        let (status, device) = c
            .call(
                Method::POST,
                "/api/v1/devices/enroll",
                None,
                Some(enroll.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{device}");
        let (status, _) = c.call(Method::POST, "/api/v1/devices/enroll", None, Some(json!({"enrollment_key": key["secret"], "name": "again", "public_key": base64_key(key_byte + 10)}))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "one-time key replayed");
        devices.push((device, key["secret"].as_str().unwrap().to_owned()));
    }

    let decide = |user: &Value, device: &Value| json!({"user_id": user["id"], "device_id": device["id"], "resource_id": db["id"], "source": "192.0.2.10"});
    let (status, allow) = call(
        Method::POST,
        "/api/v1/decisions",
        decide(&ann, &devices[0].0),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{allow}");
    assert_eq!(allow["outcome"], "allow", "{allow}");
    assert_eq!(allow["policy"], policy["id"]);
    let (_, deny) = call(
        Method::POST,
        "/api/v1/decisions",
        decide(&bob, &devices[1].0),
    )
    .await;
    assert_eq!(deny["outcome"], "deny", "{deny}");
    assert_eq!(deny["reasons"][0]["code"], "no_policy");
    let (_, stolen) = call(
        Method::POST,
        "/api/v1/decisions",
        decide(&ann, &devices[1].0),
    )
    .await;
    assert_eq!(stolen["outcome"], "deny", "another user's device: {stolen}");

    // Disabling the user turns the allow into a deny.
    let (status, _) = c
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{}", ann["id"].as_str().unwrap()),
            Some(&admin),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, after) = call(
        Method::POST,
        "/api/v1/decisions",
        decide(&ann, &devices[0].0),
    )
    .await;
    assert_eq!(after["reasons"][0]["code"], "user_disabled", "{after}");

    let (_, decisions) = c
        .call(
            Method::GET,
            "/api/v1/audit?kind=decision.",
            Some(&admin),
            None,
        )
        .await;
    let kinds: Vec<_> = decisions
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "decision.deny",
            "decision.deny",
            "decision.deny",
            "decision.allow"
        ],
        "newest first"
    );
    let allow_event = &decisions[3];
    assert_eq!(
        allow_event["actor"],
        format!("user:{}", ann["id"].as_str().unwrap())
    );
    assert_eq!(
        allow_event["subject"],
        format!("resource:{}", db["id"].as_str().unwrap())
    );
    assert_eq!(allow_event["details"]["device"], devices[0].0["id"]);
    assert!(
        decisions[2]["details"]["reasons"][0]["message"]
            .as_str()
            .unwrap()
            .contains("db"),
        "{}",
        decisions[2]
    );

    // Export: one JSON object per line.
    let res = c
        .http
        .get(format!("{}/api/v1/audit?format=jsonl&limit=10000", c.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let export = res.text().await.unwrap();
    let lines: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 15, "{} events", lines.len());
    for kind in [
        "site.created",
        "gateway_token.created",
        "resource.created",
        "user.created",
        "group.member_added",
        "policy.created",
        "enrollment_key.created",
        "device.enrolled",
        "user.updated",
    ] {
        assert!(lines.iter().any(|e| e["kind"] == kind), "audit has {kind}");
    }
    let (status, err) = c
        .call(
            Method::GET,
            "/api/v1/audit?since=yesterday",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, field(&err)),
        (StatusCode::UNPROCESSABLE_ENTITY, "since")
    );

    // No secret appears in the log or in the audit trail.
    let log = c.log();
    assert!(
        log.contains("request"),
        "the log was captured at debug level"
    );
    let code = c.setup_code.clone().unwrap();
    let mut secrets = vec![admin.clone(), gw_secret, code];
    secrets.extend(devices.iter().map(|(_, k)| k.clone()));
    for secret in &secrets {
        assert!(!log.contains(secret.as_str()), "secret leaked into the log");
        assert!(
            !export.contains(secret.as_str()),
            "secret leaked into the audit log"
        );
    }
}

fn base64_key(byte: u8) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let c = Controller::start(&["--insecure-http"]);
    assert!(c.base.starts_with("http://"));
    let (status, doc) = c
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/sites",
        "/api/v1/sites/{id}/gateway-tokens",
        "/api/v1/gateways",
        "/api/v1/resources",
        "/api/v1/users",
        "/api/v1/groups/{id}/members",
        "/api/v1/devices",
        "/api/v1/enrollment-keys",
        "/api/v1/posture-profiles",
        "/api/v1/policies",
        "/api/v1/grants",
        "/api/v1/audit",
        "/api/v1/decisions",
        "/api/v1/setup",
    ] {
        assert!(paths.contains_key(p), "openapi has {p}");
    }
    assert!(doc["components"]["schemas"]["ResourceInput"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn postgres_backend_serves_the_same_api() {
    let Ok(admin_url) = std::env::var("POSTERN_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set POSTERN_TEST_POSTGRES_URL"
        );
        return;
    };
    sqlx::any::install_default_drivers();
    let name = format!("postern_api_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    {
        let c = Controller::start(&["--database-url", &url]);
        let admin = c.setup().await;
        let (status, site) = c
            .call(
                Method::POST,
                "/api/v1/sites",
                Some(&admin),
                Some(json!({"name": "pg-site"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{site}");
        let (_, sites) = c
            .call(Method::GET, "/api/v1/sites", Some(&admin), None)
            .await;
        assert_eq!(sites[0]["name"], "pg-site");
        assert!(
            !c.dir.path().join("data/postern.db").exists(),
            "no SQLite file when PostgreSQL is used"
        );
    }
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn restart_keeps_data_and_prints_no_new_setup_code() {
    let c = Controller::start(&[]);
    let admin = c.setup().await;
    let (status, _) = c
        .call(
            Method::POST,
            "/api/v1/sites",
            Some(&admin),
            Some(json!({"name": "hq"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let fingerprint = c.fingerprint.clone();
    let mut c = c;
    let _ = c.child.kill();
    let _ = c.child.wait();
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir().unwrap());
    drop(c);
    let again = Controller::start_in(dir, &[]);
    assert_eq!(again.setup_code, None);
    assert_eq!(
        again.fingerprint, fingerprint,
        "the self-signed certificate is kept"
    );
    let (_, sites) = again
        .call(Method::GET, "/api/v1/sites", Some(&admin), None)
        .await;
    assert_eq!(sites[0]["name"], "hq");
}
