//! The audit log (filters, pages, export) and the settings: identity providers, API tokens.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::IntoResponse;
use jiff::{SignedDuration, Timestamp};
use model::{Role, TokenId};
use serde::Deserialize;

use super::names::confirm_page;
use super::{
    Ctx, Form, PER_PAGE, WebError, WebResult, done, form_errors, form_page, page, parse_id,
    query_of,
};
use crate::app::IdentityProviderInput;
use crate::app::TokenInput;
use crate::app::{AuditEvent, AuditFilter};
use crate::http::AppState;

// ---------------------------------------------------------------- audit log

const KINDS: [(&str, &str); 15] = [
    ("", "All events"),
    ("decision.", "Access decisions"),
    ("decision.deny", "Denials"),
    ("decision.allow", "Allowed"),
    ("grant.", "Grants and revocations"),
    ("auth.", "Sign-ins and sessions"),
    ("device.", "Devices"),
    ("user.", "Users"),
    ("group.", "Groups"),
    ("policy.", "Policies"),
    ("resource.", "Resources"),
    ("site.", "Sites"),
    ("gateway.", "Gateways"),
    ("posture_profile.", "Posture profiles"),
    ("identity_provider.", "Identity providers"),
];

const RANGES: [(&str, &str, i64); 5] = [
    ("", "Any time", 0),
    ("1h", "Last hour", 1),
    ("24h", "Last 24 hours", 24),
    ("7d", "Last 7 days", 24 * 7),
    ("30d", "Last 30 days", 24 * 30),
];

/// The audit log's filters and position.
#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    range: String,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    subject: String,
    /// The last event of the previous page: `<milliseconds>_<id>`.
    #[serde(default)]
    before: String,
}

impl AuditQuery {
    fn filter(&self, now: Timestamp) -> AuditFilter {
        let hours = RANGES
            .iter()
            .find(|(k, _, _)| *k == self.range)
            .map_or(0, |(_, _, h)| *h);
        let opt = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        AuditFilter {
            actor: opt(&self.actor),
            subject: opt(&self.subject),
            kind: opt(&self.kind),
            since: (hours > 0)
                .then(|| now.checked_sub(SignedDuration::from_hours(hours)).ok())
                .flatten(),
            until: None,
            limit: 100,
        }
    }

    fn cursor(&self) -> Option<(i64, String)> {
        let (ms, id) = self.before.split_once('_')?;
        Some((ms.parse().ok()?, id.to_owned()))
    }

    fn query(&self, before: Option<&str>) -> String {
        query_of(&[
            ("kind", &self.kind),
            ("range", &self.range),
            ("actor", &self.actor),
            ("subject", &self.subject),
            ("before", before.unwrap_or_default()),
        ])
    }
}

/// One page of events after `cursor`, and whether there are more. Events that share the
/// cursor's millisecond are told apart by id, so none is skipped or shown twice.
pub(crate) async fn events_page(
    s: &AppState,
    ctx: &Ctx,
    base: &AuditFilter,
    cursor: Option<&(i64, String)>,
    per_page: usize,
) -> Result<(Vec<AuditEvent>, bool), WebError> {
    let mut limit = per_page + 1 + 16;
    loop {
        let mut f = base.clone();
        f.limit = u32::try_from(limit).unwrap_or(10_000);
        if let Some((ms, _)) = cursor {
            f.until = Timestamp::from_millisecond(ms.saturating_add(1)).ok();
        }
        let raw = s.service.audit_log(&ctx.actor, f).await?;
        let full = raw.len() >= limit;
        let kept: Vec<AuditEvent> = raw
            .into_iter()
            .filter(|e| {
                cursor.is_none_or(|(ms, id)| {
                    !(e.at.as_millisecond() == *ms && e.id.to_string().as_str() >= id.as_str())
                })
            })
            .collect();
        if kept.len() > per_page || !full || limit >= 10_000 {
            let more = kept.len() > per_page;
            return Ok((kept.into_iter().take(per_page).collect(), more));
        }
        limit = (limit * 4).min(10_000);
    }
}

