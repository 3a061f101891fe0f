//! The store contract: every test runs against SQLite and against PostgreSQL
//! (`POSTERN_TEST_POSTGRES_URL`, which `scripts/test` provides). Each submodule holds the
//! tests of a few object families and names them in `contract!`, which makes of every test
//! one test case per database; the fixtures here are shared.

use jiff::{SignedDuration, Timestamp};
use model::*;

use super::*;
use crate::testing::postgres;

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn now() -> Timestamp {
    t("2026-11-25T09:00:00Z")
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Store::open_sqlite(dir.path()).await.unwrap(), dir)
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite().await;
                    super::$name(&store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::postgres().await else { return };
                    super::$name(&db.store).await;
                }
            )*
        }
    };
}

mod audit_chain;
mod client_sign_in;
mod inventory;
mod local_accounts;
mod oidc;
mod people_and_devices;
mod policies_and_grants;
mod tokens_and_audit;

async fn site(s: &Store, name: &str) -> Site {
    let site = Site {
        id: SiteId::new(),
        name: name.into(),
        created_at: now(),
    };
    let mut tx = s.begin().await.unwrap();
    insert_site(&mut tx, &site).await.unwrap();
    tx.commit().await.unwrap();
    site
}

async fn user(s: &Store, email: &str) -> User {
    let u = User {
        id: UserId::new(),
        email: email.into(),
        name: "U".into(),
        role: Role::User,
        disabled: false,
        created_at: now(),
    };
    let mut tx = s.begin().await.unwrap();
    insert_user(&mut tx, &u).await.unwrap();
    tx.commit().await.unwrap();
    u
}

async fn resource(s: &Store, site: SiteId, name: &str) -> Resource {
    let r = Resource {
        id: ResourceId::new(),
        name: name.into(),
        site_id: site,
        addresses: vec![
            parse_address("10.0.5.20").unwrap(),
            parse_address("fd00:5::/64").unwrap(),
        ],
        ports: vec![
            "tcp/22".parse().unwrap(),
            "tcp/8000-8080".parse().unwrap(),
            "icmp".parse().unwrap(),
        ],
        created_at: now(),
    };
    let mut tx = s.begin().await.unwrap();
    insert_resource(&mut tx, &r).await.unwrap();
    tx.commit().await.unwrap();
    r
}
