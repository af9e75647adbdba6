//! The embedded devnet: a Bitcoin-format chain with Bitcoin Core's consensus rules at
//! regtest difficulty, in-process. [`Devnet`] is a cheap-to-clone handle to it.
//!
//! ```no_run
//! # fn main() -> Result<(), chain::devnet::DevnetError> {
//! let devnet = chain::devnet::Devnet::open(std::path::Path::new("/tmp/devnet"))?;
//! let script = bitcoin::ScriptBuf::new_op_return([0u8; 4]);
//! devnet.generate_to_script(101, &script)?;
//! # Ok(()) }
//! ```

pub mod accept;
pub mod block;
pub mod chainstate;
pub mod invalidation;
pub mod mempool;
pub mod mining;
pub mod params;
pub mod rbf;
pub mod source;
pub mod store;
pub mod utxo;
pub mod validation;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Block, BlockHash, FeeRate, Network, ScriptBuf, Transaction, Txid};
use tokio::sync::watch;

pub use accept::Accepted;
pub use block::BlockReject;
pub use chainstate::{BlockStatus, ChainState};
pub use invalidation::ChainTip;
pub use store::StoreError;
pub use validation::{RejectKind, TxReject};

use params::{DEFAULT_MAX_RAW_TX_FEE_RATE, DEFAULT_MIN_RELAY_FEE};

