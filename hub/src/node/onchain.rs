//! Following the chain: the wallet's coins, funding confirmations (then channel_ready),
//! and closing transactions confirming.

use super::channels::{ChannelStatus, Effect};
use super::{Node, NodeError};
use chain::{ChainEvent, ChainPoller};
use channel::msgs::Message;
use channel::ChannelId;
use std::sync::Arc;

impl Node {
    pub(super) async fn spawn_chain_follower(self: Arc<Self>) -> Result<(), NodeError> {
        // Start from genesis so the wallet sees every coin (the devnet and regtest chains
        // are short; a production node keeps its wallet's birthday instead).
        let genesis = self
            .config
            .chain
            .block_hash(0)
            .await?
            .ok_or(NodeError::Invalid("chain has no genesis"))?;
        let poller = ChainPoller::from_block(
            self.config.chain.clone(),
            chain::BlockRef {
                hash: genesis,
                height: 0,
            },
        );
        let mut events = poller.spawn(self.config.chain_poll);
        let node = self.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if let Err(e) = node.wallet.lock().await.apply(&event) {
                    tracing::warn!("wallet could not apply a chain event: {e}");
                }
                if let ChainEvent::BlockConnected { .. } = event {
                    node.on_block().await;
                }
                node.synced_blocks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(())
    }

    async fn on_block(&self) {
        let entries: Vec<(ChannelId, ChannelStatus, Option<bitcoin::Txid>, u32, bool)> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                let watch = match e.status {
                    ChannelStatus::AwaitingLock | ChannelStatus::Normal => {
                        Some(e.channel.setup().funding_outpoint.txid)
                    }
                    ChannelStatus::Closing => e.closing_tx.as_ref().map(|t| t.compute_txid()),
                    _ => None,
                };
                v.push((*id, e.status, watch, e.minimum_depth, e.ready_sent));
            }
            v
        };
        for (id, status, watch, depth, ready_sent) in entries {
            let Some(txid) = watch else { continue };
            let confirmations = match self.config.chain.confirmations(&txid).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%txid, "confirmations: {e}");
                    continue;
                }
            };
            match status {
                ChannelStatus::AwaitingLock | ChannelStatus::Normal
                    if !ready_sent && confirmations >= depth =>
                {
                    let _ = self
                        .with_channel(&id, |e, out| {
                            e.ready_sent = true;
                            out.messages
                                .push(Message::ChannelReady(e.channel.channel_ready()));
                            if e.ready_received {
                                e.status = ChannelStatus::Normal;
                            }
                            Ok(())
                        })
                        .await;
                }
                ChannelStatus::Closing if confirmations >= 1 => {
                    let _ = self
                        .with_channel(&id, |e, _| {
                            e.status = ChannelStatus::Closed;
                            Ok(())
                        })
                        .await;
                }
                _ => {}
            }
        }
        let _ = Effect::Opened;
    }

    /// Blocks the chain follower has processed (for tests waiting on the wallet).
    pub fn synced_blocks(&self) -> u64 {
        self.synced_blocks
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
