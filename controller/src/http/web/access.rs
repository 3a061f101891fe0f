//! Policies, posture profiles, devices, live grants, and "my access" for everyone.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use jiff::Timestamp;
use model::{
    CheckState, Device, DeviceId, GatewayId, GrantId, GroupId, Policy, PolicyAction, PolicyId,
    PostureProfile, PostureProfileId, PostureReport, Resource, ResourceId, TimeWindow, User,
    UserId,
};
use serde::Deserialize;

use super::inventory::{addresses_text, confirm_page, ports_text};
use super::{
    Ctx, Form, ListQuery, PER_PAGE, WebError, WebResult, done, form_errors, form_page, matches,
    page, parse_id, query_of, split_list,
};
use crate::app::{ConditionsInput, DevicePatch, PolicyInput, PostureProfileInput};
use crate::http::AppState;
use crate::store::{self, GrantFilter};

// ---------------------------------------------------------------- names of things

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

    fn resource(&self, id: ResourceId) -> String {
        self.resources
            .get(&id)
            .map_or_else(|| "(deleted resource)".into(), |r| r.name.clone())
    }

    fn user(&self, id: UserId) -> String {
        self.users
            .get(&id)
            .map_or_else(|| "(deleted user)".into(), |u| u.name.clone())
    }

    fn device(&self, id: DeviceId) -> String {
        self.devices
            .get(&id)
            .map_or_else(|| "(deleted device)".into(), |d| d.name.clone())
    }

    fn gateway(&self, id: GatewayId) -> String {
        self.gateways
            .get(&id)
            .cloned()
            .unwrap_or_else(|| "(deleted gateway)".into())
    }
}

fn opts<K: ToString>(map: &HashMap<K, String>) -> Vec<ui::Opt> {
    let mut v: Vec<ui::Opt> = map
        .iter()
        .map(|(k, n)| ui::Opt::new(k.to_string(), n.clone()))
        .collect();
    v.sort_by_key(|a| a.label.to_lowercase());
    v
}

// ---------------------------------------------------------------- policies

const DAYS: [(&str, &str); 7] = [
    ("mon", "Mon"),
    ("tue", "Tue"),
    ("wed", "Wed"),
    ("thu", "Thu"),
    ("fri", "Fri"),
    ("sat", "Sat"),
    ("sun", "Sun"),
];

fn day_name(d: model::Weekday) -> String {
    let key = serde_json::to_value(d)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    DAYS.iter()
        .find(|(k, _)| *k == key)
        .map_or(key.clone(), |(_, label)| (*label).to_owned())
}

fn window_text(w: &TimeWindow) -> String {
    let days: Vec<String> = w.days.iter().map(|d| day_name(*d)).collect();
    format!("{} {}–{}", days.join(", "), w.start, w.end)
}

/// A policy's conditions in words.
pub(crate) fn describe_conditions(p: &Policy, names: &Names) -> Vec<String> {
    let c = &p.conditions;
    let mut out = Vec::new();
    if let Some(id) = c.posture_profile_id {
        out.push(format!(
            "device passes posture profile {}",
            names.profiles.get(&id).map_or("(deleted)", String::as_str)
        ));
    }
    if !c.time_windows.is_empty() {
        let windows: Vec<String> = c.time_windows.iter().map(window_text).collect();
        out.push(format!(
            "{} ({})",
            windows.join("; "),
            c.time_zone.as_deref().unwrap_or("UTC")
        ));
    }
    if !c.source_cidrs.is_empty() {
        let cidrs: Vec<String> = c.source_cidrs.iter().map(ToString::to_string).collect();
        out.push(format!("from {}", cidrs.join(", ")));
    }
    if let Some(secs) = c.max_mfa_age_secs {
        out.push(format!("MFA within {}", ui::duration_secs(secs)));
    }
    if let Some(idp) = &c.identity_provider {
        out.push(format!("signed in with {idp}"));
    }
    out
}

