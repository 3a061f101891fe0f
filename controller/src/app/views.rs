//! Read models for the web UI's pages: what a page shows that no single object family
//! answers, read in one place so that pages never touch the store.

use std::collections::HashMap;

use model::{
    Device, DeviceId, GatewayId, Grant, GroupId, Policy, PostureProfileId, PostureReport, Resource,
    ResourceId, UserId,
};

use super::kernel::{Actor, Result, Service, now};
use store::{self, Conn, GrantFilter};

/// What the "My access" page shows a signed-in user about themselves.
#[derive(Debug, Clone, Default)]
pub struct MyAccess {
    /// Their devices.
    pub devices: Vec<Device>,
    /// The enabled policies that name one of their groups.
    pub policies: Vec<Policy>,
    /// Their live grants.
    pub grants: Vec<Grant>,
    /// The names of their groups.
    pub groups: HashMap<GroupId, String>,
    /// The posture profiles those policies require, by name.
    pub profiles: HashMap<PostureProfileId, String>,
    /// The resources of those policies and grants.
    pub resources: HashMap<ResourceId, Resource>,
    /// The gateways of the grants, by name.
    pub gateways: HashMap<GatewayId, String>,
    /// The last posture report of each of their devices.
    pub postures: HashMap<DeviceId, PostureReport>,
}

impl Service {
    /// What `me` may see of their own access; it reads only their own records, so it is
    /// open to every role.
    pub async fn my_access(&self, me: UserId) -> Result<MyAccess> {
        let mut c = self.store.conn().await?;
        let devices = store::list_devices(&mut c, Some(me)).await?;
        let group_ids = store::groups_of_user(&mut c, me).await?;
        let policies: Vec<Policy> = store::list_policies(&mut c)
            .await?
            .into_iter()
            .filter(|p| !p.disabled && group_ids.contains(&p.group_id))
            .collect();
        let mut view = MyAccess::default();
        for g in &group_ids {
            if let Some(group) = store::get_group(&mut c, *g).await? {
                view.groups.insert(group.id, group.name);
            }
        }
        for p in &policies {
            if let Some(id) = p.conditions.posture_profile_id
                && let Some(profile) = store::get_profile(&mut c, id).await?
            {
                view.profiles.insert(id, profile.name);
            }
            if let Some(r) = store::get_resource(&mut c, p.resource_id).await? {
                view.resources.insert(r.id, r);
            }
        }
        let grants = store::list_grants(
            &mut c,
            &GrantFilter {
                user: Some(me),
                live_at: Some(now()),
                ..Default::default()
            },
        )
        .await?;
        for g in &grants {
            if let Some(gw) = store::get_gateway(&mut c, g.gateway_id).await? {
                view.gateways.insert(gw.id, gw.name);
            }
            if let Some(r) = store::get_resource(&mut c, g.resource_id).await? {
                view.resources.insert(r.id, r);
            }
        }
        view.postures = postures_of(&mut c, &devices).await?;
        view.devices = devices;
        view.policies = policies;
        view.grants = grants;
        Ok(view)
    }

    /// The last posture report of each of `devices` (admins and auditors).
    pub async fn device_postures(
        &self,
        actor: &Actor,
        devices: &[Device],
    ) -> Result<HashMap<DeviceId, PostureReport>> {
        Self::require_reader(actor)?;
        let mut c = self.store.conn().await?;
        postures_of(&mut c, devices).await
    }

    /// Whether a user has confirmed an authenticator app (admins and auditors).
    pub async fn has_totp(&self, actor: &Actor, user: UserId) -> Result<bool> {
        Self::require_reader(actor)?;
        let mut c = self.store.conn().await?;
        Ok(store::get_credentials(&mut c, user)
            .await?
            .is_some_and(|c| c.totp_confirmed))
    }

    /// Whether first-run setup is done (an admin exists).
    pub async fn setup_done(&self) -> Result<bool> {
        let mut c = self.store.conn().await?;
        Ok(store::count_admins(&mut c).await? > 0)
    }
}

async fn postures_of(c: &mut Conn, devices: &[Device]) -> Result<HashMap<DeviceId, PostureReport>> {
    let mut out = HashMap::new();
    for d in devices {
        if let Some(p) = store::get_posture(c, d.id).await? {
            out.insert(d.id, p);
        }
    }
    Ok(out)
}
