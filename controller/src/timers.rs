//! The shell that makes time a change: it sleeps until the earliest end of a live grant
//! (its expiry is the earliest of its session limit, time window, MFA age and posture
//! report freshness), then has the application services end every grant that is due, with
//! the reasons the decision gives then. It wakes early when a grant is issued or shortened,
//! and looks again at least every [`LONGEST_NAP`] (grants issued at another replica).
//!
//! The audit sealer ([`start_audit_sealer`]) gives new audit events their place in the hash
//! chain: right after an audited write and every [`SEAL_INTERVAL`].

use std::time::Duration;

use crate::app::{SEAL_INTERVAL, Service};

/// The longest the timer sleeps without looking at the database again.
const LONGEST_NAP: Duration = Duration::from_secs(30);
/// How many grants one transaction ends at most.
const BATCH: i64 = 500;

/// Starts the timer; it runs until the runtime stops.
pub(crate) fn start(service: Service) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let nap = match service.next_grant_end().await {
                Ok(Some(at)) => {
                    let left = jiff::Timestamp::now().duration_until(at);
                    Duration::try_from(left)
                        .unwrap_or(Duration::ZERO)
                        .min(LONGEST_NAP)
                }
                Ok(None) => LONGEST_NAP,
                Err(e) => {
                    tracing::warn!(error = %e, "reading when the next grant ends");
                    Duration::from_secs(1)
                }
            };
            if !nap.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(nap) => {}
                    () = service.bus().deadline_moved() => continue,
                }
            }
            loop {
                match service.end_due_grants(BATCH).await {
                    Ok(n) if n as i64 == BATCH => continue,
                    Ok(n) => {
                        if n > 0 {
                            tracing::debug!(ended = n, "grants ended on time");
                        }
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ending grants whose time is up");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break;
                    }
                }
            }
        }
    })
}

/// How long the sealer waits after a wake-up: the audited transaction commits just after
/// its audit call, and a burst of writes is sealed in one go.
const SEAL_DELAY: Duration = Duration::from_millis(20);

/// Starts the audit sealer: it seals what an earlier run left (a crash after a commit), then
/// again shortly after every audited write and every [`SEAL_INTERVAL`] (events of other
/// replicas, transactions that committed after the wake-up). It runs until the runtime
/// stops; `serve` seals once more on the way out.
pub(crate) fn start_audit_sealer(service: Service) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match service.seal_audit().await {
                Ok(n) if n > 0 => tracing::debug!(sealed = n, "audit events sealed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "sealing audit events into the chain"),
            }
            tokio::select! {
                () = service.audit_written() => tokio::time::sleep(SEAL_DELAY).await,
                () = tokio::time::sleep(SEAL_INTERVAL) => {}
            }
        }
    })
}
