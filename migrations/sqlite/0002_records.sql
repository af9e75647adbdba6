-- Invoices, payments, forwarded HTLCs, merchants, webhooks and webhook deliveries: one
-- JSON document per row, keyed by kind and id. A record is written in the same
-- transaction as the channel state it belongs with (a forward with the HTLC it adds, an
-- invoice marked paid with the fulfill), so the two can never disagree after a crash.
CREATE TABLE records (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    -- The merchant a record belongs to ('' for the node's operator).
    owner      TEXT NOT NULL,
    data       BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX records_owner ON records (kind, owner, created_at);
