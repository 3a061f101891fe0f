//! The overview, sites and gateways, and resources with their "who can reach this?" view.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri};
use jiff::{SignedDuration, Timestamp};
use model::{Gateway, GatewayId, Resource, ResourceId, Site, SiteId};

use super::names::{addresses_text, confirm_page, ports_text};
use super::policies::{describe_conditions, policy_rows};
use super::{
    Ctx, Form, ListQuery, WebError, WebResult, done, form_errors, form_page, matches, page,
    parse_id, see_other, split_list,
};
use crate::app::{AuditFilter, GrantFilter};
use crate::app::{GatewayPatch, GatewayTokenInput, ResourceInput, SiteInput};
use crate::http::AppState;

// ---------------------------------------------------------------- overview

/// The overview: gateways online, live grants, denials in the last day, getting started.
pub(crate) async fn dashboard(State(s): State<AppState>, ctx: Ctx) -> WebResult {
    if !ctx.is_reader() {
        return Ok(see_other("/my"));
    }
    let svc = &s.service;
    let a = &ctx.actor;
    let now = Timestamp::now();
    let gateways = svc.list_gateways(a, None).await?;
    let sites = svc.list_sites(a).await?;
    let resources = svc.list_resources(a, None).await?;
    let users = svc.list_users(a).await?;
    let groups = svc.list_groups(a).await?;
    let policies = svc.list_policies(a).await?;
    let devices = svc.list_devices(a, None).await?;
    let live = svc.list_grants(a, GrantFilter::default(), true).await?;
    const MAX_COUNTED: u32 = 10_000;
    let denials = svc
        .audit_log(
            a,
            AuditFilter {
                kind: Some("decision.deny".into()),
                since: now.checked_sub(SignedDuration::from_hours(24)).ok(),
                limit: MAX_COUNTED,
                ..Default::default()
            },
        )
        .await?;
    let resource_names: HashMap<String, &str> = resources
        .iter()
        .map(|r| (format!("resource:{}", r.id), r.name.as_str()))
        .collect();
    let recent_denials = denials
        .iter()
        .take(5)
        .map(|e| ui::DenialRow {
            at: ui::ago(e.at, now),
            user: e.actor_name.clone(),
            resource: resource_names
                .get(&e.subject)
                .map_or_else(|| e.subject.clone(), |n| (*n).to_owned()),
            reason: e.details["reasons"]
                .as_array()
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| r["message"].as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default(),
        })
        .collect();
    let site_names: HashMap<SiteId, &str> = sites.iter().map(|s| (s.id, s.name.as_str())).collect();
    let offline = gateways
        .iter()
        .filter(|g| !g.online && !g.disabled)
        .map(|g| ui::Link {
            label: format!(
                "{} ({})",
                g.name,
                site_names.get(&g.site_id).copied().unwrap_or("?")
            ),
            href: format!("/sites/{}", g.site_id),
        })
        .collect();
    let step = |done: bool, label: &str, href: &str| ui::Step {
        done,
        label: label.to_owned(),
        href: href.to_owned(),
    };
    let steps = vec![
        step(!sites.is_empty(), "Create a site", "/sites"),
        step(
            gateways.iter().any(|g| g.online),
            "Enroll a gateway and bring it online",
            "/sites",
        ),
        step(!resources.is_empty(), "Define a resource", "/resources"),
        step(
            !groups.is_empty() && users.len() > 1,
            "Add users to a group",
            "/groups",
        ),
        step(
            !policies.is_empty(),
            "Write a policy: which group reaches which resource",
            "/policies",
        ),
    ];
    Ok(page(&ui::DashboardPage {
        chrome: ctx.chrome("Overview", "dashboard"),
        gateways_online: gateways.iter().filter(|g| g.online).count(),
        gateways_total: gateways.len(),
        live_grants: live.len(),
        denials_24h: if denials.len() >= MAX_COUNTED as usize {
            format!("{MAX_COUNTED}+")
        } else {
            denials.len().to_string()
        },
        users: users.len(),
        devices: devices.len(),
        recent_denials,
        steps,
        offline,
    }))
}

