//! The web UI against the real router and services over SQLite: security headers, CSRF and
//! origin checks, roles, field errors, setup and sign-in.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use model::Role;
use tower::ServiceExt;

use super::session::{ANON_CSRF_COOKIE, csrf_token};
use crate::app::{Actor, Service, SiteInput, UserInput};
use crate::app::{LoginInput, PasswordInput, SESSION_COOKIE};
use crate::http::{AppState, router};
use store::Store;

const PASSWORD: &str = "correct horse battery";
const HOST: &str = "controller.test:8443";

struct World {
    app: Router,
    service: Service,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Store::open_sqlite(dir.path()).await.unwrap());
    World {
        app: router(AppState {
            service: service.clone(),
            control_fingerprint: None,
        }),
        service,
        _dir: dir,
    }
}

/// A signed-in browser: its session cookie and form token.
struct Browser {
    cookie: String,
    csrf: String,
}

impl World {
    async fn user(&self, email: &str, role: Role) -> Browser {
        let cli = Actor::cli();
        let u = self
            .service
            .create_user(
                &cli,
                UserInput {
                    email: email.into(),
                    name: email.split('@').next().unwrap().into(),
                    role: Some(role),
                },
            )
            .await
            .unwrap();
        self.service
            .set_password(
                &cli,
                u.id,
                PasswordInput {
                    password: PASSWORD.into(),
                },
            )
            .await
            .unwrap();
        let s = self
            .service
            .login(LoginInput {
                email: email.into(),
                password: PASSWORD.into(),
                totp: None,
                recovery_code: None,
            })
            .await
            .unwrap();
        Browser {
            cookie: format!("{SESSION_COOKIE}={}", s.token),
            csrf: csrf_token(&s.token),
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, HeaderMap, String) {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), 4 << 20)
            .await
            .unwrap();
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn get(&self, b: Option<&Browser>, path: &str) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(path).header(header::HOST, HOST);
        if let Some(b) = b {
            req = req.header(header::COOKIE, &b.cookie);
        }
        self.send(req.body(Body::empty()).unwrap()).await
    }

    async fn post(
        &self,
        b: &Browser,
        path: &str,
        form: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = Request::post(path)
            .header(header::HOST, HOST)
            .header(header::COOKIE, &b.cookie)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn site_names(&self) -> Vec<String> {
        self.service
            .list_sites(&Actor::cli())
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect()
    }
}

const SAME_ORIGIN: &[(&str, &str)] = &[
    ("origin", "https://controller.test:8443"),
    ("sec-fetch-site", "same-origin"),
];

#[tokio::test]
async fn pages_carry_a_strict_content_security_policy() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    for path in [
        "/",
        "/signin",
        "/sites",
        "/audit",
        "/no-such-thing-in-the-ui",
    ] {
        let (_, h, _) = w.get(Some(&admin), path).await;
        if path == "/no-such-thing-in-the-ui" {
            // The API's JSON fallback answers unknown paths; it is not a page.
            continue;
        }
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], super::CSP, "{path}");
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(directive), "{path}: {directive}");
        }
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin", "{path}");
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
    let (status, h, body) = w.get(Some(&admin), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    assert!(!body.contains("<script>"), "no inline script");
    assert!(!body.contains("style="), "no inline style");
}

