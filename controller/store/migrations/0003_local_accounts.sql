-- Local accounts and web sessions: a password (argon2id, PHC string) and TOTP per user,
-- with the last accepted time step (replay protection) and the failed-attempt counter
-- behind the temporary lockout; one-time recovery codes (hashed); web sessions (the cookie's
-- session id is stored only as a hash); and, per user, the time of the last MFA and the
-- identity provider of the last sign-in.

ALTER TABLE users ADD COLUMN last_mfa_at BIGINT;
ALTER TABLE users ADD COLUMN last_provider TEXT;

CREATE TABLE local_credentials (
    user_id TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    password_hash TEXT,
    totp_secret TEXT,
    totp_confirmed BIGINT NOT NULL DEFAULT 0,
    totp_last_step BIGINT,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    updated_at BIGINT NOT NULL
);

CREATE TABLE recovery_codes (
    id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE INDEX recovery_codes_by_user ON recovery_codes (user_id);

CREATE TABLE web_sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    mfa_at BIGINT,
    ended_at BIGINT,
    end_reason TEXT
);

CREATE INDEX web_sessions_by_user ON web_sessions (user_id, ended_at);