// ---------------------------------------------------------------- sites

fn site_row(
    site: &Site,
    gateways: &[Gateway],
    resources: &[Resource],
    now: Timestamp,
) -> ui::SiteRow {
    let mine: Vec<&Gateway> = gateways.iter().filter(|g| g.site_id == site.id).collect();
    ui::SiteRow {
        id: site.id.to_string(),
        name: site.name.clone(),
        online: mine.iter().filter(|g| g.online).count(),
        gateways: mine.len(),
        resources: resources.iter().filter(|r| r.site_id == site.id).count(),
        created: ui::ago(site.created_at, now),
    }
}

async fn sites_page(
    s: &AppState,
    ctx: &Ctx,
    q: &ListQuery,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let a = &ctx.actor;
    let now = Timestamp::now();
    let gateways = s.service.list_gateways(a, None).await?;
    let resources = s.service.list_resources(a, None).await?;
    let rows: Vec<ui::SiteRow> = s
        .service
        .list_sites(a)
        .await?
        .iter()
        .filter(|site| matches(&q.q, &[&site.name]))
        .map(|site| site_row(site, &gateways, &resources, now))
        .collect();
    let (rows, pager) = q.paginate(rows);
    let p = ui::SitesPage {
        chrome: ctx.chrome("Sites & gateways", "sites"),
        rows,
        pager,
        q: q.q.clone(),
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// The sites.
pub(crate) async fn sites(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> WebResult {
    sites_page(
        &s,
        &ctx,
        &q,
        ui::FormValues::default(),
        ui::FormErrors::none(),
    )
    .await
}

/// Creates a site.
pub(crate) async fn create_site(State(s): State<AppState>, form: Form) -> WebResult {
    let input = SiteInput {
        name: form.get("name").to_owned(),
    };
    match s.service.create_site(&form.ctx.actor, input).await {
        Ok(site) => Ok(done(
            &format!("/sites/{}", site.id),
            &format!("Site {} created. Add a gateway to it next.", site.name),
        )),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            sites_page(&s, &form.ctx, &ListQuery::default(), form.values(), errors).await
        }
    }
}

async fn site_page(
    s: &AppState,
    ctx: &Ctx,
    id: SiteId,
    values: Option<ui::FormValues>,
    errors: ui::FormErrors,
) -> WebResult {
    let a = &ctx.actor;
    let now = Timestamp::now();
    let site = s
        .service
        .get_site(a, id)
        .await
        .map_err(|e| WebError::from(e).within(ctx))?;
    let gateways = s.service.list_gateways(a, Some(id)).await?;
    let resources = s.service.list_resources(a, Some(id)).await?;
    let tokens = s.service.list_gateway_tokens(a, id).await?;
    let live = s
        .service
        .list_grants(a, GrantFilter::default(), true)
        .await?;
    let values = values.unwrap_or_else(|| {
        let mut v = ui::FormValues::default();
        v.set("name", site.name.clone());
        v
    });
    let p = ui::SitePage {
        chrome: ctx.chrome(&site.name, "sites"),
        site: site_row(&site, &gateways, &resources, now),
        gateways: gateways
            .iter()
            .map(|g| ui::GatewayRow {
                id: g.id.to_string(),
                name: g.name.clone(),
                status: if g.disabled {
                    ui::Pill::new("disabled", "off")
                } else if g.online {
                    ui::Pill::new("online", "ok")
                } else {
                    ui::Pill::new("offline", "bad")
                },
                endpoint: g.endpoint.clone().unwrap_or_else(|| "—".into()),
                key: g
                    .public_key
                    .as_deref()
                    .map_or_else(|| "—".into(), ui::short_key),
                last_seen: g
                    .last_seen_at
                    .map_or_else(|| "never".into(), |t| ui::ago(t, now)),
                grants: live.iter().filter(|x| x.gateway_id == g.id).count(),
                disabled: g.disabled,
            })
            .collect(),
        tokens: tokens
            .iter()
            .map(|t| ui::GatewayTokenRow {
                id: t.id.to_string(),
                status: if t.used_at.is_some() {
                    ui::Pill::new("used", "ok")
                } else if t.expires_at <= now {
                    ui::Pill::new("expired", "off")
                } else {
                    ui::Pill::new("waiting for gateway", "warn")
                },
                created: ui::ago(t.created_at, now),
                expires: ui::datetime(t.expires_at),
            })
            .collect(),
        resources: resources
            .iter()
            .map(|r| ui::Link {
                label: r.name.clone(),
                href: format!("/resources/{}", r.id),
            })
            .collect(),
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// One site.
pub(crate) async fn site(State(s): State<AppState>, ctx: Ctx, Path(id): Path<String>) -> WebResult {
    let id = parse_id(&id, "site").map_err(|e| e.within(&ctx))?;
    site_page(&s, &ctx, id, None, ui::FormErrors::none()).await
}

/// Renames a site.
pub(crate) async fn update_site(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: SiteId = parse_id(&id, "site")?;
    let input = SiteInput {
        name: form.get("name").to_owned(),
    };
    match s.service.update_site(&form.ctx.actor, id, input).await {
        Ok(site) => Ok(done(
            &format!("/sites/{id}"),
            &format!("Site renamed to {}.", site.name),
        )),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            site_page(&s, &form.ctx, id, Some(form.values()), errors).await
        }
    }
}

/// Deletes a site (after confirmation).
pub(crate) async fn delete_site(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: SiteId = parse_id(&id, "site")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Delete this site?",
            "A site can only be deleted once it has no gateways and no resources.",
            format!("/sites/{id}/delete"),
            "Delete site",
            format!("/sites/{id}"),
        ));
    }
    match s.service.delete_site(&form.ctx.actor, id).await {
        Ok(()) => Ok(done("/sites", "Site deleted.")),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            site_page(&s, &form.ctx, id, None, errors).await
        }
    }
}

