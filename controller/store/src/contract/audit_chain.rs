//! The store contract: the audit log's hash chain — sealing, verifying, and tampering with
//! rows directly in SQL, which `verify_audit` must name.

use super::*;
use crate::audit_chain::{Hashed, event_hash};

contract!(
    audit_chain_intact_verifies,
    audit_chain_names_a_row_whose_details_were_edited,
    audit_chain_names_a_row_whose_kind_was_edited,
    audit_chain_names_the_row_after_a_deleted_one,
    audit_chain_notices_deleted_last_events,
    audit_chain_names_the_row_after_one_rewritten_with_its_hash,
    audit_chain_unsealed_events_are_pending_then_broken,
    audit_chain_leaves_events_from_before_it_alone,
    audit_chain_concurrent_appends_make_one_chain,
);

const WINDOW: SignedDuration = SignedDuration::from_secs(10);

fn event(minute: i64, kind: &str) -> AuditEvent {
    AuditEvent {
        id: AuditEventId::new(),
        at: now() + SignedDuration::from_mins(minute),
        actor: "user:a".into(),
        actor_name: "Ada".into(),
        kind: kind.into(),
        subject: format!("resource:{minute}"),
        details: serde_json::json!({ "minute": minute, "note": "ünïcode" }),
    }
}

