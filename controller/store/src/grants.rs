//! Grants: the access a policy decision gave a device, with the preshared key its gateway
//! needs, until it expires or is revoked.

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use model::{DeviceId, GatewayId, Grant, GrantId, PolicyId, ResourceId, UserId};
use sqlx::FromRow;

use crate::codec::{id, ms, opt_ms, opt_ts, ts};
use crate::{Conn, StoreError};

#[derive(FromRow)]
struct GrantRow {
    id: String,
    device_id: String,
    user_id: String,
    resource_id: String,
    policy_id: String,
    gateway_id: String,
    public_key: String,
    tunnel_address: String,
    created_at: i64,
    expires_at: i64,
    revoked_at: Option<i64>,
}

const GRANT_COLUMNS: &str = "id, device_id, user_id, resource_id, policy_id, gateway_id, \
     public_key, tunnel_address, created_at, expires_at, revoked_at";

impl GrantRow {
    fn into_model(self) -> Result<Grant, StoreError> {
        const T: &str = "grants";
        Ok(Grant {
            id: id(T, &self.id)?,
            device_id: id(T, &self.device_id)?,
            user_id: id(T, &self.user_id)?,
            resource_id: id(T, &self.resource_id)?,
            policy_id: id(T, &self.policy_id)?,
            gateway_id: id(T, &self.gateway_id)?,
            public_key: self.public_key,
            tunnel_address: id::<IpAddr>(T, &self.tunnel_address)?,
            created_at: ts(self.created_at),
            expires_at: ts(self.expires_at),
            revoked_at: opt_ts(self.revoked_at),
        })
    }
}

