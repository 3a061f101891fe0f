//! The audit log as a hash chain: sealing events into it, and verifying it.
//!
//! Every sealed event carries `seq` (its place in the chain, from 1), `prev_hash` (the hash
//! of event `seq - 1`, or [`GENESIS_HASH`] for the first) and `hash`, the SHA-256 of a
//! canonical encoding of the event and `prev_hash` (see [`event_hash`]). The one-row table
//! `audit_chain` holds the head: the last sealed event's `seq` and `hash`. Editing,
//! inserting or deleting a sealed row with SQL breaks a link that [`verify_audit`] finds and
//! names (an attacker who rewrites every later event and the head too is not caught: record
//! the head `verify` prints somewhere else to anchor it).
//!
//! # Concurrency: events are inserted unsealed and sealed afterwards
//!
//! [`crate::append_audit`] inserts the event inside the business transaction it records,
//! with `seq`, `prev_hash` and `hash` NULL, and touches nothing else: it takes no lock
//! besides its own new row, so audited transactions never wait on each other for the chain
//! and cannot deadlock over it. Computing the link there instead ("read the last hash,
//! insert") forks the chain on PostgreSQL when two transactions read the same head, and
//! locking the head inside every business transaction orders that lock after whatever rows
//! the transaction locked before its audit call — a deadlock with another transaction that
//! locked them the other way round.
//!
//! [`seal_audit`] runs in a short transaction of its own: its first statement locks the head
//! row (`UPDATE audit_chain … WHERE id = 1`; on SQLite `BEGIN IMMEDIATE` has already taken
//! the database's write lock), so sealers — of this replica or another — run one at a time.
//! It then reads the head and the committed unsealed events, ordered by `(at, id)`, and
//! gives them the next `seq`s and their hashes. Under PostgreSQL's READ COMMITTED each of
//! those statements sees everything committed before it began, so after the lock it sees the
//! previous sealer's head and seals; an event whose transaction commits later is sealed by a
//! later sealer after the events already sealed (the chain's order is the order sealers found
//! events in, ties in one batch broken by `(at, id)`). The sealer locks the head first and
//! then only committed unsealed audit rows, which no business transaction ever locks (they
//! only insert), so it cannot deadlock either. The controller runs it right after audited
//! writes and periodically (and every administrative command seals before it exits), so the
//! unsealed window is short; [`verify_audit`] reports unsealed events younger than
//! `pending_for` as pending and older ones as a failure.
//!
//! Events from before the chain existed (migration 0008) are marked `before_chain`, never
//! sealed, and counted apart: not verified, not broken.

use jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};
use sqlx::FromRow;

use crate::codec::{ms, ts};
use crate::{Conn, StoreError};

/// The previous hash of the chain's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What [`verify_audit`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    /// Sealed events whose links hold (all of them when the chain is intact; those before
    /// the first broken link otherwise).
    pub verified: u64,
    /// Events from before the chain existed (not verified, not broken).
    pub before_chain: u64,
    /// Unsealed events younger than the pending window (the sealer has not run yet).
    pub pending: u64,
    /// The chain head: the last sealed event's seq and hash, as the head row records it.
    pub head_seq: i64,
    /// The hash of the head.
    pub head_hash: String,
    /// The first broken link, if any.
    pub broken: Option<BrokenLink>,
}

/// The first place the chain does not hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The event at which it breaks (`None` when every event is gone).
    pub event: Option<ChainEvent>,
    /// What is wrong there.
    pub problem: ChainProblem,
}

/// An event named in a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainEvent {
    /// Its place in the chain (`None`: not sealed).
    pub seq: Option<i64>,
    /// Its id.
    pub id: String,
    /// When it happened.
    pub at: Timestamp,
    /// Its kind.
    pub kind: String,
}

/// What is wrong at a broken link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// The event's stored fields do not hash to its stored hash: it was edited.
    Edited,
    /// The event's previous hash is not the previous event's hash: the event before it was
    /// rewritten (hash and all), or this one was inserted.
    LinkBroken,
    /// Events `from..=to` are missing before this one: they were deleted.
    Missing {
        /// The first missing seq.
        from: i64,
        /// The last missing seq.
        to: i64,
    },
    /// The head records a later event than the last one present: the events after this
    /// one, up to `head_seq`, were deleted.
    Truncated {
        /// The head's seq.
        head_seq: i64,
    },
    /// The event holds the head's seq but not the head's hash: it was rewritten.
    HeadMismatch,
    /// The event has waited longer than the pending window without being sealed.
    NotSealed,
}

