//! The devnet's memory pool: accepted, unconfirmed transactions and which outputs they
//! spend. The acceptance rules themselves live in [`super::accept`].

use std::collections::{BTreeMap, HashMap};

use bitcoin::{Amount, OutPoint, Transaction, TxOut, Txid, Weight, Wtxid};

/// One mempool transaction and the facts the RPC interface reports about it.
#[derive(Debug, Clone)]
pub struct MempoolEntry {
    /// The transaction.
    pub tx: Transaction,
    /// Its txid.
    pub txid: Txid,
    /// Its wtxid.
    pub wtxid: Wtxid,
    /// Fee paid (inputs minus outputs).
    pub fee: Amount,
    /// BIP141 weight.
    pub weight: Weight,
    /// Unix time it entered the pool.
    pub time: u64,
    /// Chain height when it entered the pool.
    pub height: u32,
    /// Arrival order, so that parents always come before children.
    pub seq: u64,
}

impl MempoolEntry {
    /// Virtual size in vbytes (weight / 4, rounded up).
    pub fn vsize(&self) -> u64 {
        self.weight.to_vbytes_ceil()
    }
}

/// Unconfirmed transactions, indexed by txid and by the outpoints they spend.
#[derive(Debug, Default, Clone)]
pub struct Mempool {
    entries: HashMap<Txid, MempoolEntry>,
    by_seq: BTreeMap<u64, Txid>,
    spenders: HashMap<OutPoint, Txid>,
    next_seq: u64,
}

impl Mempool {
    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `txid`.
    pub fn get(&self, txid: &Txid) -> Option<&MempoolEntry> {
        self.entries.get(txid)
    }

    /// The mempool transaction that spends `outpoint`, if any.
    pub fn spender(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spenders.get(outpoint).copied()
    }

    /// The output `outpoint` if it was created by a mempool transaction.
    pub fn output(&self, outpoint: &OutPoint) -> Option<&TxOut> {
        self.entries
            .get(&outpoint.txid)
            .and_then(|e| e.tx.output.get(outpoint.vout as usize))
    }

    /// Entries in arrival order (a topological order: parents first).
    pub fn iter_ordered(&self) -> impl Iterator<Item = &MempoolEntry> {
        self.by_seq
            .values()
            .filter_map(|txid| self.entries.get(txid))
    }

    /// Adds an entry that [`super::accept`] has validated.
    pub fn insert(&mut self, tx: Transaction, fee: Amount, time: u64, height: u32) {
        let txid = tx.compute_txid();
        for input in &tx.input {
            self.spenders.insert(input.previous_output, txid);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(seq, txid);
        let entry = MempoolEntry {
            wtxid: tx.compute_wtxid(),
            weight: tx.weight(),
            tx,
            txid,
            fee,
            time,
            height,
            seq,
        };
        self.entries.insert(txid, entry);
    }

    /// Txids of the transactions that spend an output of `txid`.
    pub fn children(&self, txid: &Txid) -> Vec<Txid> {
        let Some(entry) = self.entries.get(txid) else {
            return Vec::new();
        };
        (0..entry.tx.output.len() as u32)
            .filter_map(|vout| self.spenders.get(&OutPoint { txid: *txid, vout }).copied())
            .collect()
    }

    /// Removes `txid` and, recursively, every descendant.
    pub fn remove_recursive(&mut self, txid: &Txid) {
        let mut stack = vec![*txid];
        while let Some(t) = stack.pop() {
            stack.extend(self.children(&t));
            self.remove_one(&t);
        }
    }

    fn remove_one(&mut self, txid: &Txid) -> Option<MempoolEntry> {
        let entry = self.entries.remove(txid)?;
        self.by_seq.remove(&entry.seq);
        for input in &entry.tx.input {
            if self.spenders.get(&input.previous_output) == Some(txid) {
                self.spenders.remove(&input.previous_output);
            }
        }
        Some(entry)
    }

    /// Removes the transactions a newly connected block confirmed, and everything that
    /// conflicts with them (with descendants), as `CTxMemPool::removeForBlock` does.
    pub fn remove_for_block(&mut self, txs: &[Transaction]) {
        for tx in txs {
            let txid = tx.compute_txid();
            // Confirmed: its children stay (their input is now in the UTXO set).
            self.remove_one(&txid);
            for input in &tx.input {
                if let Some(conflict) = self.spenders.get(&input.previous_output).copied() {
                    if conflict != txid {
                        self.remove_recursive(&conflict);
                    }
                }
            }
        }
    }

    /// Takes every transaction out, in arrival order (used to re-validate after a reorg).
    pub fn drain_ordered(&mut self) -> Vec<Transaction> {
        let txs = self.iter_ordered().map(|e| e.tx.clone()).collect();
        *self = Mempool {
            next_seq: self.next_seq,
            ..Mempool::default()
        };
        txs
    }
}
