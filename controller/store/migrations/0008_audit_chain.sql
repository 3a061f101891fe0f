-- The audit log as a hash chain (see `store::audit_chain`): events are inserted unsealed
-- (seq NULL) inside the business transaction that they record, and the sealer gives them,
-- in a short transaction of its own that holds the lock on the one-row `audit_chain` head,
-- their place in the chain (`seq`), the previous event's hash and their own hash.
-- Events from before this migration are marked `before_chain` and never sealed.
ALTER TABLE audit_events ADD COLUMN seq BIGINT;
ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_events ADD COLUMN hash TEXT;
ALTER TABLE audit_events ADD COLUMN before_chain BIGINT NOT NULL DEFAULT 0;
UPDATE audit_events SET before_chain = 1;
CREATE UNIQUE INDEX audit_by_seq ON audit_events (seq);
CREATE INDEX audit_unsealed ON audit_events (at, id) WHERE seq IS NULL AND before_chain = 0;

-- The chain's head: the last sealed event's seq and hash (0 and the genesis hash before
-- the first). Its one row is the sealers' lock, and it tells a truncated chain from a
-- whole one.
CREATE TABLE audit_chain (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_chain (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
