//! Helpers shared by the integration tests: keys, scripts, and hand-signed spends.
#![allow(dead_code)]

use bitcoin::address::NetworkUnchecked;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    absolute, ecdsa, Address, Amount, CompressedPublicKey, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Witness,
};

/// A deterministic test key.
pub struct Key {
    pub sk: SecretKey,
    pub pk: CompressedPublicKey,
}

impl Key {
    pub fn new(n: u8) -> Self {
        let secp = Secp256k1::new();
        let sk = SecretKey::from_slice(&[n; 32]).expect("valid test key");
        let pk = CompressedPublicKey(sk.public_key(&secp));
        Self { sk, pk }
    }

    pub fn p2wpkh(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&self.pk.wpubkey_hash())
    }

    pub fn address(&self) -> Address<NetworkUnchecked> {
        Address::p2wpkh(&self.pk, Network::Regtest)
            .as_unchecked()
            .clone()
    }

    fn sign_hash(&self, hash: [u8; 32]) -> Vec<u8> {
        let secp = Secp256k1::new();
        let sig = secp.sign_ecdsa(&Message::from_digest(hash), &self.sk);
        ecdsa::Signature {
            signature: sig,
            sighash_type: EcdsaSighashType::All,
        }
        .to_vec()
    }

    /// Signs input `index` of `tx` spending a P2WPKH output of `value` of this key.
    pub fn sign_p2wpkh(&self, tx: &mut Transaction, index: usize, value: Amount) {
        let hash = SighashCache::new(&*tx)
            .p2wpkh_signature_hash(index, &self.p2wpkh(), value, EcdsaSighashType::All)
            .expect("sighash");
        let sig = self.sign_hash(hash.to_byte_array());
        tx.input[index].witness = Witness::from_slice(&[sig, self.pk.to_bytes().to_vec()]);
    }

    /// Signature for input `index` spending a P2WSH output with `witness_script`.
    pub fn sign_p2wsh(
        &self,
        tx: &Transaction,
        index: usize,
        witness_script: &ScriptBuf,
        value: Amount,
    ) -> Vec<u8> {
        let hash = SighashCache::new(tx)
            .p2wsh_signature_hash(index, witness_script, value, EcdsaSighashType::All)
            .expect("sighash");
        self.sign_hash(hash.to_byte_array())
    }
}

use bitcoin::hashes::Hash;

/// An unsigned one-input one-output version-2 transaction.
pub fn spend_tx(
    prev: OutPoint,
    to: ScriptBuf,
    value: Amount,
    sequence: Sequence,
    lock_time: u32,
) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: absolute::LockTime::from_consensus(lock_time),
        input: vec![TxIn {
            previous_output: prev,
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value,
            script_pubkey: to,
        }],
    }
}

/// A signed spend of a P2WPKH coin of `key` paying `value - fee` to `to`.
pub fn p2wpkh_spend(
    key: &Key,
    prev: OutPoint,
    value: Amount,
    to: ScriptBuf,
    fee: Amount,
) -> Transaction {
    let mut tx = spend_tx(prev, to, value - fee, Sequence::ENABLE_RBF_NO_LOCKTIME, 0);
    key.sign_p2wpkh(&mut tx, 0, value);
    tx
}
