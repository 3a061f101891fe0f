//! The controller's config file (`--config`, TOML): settings an operator deploys as files
//! rather than making through the API. Today it holds the identity providers:
//!
//! ```toml
//! [[identity_providers]]
//! name = "corp"                                  # used in /auth/oidc/corp/...
//! issuer = "https://login.example.com/realm"     # discovery base
//! client_id = "postern"
//! client_secret_file = "/run/secrets/corp-oidc"  # or client_secret_env = "CORP_OIDC_SECRET"
//! groups_claim = "groups"                        # optional (default "groups")
//! scopes = ["email", "profile", "groups"]        # optional (default email, profile)
//! ```
//!
//! Unknown keys are errors. The file is read at start; the service applies it in one
//! transaction (see `Service::apply_identity_config`). Reads files and the environment.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::app::IdentityProviderInput;

/// The parsed config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Identity providers, created or updated by name at start and managed by this file.
    #[serde(default)]
    pub identity_providers: Vec<ProviderConfig>,
}

/// One `[[identity_providers]]` table. Exactly one of `client_secret_file`,
/// `client_secret_env` and `client_secret` gives the client secret.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A unique name (letters, digits, `-`, `_`), used in the sign-in URL.
    pub name: String,
    /// The issuer URL (discovery base).
    pub issuer: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// A file holding the client secret (surrounding white space is ignored).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// An environment variable holding the client secret.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// The client secret itself; allowed, but a warning says to keep it out of the file.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// The ID token claim listing the user's groups (default `groups`).
    #[serde(default)]
    pub groups_claim: Option<String>,
    /// Scopes to request besides `openid` (default `email profile`).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
}

impl std::fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConfig")
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret_file", &self.client_secret_file)
            .field("client_secret_env", &self.client_secret_env)
            .finish_non_exhaustive()
    }
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses config text; `origin` names it in errors. The error names the line and the key
    /// at fault.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("config file {origin}: {e}"))
    }

    /// The identity providers with their client secrets read (from files or the
    /// environment). Refuses two providers with one name and a provider with no secret or
    /// more than one source of it.
    pub fn identity_provider_inputs(
        &self,
        origin: &str,
    ) -> anyhow::Result<Vec<IdentityProviderInput>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(self.identity_providers.len());
        for (i, p) in self.identity_providers.iter().enumerate() {
            let at = format!(
                "config file {origin}: identity_providers[{i}] (name = {:?})",
                p.name
            );
            if !seen.insert(p.name.trim().to_owned()) {
                anyhow::bail!("{at}: another identity provider has this name");
            }
            let client_secret = match (
                &p.client_secret_file,
                &p.client_secret_env,
                &p.client_secret,
            ) {
                (Some(file), None, None) => {
                    let secret = std::fs::read_to_string(file).with_context(|| {
                        format!("{at}: reading client_secret_file {}", file.display())
                    })?;
                    secret.trim().to_owned()
                }
                (None, Some(var), None) => std::env::var(var).with_context(|| {
                    format!("{at}: the environment variable {var} (client_secret_env) is not set")
                })?,
                (None, None, Some(secret)) => {
                    tracing::warn!(
                        provider = %p.name,
                        config = origin,
                        "an identity provider's client secret is written in the config file; \
                         prefer client_secret_file or client_secret_env"
                    );
                    secret.clone()
                }
                (None, None, None) => anyhow::bail!(
                    "{at}: no client secret: set client_secret_file, client_secret_env or client_secret"
                ),
                _ => anyhow::bail!(
                    "{at}: set only one of client_secret_file, client_secret_env and client_secret"
                ),
            };
            if client_secret.is_empty() {
                anyhow::bail!("{at}: the client secret is empty");
            }
            out.push(IdentityProviderInput {
                name: p.name.clone(),
                issuer: p.issuer.clone(),
                client_id: p.client_id.clone(),
                client_secret,
                groups_claim: p.groups_claim.clone(),
                scopes: p.scopes.clone(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn providers_parse_with_secrets_from_a_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let text = format!(
            r#"
[[identity_providers]]
name = "corp"
issuer = "https://login.example.com"
client_id = "postern"
client_secret_file = "{}"
scopes = ["email", "groups"]

[[identity_providers]]
name = "partner"
issuer = "https://idp.partner.example"
client_id = "p"
client_secret = "literal"
groups_claim = "roles"
"#,
            secret.display()
        );
        let file = ConfigFile::parse(&text, "test.toml").unwrap();
        let inputs = file.identity_provider_inputs("test.toml").unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[0].client_secret, "from-a-file");
        assert_eq!(
            inputs[0].scopes.as_deref(),
            Some(&["email".to_owned(), "groups".to_owned()][..])
        );
        assert_eq!(inputs[1].client_secret, "literal");
        assert_eq!(inputs[1].groups_claim.as_deref(), Some("roles"));
        assert!(
            ConfigFile::parse("", "empty.toml")
                .unwrap()
                .identity_providers
                .is_empty()
        );
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key_and_line() {
        let text = "[[identity_providers]]\nname = \"corp\"\nissuer = \"https://x\"\nclient_id = \"a\"\nclient_secrte = \"typo\"\n";
        let err = ConfigFile::parse(text, "bad.toml").unwrap_err().to_string();
        assert!(err.contains("bad.toml"), "{err}");
        assert!(err.contains("client_secrte"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        let err = ConfigFile::parse("[listen]\nport = 1\n", "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen"), "{err}");
        let err = ConfigFile::parse("[[identity_providers]\n", "broken.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_provider_needs_exactly_one_secret_source_and_a_unique_name() {
        let one = |extra: &str| {
            format!(
                "[[identity_providers]]\nname = \"corp\"\nissuer = \"https://x\"\nclient_id = \"a\"\n{extra}"
            )
        };
        let err = |text: &str| {
            ConfigFile::parse(text, "c.toml")
                .unwrap()
                .identity_provider_inputs("c.toml")
                .unwrap_err()
                .to_string()
        };
        assert!(err(&one("")).contains("no client secret"));
        assert!(
            err(&one("client_secret = \"a\"\nclient_secret_env = \"B\"\n")).contains("only one of")
        );
        assert!(
            err(&one(
                "client_secret_env = \"POSTERN_TEST_SURELY_UNSET_VARIABLE\"\n"
            ))
            .contains("POSTERN_TEST_SURELY_UNSET_VARIABLE")
        );
        assert!(
            err(&one(
                "client_secret_file = \"/nonexistent/postern-secret\"\n"
            ))
            .contains("/nonexistent/postern-secret")
        );
        let twice = format!(
            "{}{}",
            one("client_secret = \"a\"\n"),
            one("client_secret = \"b\"\n")
        );
        assert!(err(&twice).contains("another identity provider has this name"));
    }
}
