//! Sites, their gateways and gateway tokens, and resources.

use jiff::Timestamp;
use model::{Gateway, GatewayId, PortRule, Resource, ResourceId, Role, Site, SiteId, TokenId};
use serde::Deserialize;

use super::kernel::{
    Actor, DAY, Issued, Result, Service, ServiceError, addresses, after, duration, invalid, name,
    now, on_duplicate, subject, unused,
};
use crate::secrets;
use store::{self, Conn, GatewayToken, GrantFilter, PolicyRef};

/// A site to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteInput {
    /// A unique name.
    pub name: String,
}

/// Options for a new gateway enrollment token.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayTokenInput {
    /// How long the token may wait for its gateway, in seconds (default one day, at most 30).
    #[serde(default)]
    pub expires_in_secs: Option<u64>,
}

/// Changes to a gateway.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayPatch {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// Disable (revoking its grants) or enable it.
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A resource to create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourceInput {
    /// A unique name.
    pub name: String,
    /// The site whose gateways reach it.
    pub site_id: SiteId,
    /// IPv4/IPv6 addresses and CIDRs, e.g. `10.0.5.20` or `10.0.6.0/24`.
    pub addresses: Vec<String>,
    /// `tcp/22`, `tcp/8000-8080`, `udp/53`, `icmp`; empty means every protocol and port.
    #[serde(default)]
    pub ports: Vec<String>,
}

impl Service {
    /// Lists sites.
    pub async fn list_sites(&self, actor: &Actor) -> Result<Vec<Site>> {
        Self::require_reader(actor)?;
        Ok(store::list_sites(&mut *self.store.conn().await?).await?)
    }

    /// One site.
    pub async fn get_site(&self, actor: &Actor, id: SiteId) -> Result<Site> {
        Self::require_reader(actor)?;
        store::get_site(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("site"))
    }

