//! Test helpers, also for other crates' tests (cargo feature `testing`): a fresh PostgreSQL
//! database on the test server `POSTERN_TEST_POSTGRES_URL` names (`scripts/test` starts one).

// Test code, like the tests that call it, even when built for another crate's tests.
#![allow(clippy::unwrap_used)]

use crate::Store;

/// A fresh PostgreSQL database, dropped when the guard goes.
pub struct PgDb {
    /// A store on the database, migrated.
    pub store: Store,
    admin_url: String,
    name: String,
}

impl Drop for PgDb {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which is blocked while we wait: do the async
        // cleanup on a thread of its own, and let FORCE end the store's open connections
        // rather than closing its pool (that would wait on the blocked runtime).
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let admin = Store::raw_pool(&url).await.unwrap();
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
            });
        })
        .join()
        .unwrap();
    }
}

impl PgDb {
    /// The database's URL, for more stores on it (more controller replicas).
    pub fn url(&self) -> String {
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{base}/{}", self.name)
    }
}

/// A fresh database on the test PostgreSQL server; `None` (after saying so) without one.
pub async fn postgres() -> Option<PgDb> {
    let Ok(admin_url) = std::env::var("POSTERN_TEST_POSTGRES_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set POSTERN_TEST_POSTGRES_URL (scripts/test does)"
        );
        eprintln!(
            "skipping the PostgreSQL half: set POSTERN_TEST_POSTGRES_URL or run scripts/test"
        );
        return None;
    };
    let name = format!("postern_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Store::raw_pool(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let store = Store::connect(&format!("{base}/{name}")).await.unwrap();
    Some(PgDb {
        store,
        admin_url,
        name,
    })
}
