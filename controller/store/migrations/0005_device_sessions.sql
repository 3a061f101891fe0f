-- Client sign-in and device sessions. A device authorization is one sign-in in flight
-- from a client (like OAuth's device authorization grant): the daemon holds the device
-- code (stored only as a hash) and polls; the person types or follows the user code in a
-- browser, signs in and approves. A device session is what the daemon then holds (the
-- secret only as a hash): renewed with a new secret while in use, ended at sign-out, or
-- when the user or the device is disabled. Posture reports carry a sequence number that
-- must grow, so a replayed report is refused.

CREATE TABLE device_authorizations (
    id TEXT PRIMARY KEY,
    device_code_hash TEXT NOT NULL UNIQUE,
    user_code TEXT NOT NULL UNIQUE,
    public_key TEXT NOT NULL,
    name TEXT NOT NULL,
    source TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_poll_at BIGINT,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    decided_at BIGINT,
    approved BIGINT,
    mfa_at BIGINT,
    provider TEXT,
    consumed_at BIGINT
);

CREATE TABLE device_sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    device_id TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    renewed_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    absolute_expires_at BIGINT NOT NULL,
    mfa_at BIGINT,
    provider TEXT NOT NULL,
    ended_at BIGINT,
    end_reason TEXT
);

CREATE INDEX device_sessions_by_device ON device_sessions (device_id, ended_at);
CREATE INDEX device_sessions_by_user ON device_sessions (user_id, ended_at);

ALTER TABLE devices ADD COLUMN posture_seq BIGINT;
