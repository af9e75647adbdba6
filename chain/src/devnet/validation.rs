//! Transaction validation shared by block connection and mempool acceptance, following
//! Bitcoin Core's `CheckTransaction`, `IsFinalTx`, `CalculateSequenceLocks`,
//! `Consensus::CheckTxInputs` and `CheckInputScripts`, with reject reasons spelled as Core
//! spells them.

use std::collections::HashSet;

use bitcoin::{consensus, Amount, Sequence, Transaction};

use super::params::{flags, COINBASE_MATURITY, MAX_BLOCK_WEIGHT};
use super::utxo::Coin;

/// Why a transaction (or a block, see [`super::block::BlockReject`]) was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// Breaks a consensus rule.
    Consensus,
    /// Breaks a relay policy rule (fee, standardness); a miner could still include it.
    Policy,
    /// Spends an output that does not exist or is already spent in the chain.
    MissingInputs,
    /// Its outputs are already in the UTXO set: the transaction is already confirmed.
    AlreadyInChain,
    /// The same transaction is already in the mempool.
    AlreadyInMempool,
    /// Conflicts with a mempool transaction (spends the same output) and replacement is off.
    MempoolConflict,
    /// Conflicts with mempool transactions and does not meet the replacement (RBF) rules.
    ReplacementRejected,
    /// Its fee rate is above `sendrawtransaction`'s `maxfeerate`.
    MaxFeeExceeded,
    /// A time lock (absolute or relative) is not yet satisfied.
    Premature,
}

/// A transaction rejection with Bitcoin Core's reason string (`reason`, e.g.
/// `bad-txns-premature-spend-of-coinbase`) and optional debug detail; [`std::fmt::Display`]
/// gives `reason, debug` exactly like Core's `TxValidationState::ToString()`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct TxReject {
    /// Which class of rule failed; callers match on this.
    pub kind: RejectKind,
    /// Core's reject reason.
    pub reason: String,
    /// Core's debug message (may be empty).
    pub debug: String,
}

impl TxReject {
    /// A rejection with no debug message.
    pub fn new(kind: RejectKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            debug: String::new(),
        }
    }

    /// A rejection with a debug message.
    pub fn with_debug(
        kind: RejectKind,
        reason: impl Into<String>,
        debug: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            reason: reason.into(),
            debug: debug.into(),
        }
    }

    /// `reason` or `reason, debug`, as Bitcoin Core prints a validation state.
    pub fn message(&self) -> String {
        if self.debug.is_empty() {
            self.reason.clone()
        } else {
            format!("{}, {}", self.reason, self.debug)
        }
    }
}

fn consensus_err(reason: &str) -> TxReject {
    TxReject::new(RejectKind::Consensus, reason)
}

/// Context-free checks (`CheckTransaction`).
pub fn check_transaction(tx: &Transaction) -> Result<(), TxReject> {
    if tx.input.is_empty() {
        return Err(consensus_err("bad-txns-vin-empty"));
    }
    if tx.output.is_empty() {
        return Err(consensus_err("bad-txns-vout-empty"));
    }
    // Stripped size * WITNESS_SCALE_FACTOR must fit a block.
    if tx.base_size() * 4 > MAX_BLOCK_WEIGHT.to_wu() as usize {
        return Err(consensus_err("bad-txns-oversize"));
    }
    let mut total = Amount::ZERO;
    for out in &tx.output {
        if out.value > Amount::MAX_MONEY {
            return Err(consensus_err("bad-txns-vout-toolarge"));
        }
        total = match total.checked_add(out.value) {
            Some(t) if t <= Amount::MAX_MONEY => t,
            _ => return Err(consensus_err("bad-txns-txouttotal-toolarge")),
        };
    }
    let mut seen = HashSet::with_capacity(tx.input.len());
    for input in &tx.input {
        if !seen.insert(input.previous_output) {
            return Err(consensus_err("bad-txns-inputs-duplicate"));
        }
    }
    if tx.is_coinbase() {
        let len = tx.input[0].script_sig.len();
        if !(2..=100).contains(&len) {
            return Err(consensus_err("bad-cb-length"));
        }
    } else if tx.input.iter().any(|i| i.previous_output.is_null()) {
        return Err(consensus_err("bad-txns-prevout-null"));
    }
    Ok(())
}

/// `IsFinalTx`: whether `tx`'s nLockTime allows it in a block at `height` whose
/// lock-time cutoff (BIP113: the previous block's median time past) is `cutoff_time`.
pub fn is_final_tx(tx: &Transaction, height: u32, cutoff_time: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    // LOCKTIME_THRESHOLD: below it nLockTime is a height, above a Unix time.
    let limit = if lock < 500_000_000 {
        height
    } else {
        cutoff_time
    };
    if lock < limit {
        return true;
    }
    tx.input.iter().all(|i| i.sequence == Sequence::MAX)
}

/// The earliest height and time (exclusive) at which a transaction's BIP68 relative
/// locks are met, `-1` meaning no constraint (Core's `std::pair<int, int64_t>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceLock {
    /// The last height at which the transaction is still locked.
    pub min_height: i64,
    /// The last median-time-past at which it is still locked.
    pub min_time: i64,
}

const SEQUENCE_DISABLE_FLAG: u32 = 1 << 31;
const SEQUENCE_TYPE_FLAG: u32 = 1 << 22;
const SEQUENCE_MASK: u32 = 0x0000_ffff;
const SEQUENCE_GRANULARITY: u32 = 9;

