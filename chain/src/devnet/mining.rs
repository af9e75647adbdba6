//! Block production for the devnet (`generatetoaddress`, and blocks on any parent for
//! fork tests): picks mempool transactions, builds the coinbase, searches the nonce.

use bitcoin::{Amount, Block, BlockHash, ScriptBuf, Transaction, Weight};

use super::block::{assemble_block, build_coinbase};
use super::chainstate::ChainState;
use super::params::{block_subsidy, MAX_BLOCK_WEIGHT};
use super::DevnetError;

/// Weight kept free for the coinbase (Core's `-blockreservedweight` default is 8000).
const COINBASE_RESERVED_WEIGHT: Weight = Weight::from_wu(8_000);

impl ChainState {
    /// Mempool transactions for the next block, parents before children, up to the block
    /// weight limit, with their total fee.
    pub fn block_template(&self) -> (Vec<Transaction>, Amount) {
        let mut weight = COINBASE_RESERVED_WEIGHT;
        let mut fees = Amount::ZERO;
        let mut txs = Vec::new();
        let mut included = std::collections::HashSet::new();
        for entry in self.mempool.iter_ordered() {
            let parents_in = entry.tx.input.iter().all(|i| {
                self.mempool.get(&i.previous_output.txid).is_none()
                    || included.contains(&i.previous_output.txid)
            });
            if !parents_in || weight + entry.weight > MAX_BLOCK_WEIGHT {
                continue;
            }
            weight += entry.weight;
            fees += entry.fee;
            included.insert(entry.txid);
            txs.push(entry.tx.clone());
        }
        (txs, fees)
    }

    /// Builds and mines (nonce search) a block on `parent` with `txs`, paying subsidy plus
    /// `fees` to `script_pubkey`. The block is not submitted.
    pub fn build_block(
        &self,
        parent: &BlockHash,
        script_pubkey: ScriptBuf,
        txs: Vec<Transaction>,
        fees: Amount,
    ) -> Result<Block, DevnetError> {
        let parent_entry = self
            .entry(parent)
            .ok_or(DevnetError::BlockNotFound(*parent))?;
        let height = parent_entry.height + 1;
        let min_time = u64::from(self.median_time_past(parent)) + 1;
        let time = self.now().max(min_time);
        let time = u32::try_from(time).map_err(|_| DevnetError::ClockOutOfRange(time))?;
        let coinbase = build_coinbase(height, script_pubkey, block_subsidy(height) + fees);
        Ok(assemble_block(*parent, time, coinbase, txs))
    }

    /// Mines `count` blocks on the active tip, each with the mempool's transactions, paying
    /// to `script_pubkey`. Returns the new block hashes.
    pub fn generate(
        &mut self,
        count: u32,
        script_pubkey: &ScriptBuf,
    ) -> Result<Vec<BlockHash>, DevnetError> {
        let mut hashes = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let (txs, fees) = self.block_template();
            let tip = self.tip().hash;
            let block = self.build_block(&tip, script_pubkey.clone(), txs, fees)?;
            hashes.push(self.submit_block(block, false)?);
        }
        Ok(hashes)
    }
}
