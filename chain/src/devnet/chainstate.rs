//! The block tree and the active chain: accepting blocks, choosing the most-work valid
//! chain, connecting and disconnecting blocks against the UTXO set (reorganisations of
//! any depth), and `invalidateblock` / `reconsiderblock`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::blockdata::constants::genesis_block;
use bitcoin::pow::Work;
use bitcoin::{Amount, Block, BlockHash, FeeRate, Network, OutPoint, Transaction, Txid};

use super::block::{check_bip34_height, check_block, BlockReject};
use super::mempool::Mempool;
use super::params::{
    block_subsidy, MAX_BLOCK_SIGOPS_COST, MAX_FUTURE_BLOCK_TIME, MEDIAN_TIME_SPAN,
};
use super::store::BlockStore;
use super::utxo::{BlockUndo, Coin, UtxoSet};
use super::validation::{
    calculate_sequence_locks, check_tx_inputs, is_final_tx, sequence_locks_met, verify_scripts,
};
use super::DevnetError;

/// Validity of a block in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockStatus {
    /// Not known to be invalid.
    Valid,
    /// Failed validation (or was invalidated by `invalidateblock`, reason `invalidated`).
    Failed(String),
    /// Descends from a failed block.
    FailedChild,
}

/// One block of the tree (Bitcoin Core's `CBlockIndex` plus the block data).
#[derive(Debug, Clone)]
pub struct BlockEntry {
    /// The block.
    pub block: Arc<Block>,
    /// Its hash.
    pub hash: BlockHash,
    /// Height above genesis.
    pub height: u32,
    /// Total work of the chain ending here.
    pub chainwork: Work,
    /// Arrival order; the earlier block wins a tie in work.
    pub seq: u64,
    /// Validity.
    pub status: BlockStatus,
    /// Whether it has been connected to the UTXO set at least once (scripts checked).
    pub fully_validated: bool,
}

/// The devnet's whole chain state. Owned by [`super::Devnet`] behind a mutex.
#[derive(Debug)]
pub struct ChainState {
    pub(super) index: HashMap<BlockHash, BlockEntry>,
    pub(super) active: Vec<BlockHash>,
    pub(super) utxo: UtxoSet,
    pub(super) undo: HashMap<BlockHash, BlockUndo>,
    /// Active-chain transactions: txid → (block, position).
    pub(super) tx_index: HashMap<Txid, (BlockHash, usize)>,
    /// Active-chain spends: outpoint → spending txid.
    pub(super) spend_index: HashMap<OutPoint, Txid>,
    pub(super) mempool: Mempool,
    pub(super) min_relay_fee: FeeRate,
    /// Whether conflicting transactions may replace mempool ones (Core v28+: always).
    pub(super) full_rbf: bool,
    pub(super) mock_time: Option<u64>,
    /// Other users' transactions filling every block at this fee rate (a fee spike): the
    /// miner takes only packages paying more, and the fee estimate is at least this.
    pub(super) competing_fee_rate: Option<FeeRate>,
    pub(super) invalidated: BTreeSet<BlockHash>,
    pub(super) store: Option<BlockStore>,
    /// Blocks with status `Valid`, ordered by (work, earliest arrival): the last one is
    /// the best chain's tip (Core's `setBlockIndexCandidates`, kept for every valid block).
    candidates: BTreeSet<(Work, Reverse<u64>, BlockHash)>,
    next_seq: u64,
}

impl ChainState {
    /// A chain holding only Bitcoin Core's regtest genesis block.
    pub fn new(min_relay_fee: FeeRate, store: Option<BlockStore>) -> Self {
        let genesis = genesis_block(Network::Regtest);
        let hash = genesis.block_hash();
        let candidates = BTreeSet::from([(genesis.header.work(), Reverse(0), hash)]);
        let entry = BlockEntry {
            chainwork: genesis.header.work(),
            block: Arc::new(genesis),
            hash,
            height: 0,
            seq: 0,
            status: BlockStatus::Valid,
            fully_validated: true,
        };
        // Like Core, the genesis coinbase is neither indexed nor in the UTXO set.
        Self {
            index: HashMap::from([(hash, entry)]),
            active: vec![hash],
            utxo: UtxoSet::default(),
            undo: HashMap::new(),
            tx_index: HashMap::new(),
            spend_index: HashMap::new(),
            mempool: Mempool::default(),
            min_relay_fee,
            full_rbf: true,
            mock_time: None,
            competing_fee_rate: None,
            invalidated: BTreeSet::new(),
            store,
            candidates,
            next_seq: 1,
        }
    }

