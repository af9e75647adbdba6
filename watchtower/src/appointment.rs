//! What a client hands a tower: the locator of a revoked commitment and the justice
//! transaction encrypted under a key only that commitment's txid gives (in the style of
//! the BOLT 13 draft), plus the bytes a client signs.

use bitcoin::consensus::encode;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::{Transaction, Txid};
use chacha20poly1305::aead::Aead;
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce};
use std::fmt;
use std::str::FromStr;

/// Bytes in a [`Locator`].
pub const LOCATOR_LEN: usize = 16;
/// Longest client-chosen tag (e.g. 16 bytes the client derives from its channel id).
pub const MAX_TAG_LEN: usize = 32;
/// ChaCha20-Poly1305 authentication tag appended to every blob.
pub const AEAD_TAG_LEN: usize = 16;

/// The first 16 bytes of a revoked commitment's txid, in the txid's serialized byte order
/// (the order SHA256d produces and inputs reference it in; the reverse of the hex that
/// block explorers display). The tower indexes appointments by it and recognises a breach
/// by computing it for every transaction in a block.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locator(pub [u8; LOCATOR_LEN]);

impl Locator {
    /// The locator of the commitment transaction `txid`.
    pub fn from_txid(txid: &Txid) -> Locator {
        let bytes = txid.to_byte_array();
        let mut l = [0u8; LOCATOR_LEN];
        l.copy_from_slice(&bytes[..LOCATOR_LEN]);
        Locator(l)
    }

    /// From exactly 16 bytes.
    pub fn from_slice(b: &[u8]) -> Option<Locator> {
        <[u8; LOCATOR_LEN]>::try_from(b).ok().map(Locator)
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Locator({self})")
    }
}

impl FromStr for Locator {
    type Err = hex::FromHexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut l = [0u8; LOCATOR_LEN];
        hex::decode_to_slice(s, &mut l)?;
        Ok(Locator(l))
    }
}

/// The ChaCha20-Poly1305 key for a revoked commitment: SHA256 of its full txid in
/// serialized byte order (see [`Locator`]).
fn blob_key(txid: &Txid) -> Key {
    let digest = sha256::Hash::hash(&txid.to_byte_array());
    *Key::from_slice(digest.as_byte_array())
}

/// The nonce of every blob: 12 zero bytes. Safe because each key (one per commitment
/// txid) encrypts one plaintext; an update re-encrypts the same justice transaction, or a
/// fee-bumped one the tower then holds instead.
const NONCE: [u8; 12] = [0u8; 12];

/// Encrypts a serialized justice transaction under the key of the revoked commitment
/// `commitment_txid`; returns ciphertext with the 16-byte authentication tag appended.
pub fn encrypt(justice_tx: &Transaction, commitment_txid: &Txid) -> Vec<u8> {
    let cipher = ChaCha20Poly1305::new(&blob_key(commitment_txid));
    // Encryption with a valid key cannot fail for in-memory buffers below 256 GiB.
    cipher
        .encrypt(
            Nonce::from_slice(&NONCE),
            encode::serialize(justice_tx).as_slice(),
        )
        .unwrap_or_default()
}

/// Why a blob does not yield a justice transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// The authentication tag does not match: wrong key or tampered blob.
    #[error("blob does not decrypt under this commitment's key")]
    Undecryptable,
    /// It decrypted, but not to one consensus-encoded transaction.
    #[error("blob decrypts to something that is not a transaction")]
    NotATransaction,
}

/// Decrypts a blob with the key of `commitment_txid` and decodes the transaction inside.
pub fn decrypt(blob: &[u8], commitment_txid: &Txid) -> Result<Transaction, BlobError> {
    let cipher = ChaCha20Poly1305::new(&blob_key(commitment_txid));
    let plain = cipher
        .decrypt(Nonce::from_slice(&NONCE), blob)
        .map_err(|_| BlobError::Undecryptable)?;
    encode::deserialize(&plain).map_err(|_| BlobError::NotATransaction)
}

/// The bytes a client signs to add or update an appointment:
/// `locator (16) || encrypted_blob || to_self_delay (u32 big-endian)`, followed by the tag
/// bytes when the appointment carries one.
pub fn appointment_message(
    locator: &Locator,
    encrypted_blob: &[u8],
    to_self_delay: u32,
    tag: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(LOCATOR_LEN + encrypted_blob.len() + 4 + MAX_TAG_LEN);
    m.extend_from_slice(&locator.0);
    m.extend_from_slice(encrypted_blob);
    m.extend_from_slice(&to_self_delay.to_be_bytes());
    if let Some(tag) = tag {
        m.extend_from_slice(tag);
    }
    m
}

