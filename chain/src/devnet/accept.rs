//! Mempool acceptance (`MemPoolAccept::AcceptSingleTransaction`): consensus checks at the
//! next block's height and time, BIP68/BIP113 finality, conflicts, fees and scripts, with
//! Bitcoin Core's reject reasons.

use std::collections::HashSet;

use bitcoin::{Amount, FeeRate, Transaction, Txid, Weight, Wtxid};

use super::chainstate::ChainState;
use super::params::{
    DUST_RELAY_FEE, MAX_CLUSTER_COUNT, MAX_CLUSTER_VSIZE, MAX_STANDARD_TX_SIGOPS_COST,
    MAX_STANDARD_TX_WEIGHT, MIN_STANDARD_TX_NONWITNESS_SIZE,
};
use super::utxo::Coin;
use super::validation::{
    calculate_sequence_locks, check_transaction, check_tx_inputs, is_final_tx, sequence_locks_met,
    verify_scripts, RejectKind, TxReject,
};

/// What an accepted (or test-accepted) transaction looks like to the mempool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Its txid.
    pub txid: Txid,
    /// Its wtxid.
    pub wtxid: Wtxid,
    /// Fee paid.
    pub fee: Amount,
    /// Virtual size (vbytes).
    pub vsize: u64,
    /// Mempool transactions it replaces (conflicts and their descendants).
    pub replaced: Vec<Txid>,
}

fn policy(reason: &str) -> TxReject {
    TxReject::new(RejectKind::Policy, reason)
}

impl ChainState {
    /// Validates `tx` for the mempool and, unless `test_only`, adds it. `max_fee_rate`
    /// is `sendrawtransaction`'s `maxfeerate` (`None`: no limit).
    pub fn accept_transaction(
        &mut self,
        tx: Transaction,
        test_only: bool,
        max_fee_rate: Option<FeeRate>,
    ) -> Result<Accepted, TxReject> {
        let accepted = self.check_for_mempool(&tx, max_fee_rate)?;
        if !test_only {
            for txid in &accepted.replaced {
                self.mempool.remove_recursive(txid);
            }
            let now = self.now();
            let height = self.height();
            self.mempool.insert(tx, accepted.fee, now, height);
        }
        Ok(accepted)
    }

    fn check_for_mempool(
        &self,
        tx: &Transaction,
        max_fee_rate: Option<FeeRate>,
    ) -> Result<Accepted, TxReject> {
        check_transaction(tx)?;
        if tx.is_coinbase() {
            return Err(TxReject::new(RejectKind::Consensus, "coinbase"));
        }
        check_standard(tx)?;
        let next_height = self.height() + 1;
        let tip_mtp = self.median_time_past(&self.tip().hash);
        if !is_final_tx(tx, next_height, tip_mtp) {
            return Err(TxReject::new(RejectKind::Premature, "non-final"));
        }
        let txid = tx.compute_txid();
        if self.mempool.get(&txid).is_some() {
            return Err(TxReject::new(
                RejectKind::AlreadyInMempool,
                "txn-already-in-mempool",
            ));
        }
        let conflicts = self.direct_conflicts(tx);
        if !self.full_rbf {
            if let Some(conflict) = conflicts.first() {
                return Err(TxReject::with_debug(
                    RejectKind::MempoolConflict,
                    "txn-mempool-conflict",
                    format!("conflicts with {conflict}"),
                ));
            }
        }
        let mut coins = Vec::with_capacity(tx.input.len());
        for input in &tx.input {
            if let Some(coin) = self.utxo.get(&input.previous_output) {
                coins.push(coin.clone());
            } else if let Some(output) = self.mempool.output(&input.previous_output) {
                coins.push(Coin {
                    output: output.clone(),
                    height: next_height,
                    is_coinbase: false,
                });
            } else {
                let already = (0..tx.output.len() as u32)
                    .any(|vout| self.utxo.get(&bitcoin::OutPoint { txid, vout }).is_some());
                return Err(if already {
                    TxReject::new(RejectKind::AlreadyInChain, "txn-already-known")
                } else {
                    TxReject::new(RejectKind::MissingInputs, "bad-txns-inputs-missingorspent")
                });
            }
        }
        let heights: Vec<u32> = coins.iter().map(|c| c.height).collect();
        let lock = calculate_sequence_locks(tx, &heights, |h| self.mtp_at_height(h));
        if !sequence_locks_met(lock, next_height, tip_mtp) {
            return Err(TxReject::new(RejectKind::Premature, "non-BIP68-final"));
        }
        let fee = check_tx_inputs(tx, &coins, next_height)?;
        let weight = tx.weight();
        let vsize = weight.to_vbytes_ceil();
        let min_fee = fee_for(self.min_relay_fee, weight);
        if fee < min_fee {
            return Err(TxReject::with_debug(
                RejectKind::Policy,
                "min relay fee not met",
                format!("{} < {}", fee.to_sat(), min_fee.to_sat()),
            ));
        }
        if let Some(max) = max_fee_rate {
            if max != FeeRate::ZERO && fee > fee_for(max, weight) {
                return Err(TxReject::new(
                    RejectKind::MaxFeeExceeded,
                    "max-fee-exceeded",
                ));
            }
        }
        let sigops = tx.total_sigop_cost(|op| {
            tx.input
                .iter()
                .position(|i| &i.previous_output == op)
                .map(|k| coins[k].output.clone())
        });
        if sigops > MAX_STANDARD_TX_SIGOPS_COST {
            return Err(TxReject::with_debug(
                RejectKind::Policy,
                "bad-txns-too-many-sigops",
                sigops.to_string(),
            ));
        }
        let replaced = if conflicts.is_empty() {
            Vec::new()
        } else {
            self.check_replacement(tx, &conflicts, fee, vsize)?
        };
        self.check_cluster(tx, vsize, &replaced)?;
        verify_scripts(tx, &coins, "mandatory")?;
        Ok(Accepted {
            txid,
            wtxid: tx.compute_wtxid(),
            fee,
            vsize,
            replaced,
        })
    }
}