/// Everything that can go wrong when driving the devnet.
#[derive(Debug, thiserror::Error)]
pub enum DevnetError {
    /// A block broke a consensus rule (Core's reason inside).
    #[error("block rejected: {0}")]
    BlockRejected(#[from] BlockReject),
    /// A transaction was refused by the mempool (Core's reason inside).
    #[error("transaction rejected: {0}")]
    TxRejected(#[from] TxReject),
    /// No block with this hash is known.
    #[error("block not found: {0}")]
    BlockNotFound(BlockHash),
    /// `invalidateblock` on the genesis block.
    #[error("the genesis block cannot be invalidated")]
    GenesisInvalidation,
    /// An address for another network than regtest.
    #[error("address is not a regtest address")]
    WrongNetwork,
    /// The clock does not fit a block header's 32-bit time.
    #[error("clock value {0} does not fit a block time")]
    ClockOutOfRange(u64),
    /// The data directory could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How to start a devnet.
#[derive(Debug, Clone)]
pub struct DevnetConfig {
    /// Where to keep the chain; `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    /// The minimum relay fee rate (`-minrelaytxfee`); Core's default is 100 sat/kvB.
    pub min_relay_fee: FeeRate,
    /// Replace-by-fee for any conflicting transaction (Core v28+ default `true`); with
    /// `false` every conflict is refused with `txn-mempool-conflict`.
    pub full_rbf: bool,
}

impl Default for DevnetConfig {
    fn default() -> Self {
        Self {
            data_dir: None,
            min_relay_fee: DEFAULT_MIN_RELAY_FEE,
            full_rbf: true,
        }
    }
}

/// A handle to a running devnet chain; clones share the same chain.
#[derive(Debug, Clone)]
pub struct Devnet {
    state: Arc<Mutex<ChainState>>,
    tip: Arc<watch::Sender<BlockHash>>,
}

impl Devnet {
    /// A devnet with only the regtest genesis block, kept in memory.
    pub fn in_memory() -> Self {
        Self::from_state(ChainState::new(DEFAULT_MIN_RELAY_FEE, None))
    }

    /// Opens (or creates) a devnet whose chain lives in `dir`; existing blocks are
    /// re-validated and the same best chain becomes active again.
    pub fn open(dir: &Path) -> Result<Self, DevnetError> {
        Self::with_config(DevnetConfig {
            data_dir: Some(dir.to_path_buf()),
            ..DevnetConfig::default()
        })
    }

    /// Starts a devnet from a [`DevnetConfig`].
    pub fn with_config(config: DevnetConfig) -> Result<Self, DevnetError> {
        let mut state = ChainState::new(config.min_relay_fee, None);
        state.full_rbf = config.full_rbf;
        let Some(dir) = config.data_dir else {
            return Ok(Self::from_state(state));
        };
        let (store, blocks, invalidated) = store::BlockStore::open(&dir)?;
        let count = blocks.len();
        for block in blocks {
            let hash = block.block_hash();
            // Blocks that failed before fail again; they stay in the index as before.
            if let Err(e) = state.submit_block(block, true) {
                tracing::debug!(%hash, error = %e, "stored block rejected on replay");
            }
        }
        for hash in &invalidated {
            if let Err(e) = state.invalidate_block(hash) {
                tracing::warn!(%hash, error = %e, "could not re-apply invalidateblock");
            }
        }
        for tx in store.read_mempool() {
            let txid = tx.compute_txid();
            if let Err(e) = state.accept_transaction(tx, false, None) {
                tracing::debug!(%txid, reason = %e, "saved mempool transaction no longer valid");
            }
        }
        state.store = Some(store);
        tracing::info!(
            blocks = count,
            height = state.height(),
            mempool = state.mempool().len(),
            "devnet loaded"
        );
        Ok(Self::from_state(state))
    }

    fn from_state(state: ChainState) -> Self {
        let (tip, _) = watch::channel(state.tip().hash);
        Self {
            state: Arc::new(Mutex::new(state)),
            tip: Arc::new(tip),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ChainState> {
        // A panic while holding the lock cannot leave the chain half-updated in a way a
        // reader could not see anyway; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, state: &ChainState) {
        self.tip.send_replace(state.tip().hash);
    }

    /// Runs `f` with read access to the chain state (for queries not wrapped here).
    pub fn read<R>(&self, f: impl FnOnce(&ChainState) -> R) -> R {
        f(&self.lock())
    }

    /// A receiver that changes whenever the active tip changes.
    pub fn subscribe_tip(&self) -> watch::Receiver<BlockHash> {
        self.tip.subscribe()
    }

    /// Active tip hash and height.
    pub fn tip(&self) -> (BlockHash, u32) {
        let s = self.lock();
        (s.tip().hash, s.height())
    }

    /// A block by hash, from any branch.
    pub fn block(&self, hash: &BlockHash) -> Option<Arc<Block>> {
        self.lock().entry(hash).map(|e| e.block.clone())
    }

    /// Mines `count` blocks paying to a regtest `address` (`generatetoaddress`).
    pub fn generate_to_address(
        &self,
        count: u32,
        address: &Address<NetworkUnchecked>,
    ) -> Result<Vec<BlockHash>, DevnetError> {
        let address = address
            .clone()
            .require_network(Network::Regtest)
            .map_err(|_| DevnetError::WrongNetwork)?;
        self.generate_to_script(count, &address.script_pubkey())
    }

    /// Starts (or with `None` ends) a fee spike: other users' transactions fill every
    /// block at `rate`, so the miner takes only packages paying more, and the fee
    /// estimate for targets up to [`source::SPIKE_HORIZON_BLOCKS`] is at least `rate` (longer
    /// targets keep following the blocks, as Core's long horizon, whose half-life is
    /// about a week, barely moves in a spike).
    pub fn set_competing_fee_rate(&self, rate: Option<FeeRate>) {
        self.lock().set_competing_fee_rate(rate);
    }

    /// Mines `count` blocks paying to `script_pubkey`.
    pub fn generate_to_script(
        &self,
        count: u32,
        script_pubkey: &ScriptBuf,
    ) -> Result<Vec<BlockHash>, DevnetError> {
        let mut s = self.lock();
        let result = s.generate(count, script_pubkey);
        self.notify(&s);
        result
    }

    /// Mines one block on any known `parent` (not necessarily the tip) holding exactly
    /// `txs`, and submits it: the way to build competing branches in tests.
    pub fn mine_block_on(
        &self,
        parent: &BlockHash,
        txs: Vec<Transaction>,
        script_pubkey: ScriptBuf,
    ) -> Result<BlockHash, DevnetError> {
        let mut s = self.lock();
        // Fees are only known after validation; pay subsidy only, which is always valid.
        let block = s.build_block(parent, script_pubkey, txs, bitcoin::Amount::ZERO)?;
        let result = s.submit_block(block, false);
        self.notify(&s);
        result
    }

    /// Submits a block from elsewhere (`submitblock`).
    pub fn submit_block(&self, block: Block) -> Result<BlockHash, DevnetError> {
        let mut s = self.lock();
        let result = s.submit_block(block, false);
        self.notify(&s);
        result
    }

    /// Adds a transaction to the mempool (`sendrawtransaction` with the default
    /// `maxfeerate` when `max_fee_rate` is `None`). A transaction already in the mempool
    /// is not an error, as in Core.
    pub fn send_raw_transaction(
        &self,
        tx: Transaction,
        max_fee_rate: Option<FeeRate>,
    ) -> Result<Txid, DevnetError> {
        let txid = tx.compute_txid();
        let max = max_fee_rate.unwrap_or(DEFAULT_MAX_RAW_TX_FEE_RATE);
        match self.lock().accept_transaction(tx, false, Some(max)) {
            Ok(a) => Ok(a.txid),
            Err(e) if e.kind == RejectKind::AlreadyInMempool => Ok(txid),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a transaction against the mempool rules without adding it (`testmempoolaccept`).
    pub fn test_mempool_accept(
        &self,
        tx: Transaction,
        max_fee_rate: Option<FeeRate>,
    ) -> Result<Accepted, TxReject> {
        let max = max_fee_rate.unwrap_or(DEFAULT_MAX_RAW_TX_FEE_RATE);
        self.lock().accept_transaction(tx, true, Some(max))
    }

    /// `testmempoolaccept` for several transactions: each is checked with the ones before
    /// it (that passed) in the mempool, so a child can spend its parent; the mempool is
    /// left as it was. (Core's package rules, e.g. fee-bumping a parent below the minimum
    /// fee by its child, are not applied.)
    pub fn test_mempool_accept_package(
        &self,
        txs: Vec<Transaction>,
        max_fee_rate: Option<FeeRate>,
    ) -> Vec<Result<Accepted, TxReject>> {
        let max = max_fee_rate.unwrap_or(DEFAULT_MAX_RAW_TX_FEE_RATE);
        let mut s = self.lock();
        let saved = s.mempool.clone();
        let results = txs
            .into_iter()
            .map(|tx| s.accept_transaction(tx, false, Some(max)))
            .collect();
        s.mempool = saved;
        results
    }

    /// `invalidateblock`.
    pub fn invalidate_block(&self, hash: &BlockHash) -> Result<(), DevnetError> {
        let mut s = self.lock();
        let result = s.invalidate_block(hash);
        self.notify(&s);
        result
    }

    /// `reconsiderblock`.
    pub fn reconsider_block(&self, hash: &BlockHash) -> Result<(), DevnetError> {
        let mut s = self.lock();
        let result = s.reconsider_block(hash);
        self.notify(&s);
        result
    }

    /// Fixes the node's clock (`setmocktime`); `None` returns to the system clock.
    pub fn set_mock_time(&self, time: Option<u64>) {
        self.lock().mock_time = time;
    }

    /// Saves the mempool to the data directory (the binary does this on shutdown, like
    /// Core's `-persistmempool`); it is loaded and re-validated on the next open.
    pub fn save_mempool(&self) -> Result<(), DevnetError> {
        let mut s = self.lock();
        let txs: Vec<Transaction> = s.mempool().iter_ordered().map(|e| e.tx.clone()).collect();
        if let Some(store) = s.store.as_mut() {
            store.write_mempool(&txs)?;
        }
        Ok(())
    }

    /// Empties the mempool, as a restart of Core without its mempool file does (or its
    /// expiry of transactions after two weeks): whoever wants a transaction mined must
    /// send it again.
    pub fn clear_mempool(&self) {
        self.lock().mempool = Default::default();
    }

    /// Bytes used in the data directory (0 in memory).
    pub fn size_on_disk(&self) -> u64 {
        self.lock()
            .store
            .as_ref()
            .map(|s| s.size_on_disk())
            .unwrap_or(0)
    }
}