fn tone(kind: &str) -> &'static str {
    let last = kind.rsplit('.').next().unwrap_or(kind);
    if kind == "decision.deny"
        || matches!(
            last,
            "login_failed" | "locked" | "revoked" | "deleted" | "sign_in_denied"
        )
    {
        "bad"
    } else if kind == "decision.allow"
        || matches!(
            last,
            "login_succeeded" | "issued" | "created" | "enrolled" | "sign_in_approved"
        )
    {
        "ok"
    } else {
        "info"
    }
}

/// Readable names of the objects audit events refer to by id.
type IdNames = std::collections::HashMap<String, String>;

async fn id_names(s: &AppState, ctx: &Ctx) -> Result<IdNames, WebError> {
    let n = super::names::Names::load(s, ctx).await?;
    let mut out = IdNames::new();
    for (id, u) in &n.users {
        out.insert(id.to_string(), u.email.clone());
    }
    for (id, g) in &n.groups {
        out.insert(id.to_string(), g.clone());
    }
    for (id, r) in &n.resources {
        out.insert(id.to_string(), r.name.clone());
    }
    for (id, d) in &n.devices {
        out.insert(id.to_string(), d.name.clone());
    }
    for (id, g) in &n.gateways {
        out.insert(id.to_string(), g.clone());
    }
    for (id, p) in &n.profiles {
        out.insert(id.to_string(), p.clone());
    }
    for site in s.service.list_sites(&ctx.actor).await? {
        out.insert(site.id.to_string(), site.name);
    }
    for p in s.service.list_policies(&ctx.actor).await? {
        out.insert(p.id.to_string(), p.name);
    }
    Ok(out)
}

fn value_text(v: &serde_json::Value, names: &IdNames) -> String {
    match v {
        serde_json::Value::String(s) => names.get(s).cloned().unwrap_or_else(|| s.clone()),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                serde_json::Value::Object(o) if o.contains_key("message") => {
                    value_text(&o["message"], names)
                }
                other => value_text(other, names),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn details_text(v: &serde_json::Value, names: &IdNames) -> String {
    let text = match v {
        serde_json::Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k}: {}", value_text(v, names)))
            .collect::<Vec<_>>()
            .join(" · "),
        other => other.to_string(),
    };
    if text.chars().count() > 400 {
        text.chars().take(400).collect::<String>() + "…"
    } else {
        text
    }
}

fn audit_row(e: &AuditEvent, names: &IdNames, now: Timestamp) -> ui::AuditRow {
    let subject_label = match e.subject.split_once(':') {
        Some((kind, id)) => match names.get(id) {
            Some(name) => format!("{} {name}", kind.replace('_', " ")),
            None => e.subject.clone(),
        },
        None => e.subject.clone(),
    };
    ui::AuditRow {
        at: ui::datetime(e.at),
        ago: ui::ago(e.at, now),
        actor: e.actor_name.clone(),
        actor_id: e.actor.clone(),
        kind: e.kind.clone(),
        tone: tone(&e.kind),
        subject: e.subject.clone(),
        subject_label,
        details: details_text(&e.details, names),
    }
}

/// The audit log.
pub(crate) async fn audit(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<AuditQuery>,
) -> WebResult {
    let now = Timestamp::now();
    let cursor = q.cursor();
    let (events, more) =
        events_page(&s, &ctx, &q.filter(now), cursor.as_ref(), PER_PAGE * 2).await?;
    let older = if more {
        events.last().map(|e| {
            format!(
                "/audit?{}",
                q.query(Some(&format!("{}_{}", e.at.as_millisecond(), e.id)))
            )
        })
    } else {
        None
    };
    let names = id_names(&s, &ctx).await?;
    let mut values = ui::FormValues::default();
    for (k, v) in [
        ("kind", &q.kind),
        ("range", &q.range),
        ("actor", &q.actor),
        ("subject", &q.subject),
    ] {
        values.set(k, v.clone());
    }
    let export_q = q.query(None);
    Ok(page(&ui::AuditPage {
        chrome: ctx.chrome("Audit log", "audit"),
        rows: events.iter().map(|e| audit_row(e, &names, now)).collect(),
        values,
        kinds: KINDS.iter().map(|(v, l)| ui::Opt::new(*v, *l)).collect(),
        ranges: RANGES
            .iter()
            .map(|(v, l, _)| ui::Opt::new(*v, *l))
            .collect(),
        older,
        newest: cursor
            .is_some()
            .then(|| format!("/audit?{}", q.query(None))),
        export: if export_q.is_empty() {
            "/audit/export".into()
        } else {
            format!("/audit/export?{export_q}")
        },
        errors: ui::FormErrors::none(),
    }))
}

/// The audit log with the same filters as JSON lines (at most 10 000 events, newest first).
pub(crate) async fn export(
    State(s): State<AppState>,
    ctx: Ctx,
    Query(q): Query<AuditQuery>,
) -> WebResult {
    let mut f = q.filter(Timestamp::now());
    f.limit = 10_000;
    let events = s
        .service
        .audit_log(&ctx.actor, f)
        .await
        .map_err(|e| WebError::from(e).within(&ctx))?;
    let mut out = String::new();
    for e in &events {
        out.push_str(&serde_json::to_string(e).unwrap_or_default());
        out.push('\n');
    }
    let name = format!(
        "postern-audit-{}.jsonl",
        Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-ndjson".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        out,
    )
        .into_response())
}