/// How far a request's counter may be from the tower's clock (Unix milliseconds).
pub const COUNTER_WINDOW_MS: u64 = 10 * 60 * 1000;

/// The bytes a client signs for a request that changes something at a tower:
/// `"watchtower request" || tower_id (32) || counter (u64 big-endian) || what`, where
/// `what` is the request's own message ([`register_message`], [`appointment_message`],
/// [`delete_tag_message`], [`delete_locators_message`]). Naming the tower and a counter
/// that only grows makes a captured request worthless elsewhere and later.
pub fn request_message(tower_id: &[u8; 32], counter: u64, what: &[u8]) -> Vec<u8> {
    let mut m = b"watchtower request".to_vec();
    m.extend_from_slice(tower_id);
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(what);
    m
}

/// The message of a registration: `"register"`.
pub fn register_message() -> Vec<u8> {
    b"register".to_vec()
}

/// The bytes a client signs to read an appointment: `"get appointment" || locator`.
pub fn status_message(locator: &Locator) -> Vec<u8> {
    let mut m = b"get appointment".to_vec();
    m.extend_from_slice(&locator.0);
    m
}

/// The bytes a client signs to delete every appointment carrying `tag`:
/// `"delete tag" || tag`.
pub fn delete_tag_message(tag: &[u8]) -> Vec<u8> {
    let mut m = b"delete tag".to_vec();
    m.extend_from_slice(tag);
    m
}

/// The bytes a client signs to delete appointments by locator:
/// `"delete locators" || locator_1 || ... || locator_n`.
pub fn delete_locators_message(locators: &[Locator]) -> Vec<u8> {
    let mut m = b"delete locators".to_vec();
    for l in locators {
        m.extend_from_slice(&l.0);
    }
    m
}

/// Whether `justice` spends an output of `breach` (the check the tower makes before it
/// broadcasts anything).
pub fn spends(justice: &Transaction, breach: &Transaction) -> bool {
    let txid = breach.compute_txid();
    justice.input.iter().any(|i| {
        i.previous_output.txid == txid && (i.previous_output.vout as usize) < breach.output.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, TxOut, Witness};

    fn tx(prev: OutPoint) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: prev,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[vec![1u8; 72], vec![2u8; 33]]),
            }],
            output: vec![TxOut {
                value: Amount::from_sat(10_000),
                script_pubkey: ScriptBuf::new_op_return([7u8; 4]),
            }],
        }
    }

    #[test]
    fn blobs_round_trip_only_under_their_commitment_key() {
        let breach = tx(OutPoint::null());
        let justice = tx(OutPoint::new(breach.compute_txid(), 0));
        let blob = encrypt(&justice, &breach.compute_txid());
        assert_eq!(blob.len(), encode::serialize(&justice).len() + AEAD_TAG_LEN);
        assert_eq!(decrypt(&blob, &breach.compute_txid()), Ok(justice.clone()));
        assert!(spends(&justice, &breach));
        let other = tx(OutPoint::new(breach.compute_txid(), 5)).compute_txid();
        assert_eq!(decrypt(&blob, &other), Err(BlobError::Undecryptable));
        let mut tampered = blob.clone();
        tampered[3] ^= 1;
        assert_eq!(
            decrypt(&tampered, &breach.compute_txid()),
            Err(BlobError::Undecryptable)
        );
    }

    #[test]
    fn locator_is_the_first_half_of_the_serialized_txid() {
        let txid: Txid = "0000000000000000000000000000000000000000000000000000000000000001"
            .parse()
            .unwrap();
        // Displayed hex is reversed: the 01 is the first serialized byte.
        let l = Locator::from_txid(&txid);
        assert_eq!(l.0[0], 1);
        assert_eq!(l.to_string().parse::<Locator>().unwrap(), l);
    }

    #[test]
    fn a_justice_tx_must_spend_an_existing_output_of_the_breach() {
        let breach = tx(OutPoint::null());
        assert!(!spends(
            &tx(OutPoint::new(breach.compute_txid(), 1)),
            &breach
        ));
        assert!(!spends(&tx(OutPoint::null()), &breach));
    }
}