    /// Creates a site.
    pub async fn create_site(&self, actor: &Actor, input: SiteInput) -> Result<Site> {
        Self::require_admin(actor)?;
        let site = Site {
            id: SiteId::new(),
            name: name("name", &input.name)?,
            created_at: now(),
        };
        let mut tx = self.store.begin().await?;
        store::insert_site(&mut tx, &site)
            .await
            .map_err(on_duplicate("name", "site", &site.name))?;
        self.audit(
            &mut tx,
            actor,
            "site.created",
            subject("site", site.id),
            serde_json::to_value(&site).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(site)
    }

    /// Renames a site.
    pub async fn update_site(&self, actor: &Actor, id: SiteId, input: SiteInput) -> Result<Site> {
        Self::require_admin(actor)?;
        let new_name = name("name", &input.name)?;
        let mut tx = self.store.begin().await?;
        let mut site = store::get_site(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        site.name = new_name;
        store::update_site(&mut tx, &site)
            .await
            .map_err(on_duplicate("name", "site", &site.name))?;
        self.audit(
            &mut tx,
            actor,
            "site.updated",
            subject("site", id),
            serde_json::to_value(&site).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(site)
    }

    /// Deletes a site that has no resources and no gateways.
    pub async fn delete_site(&self, actor: &Actor, id: SiteId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_site(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        let resources = store::list_resources(&mut tx, Some(id)).await?;
        let gateways = store::list_gateways(&mut tx, Some(id)).await?;
        if !resources.is_empty() || !gateways.is_empty() {
            return Err(ServiceError::Conflict {
                field: None,
                message: format!(
                    "the site still has {} resource(s) and {} gateway(s): delete them first",
                    resources.len(),
                    gateways.len()
                ),
            });
        }
        store::delete_site(&mut tx, id).await?;
        self.record_deletion(&mut tx, actor, "site", id, None)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Creates a one-time gateway enrollment token for a site, shown once.
    pub async fn create_gateway_token(
        &self,
        actor: &Actor,
        site: SiteId,
        input: GatewayTokenInput,
    ) -> Result<Issued<GatewayToken>> {
        Self::require_admin(actor)?;
        let secs = duration("expires_in_secs", input.expires_in_secs, DAY, 30 * DAY)?;
        let mut tx = self.store.begin().await?;
        store::get_site(&mut tx, site)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        let now = now();
        let secret = secrets::generate("pgt_");
        let token = GatewayToken {
            id: TokenId::new(),
            site_id: site,
            created_at: now,
            expires_at: after(now, secs),
            used_at: None,
            gateway_id: None,
        };
        store::insert_gateway_token(&mut tx, &token, &secrets::hash(&secret)).await?;
        self.audit(
            &mut tx,
            actor,
            "gateway_token.created",
            subject("site", site),
            serde_json::json!({ "token": token.id, "expires_at": token.expires_at }),
        )
        .await?;
        tx.commit().await?;
        Ok(Issued {
            record: token,
            secret,
        })
    }

    /// Lists a site's gateway tokens (without secrets).
    pub async fn list_gateway_tokens(
        &self,
        actor: &Actor,
        site: SiteId,
    ) -> Result<Vec<GatewayToken>> {
        Self::require_reader(actor)?;
        let mut c = self.store.conn().await?;
        store::get_site(&mut c, site)
            .await?
            .ok_or(ServiceError::NotFound("site"))?;
        Ok(store::list_gateway_tokens(&mut c, site).await?)
    }

    /// Exchanges a one-time gateway token for a gateway record and its durable credential.
    pub async fn enroll_gateway(&self, token: &str, gateway_name: &str) -> Result<Issued<Gateway>> {
        let gateway_name = name("name", gateway_name)?;
        let mut tx = self.store.begin().await?;
        let now = now();
        let id = GatewayId::new();
        let site = store::consume_gateway_token(&mut tx, &secrets::hash(token), id, now)
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the gateway token is unknown, used or expired",
            ))?;
        let secret = secrets::generate("pgc_");
        let gateway = Gateway {
            id,
            site_id: site,
            name: gateway_name,
            public_key: None,
            endpoint: None,
            disabled: false,
            online: false,
            last_seen_at: Some(now),
            created_at: now,
        };
        store::insert_gateway(&mut tx, &gateway, &secrets::hash(&secret))
            .await
            .map_err(on_duplicate("name", "gateway", &gateway.name))?;
        let actor = Actor {
            id: subject("gateway", id),
            name: gateway.name.clone(),
            role: Role::User,
        };
        self.audit(
            &mut tx,
            &actor,
            "gateway.enrolled",
            subject("gateway", id),
            serde_json::json!({ "site": site, "name": gateway.name }),
        )
        .await?;
        tx.commit().await?;
        Ok(Issued {
            record: gateway,
            secret,
        })
    }

    /// The enabled gateway holding this durable credential.
    pub async fn authenticate_gateway(&self, credential: &str) -> Result<Gateway> {
        let mut c = self.store.conn().await?;
        let g = store::gateway_by_credential(&mut c, &secrets::hash(credential))
            .await?
            .ok_or(ServiceError::Unauthorized(
                "the gateway credential is unknown",
            ))?;
        if g.disabled {
            return Err(ServiceError::Unauthorized("the gateway is disabled"));
        }
        Ok(g)
    }

    /// Lists gateways, optionally of one site.
    pub async fn list_gateways(&self, actor: &Actor, site: Option<SiteId>) -> Result<Vec<Gateway>> {
        Self::require_reader(actor)?;
        let gateways = store::list_gateways(&mut *self.store.conn().await?, site).await?;
        Ok(gateways.into_iter().map(|g| self.with_online(g)).collect())
    }

    /// The gateway with its `online` flag from the live control connections.
    pub(crate) fn with_online(&self, mut g: Gateway) -> Gateway {
        g.online = !g.disabled && self.bus.gateway_is_online(g.id);
        g
    }

    /// One gateway.
    pub async fn get_gateway(&self, actor: &Actor, id: GatewayId) -> Result<Gateway> {
        Self::require_reader(actor)?;
        store::get_gateway(&mut *self.store.conn().await?, id)
            .await?
            .map(|g| self.with_online(g))
            .ok_or(ServiceError::NotFound("gateway"))
    }

    /// Renames, disables or enables a gateway. Disabling revokes its grants.
    pub async fn update_gateway(
        &self,
        actor: &Actor,
        id: GatewayId,
        patch: GatewayPatch,
    ) -> Result<Gateway> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let mut g = store::get_gateway(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("gateway"))?;
        if let Some(n) = &patch.name {
            g.name = name("name", n)?;
        }
        let disabling = patch.disabled == Some(true) && !g.disabled;
        if let Some(d) = patch.disabled {
            g.disabled = d;
        }
        store::update_gateway(&mut tx, &g)
            .await
            .map_err(on_duplicate("name", "gateway", &g.name))?;
        self.audit(
            &mut tx,
            actor,
            "gateway.updated",
            subject("gateway", id),
            serde_json::json!({ "name": g.name, "disabled": g.disabled }),
        )
        .await?;
        let revoked = if disabling {
            self.revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_gateway(id),
                "gateway disabled",
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
        if disabling {
            self.bus
                .close_gateway(id, "the gateway was disabled by an administrator");
        }
        Ok(self.with_online(g))
    }

    /// Deletes a gateway, revoking its grants.
    pub async fn delete_gateway(&self, actor: &Actor, id: GatewayId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        if !store::delete_gateway(&mut tx, id).await? {
            return Err(ServiceError::NotFound("gateway"));
        }
        let revoked = self
            .record_deletion(
                &mut tx,
                actor,
                "gateway",
                id,
                Some(GrantFilter::for_gateway(id)),
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        self.bus
            .close_gateway(id, "the gateway was deleted by an administrator");
        Ok(())
    }

    async fn resource_from(
        &self,
        c: &mut Conn,
        id: ResourceId,
        input: ResourceInput,
        created_at: Timestamp,
    ) -> Result<Resource> {
        let resource_name = name("name", &input.name)?;
        if input.addresses.is_empty() {
            return Err(invalid("addresses", "give at least one address or CIDR"));
        }
        let addresses = addresses("addresses", &input.addresses)?;
        let ports = input
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                p.parse::<PortRule>()
                    .map_err(|e| invalid(format!("ports[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        if store::get_site(c, input.site_id).await?.is_none() {
            return Err(invalid(
                "site_id",
                format!("no site has the id {}", input.site_id),
            ));
        }
        Ok(Resource {
            id,
            name: resource_name,
            site_id: input.site_id,
            addresses,
            ports,
            created_at,
        })
    }

    /// Lists resources, optionally of one site.
    pub async fn list_resources(
        &self,
        actor: &Actor,
        site: Option<SiteId>,
    ) -> Result<Vec<Resource>> {
        Self::require_reader(actor)?;
        Ok(store::list_resources(&mut *self.store.conn().await?, site).await?)
    }

    /// One resource.
    pub async fn get_resource(&self, actor: &Actor, id: ResourceId) -> Result<Resource> {
        Self::require_reader(actor)?;
        store::get_resource(&mut *self.store.conn().await?, id)
            .await?
            .ok_or(ServiceError::NotFound("resource"))
    }

    /// Creates a resource.
    pub async fn create_resource(&self, actor: &Actor, input: ResourceInput) -> Result<Resource> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let r = self
            .resource_from(&mut tx, ResourceId::new(), input, now())
            .await?;
        store::insert_resource(&mut tx, &r)
            .await
            .map_err(on_duplicate("name", "resource", &r.name))?;
        self.audit(
            &mut tx,
            actor,
            "resource.created",
            subject("resource", r.id),
            serde_json::to_value(&r).unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(r)
    }

    /// Replaces a resource; its live grants are revoked, since what they reach changed.
    pub async fn update_resource(
        &self,
        actor: &Actor,
        id: ResourceId,
        input: ResourceInput,
    ) -> Result<Resource> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let old = store::get_resource(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("resource"))?;
        let r = self
            .resource_from(&mut tx, id, input, old.created_at)
            .await?;
        store::update_resource(&mut tx, &r)
            .await
            .map_err(on_duplicate("name", "resource", &r.name))?;
        self.audit(
            &mut tx,
            actor,
            "resource.updated",
            subject("resource", id),
            serde_json::to_value(&r).unwrap_or_default(),
        )
        .await?;
        // What live grants admit is fixed at their gateway: a change of what the resource
        // is (not of its name) ends them, and the client asks again on its next packet.
        let reaches_other =
            r.addresses != old.addresses || r.ports != old.ports || r.site_id != old.site_id;
        let revoked = if reaches_other {
            self.revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_resource(id),
                "resource changed",
            )
            .await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        self.announce(revoked);
        Ok(r)
    }

    /// Deletes a resource no policy names, revoking its grants.
    pub async fn delete_resource(&self, actor: &Actor, id: ResourceId) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_resource(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("resource"))?;
        let used =
            store::policies_referencing(&mut tx, PolicyRef::Resource, &id.to_string()).await?;
        unused("resource", &used, "delete")?;
        store::delete_resource(&mut tx, id).await?;
        let revoked = self
            .record_deletion(
                &mut tx,
                actor,
                "resource",
                id,
                Some(GrantFilter::for_resource(id)),
            )
            .await?;
        tx.commit().await?;
        self.announce(revoked);
        Ok(())
    }
}
