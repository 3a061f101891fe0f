-- The gateway control channel and access requests: the preshared key a gateway needs for a
-- live grant (a secret: cleared when the grant is revoked, never audited or returned by the
-- API), and the tunnel-address leases that keep a device's tunnel address unique among live
-- grants of other devices.

ALTER TABLE grants ADD COLUMN preshared_key TEXT;

CREATE INDEX grants_by_gateway ON grants (gateway_id, revoked_at, expires_at);
CREATE INDEX grants_by_public_key ON grants (public_key);

CREATE TABLE tunnel_addresses (
    address TEXT PRIMARY KEY,
    device_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX tunnel_addresses_by_device ON tunnel_addresses (device_id, expires_at);
