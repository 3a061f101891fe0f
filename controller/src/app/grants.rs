//! Grants as admins see them: listing, recording and revoking.

use jiff::Timestamp;
use model::{Grant, GrantId};

use super::kernel::{Actor, Result, Service, ServiceError, now, subject};
use store::{self, GrantFilter};

impl Service {
    /// Lists grants; with `live`, only those in force now.
    pub async fn list_grants(
        &self,
        actor: &Actor,
        mut filter: GrantFilter,
        live: bool,
    ) -> Result<Vec<Grant>> {
        Self::require_reader(actor)?;
        filter.live_at = live.then(Timestamp::now);
        Ok(store::list_grants(&mut *self.store.conn().await?, &filter).await?)
    }

    /// Stores a grant issued by the access flow.
    pub async fn record_grant(&self, actor: &Actor, grant: &Grant) -> Result<()> {
        let mut tx = self.store.begin().await?;
        store::insert_grant(&mut tx, grant).await?;
        self.audit(&mut tx, actor, "grant.issued", subject("grant", grant.id), serde_json::json!({
            "device": grant.device_id, "user": grant.user_id, "resource": grant.resource_id,
            "gateway": grant.gateway_id, "policy": grant.policy_id, "expires_at": grant.expires_at,
        })).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes one grant.
    pub async fn revoke_grant(&self, actor: &Actor, id: GrantId) -> Result<Grant> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let g = store::get_grant(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("grant"))?;
        if g.revoked_at.is_some() {
            return Err(ServiceError::Conflict {
                field: None,
                message: "the grant is already revoked".into(),
            });
        }
        let revoked = self
            .revoke_in(
                &mut tx,
                actor,
                GrantFilter::for_grant(id),
                "revoked by an admin",
            )
            .await?;
        tx.commit().await?;
        let out = revoked.first().cloned().unwrap_or(Grant {
            revoked_at: Some(now()),
            ..g
        });
        self.announce(revoked);
        Ok(out)
    }
}
