//! Closes undone by a reorganisation. When the block holding the transaction that spent a
//! channel's funding output leaves the active chain, what the node did about that spend
//! is undone: the funding output is watched again, its sweeps are dropped (wallet coins
//! they carried freed), and the status goes back to what it was, or to force-closed. The
//! next spend seen, the same transaction mined again or another one (a revoked
//! commitment a cheater mined on the new branch), is then handled from the start.

use super::channels::ChannelStatus;
use super::Node;
use bitcoin::BlockHash;
use serde::{Deserialize, Serialize};

/// Where the funding output of a channel was spent, and the channel's status before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpentIn {
    /// The block holding the spend.
    pub block: BlockHash,
    /// Its height.
    pub height: u32,
    /// The channel's status before the spend was seen.
    pub status_before: ChannelStatus,
}

impl Node {
    /// `block_ref` left the active chain: closes it held are undone.
    pub(super) async fn on_block_disconnected(&self, block_ref: &chain::BlockRef) {
        let ids: Vec<channel::ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.spent_in
                    .as_ref()
                    .is_some_and(|s| s.block == block_ref.hash)
                {
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            self.undo_close(&id).await;
        }
    }

    /// At start-up: closes whose block left the active chain while the node was not
    /// running are undone too.
    pub(super) async fn undo_closes_reorganised_while_away(&self) {
        let spent: Vec<(channel::ChannelId, BlockHash)> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                if let Some(s) = &e.lock().await.spent_in {
                    v.push((*id, s.block));
                }
            }
            v
        };
        for (id, block) in spent {
            match self.config.chain.header(&block).await {
                // Only a block the chain knows off its active branch: one it does not
                // know (a pruned or partial back-end) proves nothing.
                Ok(Some(h)) if h.confirmations < 0 => self.undo_close(&id).await,
                Ok(_) => {}
                Err(e) => tracing::warn!(channel = %id, "checking the block of a close: {e}"),
            }
        }
    }

    async fn undo_close(&self, id: &channel::ChannelId) {
        let id = *id;
        {
            let mut dropped = Vec::new();
            let mut closing = None;
            let undone = self
                .with_channel(&id, |e, _| {
                    let Some(spent) = e.spent_in.take() else {
                        return Ok(());
                    };
                    tracing::warn!(
                        channel = %id,
                        height = spent.height,
                        "the close of this channel was reorganised out: watching its funding again"
                    );
                    dropped = e.monitor.forget_spend();
                    e.status = match spent.status_before {
                        // A peer that proved we lost state still gets no commitment of
                        // ours.
                        ChannelStatus::AwaitingRemoteClose => ChannelStatus::AwaitingRemoteClose,
                        // An agreed mutual close goes out again.
                        _ if e.closing_tx.is_some() => {
                            closing = e.closing_tx.clone();
                            ChannelStatus::Closing
                        }
                        // The counterparty closed, or we did: our commitment goes out
                        // (rebroadcast every block) until something spends the funding.
                        _ => ChannelStatus::ForceClosed,
                    };
                    Ok(())
                })
                .await;
            if let Err(e) = undone {
                tracing::error!(channel = %id, "undoing a reorganised close: {e}");
                return;
            }
            {
                let mut wallet = self.wallet.lock().await;
                dropped.iter().for_each(|tx| wallet.unlock(tx));
            }
            if let Some(tx) = closing {
                if let Err(e) = self.config.chain.broadcast(&tx).await {
                    tracing::info!(channel = %id, "closing transaction not accepted again: {e}");
                }
            }
        }
    }
}
