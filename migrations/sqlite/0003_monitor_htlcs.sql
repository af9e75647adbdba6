-- The channel monitor's record of the counterparty's revoked commitments: each HTLC that
-- had an output in one of them, once, with the first and last commitment number it had
-- an output in. With the revocation secrets (kept in the channel's state as a shachain)
-- this rebuilds any revoked commitment that shows up on chain, so storage grows with the
-- HTLCs a channel carried, not with its commitments. Rows of the former
-- revoked_commitments table are converted at start-up and that table is emptied.
CREATE TABLE monitor_htlcs (
    channel_id   BLOB NOT NULL,
    -- 1 when the counterparty (the holder of the commitment) offered the HTLC.
    offered      BIGINT NOT NULL,
    htlc_id      BIGINT NOT NULL,
    payment_hash BLOB NOT NULL,
    amount_msat  BIGINT NOT NULL,
    cltv_expiry  BIGINT NOT NULL,
    first_number BIGINT NOT NULL,
    last_number  BIGINT NOT NULL,
    PRIMARY KEY (channel_id, offered, htlc_id, payment_hash)
);
CREATE INDEX monitor_htlcs_range ON monitor_htlcs (channel_id, last_number);