// ---------------------------------------------------------------- settings

fn redirect_base(s: &AppState, headers: &HeaderMap, uri: &Uri) -> String {
    match s.service.public_url.as_deref() {
        Some(u) if !u.contains("://0.0.0.0") && !u.contains("://[::]") => u.to_owned(),
        _ => format!(
            "https://{}",
            super::request_host(headers, uri).unwrap_or_else(|| "controller.example.com".into())
        ),
    }
}

async fn settings_page(
    s: &AppState,
    ctx: &Ctx,
    base: String,
    new_token: Option<String>,
    values: ui::FormValues,
    errors: ui::FormErrors,
) -> WebResult {
    let now = Timestamp::now();
    let providers = s
        .service
        .list_identity_providers(&ctx.actor)
        .await?
        .into_iter()
        .map(|p| ui::ProviderRow {
            id: p.id.to_string(),
            redirect_uri: format!("{base}/auth/oidc/{}/callback", p.name),
            name: p.name,
            issuer: p.issuer,
            client_id: p.client_id,
            groups_claim: p.groups_claim,
        })
        .collect();
    let tokens = s
        .service
        .list_tokens(&ctx.actor)
        .await?
        .into_iter()
        .map(|t| ui::ApiTokenRow {
            id: t.id.to_string(),
            name: t.name,
            role: t.role.as_str().to_owned(),
            state: if t.revoked_at.is_some() {
                ui::Pill::new("revoked", "off")
            } else {
                ui::Pill::new("active", "ok")
            },
            revoked: t.revoked_at.is_some(),
            last_used: t
                .last_used_at
                .map_or_else(|| "never".into(), |x| ui::ago(x, now)),
        })
        .collect();
    let p = ui::SettingsPage {
        chrome: ctx.chrome("Settings", "settings"),
        providers,
        tokens,
        new_token,
        values,
        errors: errors.clone(),
        redirect_base: base,
    };
    Ok(form_page(&p, &errors))
}

/// The settings.
pub(crate) async fn settings(
    State(s): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    uri: Uri,
) -> WebResult {
    if !ctx.is_reader() {
        return Err(WebError::new(
            axum::http::StatusCode::FORBIDDEN,
            "Settings are for admins and auditors.",
        )
        .within(&ctx));
    }
    let base = redirect_base(&s, &headers, &uri);
    settings_page(
        &s,
        &ctx,
        base,
        None,
        ui::FormValues::default(),
        ui::FormErrors::none(),
    )
    .await
}

