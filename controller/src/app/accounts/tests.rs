//! Local accounts and web sessions through the services, with time moved by hand.

use jiff::{SignedDuration, Timestamp};
use model::{Role, UserId};

use super::*;
use crate::app::{UserInput, UserPatch};
use store::{AuditFilter, Store};

const PASSWORD: &str = "correct horse battery";
const EMAIL: &str = "ada@example.com";

fn t0() -> Timestamp {
    "2026-11-25T09:00:00Z".parse().unwrap()
}

fn at(secs: i64) -> Timestamp {
    t0().checked_add(SignedDuration::from_secs(secs)).unwrap()
}

struct World {
    service: Service,
    user: UserId,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::new(Store::open_sqlite(dir.path()).await.unwrap());
    let cli = Actor::cli();
    // An admin elsewhere, so that disabling the test user leaves one.
    service
        .create_user(
            &cli,
            UserInput {
                email: "root@example.com".into(),
                name: "Root".into(),
                role: Some(Role::Admin),
            },
        )
        .await
        .unwrap();
    let user = service
        .create_user(
            &cli,
            UserInput {
                email: EMAIL.into(),
                name: "Ada".into(),
                role: None,
            },
        )
        .await
        .unwrap();
    service
        .set_password(
            &cli,
            user.id,
            PasswordInput {
                password: PASSWORD.into(),
            },
        )
        .await
        .unwrap();
    World {
        service,
        user: user.id,
        _dir: dir,
    }
}

fn login(email: &str, password: &str) -> LoginInput {
    LoginInput {
        email: email.into(),
        password: password.into(),
        totp: None,
        recovery_code: None,
    }
}

fn with_totp(code: &str) -> LoginInput {
    LoginInput {
        totp: Some(code.into()),
        ..login(EMAIL, PASSWORD)
    }
}

fn with_recovery(code: &str) -> LoginInput {
    LoginInput {
        recovery_code: Some(code.into()),
        ..login(EMAIL, PASSWORD)
    }
}

/// Signs in with the password, enrolls TOTP at t0 and returns its secret and recovery codes.
async fn enroll_totp(w: &World) -> (String, Vec<String>) {
    let s = w
        .service
        .login_at(login(EMAIL, PASSWORD), t0())
        .await
        .unwrap();
    let signed_in = w.service.web_session_at(&s.token, t0()).await.unwrap();
    let enrollment = w.service.start_totp(&signed_in).await.unwrap();
    assert_eq!(
        enrollment.otpauth_uri,
        format!(
            "otpauth://totp/Postern:{EMAIL}?secret={}&issuer=Postern",
            enrollment.secret
        )
    );
    assert!(enrollment.qr_svg.contains("<svg"));
    let wrong = w
        .service
        .confirm_totp_at(
            &signed_in,
            TotpCode {
                code: "000000".into(),
            },
            t0(),
        )
        .await;
    assert!(matches!(wrong, Err(ServiceError::Invalid(_))), "{wrong:?}");
    let code = totp::code_at(&enrollment.secret, t0().as_second()).unwrap();
    let codes = w
        .service
        .confirm_totp_at(&signed_in, TotpCode { code }, t0())
        .await
        .unwrap();
    assert_eq!(codes.codes.len(), RECOVERY_CODE_COUNT);
    (enrollment.secret, codes.codes)
}

fn code(secret: &str, t: Timestamp) -> String {
    totp::code_at(secret, t.as_second()).unwrap()
}

fn unauthorized(r: Result<NewSession>) -> String {
    match r {
        Err(ServiceError::Unauthorized(m)) => m.to_owned(),
        other => panic!("expected unauthorized, got {other:?}"),
    }
}

