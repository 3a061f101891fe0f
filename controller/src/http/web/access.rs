//! Devices, live grants, and "my access" for everyone.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use jiff::Timestamp;
use model::{
    CheckState, Device, DeviceId, GrantId, PolicyAction, PostureReport, ResourceId, UserId,
};
use serde::Deserialize;

use super::names::{Names, addresses_text, confirm_page, ports_text};
use super::policies::describe_conditions;
use super::{
    Ctx, Form, ListQuery, PER_PAGE, WebError, WebResult, done, matches, page, parse_id, query_of,
};
use crate::app::DevicePatch;
use crate::app::GrantFilter;
use crate::http::AppState;

// ---------------------------------------------------------------- devices

fn check_pill(label: &str, state: CheckState) -> ui::Pill {
    match state {
        CheckState::Pass => ui::Pill::new(label, "ok"),
        CheckState::Fail => ui::Pill::new(format!("no {label}"), "bad"),
        CheckState::Unknown => ui::Pill::new(format!("{label}?"), "off"),
    }
}

/// A device row with its last posture report.
pub(crate) fn device_row(
    d: &Device,
    user: &str,
    posture: Option<&PostureReport>,
    now: Timestamp,
) -> ui::DeviceRow {
    let mut pills = Vec::new();
    if let Some(p) = posture {
        let os = [p.os_name.as_deref(), p.os_version.as_deref()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        if !os.is_empty() {
            pills.push(ui::Pill::new(os, "info"));
        }
        pills.push(check_pill("disk encryption", p.disk_encryption));
        pills.push(check_pill("firewall", p.firewall));
        if let Some(v) = &p.client_version {
            pills.push(ui::Pill::new(format!("client {v}"), "off"));
        }
    }
    ui::DeviceRow {
        id: d.id.to_string(),
        name: d.name.clone(),
        user: user.to_owned(),
        user_id: d.user_id.to_string(),
        key: ui::short_key(&d.public_key),
        state: if d.disabled {
            ui::Pill::new("disabled", "bad")
        } else {
            ui::Pill::new("active", "ok")
        },
        disabled: d.disabled,
        last_seen: d
            .last_seen_at
            .map_or_else(|| "never".into(), |t| ui::ago(t, now)),
        posture: pills,
        posture_at: posture
            .map(|p| format!("reported {}", ui::ago(p.collected_at, now)))
            .unwrap_or_default(),
    }
}

/// The last posture report of each device.
pub(crate) async fn postures(
    s: &AppState,
    ctx: &Ctx,
    devices: &[Device],
) -> Result<HashMap<DeviceId, PostureReport>, WebError> {
    Ok(s.service.device_postures(&ctx.actor, devices).await?)
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeviceQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    page: Option<usize>,
}

/// The devices.
pub(crate) async fn devices(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<DeviceQuery>,
) -> WebResult {
    let now = Timestamp::now();
    let users: HashMap<UserId, String> = s
        .service
        .list_users(&ctx.actor)
        .await?
        .into_iter()
        .map(|u| (u.id, u.name))
        .collect();
    let devices = s.service.list_devices(&ctx.actor, None).await?;
    let postures = postures(&s, &ctx, &devices).await?;
    let rows: Vec<ui::DeviceRow> = devices
        .iter()
        .filter(|d| match q.state.as_str() {
            "active" => !d.disabled,
            "disabled" => d.disabled,
            _ => true,
        })
        .map(|d| {
            device_row(
                d,
                users
                    .get(&d.user_id)
                    .map_or("(deleted user)", String::as_str),
                postures.get(&d.id),
                now,
            )
        })
        .filter(|r| matches(&q.q, &[&r.name, &r.user]))
        .collect();
    let (devices, pager) = ui::paginate(
        rows,
        q.page.unwrap_or(1),
        PER_PAGE,
        query_of(&[("q", &q.q), ("state", &q.state)]),
    );
    Ok(page(&ui::DevicesPage {
        chrome: ctx.chrome("Devices", "devices"),
        devices,
        pager,
        q: q.q,
        state: q.state,
    }))
}

/// Disables or enables a device.
pub(crate) async fn device_action(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> WebResult {
    let id: DeviceId = parse_id(&id, "device")?;
    let disabled = match action.as_str() {
        "disable" => true,
        "enable" => false,
        _ => return Err(WebError::not_found("action").within(&form.ctx)),
    };
    if disabled && !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Disable this device?",
            "Its live grants are revoked at once; it can reach nothing until enabled again.",
            format!("/devices/{id}/disable"),
            "Disable device",
            "/devices".into(),
        ));
    }
    let d = s
        .service
        .update_device(
            &form.ctx.actor,
            id,
            DevicePatch {
                disabled: Some(disabled),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| WebError::from(e).within(&form.ctx))?;
    Ok(done("/devices", &format!("Device {} {action}d.", d.name)))
}

