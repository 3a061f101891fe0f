//! The append-only audit log.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sqlx::FromRow;

use crate::codec::{id, json, ms, to_json, ts};
use crate::{Conn, StoreError};

/// One append-only audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// The event's id (time-ordered).
    pub id: model::AuditEventId,
    /// When it happened.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who acted: `user:<id>`, `token:<id>`, `gateway:<id>`, `setup` or `system`.
    pub actor: String,
    /// The actor's readable name.
    pub actor_name: String,
    /// What happened, e.g. `resource.created`, `decision.deny`.
    pub kind: String,
    /// What it happened to, e.g. `resource:<id>`.
    pub subject: String,
    /// The particulars. Never holds a secret.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(FromRow)]
struct AuditRow {
    id: String,
    at: i64,
    actor: String,
    actor_name: String,
    kind: String,
    subject: String,
    details: String,
}

impl AuditRow {
    fn into_model(self) -> Result<AuditEvent, StoreError> {
        Ok(AuditEvent {
            id: id("audit_events", &self.id)?,
            at: ts(self.at),
            actor: self.actor,
            actor_name: self.actor_name,
            kind: self.kind,
            subject: self.subject,
            details: json("audit_events", &self.details)?,
        })
    }
}

/// Appends `e`, unsealed: a sealer gives it its place in the hash chain after the
/// transaction `c` belongs to commits (see `audit_chain`).
pub async fn append_audit(c: &mut Conn, e: &AuditEvent) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_events (id, at, actor, actor_name, kind, subject, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(e.id.to_string())
    .bind(ms(e.at))
    .bind(&e.actor)
    .bind(&e.actor_name)
    .bind(&e.kind)
    .bind(&e.subject)
    .bind(to_json(&e.details))
    .execute(c)
    .await?;
    Ok(())
}

/// Which audit events to read.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Events by this actor (`user:<id>`, `token:<id>`, …).
    pub actor: Option<String>,
    /// Events about this subject (`resource:<id>`, …).
    pub subject: Option<String>,
    /// Events of this kind, or of every kind under it when it ends in `.` (e.g. `decision.`).
    pub kind: Option<String>,
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// At most this many, newest first.
    pub limit: u32,
}

pub async fn query_audit(c: &mut Conn, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
    let mut clauses = Vec::new();
    let mut text = Vec::new();
    for (column, value) in [("actor", &f.actor), ("subject", &f.subject)] {
        if let Some(v) = value {
            text.push(v.clone());
            clauses.push(format!("{column} = ${}", text.len()));
        }
    }
    if let Some(kind) = &f.kind {
        if let Some(prefix) = kind.strip_suffix('.') {
            text.push(format!("{prefix}.%"));
            clauses.push(format!("kind LIKE ${}", text.len()));
        } else {
            text.push(kind.clone());
            clauses.push(format!("kind = ${}", text.len()));
        }
    }
    let mut times = Vec::new();
    for (op, value) in [(">=", f.since), ("<", f.until)] {
        if let Some(v) = value {
            times.push(ms(v));
            clauses.push(format!("at {op} ${}", text.len() + times.len()));
        }
    }
    let clause = if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    };
    let sql = format!(
        "SELECT id, at, actor, actor_name, kind, subject, details FROM audit_events{clause} \
         ORDER BY at DESC, id DESC LIMIT {}",
        f.limit.max(1)
    );
    let mut q = sqlx::query_as::<_, AuditRow>(&sql);
    for t in text {
        q = q.bind(t);
    }
    for t in times {
        q = q.bind(t);
    }
    q.fetch_all(c)
        .await?
        .into_iter()
        .map(AuditRow::into_model)
        .collect()
}