/// The URL gateways reach the controller at: the configured public URL, unless it names an
/// unspecified address (`0.0.0.0`), then the host the browser used.
fn controller_url(s: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    let configured = s
        .service
        .public_url
        .as_deref()
        .and_then(|u| u.split_once("://").map(|(_, rest)| rest.to_owned()));
    let authority = match configured {
        Some(a) if !a.starts_with("0.0.0.0") && !a.starts_with("[::]") => a,
        _ => super::request_host(headers, uri)
            .unwrap_or_else(|| "controller.example.com:8443".into()),
    };
    format!("https://{}", authority.trim_end_matches('/'))
}

/// The `docker run` command and compose file that start a gateway with `token`.
pub(crate) fn gateway_commands(
    controller: &str,
    fingerprint: &str,
    token: &str,
    name: &str,
) -> (String, String) {
    let docker = format!(
        "docker run -d --name {name} --restart unless-stopped \\\n  \
         --cap-add NET_ADMIN --device /dev/net/tun \\\n  \
         --sysctl net.ipv4.ip_forward=1 \\\n  \
         -p 51820:51820/udp -p 127.0.0.1:9090:9090 \\\n  \
         -v {name}-state:/var/lib/postern-gateway \\\n  \
         -e POSTERN_CONTROLLER={controller} \\\n  \
         -e POSTERN_CONTROLLER_FINGERPRINT={fingerprint} \\\n  \
         -e POSTERN_TOKEN={token} \\\n  \
         -e POSTERN_ENDPOINT=<this host's public address>:51820 \\\n  \
         -e POSTERN_NAME={name} \\\n  \
         postern-gateway"
    );
    let compose = format!(
        "services:\n  gateway:\n    image: postern-gateway\n    restart: unless-stopped\n    \
         cap_add:\n      - NET_ADMIN\n    devices:\n      - /dev/net/tun:/dev/net/tun\n    \
         sysctls:\n      net.ipv4.ip_forward: \"1\"\n    ports:\n      - \"51820:51820/udp\"\n      \
         - \"127.0.0.1:9090:9090\"\n    environment:\n      POSTERN_CONTROLLER: {controller}\n      \
         POSTERN_CONTROLLER_FINGERPRINT: \"{fingerprint}\"\n      POSTERN_TOKEN: {token}\n      \
         POSTERN_ENDPOINT: <this host's public address>:51820\n      POSTERN_NAME: {name}\n      \
         POSTERN_LOG: info\n    volumes:\n      - gateway-state:/var/lib/postern-gateway\n\n\
         volumes:\n  gateway-state:\n"
    );
    (docker, compose)
}

