//! Transaction replacement in the mempool (full-RBF, Bitcoin Core v28+'s default) with
//! BIP125's fee rules as Core's `policy/rbf.cpp` applies them: the replacement must pay a
//! higher fee rate than each transaction it directly conflicts with, at least their fees
//! plus all their descendants' fees, and the incremental relay fee for its own size.

use std::collections::BTreeSet;

use bitcoin::{Amount, Transaction, Txid};

use super::accept::fee_for;
use super::chainstate::ChainState;
use super::params::{INCREMENTAL_RELAY_FEE, MAX_REPLACEMENT_CANDIDATES};
use super::validation::{btc_string, RejectKind, TxReject};

fn insufficient(debug: String) -> TxReject {
    TxReject::with_debug(RejectKind::ReplacementRejected, "insufficient fee", debug)
}

/// Core's `CFeeRate(fee, vsize)`: sat/kvB, rounded down.
fn sat_per_kvb(fee: Amount, vsize: u64) -> u64 {
    fee.to_sat() * 1000 / vsize.max(1)
}

/// Core's `CFeeRate::ToString()`.
fn fee_rate_string(sat_per_kvb: u64) -> String {
    format!(
        "{}.{:08} BTC/kvB",
        sat_per_kvb / 100_000_000,
        sat_per_kvb % 100_000_000
    )
}

impl ChainState {
    /// Mempool transactions that spend an input of `tx`.
    pub(super) fn direct_conflicts(&self, tx: &Transaction) -> BTreeSet<Txid> {
        tx.input
            .iter()
            .filter_map(|i| self.mempool.spender(&i.previous_output))
            .collect()
    }

    /// Checks that `tx` (paying `fee`, `vsize` vbytes) may replace `conflicts`; returns
    /// every transaction it would evict (the conflicts and their descendants).
    pub(super) fn check_replacement(
        &self,
        tx: &Transaction,
        conflicts: &BTreeSet<Txid>,
        fee: Amount,
        vsize: u64,
    ) -> Result<Vec<Txid>, TxReject> {
        let txid = tx.compute_txid();
        let mut evicted: BTreeSet<Txid> = BTreeSet::new();
        let mut stack: Vec<Txid> = conflicts.iter().copied().collect();
        while let Some(t) = stack.pop() {
            if evicted.insert(t) {
                stack.extend(self.mempool.children(&t));
            }
            if evicted.len() > MAX_REPLACEMENT_CANDIDATES {
                return Err(TxReject::with_debug(
                    RejectKind::ReplacementRejected,
                    "too many potential replacements",
                    format!("rejecting replacement {txid}; too many potential replacements"),
                ));
            }
        }
        if let Some(spent) = tx
            .input
            .iter()
            .map(|i| i.previous_output.txid)
            .find(|t| evicted.contains(t))
        {
            return Err(TxReject::with_debug(
                RejectKind::ReplacementRejected,
                "bad-txns-spends-conflicting-tx",
                format!("{txid} spends conflicting transaction {spent}"),
            ));
        }
        let new_rate = sat_per_kvb(fee, vsize);
        for c in conflicts {
            let Some(e) = self.mempool.get(c) else {
                continue;
            };
            let old_rate = sat_per_kvb(e.fee, e.vsize());
            if new_rate <= old_rate {
                return Err(insufficient(format!(
                    "rejecting replacement {txid}; new feerate {} <= old feerate {}",
                    fee_rate_string(new_rate),
                    fee_rate_string(old_rate)
                )));
            }
        }
        let old_fees: Amount = evicted
            .iter()
            .filter_map(|t| self.mempool.get(t))
            .map(|e| e.fee)
            .sum();
        if fee < old_fees {
            return Err(insufficient(format!(
                "rejecting replacement {txid}, less fees than conflicting txs; {} < {}",
                btc_string(fee),
                btc_string(old_fees)
            )));
        }
        let required = fee_for(
            INCREMENTAL_RELAY_FEE,
            bitcoin::Weight::from_vb_unchecked(vsize),
        );
        if fee - old_fees < required {
            return Err(insufficient(format!(
                "rejecting replacement {txid}, not enough additional fees to relay; {} < {}",
                btc_string(fee - old_fees),
                btc_string(required)
            )));
        }
        Ok(evicted.into_iter().collect())
    }
}
