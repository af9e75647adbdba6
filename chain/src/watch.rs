//! Reorg-aware watching of transactions and outpoints on top of [`ChainEvent`]s: what the
//! hub needs for funding confirmations and for noticing a spend of a funding output, and
//! what the tower needs for breaches. A disconnected block undoes what it reported.

use std::collections::{HashMap, HashSet};

use bitcoin::{BlockHash, OutPoint, Transaction, Txid};

use crate::poller::ChainEvent;
use crate::source::BlockRef;

/// Something a [`ChainWatcher`] noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A watched transaction was included in a block of the active chain.
    TxConfirmed {
        /// The transaction.
        txid: Txid,
        /// The block.
        block: BlockRef,
    },
    /// A watched transaction's block was disconnected (it is unconfirmed again).
    TxUnconfirmed {
        /// The transaction.
        txid: Txid,
    },
    /// A watched outpoint was spent in a block of the active chain.
    OutpointSpent {
        /// The outpoint.
        outpoint: OutPoint,
        /// The spending transaction.
        tx: Transaction,
        /// Which of its inputs spends the outpoint.
        input_index: usize,
        /// The block.
        block: BlockRef,
    },
    /// The block that spent a watched outpoint was disconnected.
    OutpointUnspent {
        /// The outpoint.
        outpoint: OutPoint,
    },
}

/// Watches txids and outpoints through connects and disconnects.
#[derive(Debug, Default)]
pub struct ChainWatcher {
    txs: HashSet<Txid>,
    outpoints: HashSet<OutPoint>,
    confirmed: HashMap<Txid, BlockRef>,
    spent: HashMap<OutPoint, BlockRef>,
    by_block: HashMap<BlockHash, (Vec<Txid>, Vec<OutPoint>)>,
    tip_height: u32,
}

impl ChainWatcher {
    /// An empty watcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts watching for `txid` to confirm.
    pub fn watch_tx(&mut self, txid: Txid) {
        self.txs.insert(txid);
    }

    /// Starts watching for a spend of `outpoint`.
    pub fn watch_outpoint(&mut self, outpoint: OutPoint) {
        self.outpoints.insert(outpoint);
    }

    /// Stops watching `txid`.
    pub fn unwatch_tx(&mut self, txid: &Txid) {
        self.txs.remove(txid);
        self.confirmed.remove(txid);
    }

    /// Stops watching `outpoint`.
    pub fn unwatch_outpoint(&mut self, outpoint: &OutPoint) {
        self.outpoints.remove(outpoint);
        self.spent.remove(outpoint);
    }

    /// Confirmations of a watched transaction as of the last event (0 if unconfirmed).
    pub fn confirmations(&self, txid: &Txid) -> u32 {
        self.confirmed
            .get(txid)
            .map_or(0, |b| self.tip_height + 1 - b.height)
    }

    /// The block that spent a watched outpoint, if any.
    pub fn spent_in(&self, outpoint: &OutPoint) -> Option<BlockRef> {
        self.spent.get(outpoint).copied()
    }

    /// Updates from one chain event and reports what changed for watched items.
    pub fn apply(&mut self, event: &ChainEvent) -> Vec<WatchEvent> {
        let mut out = Vec::new();
        match event {
            ChainEvent::BlockConnected { block_ref, block } => {
                self.tip_height = block_ref.height;
                let (mut txs, mut outpoints) = (Vec::new(), Vec::new());
                for tx in &block.txdata {
                    let txid = tx.compute_txid();
                    if self.txs.contains(&txid) {
                        self.confirmed.insert(txid, *block_ref);
                        txs.push(txid);
                        out.push(WatchEvent::TxConfirmed {
                            txid,
                            block: *block_ref,
                        });
                    }
                    for (input_index, input) in tx.input.iter().enumerate() {
                        let outpoint = input.previous_output;
                        if self.outpoints.contains(&outpoint) {
                            self.spent.insert(outpoint, *block_ref);
                            outpoints.push(outpoint);
                            out.push(WatchEvent::OutpointSpent {
                                outpoint,
                                tx: tx.clone(),
                                input_index,
                                block: *block_ref,
                            });
                        }
                    }
                }
                if !txs.is_empty() || !outpoints.is_empty() {
                    self.by_block.insert(block_ref.hash, (txs, outpoints));
                }
            }
            ChainEvent::BlockDisconnected { block_ref } => {
                self.tip_height = block_ref.height.saturating_sub(1);
                if let Some((txs, outpoints)) = self.by_block.remove(&block_ref.hash) {
                    for txid in txs {
                        if self.confirmed.remove(&txid).is_some() {
                            out.push(WatchEvent::TxUnconfirmed { txid });
                        }
                    }
                    for outpoint in outpoints {
                        if self.spent.remove(&outpoint).is_some() {
                            out.push(WatchEvent::OutpointUnspent { outpoint });
                        }
                    }
                }
            }
        }
        out
    }
}
