-- OIDC single sign-on: the configured identity providers (the client secret is needed to
-- talk to the provider, so it is stored, but the API never returns it); the identities they
-- vouch for, keyed by (issuer, subject) and never by e-mail; which group memberships came
-- from which provider's group claim (so that a sign-in can remove the ones the provider no
-- longer asserts, and never a membership an admin made); and the sign-ins in flight: the
-- hashed `state`, the hash of the browser binding cookie, the nonce and the PKCE verifier,
-- single use and short-lived.

CREATE TABLE identity_providers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    issuer TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    groups_claim TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE oidc_identities (
    id TEXT PRIMARY KEY,
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email TEXT,
    created_at BIGINT NOT NULL,
    last_sign_in_at BIGINT NOT NULL,
    UNIQUE (issuer, subject)
);

CREATE INDEX oidc_identities_by_user ON oidc_identities (user_id);

CREATE TABLE oidc_group_memberships (
    provider_id TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id TEXT NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    PRIMARY KEY (provider_id, user_id, group_id)
);

CREATE TABLE oidc_logins (
    state_hash TEXT PRIMARY KEY,
    provider_id TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
