//! Block production for the devnet (`generatetoaddress`, and blocks on any parent for
//! fork tests): picks mempool transactions, builds the coinbase, searches the nonce.

use std::collections::HashSet;

use bitcoin::{Amount, Block, BlockHash, ScriptBuf, Transaction, Txid, Weight};

use super::block::{assemble_block, build_coinbase};
use super::chainstate::ChainState;
use super::mempool::MempoolEntry;
use super::params::{block_subsidy, MAX_BLOCK_WEIGHT};
use super::DevnetError;

/// Weight kept free for the coinbase (Core's `-blockreservedweight` default is 8000).
const COINBASE_RESERVED_WEIGHT: Weight = Weight::from_wu(8_000);

impl ChainState {
    /// Mempool transactions for the next block, chosen like Bitcoin Core's block
    /// assembler: repeatedly the package (a transaction plus its not-yet-included
    /// mempool ancestors) with the highest fee rate that still fits the block weight, so
    /// a child can pay for its parent (CPFP). Parents come before children. Returns the
    /// transactions and their total fee.
    pub fn block_template(&self) -> (Vec<Transaction>, Amount) {
        let mut weight = COINBASE_RESERVED_WEIGHT;
        let mut fees = Amount::ZERO;
        let mut txs = Vec::new();
        let mut included: HashSet<Txid> = HashSet::new();
        loop {
            // (fee, weight, seq, members) of the best package found in this round.
            let mut best: Option<(Amount, Weight, u64, Vec<&MempoolEntry>)> = None;
            for entry in self.mempool.iter_ordered() {
                if included.contains(&entry.txid) {
                    continue;
                }
                let members = self.package(entry, &included);
                let pkg_fee: Amount = members.iter().map(|e| e.fee).sum();
                let pkg_weight: Weight = members.iter().map(|e| e.weight).sum();
                if weight + pkg_weight > MAX_BLOCK_WEIGHT {
                    continue;
                }
                // In a fee spike, the space goes to other users' transactions first.
                if let Some(competing) = self.competing_fee_rate {
                    let pays = u128::from(pkg_fee.to_sat()) * 1000;
                    let needs =
                        u128::from(competing.to_sat_per_kwu()) * u128::from(pkg_weight.to_wu());
                    if pays < needs {
                        continue;
                    }
                }
                let better = match &best {
                    None => true,
                    // fee/weight > best_fee/best_weight, earlier arrival wins ties.
                    Some((bf, bw, bseq, _)) => {
                        let lhs = u128::from(pkg_fee.to_sat()) * u128::from(bw.to_wu());
                        let rhs = u128::from(bf.to_sat()) * u128::from(pkg_weight.to_wu());
                        lhs > rhs || (lhs == rhs && entry.seq < *bseq)
                    }
                };
                if better {
                    best = Some((pkg_fee, pkg_weight, entry.seq, members));
                }
            }
            let Some((pkg_fee, pkg_weight, _, mut members)) = best else {
                break;
            };
            members.sort_by_key(|e| e.seq);
            weight += pkg_weight;
            fees += pkg_fee;
            for e in members {
                included.insert(e.txid);
                txs.push(e.tx.clone());
            }
        }
        (txs, fees)
    }

    /// `entry` and its mempool ancestors that are not in `included`.
    fn package<'a>(
        &'a self,
        entry: &'a MempoolEntry,
        included: &HashSet<Txid>,
    ) -> Vec<&'a MempoolEntry> {
        let mut seen: HashSet<Txid> = HashSet::from([entry.txid]);
        let mut members = vec![entry];
        let mut stack = vec![entry];
        while let Some(e) = stack.pop() {
            for input in &e.tx.input {
                let parent = input.previous_output.txid;
                if included.contains(&parent) || !seen.insert(parent) {
                    continue;
                }
                if let Some(p) = self.mempool.get(&parent) {
                    members.push(p);
                    stack.push(p);
                }
            }
        }
        members
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
