//! Per-table reads and writes. Each function runs on the connection it is given, so that a
//! service can put several of them, and the audit row, in one transaction.

use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;
use model::{
    Conditions, Device, DeviceId, EnrollmentKeyId, Gateway, GatewayId, Grant, GrantId, Group,
    GroupId, Policy, PolicyAction, PolicyId, PostureProfile, PostureProfileId, PostureReport,
    Resource, ResourceId, Role, Site, SiteId, TokenId, User, UserId,
};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use super::{Conn, StoreError, flag, id, ms, opt_ms, opt_ts, ts};

fn json<T: serde::de::DeserializeOwned>(table: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt {
        table,
        message: e.to_string(),
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Serializing our own model types to JSON cannot fail: they hold no maps with
    // non-string keys and no failing Serialize impls.
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

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

// ---------------------------------------------------------------- resources

#[derive(FromRow)]
struct ResourceRow {
    id: String,
    name: String,
    site_id: String,
    addresses: String,
    ports: String,
    created_at: i64,
}

const RESOURCE_COLUMNS: &str = "id, name, site_id, addresses, ports, created_at";

impl ResourceRow {
    fn into_model(self) -> Result<Resource, StoreError> {
        const T: &str = "resources";
        Ok(Resource {
            id: id(T, &self.id)?,
            name: self.name,
            site_id: id(T, &self.site_id)?,
            addresses: json(T, &self.addresses)?,
            ports: json(T, &self.ports)?,
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_resource(c: &mut Conn, r: &Resource) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO resources (id, name, site_id, addresses, ports, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(r.id.to_string())
    .bind(&r.name)
    .bind(r.site_id.to_string())
    .bind(to_json(&r.addresses))
    .bind(to_json(&r.ports))
    .bind(ms(r.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_resource(c: &mut Conn, r: &Resource) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE resources SET name = $2, site_id = $3, addresses = $4, ports = $5 WHERE id = $1",
    )
    .bind(r.id.to_string())
    .bind(&r.name)
    .bind(r.site_id.to_string())
    .bind(to_json(&r.addresses))
    .bind(to_json(&r.ports))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_resources(
    c: &mut Conn,
    site: Option<SiteId>,
) -> Result<Vec<Resource>, StoreError> {
    let rows = match site {
        Some(site) => {
            sqlx::query_as::<_, ResourceRow>(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources WHERE site_id = $1 ORDER BY name"
            ))
            .bind(site.to_string())
            .fetch_all(c)
            .await?
        }
        None => {
            sqlx::query_as::<_, ResourceRow>(&format!(
                "SELECT {RESOURCE_COLUMNS} FROM resources ORDER BY name"
            ))
            .fetch_all(c)
            .await?
        }
    };
    rows.into_iter().map(ResourceRow::into_model).collect()
}

pub async fn get_resource(c: &mut Conn, r: ResourceId) -> Result<Option<Resource>, StoreError> {
    sqlx::query_as::<_, ResourceRow>(&format!(
        "SELECT {RESOURCE_COLUMNS} FROM resources WHERE id = $1"
    ))
    .bind(r.to_string())
    .fetch_optional(c)
    .await?
    .map(ResourceRow::into_model)
    .transpose()
}

pub async fn delete_resource(c: &mut Conn, r: ResourceId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM resources WHERE id = $1")
        .bind(r.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- users

#[derive(FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    role: String,
    disabled: i64,
    created_at: i64,
}

const USER_COLUMNS: &str = "id, email, name, role, disabled, created_at";

impl UserRow {
    fn into_model(self) -> Result<User, StoreError> {
        Ok(User {
            id: id("users", &self.id)?,
            email: self.email,
            name: self.name,
            role: Role::parse(&self.role).ok_or_else(|| StoreError::Corrupt {
                table: "users",
                message: format!("unknown role `{}`", self.role),
            })?,
            disabled: self.disabled != 0,
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_user(c: &mut Conn, u: &User) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO users (id, email, name, role, disabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(u.id.to_string())
    .bind(&u.email)
    .bind(&u.name)
    .bind(u.role.as_str())
    .bind(flag(u.disabled))
    .bind(ms(u.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_user(c: &mut Conn, u: &User) -> Result<(), StoreError> {
    sqlx::query("UPDATE users SET email = $2, name = $3, role = $4, disabled = $5 WHERE id = $1")
        .bind(u.id.to_string())
        .bind(&u.email)
        .bind(&u.name)
        .bind(u.role.as_str())
        .bind(flag(u.disabled))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_users(c: &mut Conn) -> Result<Vec<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY email"))
        .fetch_all(c)
        .await?
        .into_iter()
        .map(UserRow::into_model)
        .collect()
}

pub async fn get_user(c: &mut Conn, u: UserId) -> Result<Option<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(u.to_string())
        .fetch_optional(c)
        .await?
        .map(UserRow::into_model)
        .transpose()
}

pub async fn user_by_email(c: &mut Conn, email: &str) -> Result<Option<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE email = $1"
    ))
    .bind(email)
    .fetch_optional(c)
    .await?
    .map(UserRow::into_model)
    .transpose()
}

pub async fn count_admins(c: &mut Conn) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0")
            .fetch_one(c)
            .await?,
    )
}

pub async fn delete_user(c: &mut Conn, u: UserId) -> Result<bool, StoreError> {
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = created_at WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(u.to_string())
    .execute(&mut *c)
    .await?;
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(u.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- groups

#[derive(FromRow)]
struct GroupRow {
    id: String,
    name: String,
    description: String,
    created_at: i64,
}

impl GroupRow {
    fn into_model(self) -> Result<Group, StoreError> {
        Ok(Group {
            id: id("user_groups", &self.id)?,
            name: self.name,
            description: self.description,
            created_at: ts(self.created_at),
        })
    }
}

pub async fn insert_group(c: &mut Conn, g: &Group) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO user_groups (id, name, description, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(g.id.to_string())
    .bind(&g.name)
    .bind(&g.description)
    .bind(ms(g.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_group(c: &mut Conn, g: &Group) -> Result<(), StoreError> {
    sqlx::query("UPDATE user_groups SET name = $2, description = $3 WHERE id = $1")
        .bind(g.id.to_string())
        .bind(&g.name)
        .bind(&g.description)
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_groups(c: &mut Conn) -> Result<Vec<Group>, StoreError> {
    sqlx::query_as::<_, GroupRow>(
        "SELECT id, name, description, created_at FROM user_groups ORDER BY name",
    )
    .fetch_all(c)
    .await?
    .into_iter()
    .map(GroupRow::into_model)
    .collect()
}

pub async fn get_group(c: &mut Conn, g: GroupId) -> Result<Option<Group>, StoreError> {
    sqlx::query_as::<_, GroupRow>(
        "SELECT id, name, description, created_at FROM user_groups WHERE id = $1",
    )
    .bind(g.to_string())
    .fetch_optional(c)
    .await?
    .map(GroupRow::into_model)
    .transpose()
}

pub async fn delete_group(c: &mut Conn, g: GroupId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM user_groups WHERE id = $1")
        .bind(g.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Adds `user` to `group`; `false` when they already were a member.
pub async fn add_member(
    c: &mut Conn,
    group: GroupId,
    user: UserId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let exists: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND user_id = $2",
    )
    .bind(group.to_string())
    .bind(user.to_string())
    .fetch_one(&mut *c)
    .await?;
    if exists > 0 {
        return Ok(false);
    }
    sqlx::query("INSERT INTO group_members (group_id, user_id, added_at) VALUES ($1, $2, $3)")
        .bind(group.to_string())
        .bind(user.to_string())
        .bind(ms(now))
        .execute(c)
        .await?;
    Ok(true)
}

pub async fn remove_member(c: &mut Conn, group: GroupId, user: UserId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
        .bind(group.to_string())
        .bind(user.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn group_members(c: &mut Conn, group: GroupId) -> Result<Vec<User>, StoreError> {
    sqlx::query_as::<_, UserRow>(
        "SELECT u.id, u.email, u.name, u.role, u.disabled, u.created_at FROM users u \
         JOIN group_members m ON m.user_id = u.id WHERE m.group_id = $1 ORDER BY u.email",
    )
    .bind(group.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(UserRow::into_model)
    .collect()
}

pub async fn groups_of_user(c: &mut Conn, user: UserId) -> Result<Vec<GroupId>, StoreError> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM group_members WHERE user_id = $1 ORDER BY group_id",
    )
    .bind(user.to_string())
    .fetch_all(c)
    .await?;
    ids.iter().map(|g| id("group_members", g)).collect()
}

// ---------------------------------------------------------------- devices

#[derive(FromRow)]
struct DeviceRow {
    id: String,
    user_id: String,
    name: String,
    public_key: String,
    disabled: i64,
    created_at: i64,
    last_seen_at: Option<i64>,
}

const DEVICE_COLUMNS: &str = "id, user_id, name, public_key, disabled, created_at, last_seen_at";

impl DeviceRow {
    fn into_model(self) -> Result<Device, StoreError> {
        Ok(Device {
            id: id("devices", &self.id)?,
            user_id: id("devices", &self.user_id)?,
            name: self.name,
            public_key: self.public_key,
            disabled: self.disabled != 0,
            created_at: ts(self.created_at),
            last_seen_at: opt_ts(self.last_seen_at),
        })
    }
}

pub async fn insert_device(c: &mut Conn, d: &Device) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO devices (id, user_id, name, public_key, disabled, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(d.id.to_string())
    .bind(d.user_id.to_string())
    .bind(&d.name)
    .bind(&d.public_key)
    .bind(flag(d.disabled))
    .bind(ms(d.created_at))
    .bind(opt_ms(d.last_seen_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_device(c: &mut Conn, d: &Device) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET name = $2, disabled = $3, last_seen_at = $4 WHERE id = $1")
        .bind(d.id.to_string())
        .bind(&d.name)
        .bind(flag(d.disabled))
        .bind(opt_ms(d.last_seen_at))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_devices(c: &mut Conn, user: Option<UserId>) -> Result<Vec<Device>, StoreError> {
    let rows = match user {
        Some(user) => {
            sqlx::query_as::<_, DeviceRow>(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices WHERE user_id = $1 ORDER BY created_at"
            ))
            .bind(user.to_string())
            .fetch_all(c)
            .await?
        }
        None => {
            sqlx::query_as::<_, DeviceRow>(&format!(
                "SELECT {DEVICE_COLUMNS} FROM devices ORDER BY created_at"
            ))
            .fetch_all(c)
            .await?
        }
    };
    rows.into_iter().map(DeviceRow::into_model).collect()
}

pub async fn get_device(c: &mut Conn, d: DeviceId) -> Result<Option<Device>, StoreError> {
    sqlx::query_as::<_, DeviceRow>(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
    ))
    .bind(d.to_string())
    .fetch_optional(c)
    .await?
    .map(DeviceRow::into_model)
    .transpose()
}

pub async fn device_by_public_key(
    c: &mut Conn,
    public_key: &str,
) -> Result<Option<Device>, StoreError> {
    sqlx::query_as::<_, DeviceRow>(&format!(
        "SELECT {DEVICE_COLUMNS} FROM devices WHERE public_key = $1"
    ))
    .bind(public_key)
    .fetch_optional(c)
    .await?
    .map(DeviceRow::into_model)
    .transpose()
}

/// Records that a device was seen now.
pub async fn touch_device(c: &mut Conn, d: DeviceId, at: Timestamp) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET last_seen_at = $2 WHERE id = $1")
        .bind(d.to_string())
        .bind(ms(at))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn delete_device(c: &mut Conn, d: DeviceId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM devices WHERE id = $1")
        .bind(d.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn set_posture(
    c: &mut Conn,
    d: DeviceId,
    report: &PostureReport,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE devices SET posture = $2 WHERE id = $1")
        .bind(d.to_string())
        .bind(to_json(report))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn get_posture(c: &mut Conn, d: DeviceId) -> Result<Option<PostureReport>, StoreError> {
    let raw: Option<Option<String>> =
        sqlx::query_scalar("SELECT posture FROM devices WHERE id = $1")
            .bind(d.to_string())
            .fetch_optional(c)
            .await?;
    raw.flatten().map(|s| json("devices", &s)).transpose()
}

// ---------------------------------------------------------------- enrollment keys

/// An enrollment key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollmentKey {
    /// The key's id.
    pub id: EnrollmentKeyId,
    /// The user a device enrolled with it belongs to.
    pub user_id: UserId,
    /// Whether it may enroll several devices until it expires.
    pub reusable: bool,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it stops working.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
    /// When it was last used.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub used_at: Option<Timestamp>,
    /// When an admin revoked it.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

#[derive(FromRow)]
struct EnrollmentKeyRow {
    id: String,
    user_id: String,
    reusable: i64,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    revoked_at: Option<i64>,
}

const ENROLLMENT_KEY_COLUMNS: &str =
    "id, user_id, reusable, created_at, expires_at, used_at, revoked_at";

impl EnrollmentKeyRow {
    fn into_model(self) -> Result<EnrollmentKey, StoreError> {
        Ok(EnrollmentKey {
            id: id("enrollment_keys", &self.id)?,
            user_id: id("enrollment_keys", &self.user_id)?,
            reusable: self.reusable != 0,
            created_at: ts(self.created_at),
            expires_at: ts(self.expires_at),
            used_at: opt_ts(self.used_at),
            revoked_at: opt_ts(self.revoked_at),
        })
    }
}

pub async fn insert_enrollment_key(
    c: &mut Conn,
    k: &EnrollmentKey,
    key_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO enrollment_keys (id, user_id, key_hash, reusable, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(k.id.to_string())
    .bind(k.user_id.to_string())
    .bind(key_hash)
    .bind(flag(k.reusable))
    .bind(ms(k.created_at))
    .bind(ms(k.expires_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_enrollment_keys(c: &mut Conn) -> Result<Vec<EnrollmentKey>, StoreError> {
    sqlx::query_as::<_, EnrollmentKeyRow>(&format!(
        "SELECT {ENROLLMENT_KEY_COLUMNS} FROM enrollment_keys ORDER BY created_at DESC"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(EnrollmentKeyRow::into_model)
    .collect()
}

pub async fn revoke_enrollment_key(
    c: &mut Conn,
    k: EnrollmentKeyId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE enrollment_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(k.to_string())
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Uses an enrollment key: returns it when it is valid at `now` (unrevoked, unexpired, and
/// unused unless reusable) and records the use; `None` otherwise.
pub async fn consume_enrollment_key(
    c: &mut Conn,
    key_hash: &str,
    now: Timestamp,
) -> Result<Option<EnrollmentKey>, StoreError> {
    let done = sqlx::query(
        "UPDATE enrollment_keys SET used_at = $2 WHERE key_hash = $1 AND revoked_at IS NULL \
         AND expires_at > $2 AND (reusable = 1 OR used_at IS NULL)",
    )
    .bind(key_hash)
    .bind(ms(now))
    .execute(&mut *c)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query_as::<_, EnrollmentKeyRow>(&format!(
        "SELECT {ENROLLMENT_KEY_COLUMNS} FROM enrollment_keys WHERE key_hash = $1"
    ))
    .bind(key_hash)
    .fetch_optional(c)
    .await?
    .map(EnrollmentKeyRow::into_model)
    .transpose()
}

// ---------------------------------------------------------------- posture profiles

#[derive(FromRow)]
struct ProfileRow {
    id: String,
    name: String,
    spec: String,
}

impl ProfileRow {
    fn into_model(self) -> Result<PostureProfile, StoreError> {
        let mut p: PostureProfile = json("posture_profiles", &self.spec)?;
        p.id = id("posture_profiles", &self.id)?;
        p.name = self.name;
        Ok(p)
    }
}

pub async fn insert_profile(
    c: &mut Conn,
    p: &PostureProfile,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO posture_profiles (id, name, spec, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(to_json(p))
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_profile(c: &mut Conn, p: &PostureProfile) -> Result<(), StoreError> {
    sqlx::query("UPDATE posture_profiles SET name = $2, spec = $3 WHERE id = $1")
        .bind(p.id.to_string())
        .bind(&p.name)
        .bind(to_json(p))
        .execute(c)
        .await?;
    Ok(())
}

pub async fn list_profiles(c: &mut Conn) -> Result<Vec<PostureProfile>, StoreError> {
    sqlx::query_as::<_, ProfileRow>("SELECT id, name, spec FROM posture_profiles ORDER BY name")
        .fetch_all(c)
        .await?
        .into_iter()
        .map(ProfileRow::into_model)
        .collect()
}

pub async fn profiles_by_id(
    c: &mut Conn,
) -> Result<BTreeMap<PostureProfileId, PostureProfile>, StoreError> {
    Ok(list_profiles(c)
        .await?
        .into_iter()
        .map(|p| (p.id, p))
        .collect())
}

pub async fn get_profile(
    c: &mut Conn,
    p: PostureProfileId,
) -> Result<Option<PostureProfile>, StoreError> {
    sqlx::query_as::<_, ProfileRow>("SELECT id, name, spec FROM posture_profiles WHERE id = $1")
        .bind(p.to_string())
        .fetch_optional(c)
        .await?
        .map(ProfileRow::into_model)
        .transpose()
}

pub async fn delete_profile(c: &mut Conn, p: PostureProfileId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM posture_profiles WHERE id = $1")
        .bind(p.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- policies

#[derive(FromRow)]
struct PolicyRow {
    id: String,
    name: String,
    group_id: String,
    resource_id: String,
    action: String,
    conditions: String,
    max_session_secs: i64,
    disabled: i64,
    created_at: i64,
}

const POLICY_COLUMNS: &str =
    "id, name, group_id, resource_id, action, conditions, max_session_secs, disabled, created_at";

impl PolicyRow {
    fn into_model(self) -> Result<Policy, StoreError> {
        const T: &str = "policies";
        Ok(Policy {
            id: id(T, &self.id)?,
            name: self.name,
            group_id: id(T, &self.group_id)?,
            resource_id: id(T, &self.resource_id)?,
            action: match self.action.as_str() {
                "allow" => PolicyAction::Allow,
                "deny" => PolicyAction::Deny,
                other => {
                    return Err(StoreError::Corrupt {
                        table: T,
                        message: format!("unknown action `{other}`"),
                    });
                }
            },
            conditions: json::<Conditions>(T, &self.conditions)?,
            max_session_secs: u64::try_from(self.max_session_secs).unwrap_or(0),
            disabled: self.disabled != 0,
            created_at: ts(self.created_at),
        })
    }
}

fn action_str(a: PolicyAction) -> &'static str {
    match a {
        PolicyAction::Allow => "allow",
        PolicyAction::Deny => "deny",
    }
}

pub async fn insert_policy(c: &mut Conn, p: &Policy) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO policies (id, name, group_id, resource_id, action, conditions, \
         max_session_secs, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(p.group_id.to_string())
    .bind(p.resource_id.to_string())
    .bind(action_str(p.action))
    .bind(to_json(&p.conditions))
    .bind(i64::try_from(p.max_session_secs).unwrap_or(i64::MAX))
    .bind(flag(p.disabled))
    .bind(ms(p.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn update_policy(c: &mut Conn, p: &Policy) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE policies SET name = $2, group_id = $3, resource_id = $4, action = $5, \
         conditions = $6, max_session_secs = $7, disabled = $8 WHERE id = $1",
    )
    .bind(p.id.to_string())
    .bind(&p.name)
    .bind(p.group_id.to_string())
    .bind(p.resource_id.to_string())
    .bind(action_str(p.action))
    .bind(to_json(&p.conditions))
    .bind(i64::try_from(p.max_session_secs).unwrap_or(i64::MAX))
    .bind(flag(p.disabled))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_policies(c: &mut Conn) -> Result<Vec<Policy>, StoreError> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies ORDER BY name"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(PolicyRow::into_model)
    .collect()
}

pub async fn policies_for_resource(c: &mut Conn, r: ResourceId) -> Result<Vec<Policy>, StoreError> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE resource_id = $1 ORDER BY id"
    ))
    .bind(r.to_string())
    .fetch_all(c)
    .await?
    .into_iter()
    .map(PolicyRow::into_model)
    .collect()
}

pub async fn get_policy(c: &mut Conn, p: PolicyId) -> Result<Option<Policy>, StoreError> {
    sqlx::query_as::<_, PolicyRow>(&format!(
        "SELECT {POLICY_COLUMNS} FROM policies WHERE id = $1"
    ))
    .bind(p.to_string())
    .fetch_optional(c)
    .await?
    .map(PolicyRow::into_model)
    .transpose()
}

pub async fn delete_policy(c: &mut Conn, p: PolicyId) -> Result<bool, StoreError> {
    let done = sqlx::query("DELETE FROM policies WHERE id = $1")
        .bind(p.to_string())
        .execute(c)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Counts the policies that name `column = value` (for refusing deletes with a clear reason).
pub async fn policies_referencing(
    c: &mut Conn,
    column: PolicyRef,
    value: &str,
) -> Result<Vec<String>, StoreError> {
    let sql = match column {
        PolicyRef::Group => "SELECT name FROM policies WHERE group_id = $1 ORDER BY name",
        PolicyRef::Resource => "SELECT name FROM policies WHERE resource_id = $1 ORDER BY name",
    };
    Ok(sqlx::query_scalar(sql).bind(value).fetch_all(c).await?)
}

/// A column of `policies` that points at another object.
#[derive(Debug, Clone, Copy)]
pub enum PolicyRef {
    Group,
    Resource,
}

// ---------------------------------------------------------------- grants

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

// ---------------------------------------------------------------- tunnel addresses

/// The tunnel address a device holds a live lease on, if any.
pub async fn device_tunnel_address(
    c: &mut Conn,
    device: DeviceId,
    now: Timestamp,
) -> Result<Option<IpAddr>, StoreError> {
    let row: Option<String> = sqlx::query_scalar(
        "SELECT address FROM tunnel_addresses WHERE device_id = $1 AND expires_at > $2 \
         ORDER BY expires_at DESC LIMIT 1",
    )
    .bind(device.to_string())
    .bind(ms(now))
    .fetch_optional(c)
    .await?;
    row.map(|a| id::<IpAddr>("tunnel_addresses", &a))
        .transpose()
}

/// Takes `address` for `device` until `expires_at` unless another device holds a live lease
/// on it; extends the device's own lease. Returns whether the address is now the device's.
/// Atomic, so two replicas racing for one address cannot both win.
pub async fn claim_tunnel_address(
    c: &mut Conn,
    address: IpAddr,
    device: DeviceId,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO tunnel_addresses (address, device_id, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (address) DO UPDATE SET device_id = excluded.device_id, \
         expires_at = CASE WHEN tunnel_addresses.expires_at > excluded.expires_at \
         THEN tunnel_addresses.expires_at ELSE excluded.expires_at END \
         WHERE tunnel_addresses.expires_at <= $4 OR tunnel_addresses.device_id = $2",
    )
    .bind(address.to_string())
    .bind(device.to_string())
    .bind(ms(expires_at))
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Every address under a live lease.
pub async fn leased_tunnel_addresses(
    c: &mut Conn,
    now: Timestamp,
) -> Result<Vec<IpAddr>, StoreError> {
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT address FROM tunnel_addresses WHERE expires_at > $1")
            .bind(ms(now))
            .fetch_all(c)
            .await?;
    rows.iter()
        .map(|a| id::<IpAddr>("tunnel_addresses", a))
        .collect()
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

// ---------------------------------------------------------------- API tokens

/// An API token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    /// The token's id.
    pub id: TokenId,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The user it acts for, when it belongs to one.
    pub user_id: Option<UserId>,
    /// When it was created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When it was last used.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_used_at: Option<Timestamp>,
    /// When it was revoked.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub revoked_at: Option<Timestamp>,
}

#[derive(FromRow)]
struct ApiTokenRow {
    id: String,
    name: String,
    role: String,
    user_id: Option<String>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

const TOKEN_COLUMNS: &str = "id, name, role, user_id, created_at, last_used_at, revoked_at";

impl ApiTokenRow {
    fn into_model(self) -> Result<ApiToken, StoreError> {
        const T: &str = "api_tokens";
        Ok(ApiToken {
            id: id(T, &self.id)?,
            name: self.name,
            role: Role::parse(&self.role).ok_or_else(|| StoreError::Corrupt {
                table: T,
                message: format!("unknown role `{}`", self.role),
            })?,
            user_id: self.user_id.as_deref().map(|u| id(T, u)).transpose()?,
            created_at: ts(self.created_at),
            last_used_at: opt_ts(self.last_used_at),
            revoked_at: opt_ts(self.revoked_at),
        })
    }
}

pub async fn insert_api_token(
    c: &mut Conn,
    t: &ApiToken,
    token_hash: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO api_tokens (id, name, role, token_hash, user_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.id.to_string())
    .bind(&t.name)
    .bind(t.role.as_str())
    .bind(token_hash)
    .bind(t.user_id.map(|u| u.to_string()))
    .bind(ms(t.created_at))
    .execute(c)
    .await?;
    Ok(())
}

pub async fn list_api_tokens(c: &mut Conn) -> Result<Vec<ApiToken>, StoreError> {
    sqlx::query_as::<_, ApiTokenRow>(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC"
    ))
    .fetch_all(c)
    .await?
    .into_iter()
    .map(ApiTokenRow::into_model)
    .collect()
}

/// The unrevoked token with this hash, after recording its use.
pub async fn use_api_token(
    c: &mut Conn,
    token_hash: &str,
    now: Timestamp,
) -> Result<Option<ApiToken>, StoreError> {
    let token = sqlx::query_as::<_, ApiTokenRow>(&format!(
        "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(token_hash)
    .fetch_optional(&mut *c)
    .await?
    .map(ApiTokenRow::into_model)
    .transpose()?;
    if let Some(t) = &token {
        // Only write when the recorded use is over a minute old, to keep reads cheap.
        let stale = t
            .last_used_at
            .is_none_or(|at| now.as_millisecond() - at.as_millisecond() > 60_000);
        if stale {
            sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                .bind(t.id.to_string())
                .bind(ms(now))
                .execute(c)
                .await?;
        }
    }
    Ok(token)
}

pub async fn revoke_api_token(
    c: &mut Conn,
    t: TokenId,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(t.to_string())
            .bind(ms(now))
            .execute(c)
            .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- setup code

/// Stores a fresh setup code hash, replacing any unused one.
pub async fn put_setup_code(
    c: &mut Conn,
    code_hash: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM setup_codes WHERE id = 1")
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO setup_codes (id, code_hash, created_at) VALUES (1, $1, $2)")
        .bind(code_hash)
        .bind(ms(now))
        .execute(c)
        .await?;
    Ok(())
}

/// Consumes the setup code if `code_hash` matches the unused one.
pub async fn consume_setup_code(
    c: &mut Conn,
    code_hash: &str,
    now: Timestamp,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE setup_codes SET used_at = $2 WHERE id = 1 AND code_hash = $1 AND used_at IS NULL",
    )
    .bind(code_hash)
    .bind(ms(now))
    .execute(c)
    .await?;
    Ok(done.rows_affected() > 0)
}

// ---------------------------------------------------------------- audit

/// One append-only audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// The event's id (time-ordered).
    pub id: model::AuditEventId,
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who acted: `user:<id>`, `token:<id>`, `gateway:<id>`, `setup` or `system`.
    pub actor: String,
    /// The actor's readable name.
    pub actor_name: String,
    /// What happened, e.g. `resource.created`, `decision.deny`.
    pub kind: String,
    /// What it happened to, e.g. `resource:<id>`.
    pub subject: String,
    /// The particulars. Never holds a secret.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(FromRow)]
struct AuditRow {
    id: String,
    at: i64,
    actor: String,
    actor_name: String,
    kind: String,
    subject: String,
    details: String,
}

impl AuditRow {
    fn into_model(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: id("audit_events", &self.id)?,
            at: ts(self.at),
            actor: self.actor,
            actor_name: self.actor_name,
            kind: self.kind,
            subject: self.subject,
            details: json("audit_events", &self.details)?,
        })
    }
}

pub async fn append_audit(c: &mut Conn, e: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, actor, actor_name, kind, subject, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.id.to_string())
    .bind(ms(e.at))
    .bind(&e.actor)
    .bind(&e.actor_name)
    .bind(&e.kind)
    .bind(&e.subject)
    .bind(to_json(&e.details))
    .execute(c)
    .await?;
    Ok(())
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events by this actor (`user:<id>`, `token:<id>`, …).
    pub actor: Option<String>,
    /// Events about this subject (`resource:<id>`, …).
    pub subject: Option<String>,
    /// Events of this kind, or of every kind under it when it ends in `.` (e.g. `decision.`).
    pub kind: Option<String>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// At most this many, newest first.
    pub limit: u32,
}

pub async fn query_audit(c: &mut Conn, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
    let mut clauses = Vec::new();
    let mut text = Vec::new();
    for (column, value) in [("actor", &f.actor), ("subject", &f.subject)] {
        if let Some(v) = value {
            text.push(v.clone());
            clauses.push(format!("{column} = ${}", text.len()));
        }
    }
    if let Some(kind) = &f.kind {
        if let Some(prefix) = kind.strip_suffix('.') {
            text.push(format!("{prefix}.%"));
            clauses.push(format!("kind LIKE ${}", text.len()));
        } else {
            text.push(kind.clone());
            clauses.push(format!("kind = ${}", text.len()));
        }
    }
    let mut times = Vec::new();
    for (op, value) in [(">=", f.since), ("<", f.until)] {
        if let Some(v) = value {
            times.push(ms(v));
            clauses.push(format!("at {op} ${}", text.len() + times.len()));
        }
    }
    let clause = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT id, at, actor, actor_name, kind, subject, details FROM audit_events{clause} \
         ORDER BY at DESC, id DESC LIMIT {}",
        f.limit.max(1)
    );
    let mut q = sqlx::query_as::<_, AuditRow>(&sql);
    for t in text {
        q = q.bind(t);
    }
    for t in times {
        q = q.bind(t);
    }
    q.fetch_all(c)
        .await?
        .into_iter()
        .map(AuditRow::into_model)
        .collect()
}