fn policy_row(p: &Policy, names: &Names) -> ui::PolicyRow {
    ui::PolicyRow {
        id: p.id.to_string(),
        name: p.name.clone(),
        group: names.group(p.group_id),
        group_id: p.group_id.to_string(),
        resource: names.resource(p.resource_id),
        resource_id: p.resource_id.to_string(),
        action: match p.action {
            PolicyAction::Allow => ui::Pill::new("allow", "ok"),
            PolicyAction::Deny => ui::Pill::new("deny", "bad"),
        },
        conditions: describe_conditions(p, names),
        session: ui::duration_secs(p.max_session_secs),
        state: if p.disabled {
            ui::Pill::new("disabled", "off")
        } else {
            ui::Pill::new("enabled", "ok")
        },
    }
}

/// Policy rows, sorted by name.
pub(crate) fn policy_rows(policies: &[Policy], names: &Names) -> Vec<ui::PolicyRow> {
    let mut rows: Vec<ui::PolicyRow> = policies.iter().map(|p| policy_row(p, names)).collect();
    rows.sort_by_key(|a| a.name.to_lowercase());
    rows
}

fn policy_form(names: &Names, values: ui::FormValues, errors: ui::FormErrors) -> ui::PolicyForm {
    let resources: HashMap<ResourceId, String> = names
        .resources
        .iter()
        .map(|(id, r)| (*id, r.name.clone()))
        .collect();
    ui::PolicyForm {
        groups: opts(&names.groups),
        resources: opts(&resources),
        profiles: opts(&names.profiles),
        days: DAYS.iter().map(|(v, l)| ui::Opt::new(*v, *l)).collect(),
        values,
        errors,
    }
}

fn number(form: &Form, name: &str, field: &str) -> Result<Option<u64>, ui::FormErrors> {
    match form.opt(name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ui::FormErrors::field(field, "must be a whole number of seconds")),
    }
}

/// A policy from its form. Only what the form itself cannot express is checked here; every
/// rule about policies is the service's.
fn policy_input(form: &Form) -> Result<PolicyInput, ui::FormErrors> {
    let group_id = form
        .get("group_id")
        .parse()
        .map_err(|_| ui::FormErrors::field("group_id", "choose a group"))?;
    let resource_id = form
        .get("resource_id")
        .parse()
        .map_err(|_| ui::FormErrors::field("resource_id", "choose a resource"))?;
    let posture_profile_id = match form.opt("posture_profile_id") {
        None => None,
        Some(v) => Some(v.parse().map_err(|_| {
            ui::FormErrors::field("conditions.posture_profile_id", "choose a posture profile")
        })?),
    };
    let days = form.all("days");
    let (start, end) = (form.get("start"), form.get("end"));
    let time_windows = if days.is_empty() && start.is_empty() && end.is_empty() {
        Vec::new()
    } else {
        let field = "conditions.time_windows[0]";
        let clock = |v: &str, which: &str| -> Result<model::Clock, ui::FormErrors> {
            if v.is_empty() {
                return Err(ui::FormErrors::field(
                    field,
                    format!("give the {which} time, HH:MM"),
                ));
            }
            v.parse()
                .map_err(|e: model::ScheduleError| ui::FormErrors::field(field, e.to_string()))
        };
        let days = days
            .iter()
            .map(|d| {
                serde_json::from_value(serde_json::Value::String(d.clone()))
                    .map_err(|_| ui::FormErrors::field(field, format!("`{d}` is not a day")))
            })
            .collect::<Result<Vec<model::Weekday>, _>>()?;
        vec![TimeWindow {
            days,
            start: clock(start, "start")?,
            end: clock(end, "end")?,
        }]
    };
    Ok(PolicyInput {
        name: form.get("name").to_owned(),
        group_id,
        resource_id,
        action: if form.get("action") == "deny" {
            PolicyAction::Deny
        } else {
            PolicyAction::Allow
        },
        conditions: ConditionsInput {
            posture_profile_id,
            time_windows,
            time_zone: form.opt("time_zone"),
            source_cidrs: split_list(form.get("source_cidrs")),
            max_mfa_age_secs: number(form, "max_mfa_age_secs", "conditions.max_mfa_age_secs")?,
            identity_provider: form.opt("identity_provider"),
        },
        max_session_secs: number(form, "max_session_secs", "max_session_secs")?,
        disabled: form.checked("disabled"),
    })
}

