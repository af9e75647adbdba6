//! The monitor's side of a breach: recognising a revoked commitment of the counterparty's
//! when it spends the funding output, and rebuilding it from the transaction, the
//! revocation secrets in the channel's state and the HTLCs recorded once each
//! (`monitor_htlcs`). Nothing per commitment is kept, so a channel's records grow with
//! the HTLCs it carried, not with its commitment dances.

use super::{Node, NodeError};
use crate::store::{MonitorHtlc, Write};
use bitcoin::Transaction;
use channel::commitment::CommitmentHtlc;
use channel::state::RevokedCommitment;
use channel::{ChannelId, HtlcId, Msat, PaymentHash};

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
/// output, each once (the secret itself goes into the channel's state).
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

impl Node {
    /// `tx`, which spent the funding output of channel `id`, rebuilt as the revoked
    /// commitment of the counterparty's it is; `None` when it is none (a mutual close,
    /// our commitment, the counterparty's current one).
    pub(super) async fn rebuild_revoked(
        &self,
        id: &ChannelId,
        tx: &Transaction,
    ) -> Result<Option<RevokedCommitment>, NodeError> {
        let entry = self.entry(id).await?;
        let number = entry.lock().await.channel.revoked_commitment_number(tx);
        let Some((number, _)) = number else {
            return Ok(None);
        };
        let candidates: Vec<CommitmentHtlc> = self
            .store
            .monitor_htlcs(&id.0, number.0)
            .await?
            .iter()
            .map(commitment_htlc)
            .collect();
        let e = entry.lock().await;
        Ok(e.channel.revoked_from_chain(tx, &candidates))
    }

    /// Converts the rows of the former `revoked_commitments` table (one serialized
    /// commitment per revocation) into the monitor's records, then empties it. Run at
    /// start-up; converting twice writes the same rows.
    pub(super) async fn convert_legacy_revoked(&self) -> Result<(), NodeError> {
        let rows = self.store.legacy_revoked().await?;
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
        self.store.write(&writes).await?;
        if unreadable > 0 {
            // Kept as they are for the operator to look at; the node runs (and watches
            // every channel) meanwhile.
            return Ok(());
        }
        self.store.drop_legacy_revoked().await?;
        tracing::info!(
            revocations = rows.len(),
            "converted stored revoked commitments to the monitor's HTLC records"
        );
        Ok(())
    }
}