impl std::fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Edited => write!(f, "its contents do not match its hash (the row was edited)"),
            Self::LinkBroken => write!(
                f,
                "its previous hash is not the previous event's hash (the event before it was \
                 rewritten, or this one was inserted)"
            ),
            Self::Missing { from, to } if from == to => {
                write!(f, "event #{from} before it is missing (deleted)")
            }
            Self::Missing { from, to } => {
                write!(f, "events #{from} to #{to} before it are missing (deleted)")
            }
            Self::Truncated { head_seq } => write!(
                f,
                "the chain head is at #{head_seq}: the events after this one are missing (deleted)"
            ),
            Self::HeadMismatch => write!(
                f,
                "its hash is not the one the chain head recorded (the row was rewritten)"
            ),
            Self::NotSealed => write!(
                f,
                "it was never sealed into the chain (the row was inserted outside the \
                 controller, or no controller has run since it was written)"
            ),
        }
    }
}

#[derive(FromRow)]
struct UnsealedRow {
    id: String,
    at: i64,
    actor: String,
    actor_name: String,
    kind: String,
    subject: String,
    details: String,
}

#[derive(FromRow)]
struct SealedRow {
    seq: i64,
    id: String,
    at: i64,
    actor: String,
    actor_name: String,
    kind: String,
    subject: String,
    details: String,
    prev_hash: Option<String>,
    hash: Option<String>,
}

/// The fields of an event that its hash covers, as stored.
pub(crate) struct Hashed<'a> {
    pub(crate) id: &'a str,
    pub(crate) at_ms: i64,
    pub(crate) actor: &'a str,
    pub(crate) actor_name: &'a str,
    pub(crate) kind: &'a str,
    pub(crate) subject: &'a str,
    /// The details as stored (JSON text), byte for byte.
    pub(crate) details: &'a str,
}

/// The hash of event `seq` after `prev_hash`: lower-case hex SHA-256 over the domain tag
/// `postern-audit-v1\0`, then `prev_hash` (hex text), `seq` (8 bytes big-endian), `id`,
/// `at` in milliseconds (8 bytes big-endian), `actor`, `actor_name`, `kind`, `subject` and
/// `details` — each text field as its UTF-8 length (8 bytes big-endian) and bytes.
pub(crate) fn event_hash(seq: i64, prev_hash: &str, e: &Hashed<'_>) -> String {
    fn text(h: &mut Sha256, s: &str) {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    }
    let mut h = Sha256::new();
    h.update(b"postern-audit-v1\0");
    text(&mut h, prev_hash);
    h.update(seq.to_be_bytes());
    text(&mut h, e.id);
    h.update(e.at_ms.to_be_bytes());
    text(&mut h, e.actor);
    text(&mut h, e.actor_name);
    text(&mut h, e.kind);
    text(&mut h, e.subject);
    text(&mut h, e.details);
    hex::encode(h.finalize())
}

async fn head(c: &mut Conn) -> Result<(i64, String), StoreError> {
    Ok(
        sqlx::query_as::<_, (i64, String)>("SELECT seq, hash FROM audit_chain WHERE id = 1")
            .fetch_one(c)
            .await?,
    )
}

/// Seals up to `limit` committed unsealed events into the chain and returns how many.
///
/// Run it in a transaction of its own with nothing else in it (see the module's doc): its
/// first statement takes the head's lock, held until that transaction ends.
pub async fn seal_audit(c: &mut Conn, limit: u32) -> Result<u64, StoreError> {
    sqlx::query("UPDATE audit_chain SET seq = seq WHERE id = 1")
        .execute(&mut *c)
        .await?;
    let (mut seq, mut prev) = head(c).await?;
    let rows = sqlx::query_as::<_, UnsealedRow>(&format!(
        "SELECT id, at, actor, actor_name, kind, subject, details FROM audit_events \
         WHERE seq IS NULL AND before_chain = 0 ORDER BY at, id LIMIT {}",
        limit.max(1)
    ))
    .fetch_all(&mut *c)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    for r in &rows {
        seq += 1;
        let hash = event_hash(
            seq,
            &prev,
            &Hashed {
                id: &r.id,
                at_ms: r.at,
                actor: &r.actor,
                actor_name: &r.actor_name,
                kind: &r.kind,
                subject: &r.subject,
                details: &r.details,
            },
        );
        let done = sqlx::query(
            "UPDATE audit_events SET seq = $1, prev_hash = $2, hash = $3 \
             WHERE id = $4 AND seq IS NULL",
        )
        .bind(seq)
        .bind(&prev)
        .bind(&hash)
        .bind(&r.id)
        .execute(&mut *c)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::Corrupt {
                table: "audit_events",
                message: format!("event {} was sealed by someone else meanwhile", r.id),
            });
        }
        prev = hash;
    }
    sqlx::query("UPDATE audit_chain SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(&prev)
        .execute(&mut *c)
        .await?;
    Ok(rows.len() as u64)
}