fn policy_values(p: &Policy) -> ui::FormValues {
    let mut v = ui::FormValues::default();
    let c = &p.conditions;
    v.set("name", p.name.clone());
    v.set("group_id", p.group_id.to_string());
    v.set("resource_id", p.resource_id.to_string());
    v.set(
        "action",
        match p.action {
            PolicyAction::Allow => "allow",
            PolicyAction::Deny => "deny",
        },
    );
    v.set("max_session_secs", p.max_session_secs.to_string());
    if p.disabled {
        v.set("disabled", "on");
    }
    if let Some(id) = c.posture_profile_id {
        v.set("posture_profile_id", id.to_string());
    }
    v.set(
        "source_cidrs",
        c.source_cidrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    );
    if let Some(m) = c.max_mfa_age_secs {
        v.set("max_mfa_age_secs", m.to_string());
    }
    v.set(
        "identity_provider",
        c.identity_provider.clone().unwrap_or_default(),
    );
    v.set("time_zone", c.time_zone.clone().unwrap_or_default());
    if let Some(w) = c.time_windows.first() {
        v.set_all(
            "days",
            w.days
                .iter()
                .filter_map(|d| serde_json::to_value(d).ok()?.as_str().map(str::to_owned))
                .collect(),
        );
        v.set("start", w.start.to_string());
        v.set("end", w.end.to_string());
    }
    v
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PolicyQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    resource_id: Option<String>,
    #[serde(default)]
    group_id: Option<String>,
}

async fn policies_page(
    s: &AppState,
    ctx: &Ctx,
    q: &PolicyQuery,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let names = Names::load(s, ctx).await?;
    let all = s.service.list_policies(&ctx.actor).await?;
    let rows: Vec<ui::PolicyRow> = policy_rows(&all, &names)
        .into_iter()
        .filter(|p| matches(&q.q, &[&p.name, &p.group, &p.resource]))
        .collect();
    let (policies, pager) = ui::paginate(
        rows,
        q.page.unwrap_or(1),
        PER_PAGE,
        query_of(&[("q", &q.q)]),
    );
    let p = ui::PoliciesPage {
        chrome: ctx.chrome("Policies", "policies"),
        policies,
        pager,
        q: q.q.clone(),
        form: policy_form(&names, values, errors.clone()),
    };
    Ok(form_page(&p, &errors))
}

/// The policies, with the form for a new one (preselected from `?resource_id=`/`?group_id=`).
pub(crate) async fn policies(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<PolicyQuery>,
) -> WebResult {
    let mut values = ui::FormValues::default();
    values.set("action", "allow");
    if let Some(r) = &q.resource_id {
        values.set("resource_id", r.clone());
    }
    if let Some(g) = &q.group_id {
        values.set("group_id", g.clone());
    }
    policies_page(&s, &ctx, &q, values, ui::FormErrors::none()).await
}

/// Creates a policy.
pub(crate) async fn create_policy(State(s): State<AppState>, form: Form) -> WebResult {
    let result = match policy_input(&form) {
        Ok(input) => s
            .service
            .create_policy(&form.ctx.actor, input)
            .await
            .map_err(|e| form_errors(e, &form.ctx)),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(p) => Ok(done("/policies", &format!("Policy {} created.", p.name))),
        Err(errors) => {
            policies_page(
                &s,
                &form.ctx,
                &PolicyQuery::default(),
                form.values(),
                errors?,
            )
            .await
        }
    }
}