pub async fn insert_grant(c: &mut Conn, g: &Grant) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(g.id.to_string())
    .bind(g.device_id.to_string())
    .bind(g.user_id.to_string())
    .bind(g.resource_id.to_string())
    .bind(g.policy_id.to_string())
    .bind(g.gateway_id.to_string())
    .bind(&g.public_key)
    .bind(g.tunnel_address.to_string())
    .bind(ms(g.created_at))
    .bind(ms(g.expires_at))
    .bind(opt_ms(g.revoked_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn get_grant(c: &mut Conn, g: GrantId) -> Result<Option<Grant>, StoreError> {
    sqlx::query_as::<_, GrantRow>(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = $1"))
        .bind(g.to_string())
        .fetch_optional(c)
        .await?
        .map(GrantRow::into_model)
        .transpose()
}

/// Which grants to list or revoke.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    /// Only this grant.
    pub grant: Option<GrantId>,
    /// Only grants of this device.
    pub device: Option<DeviceId>,
    /// Only grants of this user.
    pub user: Option<UserId>,
    /// Only grants to this resource.
    pub resource: Option<ResourceId>,
    /// Only grants under this policy.
    pub policy: Option<PolicyId>,
    /// Only grants through this gateway.
    pub gateway: Option<GatewayId>,
    /// Only grants live at this time (unrevoked and unexpired).
    pub live_at: Option<Timestamp>,
}

impl GrantFilter {
    /// The grants of a device.
    pub fn for_device(id: DeviceId) -> Self {
        Self {
            device: Some(id),
            ..Self::default()
        }
    }

    /// The grants of a user.
    pub fn for_user(id: UserId) -> Self {
        Self {
            user: Some(id),
            ..Self::default()
        }
    }

    /// The grants to a resource.
    pub fn for_resource(id: ResourceId) -> Self {
        Self {
            resource: Some(id),
            ..Self::default()
        }
    }

    /// The grants under a policy.
    pub fn for_policy(id: PolicyId) -> Self {
        Self {
            policy: Some(id),
            ..Self::default()
        }
    }

    /// The grants through a gateway.
    pub fn for_gateway(id: GatewayId) -> Self {
        Self {
            gateway: Some(id),
            ..Self::default()
        }
    }

    /// One grant.
    pub fn for_grant(id: GrantId) -> Self {
        Self {
            grant: Some(id),
            ..Self::default()
        }
    }

    fn where_clause(&self) -> (String, Vec<String>, Option<i64>) {
        let mut clauses = Vec::new();
        let mut binds = Vec::new();
        let pairs: [(&str, Option<String>); 6] = [
            ("id", self.grant.map(|v| v.to_string())),
            ("device_id", self.device.map(|v| v.to_string())),
            ("user_id", self.user.map(|v| v.to_string())),
            ("resource_id", self.resource.map(|v| v.to_string())),
            ("policy_id", self.policy.map(|v| v.to_string())),
            ("gateway_id", self.gateway.map(|v| v.to_string())),
        ];
        for (column, value) in pairs {
            if let Some(v) = value {
                binds.push(v);
                clauses.push(format!("{column} = ${}", binds.len()));
            }
        }
        let live = self.live_at.map(ms);
        if live.is_some() {
            clauses.push(format!(
                "revoked_at IS NULL AND expires_at > ${}",
                binds.len() + 1
            ));
        }
        let sql = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        (sql, binds, live)
    }
}

pub async fn list_grants(c: &mut Conn, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
    let (clause, binds, live) = f.where_clause();
    let sql = format!("SELECT {GRANT_COLUMNS} FROM grants{clause} ORDER BY created_at DESC");
    let mut q = sqlx::query_as::<_, GrantRow>(&sql);
    for b in binds {
        q = q.bind(b);
    }
    if let Some(live) = live {
        q = q.bind(live);
    }
    q.fetch_all(c)
        .await?
        .into_iter()
        .map(GrantRow::into_model)
        .collect()
}

/// Revokes every live grant matching `f` (which must set `live_at`) and returns them.
pub async fn revoke_grants(
    c: &mut Conn,
    f: &GrantFilter,
    now: Timestamp,
    reason: &str,
) -> Result<Vec<Grant>, StoreError> {
    let f = GrantFilter {
        live_at: Some(f.live_at.unwrap_or(now)),
        ..f.clone()
    };
    let grants = list_grants(&mut *c, &f).await?;
    for g in &grants {
        sqlx::query(
            "UPDATE grants SET revoked_at = $2, revoke_reason = $3, preshared_key = NULL \
             WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(g.id.to_string())
        .bind(ms(now))
        .bind(reason)
        .execute(&mut *c)
        .await?;
    }
    Ok(grants
        .into_iter()
        .map(|g| Grant {
            revoked_at: Some(now),
            ..g
        })
        .collect())
}

/// Stores the preshared key of a live grant (a secret the gateway needs on every full sync).
pub async fn set_preshared_key(
    c: &mut Conn,
    g: GrantId,
    preshared_key: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE grants SET preshared_key = $2 WHERE id = $1")
        .bind(g.to_string())
        .bind(preshared_key)
        .execute(c)
        .await?;
    Ok(())
}

/// The live grants of a gateway with their preshared keys, oldest first.
pub async fn live_grants_with_keys(
    c: &mut Conn,
    gateway: GatewayId,
    now: Timestamp,
) -> Result<Vec<(Grant, String)>, StoreError> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        grant: GrantRow,
        preshared_key: String,
    }
    sqlx::query_as::<_, Row>(&format!(
        "SELECT {GRANT_COLUMNS}, preshared_key FROM grants WHERE gateway_id = $1 \
         AND revoked_at IS NULL AND expires_at > $2 AND preshared_key IS NOT NULL \
         ORDER BY created_at"
    ))
    .bind(gateway.to_string())
    .bind(ms(now))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(|r| Ok((r.grant.into_model()?, r.preshared_key)))
    .collect()
}

/// One live grant with its preshared key.
pub async fn live_grant_with_key(
    c: &mut Conn,
    grant: GrantId,
    now: Timestamp,
) -> Result<Option<(Grant, String)>, StoreError> {
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        grant: GrantRow,
        preshared_key: String,
    }
    sqlx::query_as::<_, Row>(&format!(
        "SELECT {GRANT_COLUMNS}, preshared_key FROM grants WHERE id = $1 \
         AND revoked_at IS NULL AND expires_at > $2 AND preshared_key IS NOT NULL"
    ))
    .bind(grant.to_string())
    .bind(ms(now))
    .fetch_optional(c)
    .await?
    .map(|r| Ok((r.grant.into_model()?, r.preshared_key)))
    .transpose()
}

/// How many live grants each gateway serves (gateways with none are absent).
pub async fn live_grant_counts(
    c: &mut Conn,
    now: Timestamp,
) -> Result<BTreeMap<GatewayId, i64>, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT gateway_id, COUNT(*) FROM grants WHERE revoked_at IS NULL AND expires_at > $1 \
         GROUP BY gateway_id",
    )
    .bind(ms(now))
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(g, n)| Ok((id("grants", &g)?, n)))
        .collect()
}

/// Whether a live grant already uses this WireGuard public key.
pub async fn public_key_in_use(
    c: &mut Conn,
    public_key: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM grants WHERE public_key = $1 AND revoked_at IS NULL \
         AND expires_at > $2",
    )
    .bind(public_key)
    .bind(ms(now))
    .fetch_one(c)
    .await?;
    Ok(n > 0)
}

/// Why a grant was revoked, when it was.
pub async fn grant_revoke_reason(
    c: &mut Conn,
    grant: model::GrantId,
) -> Result<Option<String>, StoreError> {
    let reason: Option<Option<String>> =
        sqlx::query_scalar("SELECT revoke_reason FROM grants WHERE id = $1")
            .bind(grant.to_string())
            .fetch_optional(c)
            .await?;
    Ok(reason.flatten())
}

