//! The names of the objects pages refer to by id, and the small renderings several pages
//! share.

use std::collections::HashMap;

use model::{
    Device, DeviceId, GatewayId, GroupId, PostureProfileId, Resource, ResourceId, User, UserId,
};

use super::{Ctx, Form, WebError, page};
use crate::http::AppState;

/// The names of the objects pages refer to by id.
#[derive(Debug, Default)]
pub(crate) struct Names {
    pub(crate) users: HashMap<UserId, User>,
    pub(crate) groups: HashMap<GroupId, String>,
    pub(crate) resources: HashMap<ResourceId, Resource>,
    pub(crate) devices: HashMap<DeviceId, Device>,
    pub(crate) gateways: HashMap<GatewayId, String>,
    pub(crate) profiles: HashMap<PostureProfileId, String>,
}

impl Names {
    /// Everything, through the services (admins and auditors).
    pub(crate) async fn load(s: &AppState, ctx: &Ctx) -> Result<Self, WebError> {
        let (svc, a) = (&s.service, &ctx.actor);
        Ok(Self {
            users: svc
                .list_users(a)
                .await?
                .into_iter()
                .map(|u| (u.id, u))
                .collect(),
            groups: svc
                .list_groups(a)
                .await?
                .into_iter()
                .map(|g| (g.id, g.name))
                .collect(),
            resources: svc
                .list_resources(a, None)
                .await?
                .into_iter()
                .map(|r| (r.id, r))
                .collect(),
            devices: svc
                .list_devices(a, None)
                .await?
                .into_iter()
                .map(|d| (d.id, d))
                .collect(),
            gateways: svc
                .list_gateways(a, None)
                .await?
                .into_iter()
                .map(|g| (g.id, g.name))
                .collect(),
            profiles: svc
                .list_profiles(a)
                .await?
                .into_iter()
                .map(|p| (p.id, p.name))
                .collect(),
        })
    }

    pub(crate) fn group(&self, id: GroupId) -> String {
        self.groups
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "(deleted group)".into())
    }

    pub(crate) fn resource(&self, id: ResourceId) -> String {
        self.resources
            .get(&id)
            .map_or_else(|| "(deleted resource)".into(), |r| r.name.clone())
    }

    pub(crate) fn user(&self, id: UserId) -> String {
        self.users
            .get(&id)
            .map_or_else(|| "(deleted user)".into(), |u| u.name.clone())
    }

    pub(crate) fn device(&self, id: DeviceId) -> String {
        self.devices
            .get(&id)
            .map_or_else(|| "(deleted device)".into(), |d| d.name.clone())
    }

    pub(crate) fn gateway(&self, id: GatewayId) -> String {
        self.gateways
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "(deleted gateway)".into())
    }
}

pub(crate) fn opts<K: ToString>(map: &HashMap<K, String>) -> Vec<ui::Opt> {
    let mut v: Vec<ui::Opt> = map
        .iter()
        .map(|(k, n)| ui::Opt::new(k.to_string(), n.clone()))
        .collect();
    v.sort_by_key(|a| a.label.to_lowercase());
    v
}

/// Shows the confirmation page of a destructive form posted without the script's dialog.
pub(crate) fn confirm_page(
    form: &Form,
    question: &str,
    detail: &str,
    action: String,
    button: &str,
    back: String,
) -> axum::response::Response {
    page(&ui::ConfirmPage {
        chrome: form.ctx.chrome(question, ""),
        question: question.to_owned(),
        detail: detail.to_owned(),
        action,
        button: button.to_owned(),
        back,
    })
}

pub(crate) fn ports_text(r: &Resource) -> String {
    if r.ports.is_empty() {
        "all".into()
    } else {
        r.ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) fn addresses_text(r: &Resource) -> String {
    r.addresses
        .iter()
        .map(|a| {
            if a.prefix_len() == a.max_prefix_len() {
                a.addr().to_string()
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
