-- Node-wide values (seed fingerprint, next channel index, ...).
CREATE TABLE node_meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- One row per channel: its serialized state, rewritten (in the same transaction as its
-- revocations) before any message that depends on it leaves the process.
CREATE TABLE channels (
    channel_id    BYTEA PRIMARY KEY,
    peer_id       BYTEA NOT NULL CHECK (octet_length(peer_id) = 33),
    channel_index BIGINT NOT NULL,
    status        TEXT NOT NULL,
    state         BYTEA NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Remote commitments the counterparty has revoked: what the justice transaction needs if
-- one of them shows up on chain.
CREATE TABLE revoked_commitments (
    channel_id        BYTEA NOT NULL,
    commitment_number BIGINT NOT NULL,
    txid              BYTEA NOT NULL,
    data              BYTEA NOT NULL,
    PRIMARY KEY (channel_id, commitment_number)
);
CREATE INDEX revoked_commitments_txid ON revoked_commitments (txid);
