//! Segwit v0 signatures over channel transactions and the witnesses that carry them.

use crate::keys::secp;
use bitcoin::ecdsa;
use bitcoin::secp256k1::{ecdsa::Signature, Message, PublicKey, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, Script, ScriptBuf, Transaction, Witness};
use std::sync::atomic::{AtomicU64, Ordering};

static SIGNS: AtomicU64 = AtomicU64::new(0);
static VERIFIES: AtomicU64 = AtomicU64::new(0);

/// ECDSA signatures made and verified by this process so far (for benchmarks).
pub fn ecdsa_op_counts() -> (u64, u64) {
    (
        SIGNS.load(Ordering::Relaxed),
        VERIFIES.load(Ordering::Relaxed),
    )
}

/// Signs a digest with `key`, counted with the other signatures.
pub fn sign_digest(msg: &Message, key: &SecretKey) -> Signature {
    SIGNS.fetch_add(1, Ordering::Relaxed);
    secp().sign_ecdsa(msg, key)
}

/// The BIP 143 SIGHASH_ALL digest of input `input` spending a P2WSH output.
pub fn sighash(tx: &Transaction, input: usize, witness_script: &Script, value: Amount) -> Message {
    sighash_with(tx, input, witness_script, value, EcdsaSighashType::All)
}

/// The BIP 143 digest of input `input` spending a P2WSH output, for sighash type `ty`.
pub fn sighash_with(
    tx: &Transaction,
    input: usize,
    witness_script: &Script,
    value: Amount,
    ty: EcdsaSighashType,
) -> Message {
    let hash = SighashCache::new(tx)
        .p2wsh_signature_hash(input, witness_script, value, ty)
        .expect("input index is within the transaction");
    Message::from(hash)
}

/// The sighash type of the counterparty's signature on an HTLC transaction: under
/// option_anchors_zero_fee_htlc_tx `SIGHASH_SINGLE|SIGHASH_ANYONECANPAY`, so that the
/// holder can add an input (and an output) paying the fee; otherwise `SIGHASH_ALL`.
pub fn htlc_remote_sighash_type(anchors: bool) -> EcdsaSighashType {
    if anchors {
        EcdsaSighashType::SinglePlusAnyoneCanPay
    } else {
        EcdsaSighashType::All
    }
}

/// Signs input `input` of `tx` (SIGHASH_ALL) with `key`.
pub fn sign_input(
    tx: &Transaction,
    input: usize,
    witness_script: &Script,
    value: Amount,
    key: &SecretKey,
) -> Signature {
    sign_input_with(tx, input, witness_script, value, key, EcdsaSighashType::All)
}

/// Signs input `input` of `tx` with `key` for sighash type `ty`.
pub fn sign_input_with(
    tx: &Transaction,
    input: usize,
    witness_script: &Script,
    value: Amount,
    key: &SecretKey,
    ty: EcdsaSighashType,
) -> Signature {
    SIGNS.fetch_add(1, Ordering::Relaxed);
    secp().sign_ecdsa(&sighash_with(tx, input, witness_script, value, ty), key)
}

/// Checks a counterparty's signature over input `input` of `tx`.
pub fn verify_input(
    tx: &Transaction,
    input: usize,
    witness_script: &Script,
    value: Amount,
    sig: &Signature,
    key: &PublicKey,
) -> bool {
    verify_input_with(
        tx,
        input,
        witness_script,
        value,
        sig,
        key,
        EcdsaSighashType::All,
    )
}

/// Checks a counterparty's signature over input `input` of `tx` for sighash type `ty`.
pub fn verify_input_with(
    tx: &Transaction,
    input: usize,
    witness_script: &Script,
    value: Amount,
    sig: &Signature,
    key: &PublicKey,
    ty: EcdsaSighashType,
) -> bool {
    VERIFIES.fetch_add(1, Ordering::Relaxed);
    secp()
        .verify_ecdsa(
            &sighash_with(tx, input, witness_script, value, ty),
            sig,
            key,
        )
        .is_ok()
}

/// DER signature with its SIGHASH_ALL byte, as a witness element.
pub fn sig_all(sig: &Signature) -> Vec<u8> {
    ecdsa::Signature::sighash_all(*sig).to_vec()
}

/// The witness spending the 2-of-2 funding output: signatures in the order of the keys
/// in the funding script (lexicographic).
pub fn funding_witness(
    funding_script: &ScriptBuf,
    (key_a, sig_a): (&PublicKey, &Signature),
    (key_b, sig_b): (&PublicKey, &Signature),
) -> Witness {
    let (first, second) = if key_a.serialize() <= key_b.serialize() {
        (sig_a, sig_b)
    } else {
        (sig_b, sig_a)
    };
    let mut w = Witness::new();
    w.push([]);
    w.push(sig_all(first));
    w.push(sig_all(second));
    w.push(funding_script.as_bytes());
    w
}

/// The witness of an HTLC-success (with `preimage`) or HTLC-timeout (without) transaction:
/// `0 <remotehtlcsig> <localhtlcsig> <payment_preimage or empty> <witness_script>`.
/// The remote signature carries the sighash type it was made with
/// ([`htlc_remote_sighash_type`]), the local one `local_sighash`.
pub fn htlc_tx_witness(
    witness_script: &Script,
    remote_sig: &Signature,
    local_sig: &Signature,
    local_sighash: EcdsaSighashType,
    preimage: Option<&[u8; 32]>,
    anchors: bool,
) -> Witness {
    let mut w = Witness::new();
    w.push([]);
    w.push(
        ecdsa::Signature {
            signature: *remote_sig,
            sighash_type: htlc_remote_sighash_type(anchors),
        }
        .to_vec(),
    );
    w.push(
        ecdsa::Signature {
            signature: *local_sig,
            sighash_type: local_sighash,
        }
        .to_vec(),
    );
    match preimage {
        Some(p) => w.push(p),
        None => w.push([]),
    }
    w.push(witness_script.as_bytes());
    w
}
