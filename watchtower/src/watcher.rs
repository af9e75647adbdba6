//! The watcher: finds breaches in blocks. It keeps every watched appointment's locator in
//! memory (locator -> row ids, loaded from the store at start; the store is the durable
//! copy), computes the locator of each transaction of a block, and looks it up: one hash
//! lookup per transaction, whatever the number of appointments.

use crate::appointment::{self, BlobError, Locator};
use bitcoin::{Block, Transaction, Txid};
use std::collections::HashMap;

/// Locator -> ids of the appointments (one per user) waiting for that commitment.
#[derive(Default, Debug)]
pub struct LocatorIndex {
    map: HashMap<Locator, Ids>,
    len: usize,
}

/// Almost every locator belongs to one appointment; keep that case allocation-free.
#[derive(Debug, Clone)]
enum Ids {
    One(i64),
    Many(Vec<i64>),
}

/// A transaction of a block whose locator matches stored appointments.
#[derive(Debug, Clone)]
pub struct Breach {
    /// The appointments it matches.
    pub ids: Vec<i64>,
    /// Its txid.
    pub txid: Txid,
    /// The transaction.
    pub tx: Transaction,
}

impl LocatorIndex {
    /// An index of `entries`.
    pub fn from_entries(entries: impl IntoIterator<Item = (i64, Locator)>) -> LocatorIndex {
        let mut index = LocatorIndex::default();
        for (id, l) in entries {
            index.insert(l, id);
        }
        index
    }

    /// Watches `locator` for appointment `id`.
    pub fn insert(&mut self, locator: Locator, id: i64) {
        match self.map.get_mut(&locator) {
            None => {
                self.map.insert(locator, Ids::One(id));
            }
            Some(Ids::One(existing)) if *existing == id => return,
            Some(Ids::One(existing)) => {
                let first = *existing;
                self.map.insert(locator, Ids::Many(vec![first, id]));
            }
            Some(Ids::Many(v)) => {
                if v.contains(&id) {
                    return;
                }
                v.push(id);
            }
        }
        self.len += 1;
    }

    /// Stops watching `locator` for appointment `id`.
    pub fn remove(&mut self, locator: &Locator, id: i64) {
        let Some(ids) = self.map.get_mut(locator) else {
            return;
        };
        match ids {
            Ids::One(existing) if *existing == id => {
                self.map.remove(locator);
                self.len -= 1;
            }
            Ids::One(_) => {}
            Ids::Many(v) => {
                if let Some(i) = v.iter().position(|x| *x == id) {
                    v.swap_remove(i);
                    self.len -= 1;
                    if v.len() == 1 {
                        let last = v[0];
                        *ids = Ids::One(last);
                    }
                }
            }
        }
    }

    /// Appointments being watched.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids watching `locator`.
    pub fn get(&self, locator: &Locator) -> Vec<i64> {
        match self.map.get(locator) {
            None => Vec::new(),
            Some(Ids::One(id)) => vec![*id],
            Some(Ids::Many(v)) => v.clone(),
        }
    }

    /// The transactions of `block` that match watched appointments.
    pub fn scan(&self, block: &Block) -> Vec<Breach> {
        let mut found = Vec::new();
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            let ids = self.get(&Locator::from_txid(&txid));
            if !ids.is_empty() {
                found.push(Breach {
                    ids,
                    txid,
                    tx: tx.clone(),
                });
            }
        }
        found
    }
}

/// Why a matched appointment gives no penalty; logged and kept as the appointment's
/// `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPenalty {
    /// The blob does not decrypt or decode.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// It decrypts to a transaction that does not spend the breach.
    #[error("decrypted transaction {0} does not spend the breaching transaction")]
    DoesNotSpendBreach(Txid),
}

/// Decrypts an appointment's blob with the breach's txid and checks that the
/// transaction inside spends an output of the breach.
pub fn penalty_for(blob: &[u8], breach: &Transaction) -> Result<Transaction, InvalidPenalty> {
    let penalty = appointment::decrypt(blob, &breach.compute_txid())?;
    if !appointment::spends(&penalty, breach) {
        return Err(InvalidPenalty::DoesNotSpendBreach(penalty.compute_txid()));
    }
    Ok(penalty)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keeps_one_entry_per_appointment() {
        let l = Locator([1; 16]);
        let mut i = LocatorIndex::default();
        i.insert(l, 1);
        i.insert(l, 1);
        i.insert(l, 2);
        i.insert(Locator([2; 16]), 3);
        assert_eq!(i.len(), 3);
        assert_eq!(i.get(&l), vec![1, 2]);
        i.remove(&l, 1);
        assert_eq!(i.get(&l), vec![2]);
        i.remove(&l, 7);
        i.remove(&l, 2);
        assert!(i.get(&l).is_empty());
        assert_eq!(i.len(), 1);
    }
}