#[tokio::test]
async fn static_files_are_served_with_their_types() {
    let w = world().await;
    let (status, h, body) = w.get(None, &ui::assets::css_path()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(
        h[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("immutable")
    );
    assert_eq!(body, ui::assets::CSS);
    let (status, h, _) = w.get(None, &ui::assets::js_path()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let (status, _, _) = w.get(None, "/static/app.0000000000000000.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_form_without_the_session_token_is_refused() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;

    let (status, _, body) = w
        .post(&admin, "/sites", &[("name", "hq")], SAME_ORIGIN)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token");
    assert!(body.contains("security token"));

    let (status, _, _) = w
        .post(
            &admin,
            "/sites",
            &[("name", "hq"), ("_csrf", "forged")],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a wrong token");

    let other = w.user("other@example.com", Role::Admin).await;
    let (status, _, _) = w
        .post(
            &admin,
            "/sites",
            &[("name", "hq"), ("_csrf", &other.csrf)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another session's token");
    assert!(w.site_names().await.is_empty(), "nothing was created");

    let (status, h, _) = w
        .post(
            &admin,
            "/sites",
            &[("name", "hq"), ("_csrf", &admin.csrf)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION].to_str().unwrap().starts_with("/sites/"));
    assert_eq!(w.site_names().await, ["hq"]);
}

#[tokio::test]
async fn a_cross_site_post_is_refused_even_with_the_token() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let form = [("name", "evil"), ("_csrf", admin.csrf.as_str())];
    let (status, _, _) = w
        .post(
            &admin,
            "/sites",
            &form,
            &[("origin", "https://evil.example")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "foreign Origin");
    let (status, _, _) = w
        .post(&admin, "/sites", &form, &[("sec-fetch-site", "cross-site")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "Sec-Fetch-Site: cross-site");
    let (status, _, _) = w
        .post(&admin, "/sites", &form, &[("sec-fetch-site", "same-site")])
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a sibling subdomain is another site"
    );
    let (status, _, _) = w.post(&admin, "/sites", &form, &[("origin", "null")]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an opaque origin");
    assert!(w.site_names().await.is_empty());
}

#[tokio::test]
async fn signing_out_needs_the_token_too() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let (status, _, _) = w.post(&admin, "/signout", &[], SAME_ORIGIN).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = w.get(Some(&admin), "/sites").await;
    assert_eq!(status, StatusCode::OK, "still signed in");
    let (status, h, _) = w
        .post(&admin, "/signout", &[("_csrf", &admin.csrf)], SAME_ORIGIN)
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(h.get_all(header::SET_COOKIE).iter().any(|c| {
        c.to_str()
            .unwrap()
            .starts_with(&format!("{SESSION_COOKIE}=;"))
    }));
    let (status, h, _) = w.get(Some(&admin), "/sites").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the session ended");
    assert_eq!(h[header::LOCATION], "/signin?next=%2Fsites");
}

#[tokio::test]
async fn an_auditor_sees_everything_and_changes_nothing() {
    let w = world().await;
    let _admin = w.user("admin@example.com", Role::Admin).await;
    w.service
        .create_site(&Actor::cli(), SiteInput { name: "hq".into() })
        .await
        .unwrap();
    let auditor = w.user("audit@example.com", Role::Auditor).await;
    for path in [
        "/",
        "/sites",
        "/resources",
        "/users",
        "/groups",
        "/policies",
        "/posture",
        "/devices",
        "/grants",
        "/audit",
        "/settings",
        "/my",
    ] {
        let (status, _, body) = w.get(Some(&auditor), path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(
            !body.contains("method=\"post\" action=\"/sites\""),
            "{path}"
        );
        assert!(body.contains("Read-only"), "{path}");
    }
    let (_, _, body) = w.get(Some(&auditor), "/sites").await;
    assert!(body.contains("hq"));
    // A hand-made POST with a valid token is refused by the services.
    let (status, _, body) = w
        .post(
            &auditor,
            "/sites",
            &[("name", "x"), ("_csrf", &auditor.csrf)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("can read but not change"));
    assert_eq!(w.site_names().await, ["hq"]);
}

#[tokio::test]
async fn a_user_sees_only_their_own_access() {
    let w = world().await;
    let _admin = w.user("admin@example.com", Role::Admin).await;
    let user = w.user("ann@example.com", Role::User).await;
    let (status, h, _) = w.get(Some(&user), "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/my");
    let (status, _, body) = w.get(Some(&user), "/my").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("No policy grants you access yet"));
    assert!(!body.contains("href=\"/audit\""), "no admin navigation");
    for path in ["/users", "/grants", "/audit"] {
        let (status, _, _) = w.get(Some(&user), path).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
}

#[tokio::test]
async fn forms_name_the_failing_field() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let site = w
        .service
        .create_site(&Actor::cli(), SiteInput { name: "hq".into() })
        .await
        .unwrap();
    let site_id = site.id.to_string();
    let (status, _, body) = w
        .post(
            &admin,
            "/resources",
            &[
                ("_csrf", &admin.csrf),
                ("name", "git"),
                ("site_id", &site_id),
                ("addresses", "10.0.0.1, not-an-address"),
                ("ports", "tcp/22"),
            ],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("class=\"field-error\""));
    assert!(
        body.contains("not-an-address"),
        "the typed value comes back"
    );
    assert!(body.contains("textarea name=\"addresses\" rows=\"2\" class=\"invalid\""));

    let (status, _, body) = w
        .post(
            &admin,
            "/resources",
            &[
                ("_csrf", &admin.csrf),
                ("name", "git"),
                ("site_id", &site_id),
                ("addresses", "10.0.0.1"),
                ("ports", "tcp/0"),
            ],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("port 0"), "{body}");

    let (status, _, body) = w
        .post(
            &admin,
            "/sites",
            &[("_csrf", &admin.csrf), ("name", "hq")],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a duplicate name");
    assert!(body.contains("already exists"));
}

#[tokio::test]
async fn destructive_actions_ask_first() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let site = w
        .service
        .create_site(&Actor::cli(), SiteInput { name: "hq".into() })
        .await
        .unwrap();
    let path = format!("/sites/{}/delete", site.id);
    let (status, _, body) = w
        .post(&admin, &path, &[("_csrf", &admin.csrf)], SAME_ORIGIN)
        .await;
    assert_eq!(status, StatusCode::OK, "a confirmation page");
    assert!(body.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(w.site_names().await, ["hq"]);
    let (status, _, _) = w
        .post(
            &admin,
            &path,
            &[("_csrf", &admin.csrf), ("confirm", "yes")],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(w.site_names().await.is_empty());
}

#[tokio::test]
async fn pages_need_a_session_and_come_back_after_sign_in() {
    let w = world().await;
    let _admin = w.user("admin@example.com", Role::Admin).await;
    let (status, h, _) = w.get(None, "/grants?q=ann").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/signin?next=%2Fgrants%3Fq%3Dann");

    let (status, h, body) = w.get(None, "/signin?next=%2Fgrants").await;
    assert_eq!(status, StatusCode::OK);
    let anon = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(ANON_CSRF_COOKIE))
        .unwrap();
    assert!(
        anon.contains("Secure") && anon.contains("HttpOnly") && anon.contains("SameSite=Strict")
    );
    let token = anon
        .split(';')
        .next()
        .unwrap()
        .split_once('=')
        .unwrap()
        .1
        .to_owned();
    assert!(body.contains(&token));
    let browser = Browser {
        cookie: format!("{ANON_CSRF_COOKIE}={token}"),
        csrf: token.clone(),
    };
    let form = [
        ("_csrf", token.as_str()),
        ("next", "/grants"),
        ("email", "admin@example.com"),
        ("password", PASSWORD),
    ];
    // The pre-session token is checked too.
    let (status, _, _) = w
        .post(
            &browser,
            "/signin",
            &[("email", "admin@example.com"), ("password", PASSWORD)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, h, _) = w.post(&browser, "/signin", &form, SAME_ORIGIN).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/grants");
    let session = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(SESSION_COOKIE))
        .unwrap();
    assert!(
        session.contains("Secure")
            && session.contains("HttpOnly")
            && session.contains("SameSite=Strict")
    );

    let wrong = [
        ("_csrf", token.as_str()),
        ("email", "admin@example.com"),
        ("password", "wrong password!!"),
    ];
    let (status, _, body) = w.post(&browser, "/signin", &wrong, SAME_ORIGIN).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("password is wrong"));
}

#[tokio::test]
async fn an_account_with_totp_gets_a_second_step() {
    let w = world().await;
    let _admin = w.user("admin@example.com", Role::Admin).await;
    let ann = w.user("ann@example.com", Role::User).await;
    let token = ann.cookie.split_once('=').unwrap().1;
    let signed_in = w.service.web_session(token).await.unwrap();
    let enrollment = w.service.start_totp(&signed_in).await.unwrap();
    let now = jiff::Timestamp::now();
    let code = crate::totp_code_at(&enrollment.secret, now.as_second()).unwrap();
    w.service
        .confirm_totp_at(&signed_in, crate::app::TotpCode { code }, now)
        .await
        .unwrap();
    let anon = Browser {
        cookie: format!("{ANON_CSRF_COOKIE}={}", "a".repeat(64)),
        csrf: String::new(),
    };
    let csrf = "a".repeat(64);
    let (status, _, body) = w
        .post(
            &anon,
            "/signin",
            &[
                ("_csrf", &csrf),
                ("email", "ann@example.com"),
                ("password", PASSWORD),
            ],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Authenticator code"), "{body}");
    assert!(body.contains("name=\"totp\""));
}

#[tokio::test]
async fn setup_creates_the_first_admin_and_signs_them_in() {
    let w = world().await;
    let code = w.service.prepare_setup().await.unwrap().unwrap();
    let (status, h, _) = w.get(None, "/").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/signin");
    let (status, h, _) = w.get(None, "/signin").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/setup");
    let (status, _, body) = w.get(None, "/setup").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Setup code"));

    let csrf = "b".repeat(64);
    let anon = Browser {
        cookie: format!("{ANON_CSRF_COOKIE}={csrf}"),
        csrf: csrf.clone(),
    };
    let short = [
        ("_csrf", csrf.as_str()),
        ("code", code.as_str()),
        ("name", "Root"),
        ("email", "root@example.com"),
        ("password", "short"),
    ];
    let (status, _, body) = w.post(&anon, "/setup", &short, SAME_ORIGIN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("12 to 1024 characters"));
    let wrong = [
        ("_csrf", csrf.as_str()),
        ("code", "not-the-code"),
        ("name", "Root"),
        ("email", "root@example.com"),
        ("password", PASSWORD),
    ];
    let (status, _, body) = w.post(&anon, "/setup", &wrong, SAME_ORIGIN).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("setup code is wrong"));

    let good = [
        ("_csrf", csrf.as_str()),
        ("code", code.as_str()),
        ("name", "Root"),
        ("email", "root@example.com"),
        ("password", PASSWORD),
    ];
    let (status, h, body) = w.post(&anon, "/setup", &good, SAME_ORIGIN).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("pst_"), "the API token is shown once");
    let session = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with(SESSION_COOKIE))
        .unwrap();
    let cookie = session.split(';').next().unwrap().to_owned();
    let (status, _, _) = w
        .get(
            Some(&Browser {
                cookie,
                csrf: String::new(),
            }),
            "/sites",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "signed in");
    let (status, h, _) = w.get(None, "/setup").await;
    assert_eq!(status, StatusCode::SEE_OTHER, "setup is over");
    assert_eq!(h[header::LOCATION], "/signin");
}

#[tokio::test]
async fn every_page_renders_for_an_admin() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let cli = Actor::cli();
    let site = w
        .service
        .create_site(&cli, SiteInput { name: "hq".into() })
        .await
        .unwrap();
    let r = w
        .service
        .create_resource(
            &cli,
            crate::app::ResourceInput {
                name: "git".into(),
                site_id: site.id,
                addresses: vec!["10.0.0.1".into()],
                ports: vec!["tcp/22".into()],
            },
        )
        .await
        .unwrap();
    let g = w
        .service
        .create_group(
            &cli,
            crate::app::GroupInput {
                name: "eng".into(),
                description: String::new(),
            },
        )
        .await
        .unwrap();
    let ann = w
        .service
        .create_user(
            &cli,
            UserInput {
                email: "ann@example.com".into(),
                name: "Ann".into(),
                role: None,
            },
        )
        .await
        .unwrap();
    w.service
        .add_member(&cli, g.id, crate::app::MemberInput { user_id: ann.id })
        .await
        .unwrap();
    // A policy made through the form, with a time window.
    let (status, _, body) = w
        .post(
            &admin,
            "/policies",
            &[
                ("_csrf", &admin.csrf),
                ("name", "eng-git"),
                ("action", "allow"),
                ("group_id", &g.id.to_string()),
                ("resource_id", &r.id.to_string()),
                ("days", "mon"),
                ("days", "fri"),
                ("start", "09:00"),
                ("end", "25:00"),
                ("time_zone", "Europe/Berlin"),
            ],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "25:00 is no time");
    assert!(body.contains("25:00"));
    let (status, _, _) = w
        .post(
            &admin,
            "/policies",
            &[
                ("_csrf", &admin.csrf),
                ("name", "eng-git"),
                ("action", "allow"),
                ("group_id", &g.id.to_string()),
                ("resource_id", &r.id.to_string()),
                ("days", "mon"),
                ("days", "fri"),
                ("start", "09:00"),
                ("end", "18:00"),
                ("time_zone", "Europe/Berlin"),
            ],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let policy = w.service.list_policies(&cli).await.unwrap().remove(0);
    assert_eq!(policy.conditions.time_windows.len(), 1);

    let (status, _, body) = w.get(Some(&admin), &format!("/resources/{}", r.id)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Who can reach this?"));
    assert!(
        body.contains("ann@example.com"),
        "Ann reaches git through eng"
    );
    assert!(body.contains("Mon, Fri 09:00–18:00 (Europe/Berlin)"));

    for path in [
        "/".to_owned(),
        "/sites".into(),
        format!("/sites/{}", site.id),
        "/resources".into(),
        "/users".into(),
        format!("/users/{}", ann.id),
        "/groups".into(),
        format!("/groups/{}", g.id),
        "/policies".into(),
        format!("/policies/{}", policy.id),
        "/posture".into(),
        "/devices".into(),
        "/grants".into(),
        "/audit".into(),
        "/audit?kind=decision.&range=24h".into(),
        "/settings".into(),
        "/my".into(),
        "/device".into(),
    ] {
        let (status, _, body) = w.get(Some(&admin), &path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, h, body) = w.get(Some(&admin), "/audit/export?kind=policy.").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h[header::CONTENT_TYPE], "application/x-ndjson");
    assert!(body.lines().count() >= 1);
    assert!(body.contains("policy.created"));
    let (status, _, _) = w.get(Some(&admin), "/sites/not-an-id").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_gateway_token_page_shows_the_commands() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let site = w
        .service
        .create_site(
            &Actor::cli(),
            SiteInput {
                name: "HQ Berlin".into(),
            },
        )
        .await
        .unwrap();
    let (status, _, body) = w
        .post(
            &admin,
            &format!("/sites/{}/gateway-tokens", site.id),
            &[("_csrf", &admin.csrf)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("pgt_"));
    assert!(body.contains("docker run -d --name hq-berlin-gw-1"));
    assert!(body.contains("POSTERN_CONTROLLER=https://controller.test:8443"));
    assert!(body.contains("--cap-add NET_ADMIN --device /dev/net/tun"));
    assert!(body.contains("image: postern-gateway"));
    let tokens = w
        .service
        .list_gateway_tokens(&Actor::cli(), site.id)
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn a_client_sign_in_is_approved_on_the_device_page() {
    let w = world().await;
    let _admin = w.user("admin@example.com", Role::Admin).await;
    let ann = w.user("ann@example.com", Role::User).await;
    let key = proto::device::DeviceKey::generate();
    let start = w
        .service
        .start_device_authorization(
            crate::app::DeviceAuthorizationInput {
                public_key: key.public_key(),
                name: "ann-laptop".into(),
            },
            None,
            "https://controller.test:8443",
        )
        .await
        .unwrap();
    let (status, h, _) = w
        .get(None, &format!("/device?code={}", start.user_code))
        .await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "sign in first, then come back"
    );
    assert!(
        h[header::LOCATION]
            .to_str()
            .unwrap()
            .starts_with("/signin?next=%2Fdevice%3Fcode%3D")
    );
    let (status, _, body) = w
        .get(Some(&ann), &format!("/device?code={}", start.user_code))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("ann-laptop"));
    assert!(
        body.contains(&key.fingerprint()),
        "the key's fingerprint is shown"
    );
    let (status, _, _) = w
        .post(
            &ann,
            "/device/approve",
            &[("user_code", &start.user_code)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "approval needs the form token"
    );
    let (status, _, body) = w
        .post(
            &ann,
            "/device/approve",
            &[("_csrf", &ann.csrf), ("user_code", &start.user_code)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("Device approved"));
    let (status, _, body) = w
        .post(
            &ann,
            "/device/approve",
            &[("_csrf", &ann.csrf), ("user_code", &start.user_code)],
            SAME_ORIGIN,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.contains("already answered"));
    let session = w
        .service
        .poll_device_authorization(&start.device_code)
        .await
        .unwrap();
    assert_eq!(session.user_name, "ann@example.com");
}

#[tokio::test]
async fn the_audit_log_pages_without_skipping_or_repeating() {
    let w = world().await;
    let admin = w.user("admin@example.com", Role::Admin).await;
    let cli = Actor::cli();
    for i in 0..120 {
        w.service
            .create_site(
                &cli,
                SiteInput {
                    name: format!("site-{i:03}"),
                },
            )
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut next = Some("/audit?kind=site.".to_owned());
    while let Some(path) = next.take() {
        assert!(seen.len() <= 120, "paging must end");
        let (status, _, body) = w
            .get(
                Some(&admin),
                &path.replace("&#38;", "&").replace("&amp;", "&"),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        for part in body.split("\">site ").skip(1) {
            seen.push(part.split('<').next().unwrap().to_owned());
        }
        next = body
            .split("href=\"")
            .find(|p| p.contains("rel=\"next\""))
            .map(|p| p.split('"').next().unwrap().to_owned());
    }
    let mut want: Vec<String> = (0..120).rev().map(|i| format!("site-{i:03}")).collect();
    assert_eq!(seen.len(), 120, "{seen:?}");
    seen.sort();
    want.sort();
    assert_eq!(seen, want);
}