// ---------------------------------------------------------------- grants

fn grant_row(g: &model::Grant, names: &Names, now: Timestamp) -> ui::GrantRow {
    ui::GrantRow {
        id: g.id.to_string(),
        user: names.user(g.user_id),
        user_id: g.user_id.to_string(),
        device: names.device(g.device_id),
        resource: names.resource(g.resource_id),
        resource_id: g.resource_id.to_string(),
        gateway: names.gateway(g.gateway_id),
        tunnel_address: g.tunnel_address.to_string(),
        since: ui::ago(g.created_at, now),
        since_at: ui::datetime(g.created_at),
        expires: ui::expires_in(g.expires_at, now),
        expires_at: ui::datetime(g.expires_at),
    }
}

/// The grants in force.
pub(crate) async fn grants(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> WebResult {
    let now = Timestamp::now();
    let live = s
        .service
        .list_grants(&ctx.actor, GrantFilter::default(), true)
        .await?;
    let names = Names::load(&s, &ctx).await?;
    let rows: Vec<ui::GrantRow> = live
        .iter()
        .map(|g| grant_row(g, &names, now))
        .filter(|r| {
            matches(
                &q.q,
                &[
                    &r.user,
                    &r.device,
                    &r.resource,
                    &r.gateway,
                    &r.tunnel_address,
                ],
            )
        })
        .collect();
    let (rows, pager) = q.paginate(rows);
    Ok(page(&ui::GrantsPage {
        chrome: ctx.chrome("Live access", "grants"),
        rows,
        pager,
        q: q.q,
    }))
}

/// Revokes a grant (after confirmation); the gateway drops the peer.
pub(crate) async fn revoke_grant(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: GrantId = parse_id(&id, "grant")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Revoke this grant?",
            "The gateway drops the WireGuard peer at once, open connections included. The client may ask again; the policy decides anew.",
            format!("/grants/{id}/revoke"),
            "Revoke access",
            "/grants".into(),
        ));
    }
    match s.service.revoke_grant(&form.ctx.actor, id).await {
        Ok(_) => Ok(done(
            "/grants",
            "Access revoked; the gateway dropped the peer.",
        )),
        Err(crate::app::ServiceError::Conflict { .. }) => {
            Ok(done("/grants", "That grant had already ended."))
        }
        Err(e) => Err(WebError::from(e).within(&form.ctx)),
    }
}

// ---------------------------------------------------------------- my access

/// The signed-in user's own devices, the resources their groups' policies let them reach,
/// and their grants in force. Open to every role; it reads only the user's own records.
pub(crate) async fn my_access(State(s): State<AppState>, ctx: Ctx) -> WebResult {
    let me = ctx.me.user.id;
    let now = Timestamp::now();
    let view = s.service.my_access(me).await?;
    let mut names = Names {
        groups: view.groups,
        resources: view.resources,
        gateways: view.gateways,
        profiles: view.profiles,
        ..Names::default()
    };
    let (devices, policies, grants, postures) =
        (view.devices, view.policies, view.grants, view.postures);
    for d in &devices {
        names.devices.insert(d.id, d.clone());
    }
    names.users.insert(me, ctx.me.user.clone());

    let denied: Vec<ResourceId> = policies
        .iter()
        .filter(|p| p.action == PolicyAction::Deny && p.conditions == model::Conditions::default())
        .map(|p| p.resource_id)
        .collect();
    let mut resources: Vec<ui::MyResourceRow> = policies
        .iter()
        .filter(|p| p.action == PolicyAction::Allow && !denied.contains(&p.resource_id))
        .filter_map(|p| {
            let r = names.resources.get(&p.resource_id)?;
            Some(ui::MyResourceRow {
                name: r.name.clone(),
                addresses: addresses_text(r),
                ports: ports_text(r),
                via: format!("{} ({})", p.name, names.group(p.group_id)),
                conditions: describe_conditions(p, &names),
            })
        })
        .collect();
    resources.sort_by_key(|a| a.name.to_lowercase());
    Ok(page(&ui::MyPage {
        chrome: ctx.chrome("My access", "my"),
        devices: devices
            .iter()
            .map(|d| device_row(d, &ctx.me.user.name, postures.get(&d.id), now))
            .collect(),
        resources,
        grants: grants.iter().map(|g| grant_row(g, &names, now)).collect(),
    }))
}