    /// The node's clock (Unix seconds), or the mock time if set.
    pub fn now(&self) -> u64 {
        self.mock_time.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        })
    }

    /// Hash of the active tip.
    pub fn tip(&self) -> &BlockEntry {
        // `active` always holds at least genesis.
        &self.index[&self.active[self.active.len() - 1]]
    }

    /// Height of the active tip.
    pub fn height(&self) -> u32 {
        (self.active.len() - 1) as u32
    }

    /// The block entry for `hash`, in any branch.
    pub fn entry(&self, hash: &BlockHash) -> Option<&BlockEntry> {
        self.index.get(hash)
    }

    /// Every block entry known (all branches).
    pub fn entries(&self) -> impl Iterator<Item = &BlockEntry> {
        self.index.values()
    }

    /// Active-chain block hash at `height`.
    pub fn hash_at(&self, height: u32) -> Option<BlockHash> {
        self.active.get(height as usize).copied()
    }

    /// Whether `hash` is on the active chain.
    pub fn is_active(&self, hash: &BlockHash) -> bool {
        self.index
            .get(hash)
            .is_some_and(|e| self.hash_at(e.height) == Some(*hash))
    }

    /// Median time past of the block `hash` (median of it and its 10 predecessors).
    pub fn median_time_past(&self, hash: &BlockHash) -> u32 {
        let mut times = Vec::with_capacity(MEDIAN_TIME_SPAN);
        let mut cur = self.index.get(hash);
        while let Some(e) = cur {
            times.push(e.block.header.time);
            if times.len() == MEDIAN_TIME_SPAN || e.height == 0 {
                break;
            }
            cur = self.index.get(&e.block.header.prev_blockhash);
        }
        times.sort_unstable();
        times.get(times.len() / 2).copied().unwrap_or(0)
    }

    /// Median time past of the active-chain block at `height` (clamped to the tip).
    pub fn mtp_at_height(&self, height: u32) -> u32 {
        let h = height.min(self.height());
        self.median_time_past(&self.active[h as usize])
    }

    /// The coin at `outpoint` in the active chain's UTXO set.
    pub fn coin(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.utxo.get(outpoint)
    }

    /// Number of coins in the UTXO set.
    pub fn utxo_count(&self) -> usize {
        self.utxo.len()
    }

    /// The fee rate other users' transactions fill every block at (a fee spike), if any:
    /// the miner takes only packages paying more, and the estimate is at least this.
    pub fn competing_fee_rate(&self) -> Option<FeeRate> {
        self.competing_fee_rate
    }

    /// Sets (or with `None` ends) the fee rate at which other users' transactions fill
    /// every block: see [`ChainState::competing_fee_rate`].
    pub fn set_competing_fee_rate(&mut self, rate: Option<FeeRate>) {
        self.competing_fee_rate = rate;
    }

    /// The minimum relay fee rate (`-minrelaytxfee`).
    pub fn min_relay_fee(&self) -> FeeRate {
        self.min_relay_fee
    }

    /// The mempool.
    pub fn mempool(&self) -> &Mempool {
        &self.mempool
    }

    /// Where an active-chain transaction is: (block hash, position in block).
    pub fn tx_location(&self, txid: &Txid) -> Option<(BlockHash, usize)> {
        self.tx_index.get(txid).copied()
    }

    /// The active-chain transaction that spent `outpoint`.
    pub fn spender_in_chain(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spend_index.get(outpoint).copied()
    }

    /// The coins spent by an active-chain non-coinbase transaction (one per input, in
    /// order), from its block's undo data.
    pub fn spent_coins(&self, block: &BlockHash, position: usize) -> Option<&[(OutPoint, Coin)]> {
        let entry = self.index.get(block)?;
        let undo = self.undo.get(block)?;
        let tx = entry.block.txdata.get(position)?;
        if position == 0 {
            return None;
        }
        let skip: usize = entry.block.txdata[1..position]
            .iter()
            .map(|t| t.input.len())
            .sum();
        undo.spent.get(skip..skip + tx.input.len())
    }

    /// Fee of an active-chain non-coinbase transaction, from its block's undo data.
    pub fn confirmed_fee(&self, block: &BlockHash, position: usize) -> Option<Amount> {
        let tx = self.index.get(block)?.block.txdata.get(position)?;
        let value_in: Amount = self
            .spent_coins(block, position)?
            .iter()
            .map(|(_, c)| c.output.value)
            .sum();
        let value_out: Amount = tx.output.iter().map(|o| o.value).sum();
        value_in.checked_sub(value_out)
    }

    /// The ancestor of `hash` at `height`.
    pub fn ancestor(&self, hash: &BlockHash, height: u32) -> Option<BlockHash> {
        let mut e = self.index.get(hash)?;
        if e.height < height {
            return None;
        }
        if self.hash_at(e.height) == Some(e.hash) {
            return self.hash_at(height);
        }
        while e.height > height {
            e = self.index.get(&e.block.header.prev_blockhash)?;
        }
        Some(e.hash)
    }

    pub(super) fn find_fork(&self, a: &BlockHash, b: &BlockHash) -> BlockHash {
        let (mut a, mut b) = (&self.index[a], &self.index[b]);
        while a.height > b.height {
            a = &self.index[&a.block.header.prev_blockhash];
        }
        while b.height > a.height {
            b = &self.index[&b.block.header.prev_blockhash];
        }
        while a.hash != b.hash {
            a = &self.index[&a.block.header.prev_blockhash];
            b = &self.index[&b.block.header.prev_blockhash];
        }
        a.hash
    }

    /// Accepts a block into the tree (checks that need only the block and its parent) and
    /// makes the most-work valid chain active. `replay` skips the clock check and the
    /// disk write (used when loading the data directory). Returns `Err` if the block is
    /// invalid, including when it fails to connect.
    pub fn submit_block(&mut self, block: Block, replay: bool) -> Result<BlockHash, DevnetError> {
        let hash = block.block_hash();
        if let Some(e) = self.index.get(&hash) {
            let reason = if e.status == BlockStatus::Valid {
                "duplicate"
            } else {
                "duplicate-invalid"
            };
            return Err(BlockReject::new(reason).into());
        }
        check_block(&block)?;
        let prev = block.header.prev_blockhash;
        let parent = self
            .index
            .get(&prev)
            .ok_or_else(|| BlockReject::new("prev-blk-not-found"))?;
        if parent.status != BlockStatus::Valid {
            return Err(BlockReject::new("bad-prevblk").into());
        }
        let height = parent.height + 1;
        let chainwork = parent.chainwork + block.header.work();
        let prev_mtp = self.median_time_past(&prev);
        if block.header.time <= prev_mtp {
            return Err(BlockReject::new("time-too-old").into());
        }
        if !replay && u64::from(block.header.time) > self.now() + MAX_FUTURE_BLOCK_TIME {
            return Err(BlockReject::new("time-too-new").into());
        }
        // BIP34, BIP65 and BIP66 are active from height 1 on regtest: version must be >= 4.
        let version = block.header.version.to_consensus();
        if version < 4 {
            return Err(BlockReject::new(format!("bad-version(0x{version:08x})")).into());
        }
        check_bip34_height(&block, height)?;
        if let Some(tx) = block
            .txdata
            .iter()
            .find(|tx| !is_final_tx(tx, height, prev_mtp))
        {
            return Err(BlockReject {
                reason: "bad-txns-nonfinal".into(),
                debug: format!("non-final transaction {}", tx.compute_txid()),
            }
            .into());
        }
        if !replay {
            if let Some(store) = self.store.as_mut() {
                store.append_block(&block)?;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let entry = BlockEntry {
            block: Arc::new(block),
            hash,
            height,
            chainwork,
            seq,
            status: BlockStatus::Valid,
            fully_validated: false,
        };
        self.candidates.insert((chainwork, Reverse(seq), hash));
        self.index.insert(hash, entry);
        self.activate_best_chain();
        match &self.index[&hash].status {
            BlockStatus::Failed(reason) => Err(BlockReject::new(reason.clone()).into()),
            // An ancestor failed when this block made its branch the best one.
            BlockStatus::FailedChild => Err(BlockReject::new("bad-prevblk").into()),
            BlockStatus::Valid => Ok(hash),
        }
    }

    fn best_candidate(&self) -> BlockHash {
        self.candidates
            .last()
            .map(|(_, _, h)| *h)
            .unwrap_or(self.active[0])
    }

    /// Changes a block's status, keeping the candidate set in step.
    pub(super) fn set_status(&mut self, hash: &BlockHash, status: BlockStatus) {
        let Some(e) = self.index.get_mut(hash) else {
            return;
        };
        let key = (e.chainwork, Reverse(e.seq), e.hash);
        if status == BlockStatus::Valid {
            self.candidates.insert(key);
        } else {
            self.candidates.remove(&key);
        }
        e.status = status;
    }

    /// Switches to the most-work valid chain, disconnecting back to the fork point and
    /// connecting the new branch; a block that fails to connect is marked failed and the
    /// search starts again. Transactions of disconnected blocks go back to the mempool
    /// when still valid.
    pub(super) fn activate_best_chain(&mut self) {
        let mut disconnected = Vec::new();
        loop {
            let best = self.best_candidate();
            let tip = self.tip().hash;
            if best == tip || self.index[&best].chainwork <= self.tip().chainwork {
                break;
            }
            let fork = self.find_fork(&tip, &best);
            while self.tip().hash != fork {
                disconnected.push(self.disconnect_tip());
            }
            let mut path = Vec::new();
            let mut cur = best;
            while cur != fork {
                path.push(cur);
                cur = self.index[&cur].block.header.prev_blockhash;
            }
            for hash in path.into_iter().rev() {
                if let Err(e) = self.connect_block(&hash) {
                    tracing::info!(%hash, reason = %e, "block failed to connect");
                    self.mark_failed(&hash, BlockStatus::Failed(e.reason));
                    break;
                }
            }
        }
        if !disconnected.is_empty() {
            disconnected.reverse();
            let txs: Vec<Transaction> = disconnected
                .iter()
                .flat_map(|b| b.txdata.iter().skip(1).cloned())
                .collect();
            self.rebuild_mempool(txs);
        }
    }

    /// Re-validates the mempool against the new tip after a reorg: first the transactions
    /// of the disconnected blocks (oldest first), then the previous mempool.
    pub(super) fn rebuild_mempool(&mut self, from_blocks: Vec<Transaction>) {
        let previous = self.mempool.drain_ordered();
        for tx in from_blocks.into_iter().chain(previous) {
            let txid = tx.compute_txid();
            if let Err(e) = self.accept_transaction(tx, false, None) {
                tracing::debug!(%txid, reason = %e, "dropped from mempool after reorg");
            }
        }
    }

    pub(super) fn mark_failed(&mut self, hash: &BlockHash, status: BlockStatus) {
        let Some(height) = self.index.get(hash).map(|e| e.height) else {
            return;
        };
        let descendants: Vec<BlockHash> = self
            .index
            .values()
            .filter(|e| e.height > height && self.ancestor(&e.hash, height) == Some(*hash))
            .map(|e| e.hash)
            .collect();
        for d in descendants {
            if self
                .index
                .get(&d)
                .is_some_and(|e| e.status == BlockStatus::Valid)
            {
                self.set_status(&d, BlockStatus::FailedChild);
            }
        }
        self.set_status(hash, status);
    }

    fn connect_block(&mut self, hash: &BlockHash) -> Result<(), BlockReject> {
        let entry = &self.index[hash];
        let (block, height) = (entry.block.clone(), entry.height);
        let prev_mtp = self.median_time_past(&block.header.prev_blockhash);
        let mut undo = BlockUndo::default();
        let mut applied = 0usize;
        let result = self.apply_block(&block, height, prev_mtp, &mut undo, &mut applied);
        if let Err(e) = result {
            self.revert_block(&block.txdata[..applied], undo);
            return Err(e);
        }
        for (pos, tx) in block.txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            self.tx_index.insert(txid, (*hash, pos));
            if pos > 0 {
                for input in &tx.input {
                    self.spend_index.insert(input.previous_output, txid);
                }
            }
        }
        self.undo.insert(*hash, undo);
        self.active.push(*hash);
        if let Some(e) = self.index.get_mut(hash) {
            e.fully_validated = true;
        }
        self.mempool.remove_for_block(&block.txdata);
        Ok(())
    }

    fn apply_block(
        &mut self,
        block: &Block,
        height: u32,
        prev_mtp: u32,
        undo: &mut BlockUndo,
        applied: &mut usize,
    ) -> Result<(), BlockReject> {
        let mut fees = Amount::ZERO;
        let mut sigops = 0usize;
        for (pos, tx) in block.txdata.iter().enumerate() {
            let txid = tx.compute_txid();
            if !is_final_tx(tx, height, prev_mtp) {
                return Err(BlockReject {
                    reason: "bad-txns-nonfinal".into(),
                    debug: format!("tx {txid}"),
                });
            }
            if pos > 0 {
                let mut coins = Vec::with_capacity(tx.input.len());
                for input in &tx.input {
                    match self.utxo.get(&input.previous_output) {
                        Some(c) => coins.push(c.clone()),
                        None => {
                            return Err(BlockReject {
                                reason: "bad-txns-inputs-missingorspent".into(),
                                debug: format!("CheckTxInputs: inputs missing/spent in tx {txid}"),
                            })
                        }
                    }
                }
                let fee = check_tx_inputs(tx, &coins, height)
                    .map_err(|e| BlockReject::from_tx(e, txid))?;
                fees = fees
                    .checked_add(fee)
                    .ok_or_else(|| BlockReject::new("bad-txns-accumulated-fee-outofrange"))?;
                let heights: Vec<u32> = coins.iter().map(|c| c.height).collect();
                let lock = calculate_sequence_locks(tx, &heights, |h| self.mtp_at_height(h));
                if !sequence_locks_met(lock, height, prev_mtp) {
                    return Err(BlockReject {
                        reason: "bad-txns-nonfinal".into(),
                        debug: format!("contains a non-BIP68-final transaction {txid}"),
                    });
                }
                sigops += tx.total_sigop_cost(|op| {
                    tx.input
                        .iter()
                        .position(|i| &i.previous_output == op)
                        .map(|k| coins[k].output.clone())
                });
                if sigops > MAX_BLOCK_SIGOPS_COST {
                    return Err(BlockReject::new("bad-blk-sigops"));
                }
                verify_scripts(tx, &coins, "block").map_err(|e| BlockReject::from_tx(e, txid))?;
                for (input, coin) in tx.input.iter().zip(coins) {
                    self.utxo.spend(&input.previous_output);
                    undo.spent.push((input.previous_output, coin));
                }
            }
            self.utxo.add_outputs(tx, height);
            *applied += 1;
        }
        let coinbase_out: Amount = block.txdata[0].output.iter().map(|o| o.value).sum();
        let allowed = block_subsidy(height) + fees;
        if coinbase_out > allowed {
            return Err(BlockReject {
                reason: "bad-cb-amount".into(),
                debug: format!(
                    "coinbase pays too much (actual={} vs limit={})",
                    coinbase_out.to_sat(),
                    allowed.to_sat()
                ),
            });
        }
        Ok(())
    }

    /// Undoes `txs` (a prefix of a block, or all of it) in reverse order.
    fn revert_block(&mut self, txs: &[Transaction], mut undo: BlockUndo) {
        for tx in txs.iter().rev() {
            self.utxo.remove_outputs(tx);
            if tx.is_coinbase() {
                continue;
            }
            let start = undo.spent.len() - tx.input.len();
            for (outpoint, coin) in undo.spent.drain(start..) {
                self.utxo.restore(outpoint, coin);
            }
        }
    }

    pub(super) fn disconnect_tip(&mut self) -> Arc<Block> {
        let hash = self.tip().hash;
        let block = self.index[&hash].block.clone();
        let undo = self.undo.remove(&hash).unwrap_or_default();
        self.revert_block(&block.txdata, undo);
        for tx in &block.txdata {
            self.tx_index.remove(&tx.compute_txid());
            for input in &tx.input {
                self.spend_index.remove(&input.previous_output);
            }
        }
        self.active.pop();
        block
    }
}
