-- Identity providers from the controller's config file: such a provider is created and
-- updated at start from the file (upsert by name), and the API refuses to change or delete
-- it. Web sessions remember the identity provider they were signed in with, so that a client
-- sign-in a session approves carries that provider (not whichever sign-in of the user came
-- last). TOTP secrets and client secrets are sealed at rest (`enc:v1:` values) from now on;
-- legacy plaintext values are sealed at the next start.

ALTER TABLE identity_providers ADD COLUMN config_managed BIGINT NOT NULL DEFAULT 0;

ALTER TABLE web_sessions ADD COLUMN provider TEXT;
