//! Local accounts and web sessions over HTTP, against the controller's router served
//! in-process on 127.0.0.1: the session cookie's exact attributes, sign-in with password,
//! TOTP and recovery codes, lockout, sign-out, and sessions ending when a user is disabled.

#![allow(clippy::unwrap_used)]

use controller::{
    AppState, LoginInput, SecretKey, Service, SetupInput, Store, router, totp_code_at,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "a long enough password";

struct Server {
    base: String,
    admin_token: String,
    http: reqwest::Client,
    service: Service,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(dir.path()).await.unwrap();
        let service = Service::new(store);
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base: format!("http://{addr}/api/v1"),
            admin_token: setup.token,
            http: reqwest::Client::new(),
            service,
            _dir: dir,
        }
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.admin_token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a user with a password; returns the user's id.
    async fn user(&self, email: &str) -> String {
        let (status, user) = self
            .admin(
                reqwest::Method::POST,
                "/users",
                Some(json!({"email": email, "name": "Ada"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let id = user["id"].as_str().unwrap().to_owned();
        let (status, _) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/users/{id}/password"),
                Some(json!({"password": PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        id
    }

    async fn login(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/auth/login", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Signs in and returns the session cookie (`name=value`).
    async fn session(&self, body: Value) -> String {
        let res = self.login(body).await;
        assert_eq!(res.status(), StatusCode::OK);
        cookie_pair(&set_cookie(&res))
    }

    async fn with_cookie(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("cookie", cookie);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn set_cookie(res: &reqwest::Response) -> String {
    let all: Vec<_> = res.headers().get_all("set-cookie").iter().collect();
    assert_eq!(all.len(), 1, "exactly one Set-Cookie");
    all[0].to_str().unwrap().to_owned()
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn now_secs() -> i64 {
    jiff::Timestamp::now().as_second()
}

#[tokio::test]
async fn sign_in_sets_a_host_only_strict_cookie_and_sign_out_ends_it() {
    let s = Server::start().await;
    let id = s.user("ada@example.com").await;

    let res = s
        .login(json!({"email": "ada@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let header = set_cookie(&res);
    let (pair, attributes) = header.split_once("; ").unwrap();
    let (name, value) = pair.split_once('=').unwrap();
    assert_eq!(name, "__Host-postern_session");
    assert!(value.len() >= 40, "a long random session id");
    assert_eq!(
        attributes,
        "Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=43200"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["id"], id.as_str());
    assert_eq!(body["identity_provider"], "local");
    assert!(
        !body.to_string().contains(value),
        "the session id is only in the cookie"
    );

    // A second sign-in gets a different session id.
    let other = s
        .session(json!({"email": "ada@example.com", "password": PASSWORD}))
        .await;
    assert_ne!(other, pair);

    let (status, me) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", pair, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user"]["email"], "ada@example.com");
    assert_eq!(me["totp_enabled"], false);

    let res = s
        .http
        .post(format!("{}/auth/logout", s.base))
        .header("cookie", pair)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        set_cookie(&res),
        "__Host-postern_session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    );
    let (status, body) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", pair, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    // The other session is untouched.
    let (status, _) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", &other, None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // No cookie, or a bearer token instead of one, is not a session.
    let res = s
        .http
        .get(format!("{}/auth/me", s.base))
        .bearer_auth(&s.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_alike_and_lockout_is_clear() {
    let s = Server::start().await;
    s.user("bob@example.com").await;
    let unknown = s
        .login(json!({"email": "nobody@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    assert!(unknown.headers().get("set-cookie").is_none());
    let unknown: Value = unknown.json().await.unwrap();
    let wrong = s
        .login(json!({"email": "bob@example.com", "password": "not the password"}))
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let wrong: Value = wrong.json().await.unwrap();
    assert_eq!(unknown, wrong);

    for _ in 0..3 {
        let res = s
            .login(json!({"email": "bob@example.com", "password": "not the password"}))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let fifth = s
        .login(json!({"email": "bob@example.com", "password": "not the password"}))
        .await;
    assert_eq!(fifth.status(), StatusCode::TOO_MANY_REQUESTS);
    let body: Value = fifth.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("too many failed sign-ins; try again after "),
        "{message}"
    );
    assert!(message.ends_with(" UTC"), "{message}");
    let right = s
        .login(json!({"email": "bob@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(right.status(), StatusCode::TOO_MANY_REQUESTS);

    let (status, events) = s
        .admin(reqwest::Method::GET, "/audit?limit=100", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = events.to_string();
    assert!(text.contains("auth.locked"));
    assert!(text.contains("auth.login_failed"));
    assert!(!text.contains(PASSWORD) && !text.contains("not the password"));
}

#[tokio::test]
async fn totp_enrollment_and_sign_in_with_codes() {
    let s = Server::start().await;
    let id = s.user("cy@example.com").await;
    let cookie = s
        .session(json!({"email": "cy@example.com", "password": PASSWORD}))
        .await;

    let (status, enrollment) = s
        .with_cookie(reqwest::Method::POST, "/auth/totp", &cookie, None)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = enrollment["secret"].as_str().unwrap().to_owned();
    assert_eq!(
        enrollment["otpauth_uri"],
        format!("otpauth://totp/Postern:cy@example.com?secret={secret}&issuer=Postern")
    );
    assert!(enrollment["qr_svg"].as_str().unwrap().contains("<svg"));

    let (status, _) = s
        .with_cookie(
            reqwest::Method::POST,
            "/auth/totp/confirm",
            &cookie,
            Some(json!({"code": "000000"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let confirm_time = now_secs();
    let used_code = totp_code_at(&secret, confirm_time).unwrap();
    let (status, codes) = s
        .with_cookie(
            reqwest::Method::POST,
            "/auth/totp/confirm",
            &cookie,
            Some(json!({"code": used_code})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let codes: Vec<String> = codes["codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    let (_, me) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", &cookie, None)
        .await;
    assert_eq!(me["totp_enabled"], true);
    assert!(me["last_mfa_at"].is_string());

    // Now the password alone is not enough.
    let res = s
        .login(json!({"email": "cy@example.com", "password": PASSWORD}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The code that confirmed enrollment cannot be used again (a replay within its window).
    let res = s
        .login(json!({"email": "cy@example.com", "password": PASSWORD, "totp": used_code}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["message"],
        "the code is wrong or was already used"
    );
    // A recovery code works once.
    let rc = json!({"email": "cy@example.com", "password": PASSWORD, "recovery_code": codes[0]});
    assert_eq!(s.login(rc.clone()).await.status(), StatusCode::OK);
    assert_eq!(s.login(rc).await.status(), StatusCode::UNAUTHORIZED);

    // Audit rows and listings never carry the secret or the codes.
    let (_, events) = s
        .admin(reqwest::Method::GET, "/audit?limit=200", None)
        .await;
    let text = events.to_string();
    assert!(text.contains("auth.totp_confirmed") && text.contains("auth.login_succeeded"));
    for needle in [
        secret.as_str(),
        used_code.as_str(),
        codes[0].as_str(),
        codes[1].as_str(),
    ] {
        assert!(!text.contains(needle));
    }
    let (_, user) = s
        .admin(reqwest::Method::GET, &format!("/users/{id}"), None)
        .await;
    assert!(!user.to_string().contains(&secret));

    // An admin can reset TOTP; then the password alone works again.
    let (status, _) = s
        .admin(reqwest::Method::DELETE, &format!("/users/{id}/totp"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.login(json!({"email": "cy@example.com", "password": PASSWORD}))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn disabling_a_user_ends_their_sessions() {
    let s = Server::start().await;
    let id = s.user("dee@example.com").await;
    let cookie = s
        .session(json!({"email": "dee@example.com", "password": PASSWORD}))
        .await;
    let (status, _) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", &cookie, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .admin(
            reqwest::Method::PATCH,
            &format!("/users/{id}"),
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", &cookie, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Enabling them again does not revive the session.
    s.admin(
        reqwest::Method::PATCH,
        &format!("/users/{id}"),
        Some(json!({"disabled": false})),
    )
    .await;
    let (status, _) = s
        .with_cookie(reqwest::Method::GET, "/auth/me", &cookie, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn passwords_follow_the_rules() {
    let s = Server::start().await;
    let id = s.user("eve@example.com").await;
    let (status, body) = s
        .admin(
            reqwest::Method::PUT,
            &format!("/users/{id}/password"),
            Some(json!({"password": "short"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["field"], "password");
    assert!(!body.to_string().contains("\"short\""));
    let (status, _) = s
        .admin(
            reqwest::Method::PUT,
            "/users/0190b5c4-0000-7000-8000-000000000000/password",
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let res = s
        .http
        .put(format!("{}/users/{id}/password", s.base))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // The user changes their own password.
    let cookie = s
        .session(json!({"email": "eve@example.com", "password": PASSWORD}))
        .await;
    let (status, _) = s
        .with_cookie(
            reqwest::Method::PUT,
            "/auth/password",
            &cookie,
            Some(json!({"current_password": "wrong wrong wrong", "new_password": "another long password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = s
        .with_cookie(
            reqwest::Method::PUT,
            "/auth/password",
            &cookie,
            Some(json!({"current_password": PASSWORD, "new_password": "another long password"})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        s.login(json!({"email": "eve@example.com", "password": "another long password"}))
            .await
            .status(),
        StatusCode::OK
    );

    let (status, doc) = s.admin(reqwest::Method::GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/auth/me",
        "/api/v1/users/{id}/password",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
}

#[tokio::test]
async fn totp_secrets_are_sealed_at_rest_and_a_wrong_key_fails_closed() {
    let s = Server::start().await;
    let id = s.user("seal@example.com").await;
    let cookie = s
        .session(json!({"email": "seal@example.com", "password": PASSWORD}))
        .await;
    let (_, enrollment) = s
        .with_cookie(reqwest::Method::POST, "/auth/totp", &cookie, None)
        .await;
    let secret = enrollment["secret"].as_str().unwrap().to_owned();
    let raw = || async {
        let mut c = s.service.store().conn().await.unwrap();
        sqlx::query_scalar::<_, String>(
            "SELECT totp_secret FROM local_credentials WHERE user_id = $1",
        )
        .bind(&id)
        .fetch_one(&mut *c)
        .await
        .unwrap()
    };
    let stored = raw().await;
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert!(
        !stored.contains(&secret),
        "the database never holds the secret"
    );
    let t = now_secs();
    let (status, _) = s
        .with_cookie(
            reqwest::Method::POST,
            "/auth/totp/confirm",
            &cookie,
            Some(json!({"code": totp_code_at(&secret, t).unwrap()})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let stored = raw().await;
    assert!(stored.starts_with("enc:v1:") && !stored.contains(&secret));

    let login = |code_at: i64| LoginInput {
        email: "seal@example.com".into(),
        password: PASSWORD.into(),
        totp: Some(totp_code_at(&secret, code_at).unwrap()),
        recovery_code: None,
    };
    let at = |secs: i64| jiff::Timestamp::from_second(secs).unwrap();
    s.service.login_at(login(t + 60), at(t + 60)).await.unwrap();

    // Another key cannot open it: the sign-in fails closed and says why.
    let wrong = s.service.clone().with_secret_key(SecretKey::random());
    let err = wrong
        .login_at(login(t + 120), at(t + 120))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("secret key"), "{err}");

    // A legacy plaintext secret still signs in, and is sealed at the next start.
    let mut c = s.service.store().conn().await.unwrap();
    sqlx::query("UPDATE local_credentials SET totp_secret = $1 WHERE user_id = $2")
        .bind(&secret)
        .bind(&id)
        .execute(&mut *c)
        .await
        .unwrap();
    drop(c);
    s.service
        .login_at(login(t + 180), at(t + 180))
        .await
        .unwrap();
    assert_eq!(s.service.seal_plaintext_secrets().await.unwrap(), 1);
    let stored = raw().await;
    assert!(stored.starts_with("enc:v1:") && !stored.contains(&secret));
    s.service
        .login_at(login(t + 240), at(t + 240))
        .await
        .unwrap();
}
