//! Reading the audit log.

use super::kernel::{Actor, Result, Service};
use store::{self, AuditEvent, AuditFilter};

impl Service {
    /// Reads the audit log.
    pub async fn audit_log(&self, actor: &Actor, filter: AuditFilter) -> Result<Vec<AuditEvent>> {
        Self::require_reader(actor)?;
        Ok(store::query_audit(&mut *self.store.conn().await?, &filter).await?)
    }
}
