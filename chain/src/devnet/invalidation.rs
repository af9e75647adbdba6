//! `invalidateblock` / `reconsiderblock` (Bitcoin Core semantics: the block and its
//! descendants are marked invalid, the tip moves off them and their transactions return
//! to the mempool; reconsidering clears the marks and re-activates the most-work chain)
//! and the `getchaintips` report.

use std::collections::HashSet;

use bitcoin::{BlockHash, Transaction};

use super::chainstate::{BlockStatus, ChainState};
use super::DevnetError;

/// A chain tip as `getchaintips` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTip {
    /// Height of the tip.
    pub height: u32,
    /// Hash of the tip.
    pub hash: BlockHash,
    /// Blocks between the tip and the active chain.
    pub branch_len: u32,
    /// `active`, `valid-fork`, `valid-headers` or `invalid`.
    pub status: &'static str,
}

impl ChainState {
    /// `invalidateblock`: marks `hash` and its descendants invalid and moves the tip off
    /// them; the mempool gets the disconnected transactions back.
    pub fn invalidate_block(&mut self, hash: &BlockHash) -> Result<(), DevnetError> {
        let entry = self
            .index
            .get(hash)
            .ok_or(DevnetError::BlockNotFound(*hash))?;
        if entry.height == 0 {
            return Err(DevnetError::GenesisInvalidation);
        }
        self.mark_failed(hash, BlockStatus::Failed("invalidated".into()));
        let mut disconnected = Vec::new();
        while self.is_active(hash) {
            disconnected.push(self.disconnect_tip());
        }
        disconnected.reverse();
        let txs: Vec<Transaction> = disconnected
            .iter()
            .flat_map(|b| b.txdata.iter().skip(1).cloned())
            .collect();
        self.activate_best_chain();
        self.rebuild_mempool(txs);
        self.invalidated.insert(*hash);
        self.persist_invalidated()
    }

    /// `reconsiderblock`: clears the failure marks of `hash`, its descendants and its
    /// ancestors, and re-activates the most-work chain.
    pub fn reconsider_block(&mut self, hash: &BlockHash) -> Result<(), DevnetError> {
        let height = self
            .index
            .get(hash)
            .ok_or(DevnetError::BlockNotFound(*hash))?
            .height;
        let mut reset: HashSet<BlockHash> = self
            .index
            .values()
            .filter(|e| e.height >= height && self.ancestor(&e.hash, height) == Some(*hash))
            .map(|e| e.hash)
            .collect();
        let mut cur = self.index.get(hash);
        while let Some(e) = cur {
            reset.insert(e.hash);
            cur = if e.height == 0 {
                None
            } else {
                self.index.get(&e.block.header.prev_blockhash)
            };
        }
        for h in &reset {
            self.set_status(h, BlockStatus::Valid);
            self.invalidated.remove(h);
        }
        self.activate_best_chain();
        self.persist_invalidated()
    }

    fn persist_invalidated(&mut self) -> Result<(), DevnetError> {
        if let Some(store) = self.store.as_mut() {
            store.write_invalidated(&self.invalidated)?;
        }
        Ok(())
    }

    /// `getchaintips`: every block without children, with its branch length and status.
    pub fn chain_tips(&self) -> Vec<ChainTip> {
        let parents: HashSet<BlockHash> = self
            .index
            .values()
            .map(|e| e.block.header.prev_blockhash)
            .collect();
        let tip = self.tip().hash;
        let mut tips: Vec<ChainTip> = self
            .index
            .values()
            .filter(|e| !parents.contains(&e.hash) || e.hash == tip)
            .map(|e| {
                let fork = self.find_fork(&e.hash, &tip);
                let branch_len = e.height - self.index[&fork].height;
                let status = if e.hash == tip {
                    "active"
                } else if e.status != BlockStatus::Valid {
                    "invalid"
                } else if self.is_fully_validated_branch(&e.hash, &fork) {
                    "valid-fork"
                } else {
                    "valid-headers"
                };
                ChainTip {
                    height: e.height,
                    hash: e.hash,
                    branch_len,
                    status,
                }
            })
            .collect();
        tips.sort_by(|a, b| {
            b.height
                .cmp(&a.height)
                .then(a.branch_len.cmp(&b.branch_len))
        });
        tips
    }

    fn is_fully_validated_branch(&self, from: &BlockHash, fork: &BlockHash) -> bool {
        let mut cur = *from;
        while cur != *fork {
            let e = &self.index[&cur];
            if !e.fully_validated {
                return false;
            }
            cur = e.block.header.prev_blockhash;
        }
        true
    }
}
