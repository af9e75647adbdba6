//! BOLT 3 "Closing Transaction": the mutual close that pays each side its balance.

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

/// Builds the unsigned closing transaction. Each side's amount is its final balance
/// (the funder's already reduced by the fee); outputs below `dust_limit_sat` are
/// omitted and outputs are in BIP 69 order.
pub fn build_closing_tx(
    funding_outpoint: OutPoint,
    outputs: [(ScriptBuf, u64); 2],
    dust_limit_sat: u64,
) -> Transaction {
    let mut tx_outs: Vec<TxOut> = outputs
        .into_iter()
        .filter(|(_, sat)| *sat >= dust_limit_sat)
        .map(|(script_pubkey, sat)| TxOut {
            value: Amount::from_sat(sat),
            script_pubkey,
        })
        .collect();
    tx_outs.sort_by(|a, b| {
        (a.value, a.script_pubkey.as_bytes()).cmp(&(b.value, b.script_pubkey.as_bytes()))
    });
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: funding_outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: tx_outs,
    }
}

/// Weight of a closing transaction with these output scripts, used to price it.
pub fn closing_tx_weight(scripts: &[&ScriptBuf]) -> u64 {
    // version 4 + marker/flag (0.5 vB each as weight 2) + input count 1 + input 41 +
    // output count 1 + outputs + locktime 4, then the 2-of-2 witness (~222 WU).
    let outputs: u64 = scripts.iter().map(|s| 8 + 1 + s.len() as u64).sum();
    (4 + 1 + 41 + 1 + outputs + 4) * 4 + 2 + 222
}