async fn audit_kinds(w: &World) -> Vec<String> {
    w.service
        .audit_log(
            &Actor::cli(),
            AuditFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

#[tokio::test]
async fn password_sign_in_makes_a_session_and_records_the_provider() {
    let w = world().await;
    let s = w
        .service
        .login_at(login(" Ada@Example.com ", PASSWORD), t0())
        .await
        .unwrap();
    assert_eq!(s.me.user.id, w.user);
    assert_eq!(s.me.identity_provider.as_deref(), Some("local"));
    assert_eq!(s.me.last_mfa_at, None);
    assert!(!s.me.totp_enabled);
    assert_eq!(s.me.session.expires_at, at(12 * 3600));
    let signed_in = w.service.web_session_at(&s.token, at(60)).await.unwrap();
    assert_eq!(signed_in.session.id, s.me.session.id);
    assert_eq!(signed_in.session.last_seen_at, at(60));
    assert!(
        audit_kinds(&w)
            .await
            .contains(&"auth.login_succeeded".to_owned())
    );
}

#[tokio::test]
async fn every_sign_in_makes_a_new_session_id() {
    let w = world().await;
    let a = w
        .service
        .login_at(login(EMAIL, PASSWORD), t0())
        .await
        .unwrap();
    let b = w
        .service
        .login_at(login(EMAIL, PASSWORD), t0())
        .await
        .unwrap();
    assert_ne!(a.token, b.token);
    assert_ne!(a.me.session.id, b.me.session.id);
}

#[tokio::test]
async fn unknown_email_and_wrong_password_get_the_same_answer() {
    let w = world().await;
    let unknown = unauthorized(
        w.service
            .login_at(login("nobody@example.com", PASSWORD), t0())
            .await,
    );
    let wrong = unauthorized(
        w.service
            .login_at(login(EMAIL, "wrong password!"), t0())
            .await,
    );
    assert_eq!(unknown, wrong);
    // A user without a local password looks the same too.
    let no_password = unauthorized(
        w.service
            .login_at(login("root@example.com", PASSWORD), t0())
            .await,
    );
    assert_eq!(no_password, wrong);
}

#[tokio::test]
async fn five_failures_lock_the_account_for_fifteen_minutes() {
    let w = world().await;
    for i in 0..4 {
        unauthorized(
            w.service
                .login_at(login(EMAIL, "wrong password!"), at(i))
                .await,
        );
    }
    let fifth = w
        .service
        .login_at(login(EMAIL, "wrong password!"), at(4))
        .await;
    match fifth {
        Err(e @ ServiceError::Locked { .. }) => {
            let m = e.to_string();
            assert_eq!(m, "too many failed sign-ins; try again after 09:16 UTC");
        }
        other => panic!("expected a lockout, got {other:?}"),
    }
    // Locked even with the right password.
    let locked = w.service.login_at(login(EMAIL, PASSWORD), at(600)).await;
    assert!(
        matches!(locked, Err(ServiceError::Locked { .. })),
        "{locked:?}"
    );
    // After the period, the right password works again.
    w.service
        .login_at(login(EMAIL, PASSWORD), at(15 * 60 + 5))
        .await
        .unwrap();
    let kinds = audit_kinds(&w).await;
    assert!(kinds.contains(&"auth.locked".to_owned()));
    assert_eq!(
        kinds.iter().filter(|k| *k == "auth.login_failed").count(),
        6
    );
}

#[tokio::test]
async fn unknown_addresses_lock_like_real_accounts() {
    let w = world().await;
    let mut answers = Vec::new();
    for email in [EMAIL, "nobody@example.com"] {
        let mut seen = Vec::new();
        for i in 0..6 {
            seen.push(
                w.service
                    .login_at(login(email, "wrong password!"), at(i))
                    .await
                    .unwrap_err()
                    .to_string(),
            );
        }
        answers.push(seen);
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[1][4].starts_with("too many failed sign-ins"));
    // And both unlock after the period.
    let later = at(15 * 60 + 10);
    w.service
        .login_at(login(EMAIL, PASSWORD), later)
        .await
        .unwrap();
    let unknown = unauthorized(
        w.service
            .login_at(login("nobody@example.com", "wrong password!"), later)
            .await,
    );
    assert_eq!(unknown, WRONG_CREDENTIALS);
}

#[tokio::test]
async fn a_success_resets_the_failure_count() {
    let w = world().await;
    for i in 0..4 {
        unauthorized(
            w.service
                .login_at(login(EMAIL, "wrong password!"), at(i))
                .await,
        );
    }
    w.service
        .login_at(login(EMAIL, PASSWORD), at(5))
        .await
        .unwrap();
    for i in 0..4 {
        unauthorized(
            w.service
                .login_at(login(EMAIL, "wrong password!"), at(10 + i))
                .await,
        );
    }
    w.service
        .login_at(login(EMAIL, PASSWORD), at(20))
        .await
        .unwrap();
}

#[tokio::test]
async fn totp_is_required_checked_and_not_replayable() {
    let w = world().await;
    let (secret, _) = enroll_totp(&w).await;

    let missing = unauthorized(w.service.login_at(login(EMAIL, PASSWORD), at(30)).await);
    assert_eq!(missing, MFA_REQUIRED);
    let wrong = unauthorized(w.service.login_at(with_totp("123456"), at(30)).await);
    assert_eq!(wrong, WRONG_CODE);

    let t1 = at(60);
    let s = w
        .service
        .login_at(with_totp(&code(&secret, t1)), t1)
        .await
        .unwrap();
    assert_eq!(s.me.last_mfa_at, Some(t1));
    assert_eq!(s.me.session.mfa_at, Some(t1));
    assert!(s.me.totp_enabled);

    // The same code again within its window: a replay.
    let replay = unauthorized(
        w.service
            .login_at(with_totp(&code(&secret, t1)), at(70))
            .await,
    );
    assert_eq!(replay, WRONG_CODE);
    // The previous step's code is still inside the window but older than the used one.
    let older = unauthorized(
        w.service
            .login_at(with_totp(&code(&secret, at(30))), at(75))
            .await,
    );
    assert_eq!(older, WRONG_CODE);
    // The next step's code works.
    w.service
        .login_at(with_totp(&code(&secret, at(90))), at(90))
        .await
        .unwrap();
    let kinds = audit_kinds(&w).await;
    assert!(kinds.contains(&"auth.totp_confirmed".to_owned()));
}

#[tokio::test]
async fn a_recovery_code_works_once() {
    let w = world().await;
    let (_, codes) = enroll_totp(&w).await;
    let s = w
        .service
        .login_at(with_recovery(&codes[3].to_lowercase()), at(60))
        .await
        .unwrap();
    assert_eq!(s.me.last_mfa_at, Some(at(60)));
    assert_eq!(s.me.recovery_codes_left, 9);
    let again = unauthorized(w.service.login_at(with_recovery(&codes[3]), at(90)).await);
    assert_eq!(again, WRONG_CODE);
    let made_up = unauthorized(
        w.service
            .login_at(with_recovery("AAAAA-AAAAA"), at(90))
            .await,
    );
    assert_eq!(made_up, WRONG_CODE);
}

#[tokio::test]
async fn new_recovery_codes_replace_the_old_ones() {
    let w = world().await;
    let (secret, old) = enroll_totp(&w).await;
    let s = w
        .service
        .login_at(with_recovery(&old[0]), at(30))
        .await
        .unwrap();
    let signed_in = w.service.web_session_at(&s.token, at(30)).await.unwrap();
    let new = w
        .service
        .new_recovery_codes_at(
            &signed_in,
            TotpCode {
                code: code(&secret, at(60)),
            },
            at(60),
        )
        .await
        .unwrap();
    assert_eq!(new.codes.len(), RECOVERY_CODE_COUNT);
    unauthorized(w.service.login_at(with_recovery(&old[1]), at(90)).await);
    w.service
        .login_at(with_recovery(&new.codes[0]), at(90))
        .await
        .unwrap();
}

#[tokio::test]
async fn sessions_end_when_idle_or_too_old() {
    let w = world().await;
    let s = w
        .service
        .login_at(login(EMAIL, PASSWORD), t0())
        .await
        .unwrap();
    // Used every 20 minutes it stays alive until its absolute end.
    let mut t = 0;
    while t + 20 * 60 < 12 * 3600 {
        t += 20 * 60;
        w.service.web_session_at(&s.token, at(t)).await.unwrap();
    }
    let expired = w.service.web_session_at(&s.token, at(12 * 3600)).await;
    assert!(
        matches!(expired, Err(ServiceError::Unauthorized(_))),
        "{expired:?}"
    );

    let idle = w
        .service
        .login_at(login(EMAIL, PASSWORD), t0())
        .await
        .unwrap();
    w.service
        .web_session_at(&idle.token, at(29 * 60))
        .await
        .unwrap();
    let gone = w
        .service
        .web_session_at(&idle.token, at(29 * 60 + 30 * 60))
        .await;
    assert!(
        matches!(gone, Err(ServiceError::Unauthorized(_))),
        "{gone:?}"
    );
    // Ended means ended, even when asked about an earlier time.
    let still = w.service.web_session_at(&idle.token, at(30 * 60)).await;
    assert!(
        matches!(still, Err(ServiceError::Unauthorized(_))),
        "{still:?}"
    );
}

#[tokio::test]
async fn sessions_end_at_logout_and_when_the_user_is_disabled() {
    let w = world().await;
    let now = crate::app::now();
    let a = w
        .service
        .login_at(login(EMAIL, PASSWORD), now)
        .await
        .unwrap();
    let b = w
        .service
        .login_at(login(EMAIL, PASSWORD), now)
        .await
        .unwrap();
    let signed_in = w.service.web_session_at(&a.token, now).await.unwrap();
    w.service.logout(&signed_in).await.unwrap();
    assert!(w.service.web_session_at(&a.token, now).await.is_err());
    w.service.web_session_at(&b.token, now).await.unwrap();

    w.service
        .update_user(
            &Actor::cli(),
            w.user,
            UserPatch {
                disabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(w.service.web_session_at(&b.token, now).await.is_err());
    let sessions = store::list_web_sessions(&mut w.service.store.conn().await.unwrap(), w.user)
        .await
        .unwrap();
    assert!(sessions.iter().all(|s| s.ended_at.is_some()));
    assert!(
        audit_kinds(&w)
            .await
            .contains(&"auth.sessions_ended".to_owned())
    );
    // A disabled user cannot sign in, even with the right password.
    unauthorized(w.service.login_at(login(EMAIL, PASSWORD), now).await);
}

#[tokio::test]
async fn passwords_are_set_by_admins_and_changed_by_their_owner() {
    let w = world().await;
    let short = w
        .service
        .set_password(
            &Actor::cli(),
            w.user,
            PasswordInput {
                password: "short".into(),
            },
        )
        .await;
    assert!(matches!(short, Err(ServiceError::Invalid(_))), "{short:?}");
    let auditor = Actor {
        id: "token:x".into(),
        name: "auditor".into(),
        role: Role::Auditor,
    };
    let forbidden = w
        .service
        .set_password(
            &auditor,
            w.user,
            PasswordInput {
                password: "long enough password".into(),
            },
        )
        .await;
    assert!(
        matches!(forbidden, Err(ServiceError::Forbidden(_))),
        "{forbidden:?}"
    );

    let now = crate::app::now();
    let mine = w
        .service
        .login_at(login(EMAIL, PASSWORD), now)
        .await
        .unwrap();
    let other = w
        .service
        .login_at(login(EMAIL, PASSWORD), now)
        .await
        .unwrap();
    let signed_in = w.service.web_session_at(&mine.token, now).await.unwrap();
    let wrong = w
        .service
        .change_password(
            &signed_in,
            PasswordChange {
                current_password: "not my password".into(),
                new_password: "a brand new password".into(),
            },
        )
        .await;
    assert!(
        matches!(wrong, Err(ServiceError::Unauthorized(_))),
        "{wrong:?}"
    );
    w.service
        .change_password(
            &signed_in,
            PasswordChange {
                current_password: PASSWORD.into(),
                new_password: "a brand new password".into(),
            },
        )
        .await
        .unwrap();
    w.service.web_session_at(&mine.token, now).await.unwrap();
    assert!(w.service.web_session_at(&other.token, now).await.is_err());
    unauthorized(w.service.login_at(login(EMAIL, PASSWORD), now).await);
    w.service
        .login_at(login(EMAIL, "a brand new password"), now)
        .await
        .unwrap();

    // An admin reset ends every session and clears a lockout.
    for _ in 0..5 {
        let _ = w
            .service
            .login_at(login(EMAIL, "wrong password!"), now)
            .await;
    }
    w.service
        .set_password(
            &Actor::cli(),
            w.user,
            PasswordInput {
                password: PASSWORD.into(),
            },
        )
        .await
        .unwrap();
    assert!(w.service.web_session_at(&mine.token, now).await.is_err());
    w.service
        .login_at(login(EMAIL, PASSWORD), now)
        .await
        .unwrap();
}

#[tokio::test]
async fn secrets_stay_out_of_the_audit_log() {
    let w = world().await;
    let (secret, codes) = enroll_totp(&w).await;
    let code1 = code(&secret, at(30));
    let s = w.service.login_at(with_totp(&code1), at(30)).await.unwrap();
    let _ = w
        .service
        .login_at(with_recovery(&codes[0]), at(60))
        .await
        .unwrap();
    let _ = w
        .service
        .login_at(login(EMAIL, "wrong password!"), at(60))
        .await;
    let events = w
        .service
        .audit_log(
            &Actor::cli(),
            AuditFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&events).unwrap();
    for needle in [
        PASSWORD,
        "wrong password!",
        &secret,
        &code1,
        &codes[0],
        &s.token,
    ] {
        assert!(!text.contains(needle), "the audit log holds a secret");
    }
    let debug = format!("{s:?} {:?}", with_totp(&code1));
    for needle in [PASSWORD, &code1, &s.token] {
        assert!(!debug.contains(needle), "Debug shows a secret");
    }
}

#[test]
fn otpauth_labels_are_escaped() {
    assert_eq!(
        otpauth_uri("a b@x.org", "ABC"),
        "otpauth://totp/Postern:a%20b@x.org?secret=ABC&issuer=Postern"
    );
}
