-- The facts a grant's decision was made on besides the objects themselves, so that every
-- change can decide it again exactly as it was issued: the address the request came from,
-- the identity provider of the sign-in and the time of its MFA.
ALTER TABLE grants ADD COLUMN source TEXT;
ALTER TABLE grants ADD COLUMN identity_provider TEXT;
ALTER TABLE grants ADD COLUMN last_mfa_at BIGINT;
CREATE INDEX grants_user ON grants (user_id);
CREATE INDEX grants_device ON grants (device_id);
CREATE INDEX grants_resource ON grants (resource_id);
