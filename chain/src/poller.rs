//! Turns any [`ChainSource`] into a stream of block-connected / block-disconnected
//! events that stays correct across reorganisations: on a new tip the poller walks back
//! by `previousblockhash` to the fork point with its own view of the chain, disconnects
//! down to it (newest first), then connects the new branch (oldest first).

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Block, BlockHash};
use tokio::sync::mpsc;

use crate::source::{BlockRef, ChainError, ChainSource};

/// Most blocks one [`ChainPoller::poll`] connects (catching up takes several polls).
pub const MAX_BATCH: u32 = 500;
/// Blocks of history the poller remembers; deeper reorgs are still handled by asking
/// the source for older headers.
const MAX_VIEW: usize = 2016;

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

    /// Checks the source once and returns the events needed to catch up with its tip (at
    /// most [`MAX_BATCH`] new blocks per call). The poller's view changes only when the
    /// call succeeds, so an error loses no event: the next call starts over.
    pub async fn poll(&mut self) -> Result<Vec<ChainEvent>, ChainError> {
        let tip = self.source.tip().await?;
        let best = self.best();
        if tip.hash == best.hash {
            return Ok(Vec::new());
        }
        if tip.height > best.height && self.source.block_hash(best.height).await? == Some(best.hash)
        {
            return self.connect_forward(tip.height).await;
        }
        self.reorg_to(tip).await
    }

    /// The common case: our tip is still on the active chain; fetch by height.
    async fn connect_forward(&mut self, tip_height: u32) -> Result<Vec<ChainEvent>, ChainError> {
        let best = self.best();
        let mut last = best.hash;
        let mut events = Vec::new();
        for height in best.height + 1..=tip_height.min(best.height + MAX_BATCH) {
            let Some(hash) = self.source.block_hash(height).await? else {
                break;
            };
            let block = self.fetch(&hash).await?;
            if block.header.prev_blockhash != last {
                // The chain changed under us; the next poll walks back to the fork.
                break;
            }
            last = hash;
            events.push(ChainEvent::BlockConnected {
                block_ref: BlockRef { hash, height },
                block: Arc::new(block),
            });
        }
        self.commit(0, &events);
        Ok(events)
    }

    /// A reorganisation: walk back from the new tip by `previousblockhash` until we meet
    /// our view (extending the view downwards if the fork is below it), disconnect our
    /// blocks above the fork, newest first, then connect the new branch, oldest first.
    async fn reorg_to(&mut self, tip: BlockRef) -> Result<Vec<ChainEvent>, ChainError> {
        let mut branch = Vec::new();
        let (mut hash, mut height) = (tip.hash, tip.height);
        loop {
            if height < self.base {
                // The fork is below our view: learn our base's parent and keep looking.
                let header = self.header(&self.view[0]).await?;
                self.view.insert(0, header.header.prev_blockhash);
                self.base -= 1;
                continue;
            }
            if self.view_hash(height) == Some(hash) {
                break;
            }
            branch.push(BlockRef { hash, height });
            hash = self.header(&hash).await?.header.prev_blockhash;
            height = height.checked_sub(1).ok_or_else(|| {
                ChainError::InvalidResponse("chain does not share our genesis block".into())
            })?;
        }
        let fork_height = height;
        let mut events: Vec<ChainEvent> = (fork_height + 1..=self.best().height)
            .rev()
            .filter_map(|h| {
                self.view_hash(h).map(|hash| ChainEvent::BlockDisconnected {
                    block_ref: BlockRef { hash, height: h },
                })
            })
            .collect();
        let disconnects = events.len();
        for block_ref in branch.into_iter().rev().take(MAX_BATCH as usize) {
            let block = self.fetch(&block_ref.hash).await?;
            events.push(ChainEvent::BlockConnected {
                block_ref,
                block: Arc::new(block),
            });
        }
        self.commit(disconnects, &events);
        Ok(events)
    }

    async fn header(&self, hash: &BlockHash) -> Result<crate::source::HeaderInfo, ChainError> {
        self.source
            .header(hash)
            .await?
            .ok_or_else(|| ChainError::InvalidResponse(format!("header {hash} vanished")))
    }

    async fn fetch(&self, hash: &BlockHash) -> Result<Block, ChainError> {
        self.source
            .block(hash)
            .await?
            .ok_or_else(|| ChainError::InvalidResponse(format!("block {hash} vanished")))
    }

    /// Applies returned events to the view: pop `disconnects` blocks, push the connects,
    /// and forget history beyond [`MAX_VIEW`] blocks (it is re-learnt if ever needed).
    fn commit(&mut self, disconnects: usize, events: &[ChainEvent]) {
        self.view.truncate(self.view.len() - disconnects);
        for e in events {
            if let ChainEvent::BlockConnected { block_ref, .. } = e {
                self.view.push(block_ref.hash);
            }
        }
        if self.view.len() > MAX_VIEW {
            let drop = self.view.len() - MAX_VIEW;
            self.view.drain(..drop);
            self.base += drop as u32;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devnet::Devnet;
    use bitcoin::ScriptBuf;

    async fn next(rx: &mut mpsc::Receiver<ChainEvent>) -> ChainEvent {
        // Generous bound so a broken poller fails the test instead of hanging it.
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(e)) => e,
            other => panic!("no event: {other:?}"),
        }
    }

    #[tokio::test]
    async fn spawned_poller_streams_connects_and_disconnects(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let devnet = Arc::new(Devnet::in_memory());
        let mut rx = ChainPoller::from_tip(devnet.clone())
            .await?
            .spawn(Duration::from_millis(5));
        let script = ScriptBuf::new_op_return([1u8; 1]);
        let mined = devnet.generate_to_script(2, &script)?;
        for (i, hash) in mined.iter().enumerate() {
            match next(&mut rx).await {
                ChainEvent::BlockConnected { block_ref, block } => {
                    assert_eq!((block_ref.hash, block_ref.height), (*hash, i as u32 + 1));
                    assert_eq!(block.block_hash(), *hash);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        devnet.invalidate_block(&mined[1])?;
        assert_eq!(
            next(&mut rx).await,
            ChainEvent::BlockDisconnected {
                block_ref: BlockRef {
                    hash: mined[1],
                    height: 2
                }
            }
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_reorg_below_the_start_block_restarts_the_view(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let devnet = Arc::new(Devnet::in_memory());
        let script = ScriptBuf::new_op_return([2u8; 1]);
        let old = devnet.generate_to_script(2, &script)?;
        let mut poller = ChainPoller::from_tip(devnet.clone()).await?;
        devnet.invalidate_block(&old[0])?;
        let new = devnet.generate_to_script(3, &ScriptBuf::new_op_return([3u8; 1]))?;
        let events = poller.poll().await?;
        let summary: Vec<(bool, BlockHash)> = events
            .iter()
            .map(|e| match e {
                ChainEvent::BlockConnected { block_ref, .. } => (true, block_ref.hash),
                ChainEvent::BlockDisconnected { block_ref } => (false, block_ref.hash),
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (false, old[1]),
                (false, old[0]),
                (true, new[0]),
                (true, new[1]),
                (true, new[2])
            ]
        );
        assert_eq!(
            poller.best(),
            BlockRef {
                hash: new[2],
                height: 3
            }
        );
        Ok(())
    }

    #[tokio::test]
    async fn catching_up_is_done_in_batches() -> Result<(), Box<dyn std::error::Error>> {
        let devnet = Arc::new(Devnet::in_memory());
        let genesis = BlockRef {
            hash: devnet.tip().0,
            height: 0,
        };
        let mut poller = ChainPoller::from_block(devnet.clone(), genesis);
        devnet.generate_to_script(MAX_BATCH + 100, &ScriptBuf::new_op_return([4u8; 1]))?;
        assert_eq!(poller.poll().await?.len(), MAX_BATCH as usize);
        assert_eq!(poller.poll().await?.len(), 100);
        assert!(poller.poll().await?.is_empty());
        assert_eq!(poller.best().hash, devnet.tip().0);
        Ok(())
    }
}