/// Makes a one-time gateway token and shows it with the commands that use it.
pub(crate) async fn create_gateway_token(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    form: Form,
) -> WebResult {
    let id: SiteId = parse_id(&id, "site")?;
    let a = &form.ctx.actor;
    let issued = match s
        .service
        .create_gateway_token(a, id, GatewayTokenInput::default())
        .await
    {
        Ok(t) => t,
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            return site_page(&s, &form.ctx, id, None, errors).await;
        }
    };
    let site = s.service.get_site(a, id).await?;
    let taken: Vec<String> = s
        .service
        .list_gateways(a, None)
        .await?
        .into_iter()
        .map(|g| g.name)
        .collect();
    let base: String = site
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = (1..)
        .map(|n| format!("{base}-gw-{n}"))
        .find(|n| !taken.contains(n))
        .unwrap_or_else(|| format!("{base}-gw"));
    let (docker_run, compose) = gateway_commands(
        &controller_url(&s, &headers, &uri),
        s.control_fingerprint.as_deref().unwrap_or("<fingerprint>"),
        &issued.secret,
        &name,
    );
    Ok(page(&ui::GatewayTokenPage {
        chrome: form.ctx.chrome("Enroll a gateway", "sites"),
        site_id: id.to_string(),
        site_name: site.name,
        token: issued.secret,
        expires: ui::datetime(issued.record.expires_at),
        docker_run,
        compose,
        fingerprint_known: s.control_fingerprint.is_some(),
    }))
}

/// Disables, enables or deletes a gateway.
pub(crate) async fn gateway_action(
    State(s): State<AppState>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> WebResult {
    let id: GatewayId = parse_id(&id, "gateway")?;
    let a = &form.ctx.actor;
    let g = s.service.get_gateway(a, id).await?;
    let back = format!("/sites/{}", g.site_id);
    let destructive = matches!(action.as_str(), "disable" | "delete");
    if destructive && !form.confirmed() {
        return Ok(confirm_page(
            &form,
            &format!(
                "{} gateway {}?",
                if action == "delete" {
                    "Delete"
                } else {
                    "Disable"
                },
                g.name
            ),
            "Its live grants are revoked and its control connection is closed.",
            format!("/gateways/{id}/{action}"),
            if action == "delete" {
                "Delete gateway"
            } else {
                "Disable gateway"
            },
            back,
        ));
    }
    let result = match action.as_str() {
        "disable" | "enable" => s
            .service
            .update_gateway(
                a,
                id,
                GatewayPatch {
                    disabled: Some(action == "disable"),
                    ..Default::default()
                },
            )
            .await
            .map(|_| ()),
        "delete" => s.service.delete_gateway(a, id).await,
        _ => return Err(WebError::not_found("action").within(&form.ctx)),
    };
    match result {
        Ok(()) => Ok(done(&back, &format!("Gateway {} {action}d.", g.name))),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            site_page(&s, &form.ctx, g.site_id, None, errors).await
        }
    }
}

// ---------------------------------------------------------------- resources