/// Walks the chain from its first event and reports the first broken link. Read-only; runs
/// on any connection. Unsealed events from before `now - pending_for` count as broken (the
/// sealer should have sealed them), younger ones as pending.
pub async fn verify_audit(
    c: &mut Conn,
    now: Timestamp,
    pending_for: SignedDuration,
) -> Result<AuditVerification, StoreError> {
    const PAGE: i64 = 1000;
    // The head first: a sealer running meanwhile only moves it on, so every event up to it
    // must be there.
    let (head_seq, head_hash) = head(c).await?;
    let mut broken = None;
    let mut verified = 0u64;
    let mut expected = 1i64;
    let mut prev = GENESIS_HASH.to_owned();
    let mut last: Option<ChainEvent> = None;
    'walk: loop {
        let rows = sqlx::query_as::<_, SealedRow>(&format!(
            "SELECT seq, id, at, actor, actor_name, kind, subject, details, prev_hash, hash \
             FROM audit_events WHERE seq >= $1 ORDER BY seq LIMIT {PAGE}"
        ))
        .bind(expected)
        .fetch_all(&mut *c)
        .await?;
        let page = rows.len();
        for r in rows {
            let event = ChainEvent {
                seq: Some(r.seq),
                id: r.id.clone(),
                at: ts(r.at),
                kind: r.kind.clone(),
            };
            let problem = if r.seq != expected {
                Some(ChainProblem::Missing {
                    from: expected,
                    to: r.seq - 1,
                })
            } else if r.prev_hash.as_deref() != Some(prev.as_str()) {
                Some(ChainProblem::LinkBroken)
            } else {
                let hash = event_hash(
                    r.seq,
                    &prev,
                    &Hashed {
                        id: &r.id,
                        at_ms: r.at,
                        actor: &r.actor,
                        actor_name: &r.actor_name,
                        kind: &r.kind,
                        subject: &r.subject,
                        details: &r.details,
                    },
                );
                if r.hash.as_deref() != Some(hash.as_str()) {
                    Some(ChainProblem::Edited)
                } else if r.seq == head_seq && hash != head_hash {
                    Some(ChainProblem::HeadMismatch)
                } else {
                    prev = hash;
                    None
                }
            };
            if let Some(problem) = problem {
                broken = Some(BrokenLink {
                    event: Some(event),
                    problem,
                });
                break 'walk;
            }
            verified += 1;
            expected += 1;
            last = Some(event);
        }
        if page < PAGE as usize {
            break;
        }
    }
    if broken.is_none() && expected - 1 < head_seq {
        broken = Some(BrokenLink {
            event: last,
            problem: ChainProblem::Truncated { head_seq },
        });
    }
    let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
    let before_chain =
        count("SELECT COUNT(*) FROM audit_events WHERE seq IS NULL AND before_chain = 1")
            .fetch_one(&mut *c)
            .await?;
    let cut = ms(now - pending_for);
    let pending = count(
        "SELECT COUNT(*) FROM audit_events WHERE seq IS NULL AND before_chain = 0 AND at >= $1",
    )
    .bind(cut)
    .fetch_one(&mut *c)
    .await?;
    if broken.is_none() {
        let stale = sqlx::query_as::<_, (String, i64, String)>(
            "SELECT id, at, kind FROM audit_events \
             WHERE seq IS NULL AND before_chain = 0 AND at < $1 ORDER BY at, id LIMIT 1",
        )
        .bind(cut)
        .fetch_optional(&mut *c)
        .await?;
        if let Some((id, at, kind)) = stale {
            broken = Some(BrokenLink {
                event: Some(ChainEvent {
                    seq: None,
                    id,
                    at: ts(at),
                    kind,
                }),
                problem: ChainProblem::NotSealed,
            });
        }
    }
    Ok(AuditVerification {
        verified,
        before_chain: before_chain.max(0) as u64,
        pending: pending.max(0) as u64,
        head_seq,
        head_hash,
        broken,
    })
}