async fn policy_page(
    s: &AppState,
    ctx: &Ctx,
    id: PolicyId,
    values: Option<ui::FormValues>,
    errors: ui::FormErrors,
) -> WebResult {
    let p = s
        .service
        .get_policy(&ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(ctx))?;
    let names = Names::load(s, ctx).await?;
    let live = s
        .service
        .list_grants(&ctx.actor, GrantFilter::for_policy(id), true)
        .await?;
    let values = values.unwrap_or_else(|| policy_values(&p));
    let page_ = ui::PolicyPage {
        chrome: ctx.chrome(&p.name, "policies"),
        policy: policy_row(&p, &names),
        form: policy_form(&names, values, errors.clone()),
        live_grants: live.len(),
    };
    Ok(form_page(&page_, &errors))
}

/// One policy.
pub(crate) async fn policy(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> WebResult {
    let id = parse_id(&id, "policy").map_err(|e| e.within(&ctx))?;
    policy_page(&s, &ctx, id, None, ui::FormErrors::none()).await
}

/// Replaces a policy.
pub(crate) async fn update_policy(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: PolicyId = parse_id(&id, "policy")?;
    let result = match policy_input(&form) {
        Ok(input) => s
            .service
            .update_policy(&form.ctx.actor, id, input)
            .await
            .map_err(|e| form_errors(e, &form.ctx)),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(p) => Ok(done(
            &format!("/policies/{id}"),
            &format!("Policy {} saved.", p.name),
        )),
        Err(errors) => policy_page(&s, &form.ctx, id, Some(form.values()), errors?).await,
    }
}

/// Deletes a policy (after confirmation).
pub(crate) async fn delete_policy(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: PolicyId = parse_id(&id, "policy")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Delete this policy?",
            "The grants issued under it are revoked at once.",
            format!("/policies/{id}/delete"),
            "Delete policy",
            format!("/policies/{id}"),
        ));
    }
    s.service
        .delete_policy(&form.ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(&form.ctx))?;
    Ok(done(
        "/policies",
        "Policy deleted; its grants were revoked.",
    ))
}

// ---------------------------------------------------------------- posture profiles

fn requirements(p: &PostureProfile) -> Vec<String> {
    let mut out = Vec::new();
    for (os, v) in &p.min_os_versions {
        out.push(format!("{os} {v} or later"));
    }
    for (on, label) in [
        (p.require_disk_encryption, "disk encryption"),
        (p.require_firewall, "firewall"),
        (p.require_secure_boot, "secure boot"),
        (p.require_screen_lock, "screen lock"),
    ] {
        if on {
            out.push(label.to_owned());
        }
    }
    if !p.required_processes.is_empty() {
        out.push(format!("running: {}", p.required_processes.join(", ")));
    }
    if let Some(v) = &p.min_client_version {
        out.push(format!("client {v} or later"));
    }
    if !p.serial_allowlist.is_empty() {
        out.push(format!(
            "{} allowed serial number(s)",
            p.serial_allowlist.len()
        ));
    }
    if let Some(s) = p.max_report_age_secs {
        out.push(format!("report at most {} old", ui::duration_secs(s)));
    }
    out
}

fn profile_row(p: &PostureProfile, policies: &[Policy]) -> ui::ProfileRow {
    ui::ProfileRow {
        id: p.id.to_string(),
        name: p.name.clone(),
        requirements: requirements(p),
        policies: policies
            .iter()
            .filter(|x| x.conditions.posture_profile_id == Some(p.id))
            .count(),
    }
}