fn resource_row(r: &Resource, sites: &HashMap<SiteId, String>, policies: usize) -> ui::ResourceRow {
    ui::ResourceRow {
        id: r.id.to_string(),
        name: r.name.clone(),
        site: sites.get(&r.site_id).cloned().unwrap_or_else(|| "?".into()),
        site_id: r.site_id.to_string(),
        addresses: addresses_text(r),
        ports: ports_text(r),
        policies,
    }
}

fn resource_input(form: &Form) -> Result<ResourceInput, ui::FormErrors> {
    let site_id = form
        .get("site_id")
        .parse()
        .map_err(|_| ui::FormErrors::field("site_id", "choose a site"))?;
    Ok(ResourceInput {
        name: form.get("name").to_owned(),
        site_id,
        addresses: split_list(form.get("addresses")),
        ports: split_list(form.get("ports")),
    })
}

async fn resources_page(
    s: &AppState,
    ctx: &Ctx,
    q: &ListQuery,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let a = &ctx.actor;
    let sites: HashMap<SiteId, String> = s
        .service
        .list_sites(a)
        .await?
        .into_iter()
        .map(|x| (x.id, x.name))
        .collect();
    let policies = s.service.list_policies(a).await?;
    let mut site_opts: Vec<ui::Opt> = sites
        .iter()
        .map(|(id, n)| ui::Opt::new(id.to_string(), n.clone()))
        .collect();
    site_opts.sort_by(|x, y| x.label.cmp(&y.label));
    let rows: Vec<ui::ResourceRow> = s
        .service
        .list_resources(a, None)
        .await?
        .iter()
        .map(|r| {
            resource_row(
                r,
                &sites,
                policies.iter().filter(|p| p.resource_id == r.id).count(),
            )
        })
        .filter(|r| matches(&q.q, &[&r.name, &r.site, &r.addresses, &r.ports]))
        .collect();
    let (rows, pager) = q.paginate(rows);
    let p = ui::ResourcesPage {
        chrome: ctx.chrome("Resources", "resources"),
        rows,
        pager,
        q: q.q.clone(),
        sites: site_opts,
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// The resources.
pub(crate) async fn resources(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<ListQuery>,
) -> WebResult {
    resources_page(
        &s,
        &ctx,
        &q,
        ui::FormValues::default(),
        ui::FormErrors::none(),
    )
    .await
}

/// Creates a resource.
pub(crate) async fn create_resource(State(s): State<AppState>, form: Form) -> WebResult {
    let result = match resource_input(&form) {
        Ok(input) => s
            .service
            .create_resource(&form.ctx.actor, input)
            .await
            .map_err(|e| form_errors(e, &form.ctx)),
        Err(errors) => Err(Ok(errors)),
    };
    match result {
        Ok(r) => Ok(done(
            &format!("/resources/{}", r.id),
            &format!(
                "Resource {} created. Write a policy to let a group reach it.",
                r.name
            ),
        )),
        Err(errors) => {
            let errors = errors?;
            resources_page(&s, &form.ctx, &ListQuery::default(), form.values(), errors).await
        }
    }
}

async fn resource_page(
    s: &AppState,
    ctx: &Ctx,
    id: ResourceId,
    values: Option<ui::FormValues>,
    errors: ui::FormErrors,
) -> WebResult {
    let a = &ctx.actor;
    let r = s
        .service
        .get_resource(a, id)
        .await
        .map_err(|e| WebError::from(e).within(ctx))?;
    let sites: HashMap<SiteId, String> = s
        .service
        .list_sites(a)
        .await?
        .into_iter()
        .map(|x| (x.id, x.name))
        .collect();
    let policies: Vec<model::Policy> = s
        .service
        .list_policies(a)
        .await?
        .into_iter()
        .filter(|p| p.resource_id == id)
        .collect();
    let names = super::names::Names::load(s, ctx).await?;
    let live = s
        .service
        .list_grants(a, GrantFilter::for_resource(id), true)
        .await?;

    // Who can reach it: members of the groups of enabled allow policies.
    let denies: Vec<&model::Policy> = policies
        .iter()
        .filter(|p| !p.disabled && p.action == model::PolicyAction::Deny)
        .collect();
    let mut members: HashMap<model::GroupId, Vec<model::User>> = HashMap::new();
    for p in &policies {
        if let std::collections::hash_map::Entry::Vacant(e) = members.entry(p.group_id) {
            e.insert(s.service.group_members(a, p.group_id).await?);
        }
    }
    let mut reach = Vec::new();
    for p in policies
        .iter()
        .filter(|p| !p.disabled && p.action == model::PolicyAction::Allow)
    {
        for u in members
            .get(&p.group_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let mut caveats = Vec::new();
            if u.disabled {
                caveats.push("account disabled".to_owned());
            }
            for d in &denies {
                if members
                    .get(&d.group_id)
                    .is_some_and(|m| m.iter().any(|x| x.id == u.id))
                {
                    caveats.push(if d.conditions == model::Conditions::default() {
                        format!("blocked by deny policy {}", d.name)
                    } else {
                        format!("deny policy {} may block", d.name)
                    });
                }
            }
            reach.push(ui::ReachRow {
                user: u.name.clone(),
                email: u.email.clone(),
                user_id: u.id.to_string(),
                policy: p.name.clone(),
                policy_id: p.id.to_string(),
                group: names.group(p.group_id),
                conditions: describe_conditions(p, &names),
                caveats,
            });
        }
    }
    reach.sort_by_key(|x| x.user.to_lowercase());

    let values = values.unwrap_or_else(|| {
        let mut v = ui::FormValues::default();
        v.set("name", r.name.clone());
        v.set("site_id", r.site_id.to_string());
        v.set("addresses", addresses_text(&r));
        v.set(
            "ports",
            if r.ports.is_empty() {
                String::new()
            } else {
                ports_text(&r)
            },
        );
        v
    });
    let mut site_opts: Vec<ui::Opt> = sites
        .iter()
        .map(|(id, n)| ui::Opt::new(id.to_string(), n.clone()))
        .collect();
    site_opts.sort_by(|x, y| x.label.cmp(&y.label));
    let p = ui::ResourcePage {
        chrome: ctx.chrome(&r.name, "resources"),
        resource: resource_row(&r, &sites, policies.len()),
        sites: site_opts,
        values,
        errors: errors.clone(),
        policies: policy_rows(&policies, &names),
        reach,
        live_grants: live.len(),
    };
    Ok(form_page(&p, &errors))
}

/// One resource, with who can reach it.
pub(crate) async fn resource(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> WebResult {
    let id = parse_id(&id, "resource").map_err(|e| e.within(&ctx))?;
    resource_page(&s, &ctx, id, None, ui::FormErrors::none()).await
}

/// Changes a resource.
pub(crate) async fn update_resource(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: ResourceId = parse_id(&id, "resource")?;
    let result = match resource_input(&form) {
        Ok(input) => s
            .service
            .update_resource(&form.ctx.actor, id, input)
            .await
            .map_err(|e| form_errors(e, &form.ctx)),
        Err(errors) => Err(Ok(errors)),
    };
    match result {
        Ok(r) => Ok(done(
            &format!("/resources/{id}"),
            &format!("Resource {} saved.", r.name),
        )),
        Err(errors) => resource_page(&s, &form.ctx, id, Some(form.values()), errors?).await,
    }
}

/// Deletes a resource (after confirmation).
pub(crate) async fn delete_resource(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: ResourceId = parse_id(&id, "resource")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Delete this resource?",
            "Its live grants are revoked. No policy may name it.",
            format!("/resources/{id}/delete"),
            "Delete resource",
            format!("/resources/{id}"),
        ));
    }
    match s.service.delete_resource(&form.ctx.actor, id).await {
        Ok(()) => Ok(done("/resources", "Resource deleted.")),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            resource_page(&s, &form.ctx, id, None, errors).await
        }
    }
}
