//! Sites and what belongs to them: the one-time gateway enrollment tokens and the gateways.

use jiff::Timestamp;
use model::{Gateway, GatewayId, Site, SiteId, TokenId};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::codec::{flag, id, ms, opt_ms, opt_ts, ts};
use crate::{Conn, StoreError};

// ---------------------------------------------------------------- sites

#[derive(FromRow)]
struct SiteRow {
    id: String,
    name: String,
    created_at: i64,
}

impl SiteRow {
    fn into_model(self) -> Result<Site, StoreError> {
        Ok(Site {
            id: id("sites", &self.id)?,
            name: self.name,
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_site(c: &mut Conn, s: &Site) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO sites (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(s.id.to_string())
        .bind(&s.name)
        .bind(ms(s.created_at))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_sites(c: &mut Conn) -> Result<Vec<Site>, StoreError> {
    sqlx::query_as::<_, SiteRow>("SELECT id, name, created_at FROM sites ORDER BY name")
        .fetch_all(c)
        .await?
        .into_iter()
        .map(SiteRow::into_model)
        .collect()
}

pub async fn get_site(c: &mut Conn, site: SiteId) -> Result<Option<Site>, StoreError> {
    sqlx::query_as::<_, SiteRow>("SELECT id, name, created_at FROM sites WHERE id = $1")
        .bind(site.to_string())
        .fetch_optional(c)
        .await?
        .map(SiteRow::into_model)
        .transpose()
}

pub async fn update_site(c: &mut Conn, s: &Site) -> Result<(), StoreError> {
    sqlx::query("UPDATE sites SET name = $2 WHERE id = $1")
        .bind(s.id.to_string())
        .bind(&s.name)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn delete_site(c: &mut Conn, site: SiteId) -> Result<bool, StoreError> {
    sqlx::query("DELETE FROM gateway_tokens WHERE site_id = $1")
        .bind(site.to_string())
        .execute(&mut *c)
        .await?;
    let done = sqlx::query("DELETE FROM sites WHERE id = $1")
        .bind(site.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- gateway tokens

/// A one-time gateway enrollment token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GatewayToken {
    /// The token's id.
    pub id: TokenId,
    /// The site a gateway enrolled with it joins.
    pub site_id: SiteId,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it stops working if unused.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When a gateway used it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub used_at: Option<Timestamp>,
    /// The gateway that enrolled with it.
    pub gateway_id: Option<GatewayId>,
}

#[derive(FromRow)]
struct GatewayTokenRow {
    id: String,
    site_id: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    gateway_id: Option<String>,
}

impl GatewayTokenRow {
    fn into_model(self) -> Result<GatewayToken, StoreError> {
        const T: &str = "gateway_tokens";
        Ok(GatewayToken {
            id: id(T, &self.id)?,
            site_id: id(T, &self.site_id)?,
            created_at: ts(self.created_at),
            expires_at: ts(self.expires_at),
            used_at: opt_ts(self.used_at),
            gateway_id: self.gateway_id.as_deref().map(|g| id(T, g)).transpose()?,
        })
    }
}

pub async fn insert_gateway_token(
    c: &mut Conn,
    t: &GatewayToken,
    token_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO gateway_tokens (id, site_id, token_hash, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(t.id.to_string())
    .bind(t.site_id.to_string())
    .bind(token_hash)
    .bind(ms(t.created_at))
    .bind(ms(t.expires_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_gateway_tokens(
    c: &mut Conn,
    site: SiteId,
) -> Result<Vec<GatewayToken>, StoreError> {
    sqlx::query_as::<_, GatewayTokenRow>(
        "SELECT id, site_id, created_at, expires_at, used_at, gateway_id FROM gateway_tokens \
         WHERE site_id = $1 ORDER BY created_at DESC",
    )
    .bind(site.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(GatewayTokenRow::into_model)
    .collect()
}

/// Marks an unused, unexpired token as used by `gateway`; returns its site, or `None` when
/// the token is unknown, used or expired. Atomic: two gateways racing with one token cannot
/// both win.
pub async fn consume_gateway_token(
    c: &mut Conn,
    token_hash: &str,
    gateway: GatewayId,
    now: Timestamp,
) -> Result<Option<SiteId>, StoreError> {
    let done = sqlx::query(
        "UPDATE gateway_tokens SET used_at = $2, gateway_id = $3 \
         WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
    )
    .bind(token_hash)
    .bind(ms(now))
    .bind(gateway.to_string())
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    let site: String =
        sqlx::query_scalar("SELECT site_id FROM gateway_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_one(c)
            .await?;
    Ok(Some(id("gateway_tokens", &site)?))
}

// ---------------------------------------------------------------- gateways

#[derive(FromRow)]
struct GatewayRow {
    id: String,
    site_id: String,
    name: String,
    public_key: Option<String>,
    endpoint: Option<String>,
    disabled: i64,
    last_seen_at: Option<i64>,
    created_at: i64,
}

const GATEWAY_COLUMNS: &str =
    "id, site_id, name, public_key, endpoint, disabled, last_seen_at, created_at";

impl GatewayRow {
    fn into_model(self) -> Result<Gateway, StoreError> {
        Ok(Gateway {
            id: id("gateways", &self.id)?,
            site_id: id("gateways", &self.site_id)?,
            name: self.name,
            public_key: self.public_key,
            endpoint: self.endpoint,
            disabled: self.disabled != 0,
            online: false,
            last_seen_at: opt_ts(self.last_seen_at),
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_gateway(
    c: &mut Conn,
    g: &Gateway,
    credential_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO gateways (id, site_id, name, credential_hash, public_key, endpoint, disabled, \
         last_seen_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(g.id.to_string())
    .bind(g.site_id.to_string())
    .bind(&g.name)
    .bind(credential_hash)
    .bind(g.public_key.clone())
    .bind(g.endpoint.clone())
    .bind(flag(g.disabled))
    .bind(opt_ms(g.last_seen_at))
    .bind(ms(g.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_gateways(c: &mut Conn, site: Option<SiteId>) -> Result<Vec<Gateway>, StoreError> {
    let rows = match site {
        Some(site) => {
            sqlx::query_as::<_, GatewayRow>(&format!(
                "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE site_id = $1 ORDER BY name"
            ))
            .bind(site.to_string())
            .fetch_all(c)
            .await?
        }
        None => {
            sqlx::query_as::<_, GatewayRow>(&format!(
                "SELECT {GATEWAY_COLUMNS} FROM gateways ORDER BY name"
            ))
            .fetch_all(c)
            .await?
        }
    };
    rows.into_iter().map(GatewayRow::into_model).collect()
}

pub async fn get_gateway(c: &mut Conn, g: GatewayId) -> Result<Option<Gateway>, StoreError> {
    sqlx::query_as::<_, GatewayRow>(&format!(
        "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE id = $1"
    ))
    .bind(g.to_string())
    .fetch_optional(c)
    .await?
    .map(GatewayRow::into_model)
    .transpose()
}

pub async fn gateway_by_credential(
    c: &mut Conn,
    credential_hash: &str,
) -> Result<Option<Gateway>, StoreError> {
    sqlx::query_as::<_, GatewayRow>(&format!(
        "SELECT {GATEWAY_COLUMNS} FROM gateways WHERE credential_hash = $1"
    ))
    .bind(credential_hash)
    .fetch_optional(c)
    .await?
    .map(GatewayRow::into_model)
    .transpose()
}

pub async fn update_gateway(c: &mut Conn, g: &Gateway) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE gateways SET name = $2, public_key = $3, endpoint = $4, disabled = $5, \
         last_seen_at = $6 WHERE id = $1",
    )
    .bind(g.id.to_string())
    .bind(&g.name)
    .bind(g.public_key.clone())
    .bind(g.endpoint.clone())
    .bind(flag(g.disabled))
    .bind(opt_ms(g.last_seen_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn delete_gateway(c: &mut Conn, g: GatewayId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM gateways WHERE id = $1")
        .bind(g.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Records a gateway's control connection: its WireGuard key, endpoint and the time.
pub async fn gateway_seen(
    c: &mut Conn,
    g: GatewayId,
    public_key: Option<&str>,
    endpoint: Option<&str>,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE gateways SET public_key = COALESCE($2, public_key), \
         endpoint = COALESCE($3, endpoint), last_seen_at = $4 WHERE id = $1",
    )
    .bind(g.to_string())
    .bind(public_key.map(str::to_owned))
    .bind(endpoint.map(str::to_owned))
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}
