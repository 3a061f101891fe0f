//! Identity providers as admins configure them (API, web UI or the config file) and the
//! identities (issuer, subject) linked to users: listing, linking and unlinking, and the
//! sign-outs that unlinking or deleting a provider leads to.

use model::{DeviceId, Role, UserId};

use super::kernel::{Actor, Result, Service, ServiceError, invalid, subject};
use crate::crypto;
use store::{self, GrantFilter, Identity, IdentityProvider};

use super::sso::{
    IdentityConfigReport, IdentityLink, IdentityProviderInput, checked_provider,
    config_managed_error, require_reader,
};

impl Service {
    /// Lists the identity providers (client secrets are never shown).
    pub async fn list_identity_providers(&self, actor: &Actor) -> Result<Vec<IdentityProvider>> {
        let _ = actor;
        Ok(store::list_providers(&mut *self.store.conn().await?).await?)
    }

    /// Adds an identity provider (admins only).
    pub async fn create_identity_provider(
        &self,
        actor: &Actor,
        input: IdentityProviderInput,
    ) -> Result<IdentityProvider> {
        Self::require_admin(actor)?;
        let provider = checked_provider(input.clone(), super::kernel::now())?;
        let mut tx = self.store.begin().await?;
        if let Some((existing, _)) = store::provider_by_name(&mut tx, &provider.name).await? {
            return Err(ServiceError::Conflict {
                field: Some("name"),
                message: if existing.config_managed {
                    format!(
                        "an identity provider named `{}` exists and is managed by the controller's \
                         config file (--config): change it there",
                        existing.name
                    )
                } else {
                    "an identity provider with this name exists".into()
                },
            });
        }
        let sealed = self.seal_client_secret(provider.id, &input.client_secret);
        match store::insert_provider(&mut tx, &provider, &sealed).await {
            Err(store::StoreError::Duplicate(_)) => {
                return Err(ServiceError::Conflict {
                    field: Some("name"),
                    message: "an identity provider with this name exists".into(),
                });
            }
            r => r?,
        }
        self.audit(
            &mut tx,
            actor,
            "identity_provider.created",
            subject("identity_provider", provider.id),
            serde_json::json!({ "name": provider.name, "issuer": provider.issuer, "client_id": provider.client_id }),
        )
        .await?;
        tx.commit().await?;
        Ok(provider)
    }

