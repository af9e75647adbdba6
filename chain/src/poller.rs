//! Turns any [`ChainSource`] into a stream of block-connected / block-disconnected
//! events that stays correct across reorganisations: on a new tip the poller walks back
//! by `previousblockhash` to the fork point with its own view of the chain, disconnects
//! down to it (newest first), then connects the new branch (oldest first).

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Block, BlockHash};
use tokio::sync::mpsc;

use crate::source::{BlockRef, ChainError, ChainSource};

/// A change to the active chain as seen by a [`ChainPoller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    /// A block became part of the active chain.
    BlockConnected {
        /// Which block.
        block_ref: BlockRef,
        /// The block, for scanning.
        block: Arc<Block>,
    },
    /// A block left the active chain (reorg); undo what it did.
    BlockDisconnected {
        /// Which block.
        block_ref: BlockRef,
    },
}

/// Follows a chain source's tip. Its view starts at a given block (events are produced
/// only for blocks above it) and is updated as events are returned.
pub struct ChainPoller<S: ?Sized> {
    source: Arc<S>,
    /// Our view of the active chain: `view[i]` is at height `base + i`.
    view: Vec<BlockHash>,
    base: u32,
}

impl<S: ChainSource + ?Sized + 'static> ChainPoller<S> {
    /// A poller whose view starts at the current tip (no history is replayed).
    pub async fn from_tip(source: Arc<S>) -> Result<Self, ChainError> {
        let tip = source.tip().await?;
        Ok(Self {
            source,
            view: vec![tip.hash],
            base: tip.height,
        })
    }

    /// A poller that will report every block above `start` (e.g. a wallet's birthday or
    /// the last block it processed).
    pub fn from_block(source: Arc<S>, start: BlockRef) -> Self {
        Self {
            source,
            view: vec![start.hash],
            base: start.height,
        }
    }

    /// The last block the poller has reported (its view of the tip).
    pub fn best(&self) -> BlockRef {
        let height = self.base + self.view.len() as u32 - 1;
        BlockRef {
            hash: self.view[self.view.len() - 1],
            height,
        }
    }

    fn view_hash(&self, height: u32) -> Option<BlockHash> {
        height
            .checked_sub(self.base)
            .and_then(|i| self.view.get(i as usize))
            .copied()
    }

    /// Checks the source once and returns the events needed to catch up with its tip.
    pub async fn poll(&mut self) -> Result<Vec<ChainEvent>, ChainError> {
        let tip = self.source.tip().await?;
        if tip.hash == self.best().hash {
            return Ok(Vec::new());
        }
        // Walk back from the new tip until we meet our view.
        let mut branch = Vec::new();
        let (mut hash, mut height) = (tip.hash, tip.height);
        loop {
            if self.view_hash(height) == Some(hash) {
                break;
            }
            if height < self.base {
                // Reorg deeper than our view: treat its base as replaced too.
                break;
            }
            branch.push(BlockRef { hash, height });
            let header =
                self.source.header(&hash).await?.ok_or_else(|| {
                    ChainError::InvalidResponse(format!("header {hash} vanished"))
                })?;
            hash = header.header.prev_blockhash;
            height = height.checked_sub(1).ok_or_else(|| {
                ChainError::InvalidResponse("chain does not share our genesis block".into())
            })?;
        }
        let mut events = Vec::new();
        let keep = (height + 1).saturating_sub(self.base) as usize;
        while self.view.len() > keep.max(1) {
            let top = self.best();
            self.view.pop();
            events.push(ChainEvent::BlockDisconnected { block_ref: top });
        }
        if keep == 0 {
            // The base block itself was reorged out; restart the view below the branch.
            let top = self.best();
            events.push(ChainEvent::BlockDisconnected { block_ref: top });
            self.view = vec![hash];
            self.base = height;
        }
        for block_ref in branch.into_iter().rev() {
            let block = self.source.block(&block_ref.hash).await?.ok_or_else(|| {
                ChainError::InvalidResponse(format!("block {} vanished", block_ref.hash))
            })?;
            self.view.push(block_ref.hash);
            events.push(ChainEvent::BlockConnected {
                block_ref,
                block: Arc::new(block),
            });
        }
        Ok(events)
    }

    /// Runs the poller in a task, sending events on a channel. Errors are logged and the
    /// poll retried after `interval`; the task ends when the receiver is dropped.
    pub fn spawn(mut self, interval: Duration) -> mpsc::Receiver<ChainEvent> {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                match self.poll().await {
                    Ok(events) => {
                        for e in events {
                            if tx.send(e).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "chain poll failed"),
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
        rx
    }
}
