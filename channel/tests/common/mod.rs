//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bitcoin::{OutPoint, Transaction, TxOut};

/// Bitcoin Core's script flags for segwit v0 spends: P2SH | DERSIG | NULLDUMMY |
/// CHECKLOCKTIMEVERIFY | CHECKSEQUENCEVERIFY | WITNESS (libbitcoinconsensus values).
pub const SCRIPT_FLAGS: u32 = 1 | (1 << 2) | (1 << 4) | (1 << 9) | (1 << 10) | (1 << 11);

/// Runs Bitcoin Core's script interpreter on every input of `tx` against the outputs it
/// spends.
pub fn consensus_verify(tx: &Transaction, spent: &[(OutPoint, TxOut)]) -> Result<(), String> {
    tx.verify_with_flags(
        |op| spent.iter().find(|(o, _)| o == op).map(|(_, t)| t.clone()),
        SCRIPT_FLAGS,
    )
    .map_err(|e| format!("{e:?}"))
}