/// Appends `n` events one transaction each and seals them; returns them in chain order.
async fn sealed(s: &Store, n: i64) -> Vec<AuditEvent> {
    let events: Vec<_> = (0..n).map(|m| event(m, "resource.created")).collect();
    for e in &events {
        let mut tx = s.begin().await.unwrap();
        append_audit(&mut tx, e).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(seal(s).await, n as u64);
    events
}

async fn seal(s: &Store) -> u64 {
    let mut tx = s.begin().await.unwrap();
    let n = seal_audit(&mut tx, 1000).await.unwrap();
    tx.commit().await.unwrap();
    n
}

async fn verify(s: &Store) -> AuditVerification {
    let at = now() + SignedDuration::from_hours(2);
    verify_audit(&mut s.conn().await.unwrap(), at, WINDOW)
        .await
        .unwrap()
}

async fn sql(s: &Store, sql: &str, id: &AuditEventId) {
    let done = sqlx::query(sql)
        .bind(id.to_string())
        .execute(&mut *s.conn().await.unwrap())
        .await
        .unwrap();
    assert_eq!(done.rows_affected(), 1, "{sql}");
}

fn broken_at(v: &AuditVerification) -> (Option<i64>, String, ChainProblem) {
    let b = v.broken.clone().expect("the chain is broken");
    let e = b.event.expect("names an event");
    (e.seq, e.id, b.problem)
}

async fn audit_chain_intact_verifies(s: &Store) {
    let empty = verify(s).await;
    assert_eq!(empty.broken, None);
    assert_eq!((empty.verified, empty.head_seq), (0, 0));
    assert_eq!(empty.head_hash, GENESIS_HASH);

    sealed(s, 5).await;
    assert_eq!(seal(s).await, 0, "nothing left to seal");
    let v = verify(s).await;
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!((v.verified, v.pending, v.before_chain), (5, 0, 0));
    assert_eq!(v.head_seq, 5);
    assert_ne!(v.head_hash, GENESIS_HASH);

    // Sealing more extends the same chain.
    sealed(s, 3).await;
    let v = verify(s).await;
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!((v.verified, v.head_seq), (8, 8));
}

async fn audit_chain_names_a_row_whose_details_were_edited(s: &Store) {
    let events = sealed(s, 5).await;
    sql(
        s,
        r#"UPDATE audit_events SET details = '{"minute":2,"note":"nothing to see"}' WHERE id = $1"#,
        &events[2].id,
    )
    .await;
    let v = verify(s).await;
    assert_eq!(
        broken_at(&v),
        (Some(3), events[2].id.to_string(), ChainProblem::Edited)
    );
    assert_eq!(v.verified, 2, "the links before it hold");
    let b = v.broken.unwrap().event.unwrap();
    assert_eq!((b.at, b.kind.as_str()), (events[2].at, "resource.created"));
}

async fn audit_chain_names_a_row_whose_kind_was_edited(s: &Store) {
    let events = sealed(s, 4).await;
    sql(
        s,
        "UPDATE audit_events SET kind = 'resource.updated' WHERE id = $1",
        &events[0].id,
    )
    .await;
    let v = verify(s).await;
    assert_eq!(
        broken_at(&v),
        (Some(1), events[0].id.to_string(), ChainProblem::Edited)
    );
    assert_eq!(v.verified, 0);
}

async fn audit_chain_names_the_row_after_a_deleted_one(s: &Store) {
    let events = sealed(s, 5).await;
    sql(s, "DELETE FROM audit_events WHERE id = $1", &events[1].id).await;
    let v = verify(s).await;
    assert_eq!(
        broken_at(&v),
        (
            Some(3),
            events[2].id.to_string(),
            ChainProblem::Missing { from: 2, to: 2 }
        )
    );
    assert_eq!(v.verified, 1);
}

async fn audit_chain_notices_deleted_last_events(s: &Store) {
    let events = sealed(s, 4).await;
    sql(s, "DELETE FROM audit_events WHERE id = $1", &events[3].id).await;
    let v = verify(s).await;
    assert_eq!(
        broken_at(&v),
        (
            Some(3),
            events[2].id.to_string(),
            ChainProblem::Truncated { head_seq: 4 }
        )
    );
    assert_eq!(v.verified, 3);
}

/// Edits event `seq` (`e`) and stores its new, consistent hash, as someone who knows the
/// hash would.
async fn rewrite(s: &Store, e: &AuditEvent, seq: i64, details: &str) {
    let id = e.id.to_string();
    let (prev,): (String,) = sqlx::query_as("SELECT prev_hash FROM audit_events WHERE id = $1")
        .bind(&id)
        .fetch_one(&mut *s.conn().await.unwrap())
        .await
        .unwrap();
    let hash = event_hash(
        seq,
        &prev,
        &Hashed {
            id: &id,
            at_ms: e.at.as_millisecond(),
            actor: &e.actor,
            actor_name: &e.actor_name,
            kind: &e.kind,
            subject: &e.subject,
            details,
        },
    );
    sqlx::query("UPDATE audit_events SET details = $1, hash = $2 WHERE id = $3")
        .bind(details)
        .bind(hash)
        .bind(&id)
        .execute(&mut *s.conn().await.unwrap())
        .await
        .unwrap();
}

async fn audit_chain_names_the_row_after_one_rewritten_with_its_hash(s: &Store) {
    let events = sealed(s, 4).await;
    // The last event rewritten with its hash: the head recorded another.
    rewrite(s, &events[3], 4, r#"{"minute":3}"#).await;
    let v = verify(s).await;
    assert_eq!(
        broken_at(&v),
        (
            Some(4),
            events[3].id.to_string(),
            ChainProblem::HeadMismatch
        )
    );
    assert_eq!(v.verified, 3);
    // An earlier one: the link from the next breaks, and that is the first broken link.
    rewrite(s, &events[1], 2, r#"{"minute":1}"#).await;
    let v = verify(s).await;
    assert_eq!(
        broken_at(&v),
        (Some(3), events[2].id.to_string(), ChainProblem::LinkBroken)
    );
    assert_eq!(v.verified, 2);
}

async fn audit_chain_unsealed_events_are_pending_then_broken(s: &Store) {
    sealed(s, 2).await;
    let e = event(0, "grant.issued");
    append_audit(&mut s.conn().await.unwrap(), &e)
        .await
        .unwrap();
    let mut c = s.conn().await.unwrap();
    // Just written: pending, not broken.
    let young = verify_audit(&mut c, e.at + SignedDuration::from_secs(3), WINDOW)
        .await
        .unwrap();
    assert_eq!(young.broken, None, "{young:?}");
    assert_eq!((young.verified, young.pending), (2, 1));
    // Never sealed after the window: broken, and named.
    let old = verify_audit(&mut c, e.at + SignedDuration::from_secs(60), WINDOW)
        .await
        .unwrap();
    assert_eq!(
        broken_at(&old),
        (None, e.id.to_string(), ChainProblem::NotSealed)
    );
    assert_eq!(old.pending, 0);
    drop(c);
    assert_eq!(seal(s).await, 1);
    let v = verify(s).await;
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!(v.verified, 3);
}

async fn audit_chain_leaves_events_from_before_it_alone(s: &Store) {
    // An event as migration 0008 finds it from before the chain.
    let old = event(-60, "site.created");
    append_audit(&mut s.conn().await.unwrap(), &old)
        .await
        .unwrap();
    sql(
        s,
        "UPDATE audit_events SET before_chain = 1 WHERE id = $1",
        &old.id,
    )
    .await;
    sealed(s, 2).await;
    let v = verify(s).await;
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!((v.verified, v.before_chain), (2, 1));
}

async fn audit_chain_concurrent_appends_make_one_chain(s: &Store) {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    let shared = site(s, "shared").await;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let s = s.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let own = site(&s, &format!("own-{task}")).await;
            for i in 0..EACH {
                // A business transaction: a row lock, then its audit event, then (now and
                // then) a lock on a row every task writes, then commit; then seal, as the
                // controller does after an audited write.
                let mut tx = s.begin().await.unwrap();
                update_site(
                    &mut tx,
                    &Site {
                        name: format!("own-{task}-{i}"),
                        ..own.clone()
                    },
                )
                .await
                .unwrap();
                let mut e = event(i as i64, "site.updated");
                e.subject = format!("site:{task}");
                append_audit(&mut tx, &e).await.unwrap();
                if i % 5 == 0 {
                    update_site(
                        &mut tx,
                        &Site {
                            name: format!("shared-{task}-{i}"),
                            ..shared.clone()
                        },
                    )
                    .await
                    .unwrap();
                }
                tx.commit().await.unwrap();
                seal(&s).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    seal(s).await;
    let v = verify(s).await;
    assert_eq!(v.broken, None, "{v:?}");
    assert_eq!(v.verified, (TASKS * EACH) as u64);
    assert_eq!((v.head_seq, v.pending), ((TASKS * EACH) as i64, 0));
}
