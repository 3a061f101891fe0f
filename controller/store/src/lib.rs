//! The Postern controller's storage, and nothing else: the SQL the controller runs, over
//! SQLite (the embedded default) and PostgreSQL through sqlx's `Any` driver, and the
//! migrations that make the schema. This crate does IO against the database; it knows
//! nothing of the controller (no services, rules, API or audit policy), only tables, rows
//! and transactions. Each read or write runs on the connection it is given, so that a caller
//! can put several of them, and the audit row, in one transaction.
//!
//! SQL here is portable: `$N` placeholders, TEXT ids, BIGINT milliseconds, BIGINT flags,
//! JSON in TEXT.

mod device;
mod local;
mod oidc;
mod rows;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::path::Path;
use std::str::FromStr;

use jiff::Timestamp;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions};

pub use device::{
    DeviceAuthorization, DeviceSessionRecord, advance_posture_seq, consume_device_authorization,
    decide_device_authorization, device_authorization_by_code, device_authorization_by_user_code,
    device_session_by_id, device_session_by_token, end_device_sessions,
    end_provider_device_sessions, grant_revoke_reason, insert_device_authorization,
    insert_device_session, purge_device_authorizations, renew_device_session,
    touch_device_authorization,
};
#[cfg(any(test, feature = "testing"))]
pub use local::list_web_sessions;
pub use local::{
    LocalCredentials, WebSession, accept_totp_step, add_failed_attempt, clear_failures, clear_totp,
    confirm_totp, end_provider_web_sessions, end_user_web_sessions, end_web_session,
    get_credentials, insert_web_session, last_sign_in, lock_account, plaintext_totp_secrets,
    record_mfa, record_sign_in, replace_recovery_codes, reseal_totp_secret, set_password_hash,
    set_pending_totp, set_web_session_mfa, touch_web_session, unused_recovery_codes,
    use_recovery_code, web_session_by_token,
};
pub use oidc::{
    Identity, IdentityProvider, OidcIdentity, PendingLogin, add_provider_group, delete_identity,
    delete_provider, get_identity, get_provider, group_id_by_name, identity_user, insert_identity,
    insert_pending_login, insert_provider, list_identities, list_providers, move_identity,
    provider_by_name, provider_groups, provider_secrets, remove_provider_group,
    reseal_provider_secret, take_pending_login, touch_identity, update_provider,
};
pub use rows::{
    ApiToken, AuditEvent, AuditFilter, EnrollmentKey, GatewayToken, GrantFilter, PolicyRef,
    add_member, append_audit, claim_tunnel_address, consume_enrollment_key, consume_gateway_token,
    consume_setup_code, count_admins, delete_device, delete_gateway, delete_group, delete_policy,
    delete_profile, delete_resource, delete_site, delete_user, device_by_public_key,
    device_tunnel_address, gateway_by_credential, gateway_seen, get_device, get_gateway, get_grant,
    get_group, get_policy, get_posture, get_profile, get_resource, get_site, get_user,
    group_members, groups_of_user, insert_api_token, insert_device, insert_enrollment_key,
    insert_gateway, insert_gateway_token, insert_grant, insert_group, insert_policy,
    insert_profile, insert_resource, insert_site, insert_user, leased_tunnel_addresses,
    list_api_tokens, list_devices, list_enrollment_keys, list_gateway_tokens, list_gateways,
    list_grants, list_groups, list_policies, list_profiles, list_resources, list_sites, list_users,
    live_grant_counts, live_grant_with_key, live_grants_with_keys, policies_for_resource,
    policies_referencing, profiles_by_id, public_key_in_use, put_setup_code, query_audit,
    remove_member, revoke_api_token, revoke_enrollment_key, revoke_grants, set_posture,
    set_preshared_key, touch_device, update_device, update_gateway, update_group, update_policy,
    update_profile, update_resource, update_site, update_user, use_api_token, user_by_email,
};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a file (WAL).
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (a duplicate name, key or token).
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// A foreign key refused the write or delete.
    #[error("still referenced: {0}")]
    Referenced(String),
    /// A stored row could not be read back into the model.
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table.
        table: &'static str,
        /// What was wrong.
        message: String,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                return StoreError::Duplicate(db.message().to_owned());
            }
            if db.is_foreign_key_violation() {
                return StoreError::Referenced(db.message().to_owned());
            }
        }
        StoreError::Database(e)
    }
}

/// A transaction on the store.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// The controller's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The database URL (the replicas' notifications need a connection of their own).
    url: std::sync::Arc<str>,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Opens (creating if needed) the SQLite database `postern.db` in `data_dir`.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join("postern.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::connect(&url).await
    }

    /// Connects to `url` (`sqlite://…` or `postgres://…`) and applies migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                "the database URL must start with sqlite:// or postgres://".into(),
            )));
        };
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let max = match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        for pragma in [
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 5000",
                            "PRAGMA synchronous = NORMAL",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            url: url.into(),
        })
    }

    /// The database this store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<Tx, StoreError> {
        match self.backend {
            // Take SQLite's write lock up front: a deferred transaction that reads and then
            // writes fails at once (SQLITE_BUSY_SNAPSHOT) when another connection wrote in
            // between, whereas an immediate one waits its turn under busy_timeout.
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => Ok(self.pool.begin().await?),
        }
    }

    /// A pooled connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    /// A plain pool without migrations, for administering a server (tests create and drop
    /// databases with it).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) async fn raw_pool(url: &str) -> Result<AnyPool, StoreError> {
        sqlx::any::install_default_drivers();
        Ok(AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?)
    }

    /// A connection listening for PostgreSQL notifications; `None` on SQLite.
    pub async fn listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(None),
            Backend::Postgres => Ok(Some(sqlx::postgres::PgListener::connect(&self.url).await?)),
        }
    }

    /// Sends a PostgreSQL notification on `channel` (nothing on SQLite).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel.to_owned())
                .bind(payload.to_owned())
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A connection a store function runs on: a transaction or a pooled connection.
pub type Conn = AnyConnection;

pub(crate) fn ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub(crate) fn opt_ms(t: Option<Timestamp>) -> Option<i64> {
    t.map(ms)
}

/// A stored millisecond time.
pub(crate) fn ts(v: i64) -> Timestamp {
    Timestamp::from_millisecond(v).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A stored optional millisecond time.
pub(crate) fn opt_ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(ts)
}

/// A stored id, or a clear error naming the table.
pub(crate) fn id<T: std::str::FromStr>(table: &'static str, s: &str) -> Result<T, StoreError> {
    s.parse().map_err(|_| StoreError::Corrupt {
        table,
        message: format!("bad id `{s}`"),
    })
}

pub(crate) fn flag(b: bool) -> i64 {
    i64::from(b)
}

#[cfg(test)]
mod contract;