/// `CalculateSequenceLocks` for a version>=2 transaction. `coin_heights[i]` is the
/// height of the block that created input `i`'s coin (tip+1 for mempool coins), and
/// `mtp_at(h)` gives the median time past of the active-chain block at height `h`.
pub fn calculate_sequence_locks(
    tx: &Transaction,
    coin_heights: &[u32],
    mtp_at: impl Fn(u32) -> u32,
) -> SequenceLock {
    let mut lock = SequenceLock {
        min_height: -1,
        min_time: -1,
    };
    if tx.version.0 < 2 {
        return lock;
    }
    for (input, &coin_height) in tx.input.iter().zip(coin_heights) {
        let seq = input.sequence.to_consensus_u32();
        if seq & SEQUENCE_DISABLE_FLAG != 0 {
            continue;
        }
        let value = i64::from(seq & SEQUENCE_MASK);
        if seq & SEQUENCE_TYPE_FLAG != 0 {
            let coin_time = i64::from(mtp_at(coin_height.saturating_sub(1)));
            lock.min_time = lock
                .min_time
                .max(coin_time + (value << SEQUENCE_GRANULARITY) - 1);
        } else {
            lock.min_height = lock.min_height.max(i64::from(coin_height) + value - 1);
        }
    }
    lock
}

/// `EvaluateSequenceLocks`: whether a block at `height` whose parent has median time past
/// `prev_mtp` satisfies `lock`.
pub fn sequence_locks_met(lock: SequenceLock, height: u32, prev_mtp: u32) -> bool {
    lock.min_height < i64::from(height) && lock.min_time < i64::from(prev_mtp)
}

/// `Consensus::CheckTxInputs`: coinbase maturity and value balance. Returns the fee.
pub fn check_tx_inputs(
    tx: &Transaction,
    coins: &[Coin],
    spend_height: u32,
) -> Result<Amount, TxReject> {
    let mut value_in = Amount::ZERO;
    for coin in coins {
        if coin.is_coinbase && spend_height - coin.height < COINBASE_MATURITY {
            return Err(TxReject::with_debug(
                RejectKind::Consensus,
                "bad-txns-premature-spend-of-coinbase",
                format!(
                    "tried to spend coinbase at depth {}",
                    spend_height - coin.height
                ),
            ));
        }
        value_in = match value_in.checked_add(coin.output.value) {
            Some(v) if v <= Amount::MAX_MONEY => v,
            _ => return Err(consensus_err("bad-txns-inputvalues-outofrange")),
        };
    }
    let value_out: Amount = tx.output.iter().map(|o| o.value).sum();
    if value_in < value_out {
        return Err(TxReject::with_debug(
            RejectKind::Consensus,
            "bad-txns-in-belowout",
            format!(
                "value in ({}) < value out ({})",
                btc_string(value_in),
                btc_string(value_out)
            ),
        ));
    }
    Ok(value_in - value_out)
}

/// Core's `FormatMoney`: BTC with at least two decimals, trailing zeros trimmed.
pub fn btc_string(amount: Amount) -> String {
    let sat = amount.to_sat();
    let s = format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000);
    let trimmed = s.trim_end_matches('0');
    let dot = trimmed.find('.').unwrap_or(trimmed.len());
    if trimmed.len() - dot < 3 {
        format!("{}{}", trimmed, "0".repeat(3 - (trimmed.len() - dot)))
    } else {
        trimmed.to_string()
    }
}

/// Checks every input's script with Bitcoin Core's interpreter (libbitcoinconsensus) under
/// [`flags::MANDATORY`]. `prefix` is `mandatory` for the mempool and `block` for blocks,
/// giving `mandatory-script-verify-flag-failed` / `block-script-verify-flag-failed`.
pub fn verify_scripts(tx: &Transaction, coins: &[Coin], prefix: &str) -> Result<(), TxReject> {
    let serialized = consensus::serialize(tx);
    for (index, coin) in coins.iter().enumerate() {
        // libbitcoinconsensus 0.105 cannot check taproot; without the flag it would treat
        // witness v1+ outputs as anyone-can-spend. Refuse instead of accepting unchecked.
        if coin
            .output
            .script_pubkey
            .witness_version()
            .is_some_and(|v| v != bitcoin::WitnessVersion::V0)
        {
            return Err(TxReject::with_debug(
                RejectKind::Consensus,
                format!("{prefix}-script-verify-flag-failed (witness v1+ spends are not verified by the devnet)"),
                format!("input {index} of {}", tx.compute_txid()),
            ));
        }
        if let Err(e) = consensus::verify_script_with_flags(
            &coin.output.script_pubkey,
            index,
            coin.output.value,
            &serialized,
            flags::MANDATORY,
        ) {
            // libbitcoinconsensus reports only "script failed", not Core's ScriptError text.
            return Err(TxReject::with_debug(
                RejectKind::Consensus,
                format!("{prefix}-script-verify-flag-failed (Script evaluation failed: {e})"),
                format!("input {index} of {}", tx.compute_txid()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_money_matches_core() {
        assert_eq!(btc_string(Amount::from_sat(5_000_000_000)), "50.00");
        assert_eq!(btc_string(Amount::from_sat(123)), "0.00000123");
        assert_eq!(btc_string(Amount::from_sat(10_000_000)), "0.10");
    }

    #[test]
    fn reject_message_joins_reason_and_debug() {
        let r = TxReject::with_debug(RejectKind::Policy, "min relay fee not met", "1 < 2");
        assert_eq!(r.to_string(), "min relay fee not met, 1 < 2");
        assert_eq!(
            TxReject::new(RejectKind::Premature, "non-final").to_string(),
            "non-final"
        );
    }
}
