//! What a gateway's control link needs: recording it online and offline, and its grants as
//! the gateway receives them.

use std::collections::HashMap;
use std::net::SocketAddr;

use model::{Gateway, GatewayId, GrantId, Role};
use proto::GrantSpec;

use super::kernel::{Actor, Service, ServiceError, now, subject};

impl Service {
    /// Records that a gateway's control connection is up: its key, endpoint and the time.
    /// False when the gateway is disabled or deleted by now.
    pub(crate) async fn gateway_online(
        &self,
        g: &Gateway,
        remote: SocketAddr,
    ) -> Result<bool, ServiceError> {
        let mut tx = self.store.begin().await?;
        if store::get_gateway(&mut tx, g.id)
            .await?
            .is_none_or(|current| current.disabled)
        {
            return Ok(false);
        }
        store::gateway_seen(
            &mut tx,
            g.id,
            g.public_key.as_deref(),
            g.endpoint.as_deref(),
            now(),
        )
        .await?;
        self.audit(
            &mut tx,
            &gateway_actor(g.id, &g.name),
            "gateway.online",
            subject("gateway", g.id),
            serde_json::json!({
                "site": g.site_id, "public_key": g.public_key, "endpoint": g.endpoint,
                "remote": remote.to_string(),
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that a gateway's control connection ended.
    pub(crate) async fn gateway_offline(
        &self,
        id: GatewayId,
        reason: &str,
    ) -> Result<(), ServiceError> {
        let mut tx = self.store.begin().await?;
        let name = store::get_gateway(&mut tx, id)
            .await?
            .map_or_else(|| id.to_string(), |g| g.name);
        store::gateway_seen(&mut tx, id, None, None, now()).await?;
        self.audit(
            &mut tx,
            &gateway_actor(id, &name),
            "gateway.offline",
            subject("gateway", id),
            serde_json::json!({ "reason": reason }),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// One live grant as its gateway needs it; `None` once it is revoked or expired.
    pub(crate) async fn grant_spec(&self, id: GrantId) -> Result<Option<GrantSpec>, ServiceError> {
        let mut c = self.store.conn().await?;
        let Some((g, preshared_key)) = store::live_grant_with_key(&mut c, id, now()).await? else {
            return Ok(None);
        };
        let Some(r) = store::get_resource(&mut c, g.resource_id).await? else {
            return Ok(None);
        };
        Ok(Some(grant_spec(g, preshared_key, &r)?))
    }

    /// Every live grant of a gateway as the gateway needs it.
    pub(crate) async fn gateway_grants(
        &self,
        id: GatewayId,
    ) -> Result<Vec<GrantSpec>, ServiceError> {
        let mut c = self.store.conn().await?;
        let grants = store::live_grants_with_keys(&mut c, id, now()).await?;
        let mut resources = HashMap::new();
        let mut specs = Vec::with_capacity(grants.len());
        for (g, preshared_key) in grants {
            let r = match resources.entry(g.resource_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(store::get_resource(&mut c, g.resource_id).await?)
                }
            };
            // A grant outlives a deleted resource only until its revocation commits.
            let Some(r) = r else {
                continue;
            };
            specs.push(grant_spec(g, preshared_key, r)?);
        }
        Ok(specs)
    }
}

pub(crate) fn grant_spec(
    g: model::Grant,
    preshared_key: String,
    r: &model::Resource,
) -> Result<GrantSpec, ServiceError> {
    let corrupt = |e: model::KeyError| store::StoreError::Corrupt {
        table: "grants",
        message: e.to_string(),
    };
    Ok(GrantSpec {
        id: g.id,
        public_key: g.public_key.parse().map_err(corrupt)?,
        preshared_key: preshared_key.parse().map_err(corrupt)?,
        tunnel_address: g.tunnel_address,
        addresses: r.addresses.clone(),
        ports: r.ports.clone(),
        expires_at: g.expires_at,
    })
}

fn gateway_actor(id: GatewayId, name: &str) -> Actor {
    Actor {
        id: subject("gateway", id),
        name: name.to_owned(),
        role: Role::User,
    }
}
