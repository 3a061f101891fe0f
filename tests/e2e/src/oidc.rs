//! A real OpenID provider in a test namespace: the certified `oidc-provider` npm package
//! (`tests/oidc-provider/provider.js`, the controller's OIDC tests use it too) on the
//! namespace's loopback, registered at the controller as an identity provider, and a
//! browser's sign-in through it driven over HTTP from inside that namespace. The provider
//! signs in the user named by `login_hint` at once; its test endpoint changes a user's
//! `groups` claim.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::deploy::{Api, repo_root};
use crate::{ChildGuard, Netns, wait_for};

/// The client the provider knows the controller as.
const CLIENT_ID: &str = "postern-e2e";
/// Its secret (test only).
const CLIENT_SECRET: &str = "a-client-secret-for-the-e2e-tests";
/// The binding cookie the controller sets when a sign-in starts.
const BINDING_COOKIE: &str = "__Host-postern_oidc";
/// The controller's web session cookie.
const SESSION_COOKIE: &str = "__Host-postern_session";

fn harness_dir() -> PathBuf {
    repo_root().join("tests/oidc-provider")
}

/// Installs the npm package pinned by the harness's lock file, once (scripts/test does it
/// too).
fn ensure_installed() -> anyhow::Result<()> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    if *done {
        return Ok(());
    }
    let dir = harness_dir();
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .context("running npm (needed for the OIDC tests)")?;
        ensure!(status.success(), "npm ci in {} failed", dir.display());
    }
    *done = true;
    Ok(())
}

/// The provider's process in a namespace (killed on drop), registered at a controller.
#[derive(Debug)]
pub struct Provider {
    _process: ChildGuard,
    ns_path: String,
    /// Its issuer URL (`http://127.0.0.1:PORT`, in the namespace).
    pub issuer: String,
    /// Its name at the controller.
    pub name: String,
}

impl Provider {
    /// Starts the provider in `ns` (the controller's namespace: the controller reaches it on
    /// loopback) and registers it at the controller as `name`, asking for the `groups` scope.
    pub fn start(ns: &Netns, api: &Api, name: &str, dir: &Path) -> anyhow::Result<Self> {
        ensure_installed()?;
        let redirect_uri = format!("{}/auth/oidc/{name}/callback", api.base());
        let mut cmd = Command::new("node");
        cmd.arg("provider.js")
            .args([redirect_uri.as_str(), CLIENT_ID, CLIENT_SECRET])
            .current_dir(harness_dir());
        let log = dir.join(format!("oidc-{name}.log"));
        let process = ns.spawn(cmd, &log)?;
        let issuer = wait_for(Duration::from_secs(30), || {
            std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
                l.strip_prefix("issuer ")
                    .map(|issuer| issuer.trim().to_owned())
            })
        })
        .with_context(|| {
            format!(
                "the OpenID provider did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        api.ok(
            "POST",
            "/api/v1/identity-providers",
            Some(json!({
                "name": name, "issuer": issuer, "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET, "scopes": ["email", "profile", "groups"],
            })),
        )?;
        Ok(Self {
            _process: process,
            ns_path: format!("/var/run/netns/{}", ns.name()),
            issuer,
            name: name.to_owned(),
        })
    }

    /// Sets the `groups` claim the provider gives `user` from now on.
    pub fn set_groups(&self, user: &str, groups: &[&str]) -> anyhow::Result<()> {
        let url = format!(
            "{}/test/groups/{user}?groups={}",
            self.issuer,
            groups.join(",")
        );
        let status = crate::in_namespace(&self.ns_path, async move {
            let res = reqwest::Client::new().put(url).send().await?;
            Ok::<_, anyhow::Error>(res.status().as_u16())
        })??;
        ensure!(status == 204, "setting {user}'s groups answered {status}");
        Ok(())
    }

    /// A browser's whole sign-in at the controller as `user` through this provider, from
    /// inside the provider's namespace; returns the web session cookie (`name=value`).
    pub fn sign_in(&self, api: &Api, user: &str) -> anyhow::Result<String> {
        let (base, pem, provider, user) = (
            api.base().to_owned(),
            api.ca_pem().to_vec(),
            self.name.clone(),
            user.to_owned(),
        );
        crate::in_namespace(&self.ns_path, async move {
            let browser = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()?;
            let start = browser
                .get(format!("{base}/auth/oidc/{provider}/start"))
                .send()
                .await?;
            ensure!(
                start.status() == 303,
                "starting answered {}",
                start.status()
            );
            let binding = cookie(&start, BINDING_COOKIE).context("no binding cookie")?;
            let mut url = reqwest::Url::parse(location(&start)?)?;
            url.query_pairs_mut().append_pair("login_hint", &user);
            // The provider's redirects, with its cookies, until one leads back to the
            // controller.
            let mut jar = BTreeMap::new();
            let mut callback = None;
            for _ in 0..20 {
                let mut req = browser.get(url.clone());
                if !jar.is_empty() {
                    let pairs: Vec<String> = jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    req = req.header(reqwest::header::COOKIE, pairs.join("; "));
                }
                let res = req.send().await?;
                for (k, v) in set_cookies(&res) {
                    if v.is_empty() {
                        jar.remove(&k);
                    } else {
                        jar.insert(k, v);
                    }
                }
                if !res.status().is_redirection() {
                    bail!(
                        "the provider answered {}: {}",
                        res.status(),
                        res.text().await.unwrap_or_default()
                    );
                }
                let next = url.join(location(&res)?)?;
                if next.as_str().starts_with(&base) {
                    callback = Some(next);
                    break;
                }
                url = next;
            }
            let callback = callback.context("the provider never redirected back")?;
            let res = browser
                .get(callback)
                .header(reqwest::header::COOKIE, binding)
                .send()
                .await?;
            let session = cookie(&res, SESSION_COOKIE);
            let status = res.status();
            match session {
                Some(s) if status == 303 => Ok(s),
                _ => bail!(
                    "the callback answered {status}: {}",
                    res.text().await.unwrap_or_default()
                ),
            }
        })?
    }
}

/// The `Location` header of a redirect.
fn location(res: &reqwest::Response) -> anyhow::Result<&str> {
    res.headers()
        .get(reqwest::header::LOCATION)
        .context("a redirect without a location")?
        .to_str()
        .context("a location that is not text")
}

/// The cookies a response sets, as name and value (a cleared one has an empty value).
fn set_cookies(res: &reqwest::Response) -> Vec<(String, String)> {
    res.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next()?.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The cookie `name` a response sets, as `name=value`.
fn cookie(res: &reqwest::Response, name: &str) -> Option<String> {
    set_cookies(res)
        .into_iter()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(k, v)| format!("{k}={v}"))
}

/// The signed-in person of a web session, as `/api/v1/auth/me` shows them.
pub fn me(api: &Api, cookie: &str) -> anyhow::Result<Value> {
    let (status, me) = crate::client::with_cookie(api, "GET", "/api/v1/auth/me", None, cookie)?;
    ensure!(status == 200, "/auth/me answered {status}: {me}");
    Ok(me)
}
