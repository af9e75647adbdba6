//! BOLT 3 "Per-commitment Secret Requirements": generating per-commitment secrets from a
//! seed, and storing the counterparty's revealed secrets in 49 slots.

use bitcoin::hashes::{sha256, Hash};

/// Number of bits in a per-commitment secret index.
const INDEX_BITS: u32 = 48;

/// Flips bit `b` of the secret, then hashes: the step of both generation and derivation.
fn flip_and_hash(p: &mut [u8; 32], b: u32) {
    p[(b / 8) as usize] ^= 1 << (b % 8);
    *p = sha256::Hash::hash(p).to_byte_array();
}

/// BOLT 3 `generate_from_seed(seed, I)`.
pub fn generate_from_seed(seed: &[u8; 32], index: u64) -> [u8; 32] {
    derive_secret(seed, INDEX_BITS, index)
}

/// Derives the secret of `index` from a secret that covers the low `bits` bits
/// (BOLT 3 `derive_secret(base, bits, I)`).
fn derive_secret(base: &[u8; 32], bits: u32, index: u64) -> [u8; 32] {
    let mut p = *base;
    for b in (0..bits).rev() {
        if index & (1 << b) != 0 {
            flip_and_hash(&mut p, b);
        }
    }
    p
}

/// Produces this node's per-commitment secrets.
#[derive(Clone)]
pub struct PerCommitmentSecretGenerator {
    seed: [u8; 32],
}

impl PerCommitmentSecretGenerator {
    /// A generator for `seed`.
    pub fn new(seed: [u8; 32]) -> Self {
        PerCommitmentSecretGenerator { seed }
    }

    /// The secret with generator index `index` (2^48 - 1 for the first commitment).
    pub fn secret(&self, index: u64) -> [u8; 32] {
        generate_from_seed(&self.seed, index)
    }
}

/// Why a revealed secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretStoreError {
    /// The secret does not derive a secret stored earlier: the counterparty lied.
    #[error("per-commitment secret for index {index} does not derive earlier secrets")]
    Inconsistent {
        /// The index of the refused secret.
        index: u64,
    },
    /// Secrets must arrive in order, counting down from 2^48 - 1.
    #[error("expected per-commitment secret index {expected}, got {got}")]
    OutOfOrder {
        /// The index the store was waiting for.
        expected: u64,
        /// The index that came.
        got: u64,
    },
}

/// The compact store of the counterparty's per-commitment secrets (BOLT 3 "Efficient
/// Per-commitment Secret Storage"): at most 49 secrets, from which every secret revealed
/// so far can be derived.
#[derive(Clone, PartialEq, Eq)]
pub struct CounterpartySecrets {
    known: [Option<([u8; 32], u64)>; 49],
    next_index: u64,
}

/// Stored as the list of filled slots (serde has no 49-element arrays).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSecrets {
    slots: Vec<(usize, [u8; 32], u64)>,
    next_index: u64,
}

impl serde::Serialize for CounterpartySecrets {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let slots = self
            .known
            .iter()
            .enumerate()
            .filter_map(|(i, k)| k.map(|(secret, index)| (i, secret, index)))
            .collect();
        StoredSecrets {
            slots,
            next_index: self.next_index,
        }
        .serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CounterpartySecrets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let stored = StoredSecrets::deserialize(d)?;
        let mut store = CounterpartySecrets {
            known: [None; 49],
            next_index: stored.next_index,
        };
        for (i, secret, index) in stored.slots {
            let slot = store
                .known
                .get_mut(i)
                .ok_or_else(|| serde::de::Error::custom("slot out of range"))?;
            *slot = Some((secret, index));
        }
        Ok(store)
    }
}

impl Default for CounterpartySecrets {
    fn default() -> Self {
        CounterpartySecrets {
            known: [None; 49],
            next_index: (1 << INDEX_BITS) - 1,
        }
    }
}

impl std::fmt::Debug for CounterpartySecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterpartySecrets")
            .field("next_index", &self.next_index)
            .finish_non_exhaustive()
    }
}

/// BOLT 3 `where_to_put_secret`: the count of trailing zero bits of the index.
fn slot_for(index: u64) -> usize {
    (index.trailing_zeros().min(INDEX_BITS)) as usize
}

impl CounterpartySecrets {
    /// An empty store, expecting index 2^48 - 1 first.
    pub fn new() -> Self {
        Self::default()
    }

    /// The generator index the next inserted secret must have.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Inserts the secret with generator index `index`, checking that it derives every
    /// secret it should (BOLT 3 `insert_secret`). On error the store is unchanged.
    pub fn insert(&mut self, secret: [u8; 32], index: u64) -> Result<(), SecretStoreError> {
        if index != self.next_index {
            return Err(SecretStoreError::OutOfOrder {
                expected: self.next_index,
                got: index,
            });
        }
        self.insert_unordered(secret, index)?;
        self.next_index = index.wrapping_sub(1);
        Ok(())
    }

    /// `insert_secret` exactly as BOLT 3 writes it, without the ordering check (the spec's
    /// storage test vectors exercise this alone).
    pub fn insert_unordered(
        &mut self,
        secret: [u8; 32],
        index: u64,
    ) -> Result<(), SecretStoreError> {
        let slot = slot_for(index);
        for b in 0..slot {
            if let Some((known, known_index)) = self.known[b] {
                if derive_secret(&secret, slot as u32, known_index) != known {
                    return Err(SecretStoreError::Inconsistent { index });
                }
            }
        }
        self.known[slot] = Some((secret, index));
        Ok(())
    }

    /// The secret with generator index `index`, if it has been revealed.
    pub fn get(&self, index: u64) -> Option<[u8; 32]> {
        // Indices count down: only those above the next expected one were revealed.
        if index <= self.next_index || index >= 1 << INDEX_BITS {
            return None;
        }
        for (b, entry) in self.known.iter().enumerate() {
            if let Some((secret, known_index)) = entry {
                let mask = !((1u64 << b) - 1);
                if index & mask == *known_index {
                    return Some(derive_secret(secret, b as u32, index));
                }
            }
        }
        None
    }
}