/// Adds an identity provider.
pub(crate) async fn create_provider(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    form: Form,
) -> WebResult {
    let input = IdentityProviderInput {
        name: form.get("name").to_owned(),
        issuer: form.get("issuer").to_owned(),
        client_id: form.get("client_id").to_owned(),
        client_secret: form.get("client_secret").to_owned(),
        groups_claim: form.opt("groups_claim"),
        scopes: form
            .opt("scopes")
            .map(|s| s.split_whitespace().map(str::to_owned).collect()),
    };
    match s
        .service
        .create_identity_provider(&form.ctx.actor, input)
        .await
    {
        Ok(p) => Ok(done(
            "/settings",
            &format!(
                "Identity provider {} added; its button is on the sign-in page.",
                p.name
            ),
        )),
        Err(e) => {
            let errors = form_errors(e, &form.ctx)?;
            let base = redirect_base(&s, &headers, &uri);
            settings_page(&s, &form.ctx, base, None, form.values(), errors).await
        }
    }
}

/// Removes an identity provider (after confirmation).
pub(crate) async fn delete_provider(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: uuid::Uuid = parse_id(&id, "identity provider")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Remove this identity provider?",
            "Its users stay, but can no longer sign in through it.",
            format!("/settings/identity-providers/{id}/delete"),
            "Remove provider",
            "/settings".into(),
        ));
    }
    s.service
        .delete_identity_provider(&form.ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(&form.ctx))?;
    Ok(done("/settings", "Identity provider removed."))
}

/// Creates an API token and shows it once.
pub(crate) async fn create_token(
    State(s): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    form: Form,
) -> WebResult {
    let base = redirect_base(&s, &headers, &uri);
    let role = match form.get("token_role") {
        "admin" => Role::Admin,
        _ => Role::Auditor,
    };
    let input = TokenInput {
        name: form.get("token_name").to_owned(),
        role,
    };
    match s.service.create_token(&form.ctx.actor, input).await {
        Ok(t) => {
            settings_page(
                &s,
                &form.ctx,
                base,
                Some(t.secret),
                ui::FormValues::default(),
                ui::FormErrors::none(),
            )
            .await
        }
        Err(e) => {
            let mut errors = form_errors(e, &form.ctx)?;
            for (field, _) in &mut errors.fields {
                *field = format!("token_{field}");
            }
            settings_page(&s, &form.ctx, base, None, form.values(), errors).await
        }
    }
}

/// Revokes an API token (after confirmation).
pub(crate) async fn revoke_token(
    State(s): State<AppState>,
    Path(id): Path<String>,
    form: Form,
) -> WebResult {
    let id: TokenId = parse_id(&id, "token")?;
    if !form.confirmed() {
        return Ok(confirm_page(
            &form,
            "Revoke this API token?",
            "Whatever uses it stops working at once.",
            format!("/settings/tokens/{id}/revoke"),
            "Revoke token",
            "/settings".into(),
        ));
    }
    s.service
        .revoke_token(&form.ctx.actor, id)
        .await
        .map_err(|e| WebError::from(e).within(&form.ctx))?;
    Ok(done("/settings", "API token revoked."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_tones() {
        assert_eq!(tone("decision.deny"), "bad");
        assert_eq!(tone("decision.allow"), "ok");
        assert_eq!(tone("grant.revoked"), "bad");
        assert_eq!(tone("site.created"), "ok");
        assert_eq!(tone("site.updated"), "info");
    }

    #[test]
    fn details_name_what_they_refer_to() {
        let names: IdNames = [("u1".to_owned(), "ann@example.com".to_owned())].into();
        let v = serde_json::json!({"user": "u1", "reasons": [{"code": "x", "message": "disk encryption is off"}], "gone": null, "n": 3});
        assert_eq!(
            details_text(&v, &names),
            "n: 3 · reasons: disk encryption is off · user: ann@example.com"
        );
    }

    #[test]
    fn cursors_round_trip() {
        let q = AuditQuery {
            before: "1700000000000_0190-abc".into(),
            ..Default::default()
        };
        assert_eq!(q.cursor(), Some((1_700_000_000_000, "0190-abc".into())));
        assert_eq!(AuditQuery::default().cursor(), None);
    }
}
