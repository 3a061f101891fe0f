//! Resources: the addresses and ports behind a site's gateways that policies grant access to.

use model::{Resource, ResourceId, SiteId};
use sqlx::FromRow;

use crate::codec::{id, json, ms, to_json, ts};
use crate::{Conn, StoreError};

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
