//! The UTXO set and the undo data that lets a block be disconnected again.

use std::collections::HashMap;

use bitcoin::{OutPoint, Transaction, TxOut};

/// An unspent output together with what consensus needs to know about where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coin {
    /// The output itself (value and script).
    pub output: TxOut,
    /// Height of the block that created it.
    pub height: u32,
    /// Whether it is a coinbase output (subject to [`super::params::COINBASE_MATURITY`]).
    pub is_coinbase: bool,
}

/// The coins a connected block spent, in the order it spent them, so that
/// disconnecting the block can put them back (Bitcoin Core's `CBlockUndo`).
#[derive(Debug, Clone, Default)]
pub struct BlockUndo {
    /// `(outpoint, coin)` for every input of every non-coinbase transaction, in block order.
    pub spent: Vec<(OutPoint, Coin)>,
}

/// The set of unspent transaction outputs of the active chain.
#[derive(Debug, Default)]
pub struct UtxoSet {
    coins: HashMap<OutPoint, Coin>,
}

impl UtxoSet {
    /// The coin at `outpoint`, if unspent.
    pub fn get(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.coins.get(outpoint)
    }

    /// Number of unspent outputs.
    pub fn len(&self) -> usize {
        self.coins.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.coins.is_empty()
    }

    /// Adds every output of `tx` as created at `height`. Unspendable OP_RETURN outputs are
    /// skipped, as Bitcoin Core does.
    pub fn add_outputs(&mut self, tx: &Transaction, height: u32) {
        let txid = tx.compute_txid();
        let is_coinbase = tx.is_coinbase();
        for (vout, output) in tx.output.iter().enumerate() {
            if output.script_pubkey.is_op_return() {
                continue;
            }
            let outpoint = OutPoint {
                txid,
                vout: vout as u32,
            };
            self.coins.insert(
                outpoint,
                Coin {
                    output: output.clone(),
                    height,
                    is_coinbase,
                },
            );
        }
    }

    /// Removes every output of `tx` (used when its block is disconnected).
    pub fn remove_outputs(&mut self, tx: &Transaction) {
        let txid = tx.compute_txid();
        for vout in 0..tx.output.len() {
            self.coins.remove(&OutPoint {
                txid,
                vout: vout as u32,
            });
        }
    }

    /// Spends `outpoint`, returning the coin for undo data.
    pub fn spend(&mut self, outpoint: &OutPoint) -> Option<Coin> {
        self.coins.remove(outpoint)
    }

    /// Puts a coin back (undo of a spend).
    pub fn restore(&mut self, outpoint: OutPoint, coin: Coin) {
        self.coins.insert(outpoint, coin);
    }
}