impl ChainState {
    /// Bitcoin Core v31's cluster limits: the connected component of mempool transactions
    /// that `tx` would join (through its unconfirmed parents, and not counting what it
    /// replaces) may hold at most 64 transactions and 101 kvB.
    fn check_cluster(
        &self,
        tx: &Transaction,
        vsize: u64,
        replaced: &[Txid],
    ) -> Result<(), TxReject> {
        let mut seen: HashSet<Txid> = replaced.iter().copied().collect();
        let mut stack: Vec<Txid> = tx.input.iter().map(|i| i.previous_output.txid).collect();
        let (mut count, mut total_vsize) = (1usize, vsize);
        while let Some(txid) = stack.pop() {
            let Some(entry) = self.mempool.get(&txid) else {
                continue;
            };
            if !seen.insert(txid) {
                continue;
            }
            count += 1;
            total_vsize += entry.vsize();
            if count > MAX_CLUSTER_COUNT || total_vsize > MAX_CLUSTER_VSIZE {
                return Err(policy("too-large-cluster"));
            }
            stack.extend(entry.tx.input.iter().map(|i| i.previous_output.txid));
            stack.extend(self.mempool.children(&txid));
        }
        Ok(())
    }
}

/// Fee at `rate` for a transaction of `weight`, rounded up per vbyte like Core's
/// `CFeeRate::GetFee`.
pub fn fee_for(rate: FeeRate, weight: Weight) -> Amount {
    let vsize = weight.to_vbytes_ceil();
    let sat_per_kvb = rate.to_sat_per_kwu() * 4;
    Amount::from_sat((sat_per_kvb * vsize).div_ceil(1000))
}

/// The standardness rules of `IsStandardTx` that matter for the hub's transactions.
fn check_standard(tx: &Transaction) -> Result<(), TxReject> {
    if !(1..=3).contains(&tx.version.0) {
        return Err(policy("version"));
    }
    if tx.weight() > MAX_STANDARD_TX_WEIGHT {
        return Err(policy("tx-size"));
    }
    if tx.base_size() < MIN_STANDARD_TX_NONWITNESS_SIZE {
        return Err(policy("tx-size-small"));
    }
    for input in &tx.input {
        if input.script_sig.len() > 1650 {
            return Err(policy("scriptsig-size"));
        }
        if !input.script_sig.is_push_only() {
            return Err(policy("scriptsig-not-pushonly"));
        }
    }
    for output in &tx.output {
        if !output.script_pubkey.is_op_return()
            && output.value < output.script_pubkey.minimal_non_dust_custom(DUST_RELAY_FEE)
        {
            return Err(policy("dust"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_for_rounds_up_per_vbyte() {
        // 100 sat/kvB on 141 vB = 14.1 → 15 sat.
        assert_eq!(
            fee_for(
                FeeRate::from_sat_per_kwu(25),
                Weight::from_vb_unchecked(141)
            ),
            Amount::from_sat(15)
        );
        assert_eq!(
            fee_for(
                FeeRate::from_sat_per_kwu(250),
                Weight::from_vb_unchecked(141)
            ),
            Amount::from_sat(141)
        );
    }
}
