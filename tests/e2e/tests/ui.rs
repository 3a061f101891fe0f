//! The admin web UI in a real browser (Debian's headless chromium through chromedriver),
//! against the real controller and a real gateway in network namespaces:
//!
//! - an admin completes first-run setup with the printed code, signs out and in again,
//!   creates a site and a gateway token (the token from the page enrolls the real gateway),
//!   a resource (a wrong address is named as the failing field), users, a group with a
//!   member and a policy, and sees who can reach the resource;
//! - a grant issued through the access API appears on the live grants page, is revoked
//!   there through the confirmation dialog, and the gateway drops its peer;
//! - a cross-site form post is refused;
//! - an auditor sees every page, gets no forms or buttons, and a hand-made POST is refused.
//!
//! Screenshots of the main pages land in `target/ui-screenshots/`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use e2e::browser::{
    AdminApi, ChromeDriver, FreshController, gateway_metric, screenshot, start_gateway,
};
use e2e::topology::{CLIENT, RESOURCE_1, Topology};
use e2e::wait_for;
use e2e::wg::KeyPair;
use fantoccini::{Client, Locator};
use serde_json::json;

const PASSWORD: &str = "a long admin password";
const AUDITOR_PASSWORD: &str = "a long auditor password";

async fn text(c: &Client, css: &str) -> String {
    // A page that is still loading can swap the element out under us: ask again.
    for _ in 0..50 {
        if let Ok(e) = c.find(Locator::Css(css)).await
            && let Ok(t) = e.text().await
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no text for {css}");
}

async fn fill(c: &Client, form_css: &str, fields: &[(&str, &str)]) {
    let form = c.form(Locator::Css(form_css)).await.unwrap();
    for (name, value) in fields {
        form.set_by_name(name, value).await.unwrap();
    }
}

async fn submit(c: &Client, form_css: &str) {
    c.find(Locator::Css(&format!("{form_css} button[type=submit]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits for an element; the error says which one.
async fn wait_el(c: &Client, l: Locator<'_>) -> anyhow::Result<fantoccini::elements::Element> {
    let what = format!("{l:?}");
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(l)
        .await
        .map_err(|e| anyhow::anyhow!("waiting for {what}: {e}"))
}

/// Whether the page is wider than the window (a horizontal scroll bar).
async fn overflows(c: &Client) -> bool {
    c.execute(
        "return document.documentElement.scrollWidth > window.innerWidth + 1;",
        vec![],
    )
    .await
    .unwrap()
    .as_bool()
    .unwrap_or(true)
}

/// Waits for the one-time notice that an action succeeded.
async fn wait_flash(c: &Client, notice: &str) -> anyhow::Result<()> {
    wait_el(
        c,
        Locator::XPath(&format!(
            "//div[@class='flash' and contains(., \"{notice}\")]"
        )),
    )
    .await
    .map(|_| ())
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

async fn body(c: &Client) -> String {
    text(c, "body").await
}

async fn sign_in(c: &Client, base: &str, email: &str, password: &str) {
    c.goto(&format!("{base}/signin")).await.unwrap();
    fill(
        c,
        "form[action='/signin']",
        &[("email", email), ("password", password)],
    )
    .await;
    submit(c, "form[action='/signin']").await;
    wait_el(c, Locator::Css("aside.sidebar")).await.unwrap();
}

async fn sign_out(c: &Client) {
    c.find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_el(c, Locator::Css("form[action='/signin']"))
        .await
        .unwrap();
}

/// Posts forms that other sites cannot: the number of `form[method=post]` besides sign-out.
async fn post_forms(c: &Client) -> usize {
    c.find_all(Locator::Css("form[method=post]:not(.signout)"))
        .await
        .unwrap()
        .len()
}

#[test]
fn admin_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let t = Arc::new(Topology::new().unwrap());
    let ctl = Arc::new(FreshController::start(&t, dir.path()).unwrap());
    let driver = ChromeDriver::start(&t.controller, &dir.path().join("chromedriver.log"))
        .expect("chromedriver must be installed: apt-get install -y chromium chromium-driver");
    let ns = format!("/var/run/netns/{}", t.controller.name());
    let work: PathBuf = dir.path().to_path_buf();
    let _ = std::fs::remove_file(e2e::browser::screenshot_dir().join("failure.png"));

    let (t2, ctl2) = (t.clone(), ctl.clone());
    let outcome = e2e::in_namespace(&ns, async move {
        let c = driver
            .session(&work.join("chromium-profile"))
            .await
            .unwrap();
        let result = scenario(&c, &t2, &ctl2, &work).await;
        if let Err(e) = &result {
            let _ = screenshot(&c, "failure").await;
            let url = c
                .current_url()
                .await
                .map(|u| u.to_string())
                .unwrap_or_default();
            let page = c.source().await.unwrap_or_default();
            eprintln!("failed at {url}: {e:#}\n{page}");
        }
        let _ = c.close().await;
        drop(driver);
        result
    });
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!(
            "{e:#}\ncontroller log:\n{}",
            std::fs::read_to_string(&ctl.log).unwrap_or_default()
        ),
        Err(e) => panic!(
            "{e:#}\ncontroller log:\n{}",
            std::fs::read_to_string(&ctl.log).unwrap_or_default()
        ),
    }
}

async fn scenario(
    c: &Client,
    t: &Topology,
    ctl: &FreshController,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let base = ctl.url.clone();
    c.set_window_size(1280, 900).await?;

    // ---------------------------------------------------------------- first-run setup
    c.goto(&format!("{base}/")).await?;
    assert_eq!(
        path_of(c).await,
        "/setup",
        "a fresh controller asks for setup"
    );
    fill(
        c,
        "form[action='/setup']",
        &[
            ("code", &ctl.setup_code),
            ("name", "Alex Admin"),
            ("email", "admin@example.com"),
            ("password", PASSWORD),
        ],
    )
    .await;
    screenshot(c, "01-setup").await?;
    submit(c, "form[action='/setup']").await;
    wait_el(c, Locator::Id("setup-token")).await?;
    let api_token = text(c, "#setup-token").await;
    assert!(
        api_token.starts_with("pst_"),
        "the admin's API token is shown once"
    );
    screenshot(c, "02-setup-done").await?;
    let api: AdminApi = ctl.api(t, &api_token);

    // ---------------------------------------------------------------- sign out and in
    sign_out(c).await;
    c.goto(&format!("{base}/signin")).await?;
    fill(
        c,
        "form[action='/signin']",
        &[
            ("email", "admin@example.com"),
            ("password", "not the password"),
        ],
    )
    .await;
    submit(c, "form[action='/signin']").await;
    wait_el(c, Locator::Css(".alert.bad")).await?;
    assert!(body(c).await.contains("password is wrong"));
    screenshot(c, "03-signin").await?;
    sign_in(c, &base, "admin@example.com", PASSWORD).await;
    assert_eq!(path_of(c).await, "/");
    assert!(body(c).await.contains("Getting started"));
    screenshot(c, "04-dashboard-empty").await?;

    // ---------------------------------------------------------------- site and gateway
    c.goto(&format!("{base}/sites")).await?;
    assert!(
        body(c).await.contains("No sites yet"),
        "the empty state says what to do"
    );
    fill(c, "form[action='/sites']", &[("name", "hq")]).await;
    submit(c, "form[action='/sites']").await;
    wait_el(c, Locator::Id("new-gateway-token")).await?;
    assert!(body(c).await.contains("Site hq created"));
    c.find(Locator::Id("new-gateway-token"))
        .await?
        .click()
        .await?;
    wait_el(c, Locator::Id("gateway-token")).await?;
    let gateway_token = text(c, "#gateway-token").await;
    let docker = text(c, "#docker-run").await;
    assert!(gateway_token.starts_with("pgt_"));
    assert!(
        docker.contains(&format!("POSTERN_TOKEN={gateway_token}")),
        "{docker}"
    );
    assert!(
        docker.contains(&format!(
            "POSTERN_CONTROLLER_FINGERPRINT={}",
            ctl.fingerprint
        )),
        "{docker}"
    );
    assert!(
        docker.contains(&format!("POSTERN_CONTROLLER={base}")),
        "{docker}"
    );
    assert!(text(c, "#compose").await.contains("cap_add"));
    assert!(
        !overflows(c).await,
        "long commands scroll inside their box, not the page"
    );
    screenshot(c, "05-gateway-token").await?;

    // The token from the page enrolls the real gateway.
    let _gateway = start_gateway(t, ctl, &gateway_token, "hq-gw-1", dir)?;
    wait_for(Duration::from_secs(30), || {
        let list = api.ok("GET", "/api/v1/gateways", None).ok()?;
        list.as_array()?
            .iter()
            .any(|g| g["online"] == true)
            .then_some(())
    })
    .expect("the gateway comes online with the token from the page");
    c.find(Locator::Css("a.btn.primary[href^='/sites/']"))
        .await?
        .click()
        .await?;
    wait_el(c, Locator::Css(".pill.ok")).await?;
    assert!(body(c).await.contains("hq-gw-1"));
    screenshot(c, "06-site").await?;

    // ---------------------------------------------------------------- resource
    c.goto(&format!("{base}/resources")).await?;
    fill(
        c,
        "form[action='/resources']",
        &[
            ("name", "app"),
            ("addresses", "10.77.2.300"),
            ("ports", "tcp/8080"),
        ],
    )
    .await;
    submit(c, "form[action='/resources']").await;
    wait_el(c, Locator::Css(".field-error")).await?;
    let error = text(c, ".field-error").await;
    assert!(
        error.contains("10.77.2.300"),
        "the failing field is named: {error}"
    );
    assert_eq!(
        c.find(Locator::Css("textarea[name=addresses]"))
            .await?
            .attr("class")
            .await?
            .as_deref(),
        Some("invalid")
    );
    screenshot(c, "07-resource-field-error").await?;
    let addresses = c.find(Locator::Css("textarea[name=addresses]")).await?;
    addresses.clear().await?;
    addresses.send_keys(RESOURCE_1).await?;
    submit(c, "form[action='/resources']").await;
    wait_el(c, Locator::Id("who-can-reach")).await?;
    let resource_path = path_of(c).await;
    let resource_id = resource_path.trim_start_matches("/resources/").to_owned();

    // ---------------------------------------------------------------- users and a group
    for (name, email, role, password) in [
        ("Ann Lee", "ann@example.com", "user", ""),
        (
            "Audra Auditor",
            "audit@example.com",
            "auditor",
            AUDITOR_PASSWORD,
        ),
    ] {
        c.goto(&format!("{base}/users")).await?;
        fill(
            c,
            "form[action='/users']",
            &[("name", name), ("email", email), ("password", password)],
        )
        .await;
        c.find(Locator::Css("form[action='/users'] select[name=role]"))
            .await?
            .select_by_value(role)
            .await?;
        submit(c, "form[action='/users']").await;
        wait_flash(c, &format!("User {email} created")).await?;
    }
    assert!(
        path_of(c).await.starts_with("/users/"),
        "a new user's page follows"
    );
    c.goto(&format!("{base}/users")).await?;
    screenshot(c, "08-users").await?;

    c.goto(&format!("{base}/groups")).await?;
    fill(
        c,
        "form[action='/groups']",
        &[("name", "eng"), ("description", "Engineering")],
    )
    .await;
    submit(c, "form[action='/groups']").await;
    wait_el(c, Locator::Css("select[name=user_id]")).await?;
    c.find(Locator::Css("select[name=user_id]"))
        .await?
        .select_by_label("Ann Lee <ann@example.com>")
        .await?;
    submit(c, "form[action$='/members']").await;
    wait_el(c, Locator::XPath("//td[contains(., 'ann@example.com')]")).await?;
    assert!(body(c).await.contains("ann@example.com"));
    screenshot(c, "09-group").await?;

    // ---------------------------------------------------------------- policy
    c.goto(&format!("{base}/policies?resource_id={resource_id}"))
        .await?;
    fill(
        c,
        "form[action='/policies']",
        &[("name", "eng-app"), ("max_session_secs", "3600")],
    )
    .await;
    c.find(Locator::Css("select[name=group_id]"))
        .await?
        .select_by_label("eng")
        .await?;
    submit(c, "form[action='/policies']").await;
    wait_flash(c, "Policy eng-app created").await?;
    screenshot(c, "10-policies").await?;
    c.goto(&format!("{base}{resource_path}")).await?;
    let reach = text(c, "#who-can-reach").await;
    assert!(
        reach.contains("Ann Lee") && reach.contains("eng-app"),
        "{reach}"
    );
    assert!(!reach.contains("Audra"), "the auditor is in no group");
    screenshot(c, "11-who-can-reach").await?;

    // ---------------------------------------------------------------- a live grant, revoked in the UI
    let users = api.ok("GET", "/api/v1/users", None)?;
    let ann = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == "ann@example.com")
        .unwrap()
        .clone();
    let key = api.ok(
        "POST",
        "/api/v1/enrollment-keys",
        Some(json!({"user_id": ann["id"]})),
    )?;
    let device_key = KeyPair::generate()?;
    let device = api.ok(
        "POST",
        "/api/v1/devices/enroll",
        Some(json!({"enrollment_key": key["secret"], "name": "ann-laptop", "public_key": device_key.public})),
    )?;
    let app_key = KeyPair::generate()?;
    let grant = api.ok(
        "POST",
        "/api/v1/access",
        Some(json!({"user_id": ann["id"], "device_id": device["id"], "resource_id": resource_id, "source": CLIENT, "public_key": app_key.public})),
    )?;
    let grant_id = grant["grant_id"]
        .as_str()
        .or_else(|| grant["id"].as_str())
        .expect("the access answer names its grant")
        .to_owned();
    assert_eq!(
        gateway_metric(t, "postern_gateway_peers")?,
        1.0,
        "the gateway holds the peer"
    );

    c.goto(&format!("{base}/grants")).await?;
    let row = format!("tr[data-grant='{grant_id}']");
    let row_text = text(c, &row).await;
    for want in ["Ann Lee", "ann-laptop", "app", "hq-gw-1"] {
        assert!(row_text.contains(want), "{want} in {row_text}");
    }
    screenshot(c, "12-live-grants").await?;
    c.find(Locator::Css(&format!("{row} form button")))
        .await?
        .click()
        .await?;
    let dialog = wait_el(c, Locator::Css("dialog#confirm-dialog[open]")).await?;
    assert!(
        dialog
            .text()
            .await?
            .contains("Revoke Ann Lee's access to app")
    );
    screenshot(c, "13-revoke-confirm").await?;
    c.find(Locator::Id("confirm-ok")).await?.click().await?;
    wait_flash(c, "Access revoked").await?;
    assert!(
        c.find_all(Locator::Css(&row)).await?.is_empty(),
        "the row is gone"
    );
    screenshot(c, "14-grant-revoked").await?;
    let all = api.ok("GET", "/api/v1/grants?live=false", None)?;
    let revoked = all
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == grant_id.as_str())
        .unwrap();
    assert!(
        !revoked["revoked_at"].is_null(),
        "revoked in the API: {revoked}"
    );
    wait_for(Duration::from_secs(5), || {
        (gateway_metric(t, "postern_gateway_peers").ok()? == 0.0).then_some(())
    })
    .expect("the gateway dropped the peer");

    // ---------------------------------------------------------------- the other pages
    for (path, name) in [
        ("/", "15-dashboard"),
        ("/audit", "16-audit"),
        ("/devices", "17-devices"),
        ("/posture", "18-posture"),
        ("/settings", "19-settings"),
        ("/my", "20-my-access"),
    ] {
        c.goto(&format!("{base}{path}")).await?;
        wait_el(c, Locator::Css("main h1")).await?;
        screenshot(c, name).await?;
    }
    c.goto(&format!("{base}/audit?kind=grant.")).await?;
    assert!(
        body(c).await.contains("grant.revoked"),
        "the revocation is audited"
    );
    c.set_window_size(390, 844).await?;
    for (path, name) in [
        ("/", "21-phone-dashboard"),
        ("/grants", "22-phone-grants"),
        ("/policies", "23-phone-policies"),
    ] {
        c.goto(&format!("{base}{path}")).await?;
        screenshot(c, name).await?;
    }
    assert!(
        !overflows(c).await,
        "the policies page fits a phone's width"
    );
    c.set_window_size(1280, 900).await?;

    // ---------------------------------------------------------------- a cross-site form post
    let attack = format!(
        "data:text/html,<form method=post action='{base}/sites'><input name=name value=evil><input name=_csrf value=guess><button id=go>go</button></form>"
    );
    c.goto(&attack).await?;
    c.find(Locator::Id("go")).await?.click().await?;
    wait_el(
        c,
        Locator::XPath("//*[contains(., 'not sent from a Postern page')]"),
    )
    .await?;
    screenshot(c, "24-cross-site-refused").await?;
    let sites = api.ok("GET", "/api/v1/sites", None)?;
    assert_eq!(
        sites.as_array().unwrap().len(),
        1,
        "no site was created: {sites}"
    );

    // ---------------------------------------------------------------- the auditor
    c.goto(&format!("{base}/")).await?;
    sign_out(c).await;
    sign_in(c, &base, "audit@example.com", AUDITOR_PASSWORD).await;
    for path in [
        "/",
        "/sites",
        "/resources",
        &resource_path,
        "/users",
        "/groups",
        "/policies",
        "/posture",
        "/devices",
        "/grants",
        "/audit",
        "/settings",
    ] {
        c.goto(&format!("{base}{path}")).await?;
        let page = body(c).await;
        assert!(page.contains("Read-only"), "{path}");
        assert_eq!(
            post_forms(c).await,
            0,
            "no forms or buttons for the auditor on {path}"
        );
    }
    c.goto(&format!("{base}/sites")).await?;
    assert!(body(c).await.contains("hq"), "the auditor reads everything");
    screenshot(c, "25-auditor-sites").await?;
    c.goto(&format!("{base}/audit")).await?;
    assert!(body(c).await.contains("policy.created"));
    // A POST made by hand, with the auditor's valid token, is refused by the services.
    let status = c
        .execute(
            "const token = document.querySelector('form.signout input[name=_csrf]').value;
             return fetch('/sites', {method: 'POST', headers: {'content-type': 'application/x-www-form-urlencoded'},
                 body: new URLSearchParams({name: 'by-auditor', _csrf: token})}).then(r => r.status);",
            vec![],
        )
        .await?;
    assert_eq!(status, json!(403), "the auditor cannot change anything");
    let sites = api.ok("GET", "/api/v1/sites", None)?;
    assert_eq!(sites.as_array().unwrap().len(), 1);
    Ok(())
}
