//! A database of its own on the test PostgreSQL server that `scripts/test` runs, for
//! controllers in namespaces: they reach the server through its Unix socket (a file, so it
//! crosses network namespaces), never through the host's network.

use std::process::Command;

use anyhow::{Context, bail};

/// A fresh database, dropped (ending its connections) when this goes.
#[derive(Debug)]
pub struct Database {
    admin_url: String,
    name: String,
    /// The URL controllers in any namespace use: the server's socket directory as `host`.
    pub url: String,
}

fn psql(admin_url: &str, sql: &str) -> anyhow::Result<()> {
    let out = Command::new("psql")
        .args([admin_url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Database {
    /// Creates one, or says why not and returns `None` when no test server is configured
    /// (`POSTERN_TEST_POSTGRES_URL` and `POSTERN_TEST_POSTGRES_SOCKET`, which `scripts/test`
    /// sets; CI must have them).
    pub fn create() -> anyhow::Result<Option<Self>> {
        let (Ok(admin_url), Ok(socket)) = (
            std::env::var("POSTERN_TEST_POSTGRES_URL"),
            std::env::var("POSTERN_TEST_POSTGRES_SOCKET"),
        ) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must set POSTERN_TEST_POSTGRES_URL and POSTERN_TEST_POSTGRES_SOCKET"
            );
            eprintln!(
                "skipped: set POSTERN_TEST_POSTGRES_URL and POSTERN_TEST_POSTGRES_SOCKET or run scripts/test"
            );
            return Ok(None);
        };
        let name = format!(
            "postern_e2e_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .subsec_nanos()
        );
        psql(&admin_url, &format!("CREATE DATABASE {name}"))?;
        let (base, _) = admin_url
            .rsplit_once('/')
            .context("POSTERN_TEST_POSTGRES_URL has no database part")?;
        Ok(Some(Self {
            url: format!("{base}/{name}?host={socket}"),
            admin_url,
            name,
        }))
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = psql(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