fn profile_input(form: &Form) -> Result<PostureProfileInput, ui::FormErrors> {
    let mut min_os_versions = BTreeMap::new();
    for line in form
        .get("min_os_versions")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
    {
        let Some((os, v)) = line.split_once('=') else {
            return Err(ui::FormErrors::field(
                "min_os_versions",
                format!("`{line}`: write one `os=version` per line, e.g. debian=12"),
            ));
        };
        min_os_versions.insert(os.trim().to_owned(), v.trim().to_owned());
    }
    Ok(PostureProfileInput {
        name: form.get("name").to_owned(),
        min_os_versions,
        require_disk_encryption: form.checked("require_disk_encryption"),
        require_firewall: form.checked("require_firewall"),
        require_secure_boot: form.checked("require_secure_boot"),
        require_screen_lock: form.checked("require_screen_lock"),
        required_processes: split_list(form.get("required_processes")),
        min_client_version: form.opt("min_client_version"),
        serial_allowlist: split_list(form.get("serial_allowlist")),
        max_report_age_secs: number(form, "max_report_age_secs", "max_report_age_secs")?,
    })
}

fn profile_values(p: &PostureProfile) -> ui::FormValues {
    let mut v = ui::FormValues::default();
    v.set("name", p.name.clone());
    v.set(
        "min_os_versions",
        p.min_os_versions
            .iter()
            .map(|(os, ver)| format!("{os}={ver}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    for (on, name) in [
        (p.require_disk_encryption, "require_disk_encryption"),
        (p.require_firewall, "require_firewall"),
        (p.require_secure_boot, "require_secure_boot"),
        (p.require_screen_lock, "require_screen_lock"),
    ] {
        if on {
            v.set(name, "on");
        }
    }
    v.set("required_processes", p.required_processes.join(", "));
    v.set(
        "min_client_version",
        p.min_client_version.clone().unwrap_or_default(),
    );
    v.set("serial_allowlist", p.serial_allowlist.join(", "));
    if let Some(s) = p.max_report_age_secs {
        v.set("max_report_age_secs", s.to_string());
    }
    v
}

async fn posture_page(
    s: &AppState,
    ctx: &Ctx,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let policies = s.service.list_policies(&ctx.actor).await?;
    let rows = s
        .service
        .list_profiles(&ctx.actor)
        .await?
        .iter()
        .map(|p| profile_row(p, &policies))
        .collect();
    let p = ui::PosturePage {
        chrome: ctx.chrome("Posture profiles", "posture"),
        rows,
        values,
        errors: errors.clone(),
    };
    Ok(form_page(&p, &errors))
}

/// The posture profiles.
pub(crate) async fn posture(State(s): State<AppState>, ctx: Ctx) -> WebResult {
    posture_page(&s, &ctx, ui::FormValues::default(), ui::FormErrors::none()).await
}

/// Creates a posture profile.
pub(crate) async fn create_profile(State(s): State<AppState>, form: Form) -> WebResult {
    let result = match profile_input(&form) {
        Ok(input) => s
            .service
            .create_profile(&form.ctx.actor, input)
            .await
            .map_err(|e| form_errors(e, &form.ctx)),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(p) => Ok(done(
            "/posture",
            &format!("Posture profile {} created.", p.name),
        )),
        Err(errors) => posture_page(&s, &form.ctx, form.values(), errors?).await,
    }
}

async fn profile_page(
    s: &AppState,
    ctx: &Ctx,
    id: PostureProfileId,
    values: Option<ui::FormValues>,
    errors: ui::FormErrors,
) -> WebResult {
    let p = s
        .service
        .get_profile(&ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(ctx))?;
    let policies = s.service.list_policies(&ctx.actor).await?;
    let page_ = ui::PostureProfilePage {
        chrome: ctx.chrome(&p.name, "posture"),
        profile: profile_row(&p, &policies),
        values: values.unwrap_or_else(|| profile_values(&p)),
        errors: errors.clone(),
    };
    Ok(form_page(&page_, &errors))
}

/// One posture profile.
pub(crate) async fn profile(
    State(s): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> WebResult {
    let id = parse_id(&id, "posture profile").map_err(|e| e.within(&ctx))?;
    profile_page(&s, &ctx, id, None, ui::FormErrors::none()).await
}

/// Replaces a posture profile.
pub(crate) async fn update_profile(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: PostureProfileId = parse_id(&id, "posture profile")?;
    let result = match profile_input(&form) {
        Ok(input) => s
            .service
            .update_profile(&form.ctx.actor, id, input)
            .await
            .map_err(|e| form_errors(e, &form.ctx)),
        Err(e) => Err(Ok(e)),
    };
    match result {
        Ok(p) => Ok(done(
            &format!("/posture/{id}"),
            &format!("Posture profile {} saved.", p.name),
        )),
        Err(errors) => profile_page(&s, &form.ctx, id, Some(form.values()), errors?).await,
    }
}

/// Deletes a posture profile (after confirmation).
pub(crate) async fn delete_profile(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: PostureProfileId = parse_id(&id, "posture profile")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Delete this posture profile?",
            "No policy may use it.",
            format!("/posture/{id}/delete"),
            "Delete profile",
            format!("/posture/{id}"),
        ));
    }
    match s.service.delete_profile(&form.ctx.actor, id).await {
        Ok(()) => Ok(done("/posture", "Posture profile deleted.")),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            profile_page(&s, &form.ctx, id, None, errors).await
        }
    }
}

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
    devices: &[Device],
) -> Result<HashMap<DeviceId, PostureReport>, WebError> {
    let mut c = s
        .service
        .store()
        .conn()
        .await
        .map_err(|e| WebError::from(crate::app::ServiceError::from(e)))?;
    let mut out = HashMap::new();
    for d in devices {
        if let Some(p) = store::get_posture(&mut c, d.id)
            .await
            .map_err(|e| WebError::from(crate::app::ServiceError::from(e)))?
        {
            out.insert(d.id, p);
        }
    }
    Ok(out)
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
    let postures = postures(&s, &devices).await?;
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
    let store_err = |e: crate::store::StoreError| WebError::from(crate::app::ServiceError::from(e));
    let mut c = s.service.store().conn().await.map_err(store_err)?;
    let devices = store::list_devices(&mut c, Some(me))
        .await
        .map_err(store_err)?;
    let groups = store::groups_of_user(&mut c, me).await.map_err(store_err)?;
    let policies: Vec<Policy> = store::list_policies(&mut c)
        .await
        .map_err(store_err)?
        .into_iter()
        .filter(|p| !p.disabled && groups.contains(&p.group_id))
        .collect();
    let mut names = Names::default();
    for g in &groups {
        if let Some(group) = store::get_group(&mut c, *g).await.map_err(store_err)? {
            names.groups.insert(group.id, group.name);
        }
    }
    for p in &policies {
        if let Some(id) = p.conditions.posture_profile_id
            && let Some(profile) = store::get_profile(&mut c, id).await.map_err(store_err)?
        {
            names.profiles.insert(id, profile.name);
        }
        if let Some(r) = store::get_resource(&mut c, p.resource_id)
            .await
            .map_err(store_err)?
        {
            names.resources.insert(r.id, r);
        }
    }
    let grants = store::list_grants(
        &mut c,
        &GrantFilter {
            user: Some(me),
            live_at: Some(now),
            ..Default::default()
        },
    )
    .await
    .map_err(store_err)?;
    for g in &grants {
        if let Some(gw) = store::get_gateway(&mut c, g.gateway_id)
            .await
            .map_err(store_err)?
        {
            names.gateways.insert(gw.id, gw.name);
        }
        if let Some(r) = store::get_resource(&mut c, g.resource_id)
            .await
            .map_err(store_err)?
        {
            names.resources.insert(r.id, r);
        }
    }
    drop(c);
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
    let postures = postures(&s, &devices).await?;
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