    /// Removes an identity provider (admins only). Its users stay; they can no longer sign
    /// in through it. A provider from the config file is removed there, not here.
    pub async fn delete_identity_provider(&self, actor: &Actor, id: uuid::Uuid) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        let provider = store::get_provider(&mut tx, id)
            .await?
            .ok_or(ServiceError::NotFound("identity provider"))?;
        if provider.config_managed {
            return Err(config_managed_error(&provider.name));
        }
        store::delete_provider(&mut tx, id).await?;
        // Nobody stays signed in through a provider that is gone.
        let (sessions_ended, devices, revoked) = self
            .sign_out_provider(
                &mut tx,
                actor,
                None,
                &provider.name,
                "identity provider deleted",
            )
            .await?;
        self.audit(
            &mut tx,
            actor,
            "identity_provider.deleted",
            subject("identity_provider", id),
            serde_json::json!({
                "name": provider.name,
                "sessions_ended": sessions_ended,
                "devices_signed_out": devices.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            }),
        )
        .await?;
        tx.commit().await?;
        self.oidc_cache.forget(id);
        self.announce_sign_out(revoked, &devices, "identity provider deleted");
        Ok(())
    }

    /// Applies the identity providers of the config file in one transaction: each is
    /// created, or updated by name, and marked as managed by the file; a provider the file
    /// managed before and no longer names is removed. Every change is audited with the actor
    /// `config`. Nothing changes when any provider is invalid.
    pub async fn apply_identity_config(
        &self,
        origin: &str,
        inputs: Vec<IdentityProviderInput>,
    ) -> Result<IdentityConfigReport> {
        let actor = Actor {
            id: "config".into(),
            name: format!("config file {origin}"),
            role: Role::Admin,
        };
        let now = super::kernel::now();
        let mut wanted = Vec::with_capacity(inputs.len());
        for input in inputs {
            let secret = input.client_secret.clone();
            let mut p = checked_provider(input, now).map_err(|e| match e {
                ServiceError::Invalid(f) => {
                    invalid(format!("identity_providers.{}", f.field), f.message.clone())
                }
                other => other,
            })?;
            p.config_managed = true;
            wanted.push((p, secret));
        }
        let mut report = IdentityConfigReport::default();
        let mut tx = self.store.begin().await?;
        for (mut p, secret) in wanted {
            let existing = store::provider_by_name(&mut tx, &p.name).await?;
            let Some((old, stored)) = existing else {
                let sealed = self.seal_client_secret(p.id, &secret);
                store::insert_provider(&mut tx, &p, &sealed).await?;
                self.audit(
                    &mut tx,
                    &actor,
                    "identity_provider.created",
                    subject("identity_provider", p.id),
                    serde_json::json!({ "name": p.name, "issuer": p.issuer, "client_id": p.client_id, "config_managed": true }),
                )
                .await?;
                report.created.push(p.name);
                continue;
            };
            p.id = old.id;
            p.created_at = old.created_at;
            let same_secret = self
                .secret_key
                .open(&crypto::client_secret_context(old.id), &stored)
                .is_ok_and(|s| s == secret);
            let mut changed: Vec<&str> = Vec::new();
            for (field, differs) in [
                ("issuer", old.issuer != p.issuer),
                ("client_id", old.client_id != p.client_id),
                ("client_secret", !same_secret || !crypto::is_sealed(&stored)),
                ("groups_claim", old.groups_claim != p.groups_claim),
                ("scopes", old.scopes != p.scopes),
                ("config_managed", !old.config_managed),
            ] {
                if differs {
                    changed.push(field);
                }
            }
            if changed.is_empty() {
                report.unchanged.push(p.name);
                continue;
            }
            let sealed = self.seal_client_secret(p.id, &secret);
            store::update_provider(&mut tx, &p, &sealed).await?;
            self.audit(
                &mut tx,
                &actor,
                "identity_provider.updated",
                subject("identity_provider", p.id),
                serde_json::json!({ "name": p.name, "issuer": p.issuer, "client_id": p.client_id, "changed": changed, "config_managed": true }),
            )
            .await?;
            self.oidc_cache.forget(p.id);
            report.updated.push(p.name);
        }
        let named: std::collections::HashSet<String> = report
            .created
            .iter()
            .chain(&report.updated)
            .chain(&report.unchanged)
            .cloned()
            .collect();
        for p in store::list_providers(&mut tx).await? {
            if !p.config_managed || named.contains(&p.name) {
                continue;
            }
            store::delete_provider(&mut tx, p.id).await?;
            self.audit(
                &mut tx,
                &actor,
                "identity_provider.deleted",
                subject("identity_provider", p.id),
                serde_json::json!({ "name": p.name, "reason": "no longer in the config file" }),
            )
            .await?;
            self.oidc_cache.forget(p.id);
            report.deleted.push(p.name);
        }
        tx.commit().await?;
        Ok(report)
    }

    /// Seals the TOTP secrets and client secrets still stored in plain text (written by an
    /// older controller); returns how many it sealed. Run at start.
    pub async fn seal_plaintext_secrets(&self) -> Result<usize> {
        let mut tx = self.store.begin().await?;
        let mut sealed = 0;
        for (user, plain) in store::plaintext_totp_secrets(&mut tx).await? {
            let new = self.secret_key.seal(&crypto::totp_context(user), &plain);
            if store::reseal_totp_secret(&mut tx, user, &plain, &new).await? {
                sealed += 1;
            }
        }
        for (id, stored) in store::provider_secrets(&mut tx).await? {
            if crypto::is_sealed(&stored) {
                continue;
            }
            let new = self.seal_client_secret(id, &stored);
            if store::reseal_provider_secret(&mut tx, id, &stored, &new).await? {
                sealed += 1;
            }
        }
        tx.commit().await?;
        if sealed > 0 {
            tracing::info!(secrets = sealed, "sealed secrets stored in plain text");
        }
        Ok(sealed)
    }

    // ------------------------------------------------------------ identities of users

    /// The OpenID identities that sign in as a user (admins and auditors).
    pub async fn list_user_identities(&self, actor: &Actor, user: UserId) -> Result<Vec<Identity>> {
        require_reader(actor)?;
        let mut c = self.store.conn().await?;
        store::get_user(&mut c, user)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        Ok(store::list_identities(&mut c, user).await?)
    }

    /// Links an existing identity to `user` (admins only): from now on it signs in as this
    /// user. It moves from the user it signed in as before; the group memberships its
    /// provider's claims made there are removed (its next sign-in makes them here), and when
    /// that user is left with no way to sign in (no identity, no password), their web
    /// sessions end and the answer says so. The user is kept (delete it if it is not needed).
    pub async fn link_identity(
        &self,
        actor: &Actor,
        user: UserId,
        identity: uuid::Uuid,
    ) -> Result<IdentityLink> {
        Self::require_admin(actor)?;
        let now = super::kernel::now();
        let mut tx = self.store.begin().await?;
        let target = store::get_user(&mut tx, user)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let ident = store::get_identity(&mut tx, identity)
            .await?
            .ok_or_else(|| invalid("identity_id", "no identity has this id"))?;
        let from = ident.user_id;
        if from == target.id {
            return Err(ServiceError::Conflict {
                field: Some("identity_id"),
                message: "this identity already signs in as this user".into(),
            });
        }
        store::move_identity(&mut tx, identity, target.id).await?;
        let still_at_provider = store::list_identities(&mut tx, from)
            .await?
            .iter()
            .any(|i| i.provider_id == ident.provider_id);
        let mut groups_removed = Vec::new();
        if !still_at_provider {
            for g in store::provider_groups(&mut tx, ident.provider_id, from).await? {
                store::remove_member(&mut tx, g, from).await?;
                store::remove_provider_group(&mut tx, ident.provider_id, from, g).await?;
                groups_removed.push(g);
            }
        }
        let can_sign_in = !store::list_identities(&mut tx, from).await?.is_empty()
            || store::get_credentials(&mut tx, from)
                .await?
                .is_some_and(|c| c.password_hash.is_some());
        let mut sessions_ended = 0;
        if !can_sign_in {
            sessions_ended = store::end_user_web_sessions(
                &mut tx,
                from,
                None,
                now,
                "identity linked to another user",
            )
            .await?;
        }
        self.audit(
            &mut tx,
            actor,
            "identity.linked",
            subject("user", target.id),
            serde_json::json!({
                "identity": identity,
                "provider": ident.provider,
                "issuer": ident.issuer,
                "subject": ident.subject,
                "from_user": from,
                "groups_removed_from_previous_user": groups_removed,
                "previous_user_can_sign_in": can_sign_in,
                "sessions_ended": sessions_ended,
            }),
        )
        .await?;
        let linked = store::get_identity(&mut tx, identity)
            .await?
            .ok_or(ServiceError::NotFound("identity"))?;
        tx.commit().await?;
        Ok(IdentityLink {
            identity: linked,
            previous_user_id: from,
            previous_user_can_sign_in: can_sign_in,
        })
    }

    /// Unlinks an identity from a user (admins only): the identity is forgotten, so its next
    /// sign-in makes a new user (the user keeps everything else). The user's web sessions
    /// signed in through that provider end. Refused when it is the user's only way to sign in
    /// (no other identity, no password): disable or delete the user instead.
    pub async fn unlink_identity(
        &self,
        actor: &Actor,
        user: UserId,
        identity: uuid::Uuid,
    ) -> Result<()> {
        Self::require_admin(actor)?;
        let mut tx = self.store.begin().await?;
        store::get_user(&mut tx, user)
            .await?
            .ok_or(ServiceError::NotFound("user"))?;
        let ident = store::get_identity(&mut tx, identity)
            .await?
            .filter(|i| i.user_id == user)
            .ok_or(ServiceError::NotFound("identity"))?;
        let others = store::list_identities(&mut tx, user)
            .await?
            .into_iter()
            .filter(|i| i.id != identity)
            .count();
        let password = store::get_credentials(&mut tx, user)
            .await?
            .is_some_and(|c| c.password_hash.is_some());
        if others == 0 && !password {
            return Err(ServiceError::Conflict {
                field: None,
                message: "this is the user's only way to sign in: disable or delete the user instead, or \
                          link another identity first"
                    .into(),
            });
        }
        store::delete_identity(&mut tx, identity).await?;
        // What was signed in through this identity ends with it: web sessions, and clients
        // with their grants.
        let (mut sessions_ended, mut devices, mut revoked) = (0, Vec::new(), Vec::new());
        if let Some(provider) = &ident.provider {
            (sessions_ended, devices, revoked) = self
                .sign_out_provider(&mut tx, actor, Some(user), provider, "identity unlinked")
                .await?;
        }
        self.audit(
            &mut tx,
            actor,
            "identity.unlinked",
            subject("user", user),
            serde_json::json!({
                "identity": identity,
                "provider": ident.provider,
                "issuer": ident.issuer,
                "subject": ident.subject,
                "sessions_ended": sessions_ended,
                "devices_signed_out": devices.iter().map(|(d, _)| d).collect::<Vec<_>>(),
            }),
        )
        .await?;
        tx.commit().await?;
        self.announce_sign_out(revoked, &devices, "identity unlinked");
        Ok(())
    }

    /// Ends in `c`'s transaction the web and device sessions signed in to through
    /// `provider` (only `user`'s, when given) and revokes those devices' grants of those
    /// users. Returns the web sessions ended, the (device, user) pairs signed out and the
    /// grants to announce (with [`Service::announce_sign_out`]) after commit.
    async fn sign_out_provider(
        &self,
        c: &mut store::Conn,
        actor: &Actor,
        user: Option<UserId>,
        provider: &str,
        reason: &str,
    ) -> Result<(u64, Vec<(DeviceId, UserId)>, Vec<model::Grant>)> {
        let now = super::kernel::now();
        let web = store::end_provider_web_sessions(c, user, provider, now, reason).await?;
        let devices = store::end_provider_device_sessions(c, user, provider, now, reason).await?;
        let mut revoked = Vec::new();
        for &(device, user) in &devices {
            let filter = GrantFilter {
                user: Some(user),
                ..GrantFilter::for_device(device)
            };
            revoked.extend(self.revoke_in(c, actor, filter, reason).await?);
        }
        Ok((web, devices, revoked))
    }

    /// Tells gateways and connected clients what [`Service::sign_out_provider`] ended.
    fn announce_sign_out(
        &self,
        revoked: Vec<model::Grant>,
        devices: &[(DeviceId, UserId)],
        reason: &str,
    ) {
        self.announce(revoked);
        for &(device, user) in devices {
            self.announce_sessions_ended(Some(device), Some(user), reason);
        }
    }
}