/// The facts a grant's decision was made on besides the objects themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionFacts {
    /// The address the access request came from (`None` for grants issued before it was
    /// recorded).
    pub source: Option<IpAddr>,
    /// The identity provider of the sign-in behind the request.
    pub identity_provider: Option<String>,
    /// When that sign-in last completed MFA.
    pub last_mfa_at: Option<Timestamp>,
}

/// Records the facts a grant was decided on.
pub async fn set_decision_facts(
    c: &mut Conn,
    g: GrantId,
    facts: &DecisionFacts,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE grants SET source = $2, identity_provider = $3, last_mfa_at = $4 WHERE id = $1",
    )
    .bind(g.to_string())
    .bind(facts.source.map(|s| s.to_string()))
    .bind(facts.identity_provider.clone())
    .bind(opt_ms(facts.last_mfa_at))
    .execute(c)
    .await?;
    Ok(())
}

#[derive(FromRow)]
struct GrantWithFactsRow {
    #[sqlx(flatten)]
    grant: GrantRow,
    source: Option<String>,
    identity_provider: Option<String>,
    last_mfa_at: Option<i64>,
}

const FACTS_COLUMNS: &str = "source, identity_provider, last_mfa_at";

impl GrantWithFactsRow {
    fn into_model(self) -> Result<(Grant, DecisionFacts), StoreError> {
        let facts = DecisionFacts {
            source: self.source.and_then(|s| s.parse().ok()),
            identity_provider: self.identity_provider,
            last_mfa_at: opt_ts(self.last_mfa_at),
        };
        Ok((self.grant.into_model()?, facts))
    }
}

/// The grants matching `f` with the facts each was decided on, oldest first.
pub async fn list_grants_with_facts(
    c: &mut Conn,
    f: &GrantFilter,
) -> Result<Vec<(Grant, DecisionFacts)>, StoreError> {
    let (clause, binds, live) = f.where_clause();
    let sql = format!(
        "SELECT {GRANT_COLUMNS}, {FACTS_COLUMNS} FROM grants{clause} ORDER BY created_at, id"
    );
    let mut q = sqlx::query_as::<_, GrantWithFactsRow>(&sql);
    for b in binds {
        q = q.bind(b);
    }
    if let Some(live) = live {
        q = q.bind(live);
    }
    q.fetch_all(c)
        .await?
        .into_iter()
        .map(GrantWithFactsRow::into_model)
        .collect()
}

/// Moves a live grant's expiry earlier (never later) and records the policy that now allows
/// it; false when it is no longer live or already ends by then.
pub async fn shorten_grant(
    c: &mut Conn,
    g: GrantId,
    expires_at: Timestamp,
    policy: PolicyId,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE grants SET expires_at = $2, policy_id = $3 \
         WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
    )
    .bind(g.to_string())
    .bind(ms(expires_at))
    .bind(policy.to_string())
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Records that another policy now allows a live grant.
pub async fn set_grant_policy(
    c: &mut Conn,
    g: GrantId,
    policy: PolicyId,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE grants SET policy_id = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(g.to_string())
        .bind(policy.to_string())
        .execute(c)
        .await?;
    Ok(())
}

/// The earliest expiry of a grant not yet ended (possibly in the past: then it is due).
pub async fn next_grant_end(c: &mut Conn) -> Result<Option<Timestamp>, StoreError> {
    let row: (Option<i64>,) =
        sqlx::query_as("SELECT MIN(expires_at) FROM grants WHERE revoked_at IS NULL")
            .fetch_one(c)
            .await?;
    Ok(opt_ts(row.0))
}

/// The grants not yet ended whose expiry is at or before `now`, with their facts, the
/// earliest first.
pub async fn due_grants(
    c: &mut Conn,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<(Grant, DecisionFacts)>, StoreError> {
    sqlx::query_as::<_, GrantWithFactsRow>(&format!(
        "SELECT {GRANT_COLUMNS}, {FACTS_COLUMNS} FROM grants \
         WHERE revoked_at IS NULL AND expires_at <= $1 ORDER BY expires_at LIMIT $2"
    ))
    .bind(ms(now))
    .bind(limit)
    .fetch_all(c)
    .await?
    .into_iter()
    .map(GrantWithFactsRow::into_model)
    .collect()
}

/// Ends a grant whose time is up: marks it ended at its expiry with `reason`, erasing its
/// preshared key; false when it had ended already.
pub async fn end_grant(c: &mut Conn, g: &Grant, reason: &str) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE grants SET revoked_at = expires_at, revoke_reason = $2, preshared_key = NULL \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(g.id.to_string())
    .bind(reason)
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}
