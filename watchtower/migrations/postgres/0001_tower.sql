-- Tower-wide values (the last block scanned, ...).
CREATE TABLE tower_meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Registered clients, by compressed public key. Their appointments stop being watched
-- at expiry_height.
CREATE TABLE users (
    user_id       BYTEA PRIMARY KEY CHECK (length(user_id) = 33),
    expiry_height BIGINT NOT NULL,
    registered_at BIGINT NOT NULL
);

-- One row per (user, locator). status: watching | responding | confirmed | invalid.
-- While responding/confirmed the penalty and where the breach was are kept here too.
CREATE TABLE appointments (
    id             BIGSERIAL PRIMARY KEY,
    user_id        BYTEA NOT NULL REFERENCES users (user_id),
    locator        BYTEA NOT NULL CHECK (length(locator) = 16),
    encrypted_blob BYTEA NOT NULL,
    to_self_delay  BIGINT NOT NULL,
    tag            BYTEA,
    user_signature TEXT NOT NULL,
    start_height   BIGINT NOT NULL,
    status         TEXT NOT NULL,
    reason         TEXT,
    breach_txid    BYTEA,
    breach_height  BIGINT,
    penalty_tx     BYTEA,
    penalty_txid   BYTEA,
    confirmations  BIGINT NOT NULL DEFAULT 0,
    UNIQUE (user_id, locator)
);
CREATE INDEX appointments_tag ON appointments (user_id, tag) WHERE tag IS NOT NULL;
-- Penalties in flight, read at every block.
CREATE INDEX appointments_responding ON appointments (status) WHERE status = 'responding';
