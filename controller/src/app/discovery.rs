//! Identity providers' discovery documents and signing keys, cached, and the HTTP client
//! that fetches them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::CoreProviderMetadata;

use store::IdentityProvider;

/// How long a provider's discovery document and signing keys are used before they are
/// fetched again.
pub(crate) const DISCOVERY_TTL: Duration = Duration::from_secs(10 * 60);
/// How often an ID token signed with an unknown key may make the keys be fetched again.
pub(crate) const KEY_REFRESH_INTERVAL: Duration = Duration::from_secs(60);

/// Providers' discovery documents with their signing keys, by provider, so that a sign-in
/// does not fetch them again. An entry is used only for the same issuer, for
/// [`DISCOVERY_TTL`]; the keys are refreshed early when a token names a key they lack.
#[derive(Default)]
pub(crate) struct DiscoveryCache {
    entries: Mutex<HashMap<uuid::Uuid, Discovered>>,
}

struct Discovered {
    issuer: String,
    metadata: CoreProviderMetadata,
    fetched_at: Instant,
    keys_refreshed_at: Option<Instant>,
}

impl std::fmt::Debug for DiscoveryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.lock().len();
        f.debug_struct("DiscoveryCache")
            .field("providers", &n)
            .finish()
    }
}

impl DiscoveryCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, Discovered>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn get(
        &self,
        provider: &IdentityProvider,
        now: Instant,
    ) -> Option<CoreProviderMetadata> {
        self.lock()
            .get(&provider.id)
            .filter(|d| d.issuer == provider.issuer)
            .filter(|d| now.saturating_duration_since(d.fetched_at) < DISCOVERY_TTL)
            .map(|d| d.metadata.clone())
    }

    pub(crate) fn put(
        &self,
        provider: &IdentityProvider,
        metadata: CoreProviderMetadata,
        now: Instant,
    ) {
        self.lock().insert(
            provider.id,
            Discovered {
                issuer: provider.issuer.clone(),
                metadata,
                fetched_at: now,
                keys_refreshed_at: None,
            },
        );
    }

    /// Whether the keys may be fetched again now; if so, marks that they are.
    pub(crate) fn may_refresh_keys(&self, provider: &IdentityProvider, now: Instant) -> bool {
        let mut entries = self.lock();
        let Some(d) = entries.get_mut(&provider.id) else {
            return false;
        };
        if d.keys_refreshed_at
            .is_some_and(|t| now.saturating_duration_since(t) < KEY_REFRESH_INTERVAL)
        {
            return false;
        }
        d.keys_refreshed_at = Some(now);
        true
    }

    pub(crate) fn put_keys(&self, provider: &IdentityProvider, metadata: CoreProviderMetadata) {
        if let Some(d) = self.lock().get_mut(&provider.id) {
            d.metadata = metadata;
        }
    }

    /// Drops what is cached of a provider (it was changed or removed).
    pub(crate) fn forget(&self, provider: uuid::Uuid) {
        self.lock().remove(&provider);
    }
}

/// The HTTP client for discovery and the token endpoint: no redirects (SSRF and
/// code-leak safety, as the `openidconnect` crate advises), short timeouts.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}
