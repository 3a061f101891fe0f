//! Policies and posture profiles.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use model::{
    Policy, PolicyAction, PolicyId, PostureProfile, PostureProfileId, ResourceId, TimeWindow,
};
use serde::Deserialize;

use super::names::{Names, confirm_page, opts};
use super::{
    Ctx, Form, PER_PAGE, WebError, WebResult, done, form_errors, form_page, matches, parse_id,
    query_of, split_list,
};
use crate::app::GrantFilter;
use crate::app::{ConditionsInput, PolicyInput, PostureProfileInput};
use crate::http::AppState;

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
