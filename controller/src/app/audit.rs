//! Reading the audit log, and keeping its hash chain: sealing new events into it and
//! verifying it (the chain's design is in `store::audit_chain`).

use std::time::Duration;

use jiff::SignedDuration;

use super::kernel::{Actor, Result, Service, now};
use store::{self, AuditEvent, AuditFilter, AuditVerification};

/// How many events one sealing transaction seals at most.
const SEAL_BATCH: u32 = 500;

/// How long an unsealed event counts as pending rather than broken: far longer than the
/// sealer takes (it runs right after audited writes and every [`SEAL_INTERVAL`]).
pub const AUDIT_PENDING_WINDOW: Duration = Duration::from_secs(10);

/// How often the sealer runs without being woken (events written at another replica, or
/// whose transaction committed after the wake-up).
pub(crate) const SEAL_INTERVAL: Duration = Duration::from_secs(1);

impl Service {
    /// Reads the audit log.
    pub async fn audit_log(&self, actor: &Actor, filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        Self::require_reader(actor)?;
        Ok(store::query_audit(&mut *self.store.conn().await?, &filter).await?)
    }

    /// Seals every committed unsealed audit event into the hash chain, each batch in a short
    /// transaction of its own; returns how many. Any replica may run it at any time.
    pub async fn seal_audit(&self) -> Result<u64> {
        let mut total = 0;
        loop {
            let mut tx = self.store.begin().await?;
            let n = store::seal_audit(&mut tx, SEAL_BATCH).await?;
            tx.commit().await?;
            total += n;
            if n < u64::from(SEAL_BATCH) {
                return Ok(total);
            }
        }
    }

    /// Verifies the audit log's hash chain (an operator's command; read-only). Unsealed
    /// events younger than `pending` count as pending, older ones as broken.
    pub async fn verify_audit_chain(&self, pending: Duration) -> Result<AuditVerification> {
        let pending = SignedDuration::try_from(pending).unwrap_or(SignedDuration::MAX);
        Ok(store::verify_audit(&mut *self.store.conn().await?, now(), pending).await?)
    }

    /// Resolves when an audited write has happened since the last call (the sealer waits
    /// on it).
    pub(crate) async fn audit_written(&self) {
        self.audit_written.notified().await;
    }
}
