//! The monitor's records of the counterparty's revoked commitments: each HTLC once, with
//! the range of commitment numbers it had an output in (`monitor_htlcs`), and the
//! rebuild of a revoked commitment from the transaction that spent the funding output,
//! the revocation secrets and those records. Nothing per commitment is kept, so a
//! channel's records grow with the HTLCs it carried, not with its commitment dances.

use crate::store::{MonitorHtlc, Store, StoreError, Write};
use channel::commitment::CommitmentHtlc;
use channel::state::RevokedCommitment;
use channel::{ChannelId, CommitmentNumber, HtlcId, Msat, PaymentHash};

fn commitment_htlc(h: &MonitorHtlc) -> CommitmentHtlc {
    CommitmentHtlc {
        id: HtlcId(h.id),
        offered: h.offered,
        amount: Msat(h.amount_msat),
        payment_hash: PaymentHash(h.payment_hash),
        cltv_expiry: h.cltv_expiry,
    }
}

/// What the monitor records when the counterparty revokes `revoked`: its HTLCs with an
/// output, each once (the secret itself goes into the channel's state). Written in the
/// same database transaction as the state that took the revocation, before any reply.
pub fn revocation_write(channel_id: ChannelId, revoked: &RevokedCommitment) -> Write {
    Write::RevokedHtlcs {
        channel_id: channel_id.0,
        commitment_number: revoked.number.0,
        htlcs: revoked
            .htlcs()
            .map(|h| MonitorHtlc {
                offered: h.offered,
                id: h.id.0,
                payment_hash: h.payment_hash.0,
                amount_msat: h.amount.0,
                cltv_expiry: h.cltv_expiry,
            })
            .collect(),
    }
}

/// The HTLCs that may have had an output on the counterparty's revoked commitment
/// `number` of `channel_id`: the candidates `Channel::revoked_from_chain` matches
/// against the transaction's outputs.
pub async fn revoked_htlcs(
    store: &Store,
    channel_id: &ChannelId,
    number: CommitmentNumber,
) -> Result<Vec<CommitmentHtlc>, StoreError> {
    Ok(store
        .monitor_htlcs(&channel_id.0, number.0)
        .await?
        .iter()
        .map(commitment_htlc)
        .collect())
}

/// Converts the rows of the former `revoked_commitments` table (one serialized
/// commitment per revocation) into the monitor's records, then empties it. Run at
/// start-up; converting twice writes the same rows. Rows that cannot be read are kept
/// for the operator to look at (the node runs, and watches every channel, meanwhile).
pub async fn convert_legacy_revoked(store: &Store) -> Result<(), StoreError> {
    let rows = store.legacy_revoked().await?;
    if rows.is_empty() {
        return Ok(());
    }
    let mut writes = Vec::with_capacity(rows.len());
    let mut unreadable = 0;
    for (channel_id, data) in &rows {
        match serde_json::from_slice::<RevokedCommitment>(data) {
            Ok(revoked) => writes.push(revocation_write(ChannelId(*channel_id), &revoked)),
            Err(e) => {
                unreadable += 1;
                tracing::error!(channel = %ChannelId(*channel_id), "a stored revoked commitment is unreadable: {e}");
            }
        }
    }
    store.write(&writes).await?;
    if unreadable > 0 {
        return Ok(());
    }
    store.drop_legacy_revoked().await?;
    tracing::info!(
        revocations = rows.len(),
        "converted stored revoked commitments to the monitor's HTLC records"
    );
    Ok(())
}
