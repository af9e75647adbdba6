//! Transactions that take funds out of a commitment after it is on chain: the justice
//! (penalty) transaction against a revoked commitment, and the sweep of one's own
//! CSV-delayed output.

use crate::keys::secp;
use crate::sign::{sig_all, sign_input};
use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

use crate::types::FeeratePerKw;

/// Which script a revoked output has, which decides the revocation witness.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokedOutputKind {
    /// to_local of a revoked commitment, or the output of an HTLC-success/timeout
    /// transaction spent from it (same script): witness `<sig> 1 <script>`.
    DelayedToLocal,
    /// An HTLC output of a revoked commitment: witness `<sig> <revocationpubkey> <script>`.
    Htlc,
}

/// One output of a revoked commitment (or of its second-stage transactions) that the
/// revocation key can take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedOutput {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub value: Amount,
    /// Its witness script.
    pub witness_script: ScriptBuf,
    /// Its kind.
    pub kind: RevokedOutputKind,
}

/// Why a sweep could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    /// Nothing to spend.
    #[error("no outputs to sweep")]
    NoInputs,
    /// The fee would eat the whole value (or leave dust).
    #[error("swept value {value_sat} sat does not cover fee {fee_sat} sat plus dust")]
    ValueBelowFee {
        /// Total input value.
        value_sat: u64,
        /// The fee at the requested rate.
        fee_sat: u64,
    },
}

/// Smallest output we create: Bitcoin Core's dust threshold for P2WSH at 3 sat/vB.
const MIN_OUTPUT_SAT: u64 = 330;

fn pay_out(inputs_value: u64, weight: u64, feerate: FeeratePerKw) -> Result<u64, SweepError> {
    let fee_sat = feerate.fee_for_weight(weight);
    match inputs_value.checked_sub(fee_sat) {
        Some(v) if v >= MIN_OUTPUT_SAT => Ok(v),
        _ => Err(SweepError::ValueBelowFee {
            value_sat: inputs_value,
            fee_sat,
        }),
    }
}

/// A 73-byte signature placeholder: the largest DER signature plus sighash byte, so
/// that the weight used for the fee is never below the real one.
const MAX_SIG: [u8; 73] = [0u8; 73];

/// Builds and signs the justice transaction: every listed output of a revoked commitment
/// swept with `revocation_key` (BOLT 3 `revocationprivkey`) to `destination`.
pub fn build_justice_tx(
    outputs: &[RevokedOutput],
    revocation_key: &SecretKey,
    destination: ScriptBuf,
    feerate: FeeratePerKw,
) -> Result<Transaction, SweepError> {
    build_penalty_tx(outputs, revocation_key, None, destination, feerate)
}

/// Our own output on the counterparty's commitment (to_remote: P2WPKH to our payment
/// basepoint, or under anchors P2WSH `<key> CHECKSIGVERIFY 1 CSV`), added to a penalty
/// so that one transaction takes both balances.
pub struct OwnOutput<'a> {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub value: Amount,
    /// The key it pays.
    pub key: &'a SecretKey,
    /// Built under option_anchors_zero_fee_htlc_tx.
    pub anchors: bool,
}

impl OwnOutput<'_> {
    fn pubkey(&self) -> bitcoin::CompressedPublicKey {
        bitcoin::CompressedPublicKey(PublicKey::from_secret_key(secp(), self.key))
    }

    /// The script signed (BIP 143 script code) and, under anchors, the witness script.
    fn script_code(&self) -> ScriptBuf {
        if self.anchors {
            crate::script::to_remote_anchor_script(&self.pubkey().0)
        } else {
            // A P2WPKH input is signed with the P2PKH script of its key hash.
            ScriptBuf::new_p2pkh(&self.pubkey().pubkey_hash())
        }
    }

    fn sequence(&self) -> Sequence {
        if self.anchors {
            // The 1-block CSV of the anchor to_remote script.
            Sequence::from_height(1)
        } else {
            Sequence::ENABLE_RBF_NO_LOCKTIME
        }
    }

    fn witness(&self, sig: &[u8]) -> Witness {
        let mut w = Witness::new();
        w.push(sig);
        if self.anchors {
            w.push(self.script_code().as_bytes());
        } else {
            w.push(self.pubkey().to_bytes());
        }
        w
    }
}

/// Sweeps our to_remote output of a commitment of the counterparty's to `destination`.
pub fn build_to_remote_sweep(
    own: &OwnOutput<'_>,
    destination: ScriptBuf,
    feerate: FeeratePerKw,
) -> Result<Transaction, SweepError> {
    single_input_sweep(
        own.outpoint,
        own.value,
        own.sequence(),
        LockTime::ZERO,
        destination,
        feerate,
        |sig| own.witness(sig),
        |tx| sign_input(tx, 0, &own.script_code(), own.value, own.key),
    )
}

/// The justice transaction plus, when given, our own to_remote output of the same
/// revoked commitment: what a watchtower broadcasts for a client that is offline, so the
/// client's whole channel balance reaches its address without the client coming back.
pub fn build_penalty_tx(
    outputs: &[RevokedOutput],
    revocation_key: &SecretKey,
    own: Option<OwnOutput<'_>>,
    destination: ScriptBuf,
    feerate: FeeratePerKw,
) -> Result<Transaction, SweepError> {
    if outputs.is_empty() && own.is_none() {
        return Err(SweepError::NoInputs);
    }
    let revocation_pubkey = PublicKey::from_secret_key(secp(), revocation_key);
    let witness_for = |o: &RevokedOutput, sig: &[u8]| {
        let mut w = Witness::new();
        w.push(sig);
        match o.kind {
            RevokedOutputKind::DelayedToLocal => w.push([1u8]),
            RevokedOutputKind::Htlc => w.push(revocation_pubkey.serialize()),
        }
        w.push(o.witness_script.as_bytes());
        w
    };
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: outputs
            .iter()
            .map(|o| TxIn {
                previous_output: o.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: witness_for(o, &MAX_SIG),
            })
            .collect(),
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: destination,
        }],
    };
    if let Some(o) = &own {
        tx.input.push(TxIn {
            previous_output: o.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: o.sequence(),
            witness: o.witness(&MAX_SIG),
        });
    }
    let total: u64 = outputs.iter().map(|o| o.value.to_sat()).sum::<u64>()
        + own.as_ref().map(|o| o.value.to_sat()).unwrap_or(0);
    tx.output[0].value = Amount::from_sat(pay_out(total, tx.weight().to_wu(), feerate)?);
    let sigs: Vec<_> = outputs
        .iter()
        .enumerate()
        .map(|(i, o)| sign_input(&tx, i, &o.witness_script, o.value, revocation_key))
        .collect();
    for (i, (o, sig)) in outputs.iter().zip(sigs).enumerate() {
        tx.input[i].witness = witness_for(o, &sig_all(&sig));
    }
    if let Some(o) = own {
        let i = outputs.len();
        let sig = sign_input(&tx, i, &o.script_code(), o.value, o.key);
        tx.input[i].witness = o.witness(&sig_all(&sig));
    }
    Ok(tx)
}

/// One input, one output to `destination`: prices the fee with a maximal placeholder
/// witness, then signs with `sign` and fills in the real witness.
#[allow(clippy::too_many_arguments)]
fn single_input_sweep(
    outpoint: OutPoint,
    value: Amount,
    sequence: Sequence,
    lock_time: LockTime,
    destination: ScriptBuf,
    feerate: FeeratePerKw,
    witness: impl Fn(&[u8]) -> Witness,
    sign: impl Fn(&Transaction) -> bitcoin::secp256k1::ecdsa::Signature,
) -> Result<Transaction, SweepError> {
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time,
        input: vec![TxIn {
            previous_output: outpoint,
            script_sig: ScriptBuf::new(),
            sequence,
            witness: witness(&MAX_SIG),
        }],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: destination,
        }],
    };
    tx.output[0].value = Amount::from_sat(pay_out(value.to_sat(), tx.weight().to_wu(), feerate)?);
    let sig = sign(&tx);
    tx.input[0].witness = witness(&sig_all(&sig));
    Ok(tx)
}

/// Builds and signs the sweep of one's own to_local output (or HTLC transaction output)
/// after its CSV delay: nSequence = `to_self_delay`, witness `<sig> 0 <script>`.
pub fn build_delayed_sweep(
    outpoint: OutPoint,
    value: Amount,
    witness_script: &ScriptBuf,
    to_self_delay: u16,
    delayed_key: &SecretKey,
    destination: ScriptBuf,
    feerate: FeeratePerKw,
) -> Result<Transaction, SweepError> {
    single_input_sweep(
        outpoint,
        value,
        Sequence::from_height(to_self_delay),
        LockTime::ZERO,
        destination,
        feerate,
        |sig| {
            let mut w = Witness::new();
            w.push(sig);
            w.push([]);
            w.push(witness_script.as_bytes());
            w
        },
        |tx| sign_input(tx, 0, witness_script, value, delayed_key),
    )
}

/// Claims an HTLC output of the counterparty's commitment with our HTLC key: with the
/// preimage (witness `<sig> <preimage> <script>`) for an HTLC they offered us, or after
/// `cltv_expiry` (witness `<sig> 0 <script>`, nLockTime = expiry) for one we offered them.
/// Under anchors the script ends in `1 OP_CHECKSEQUENCEVERIFY`: nSequence 1.
#[allow(clippy::too_many_arguments)]
pub fn build_htlc_claim(
    outpoint: OutPoint,
    value: Amount,
    witness_script: &ScriptBuf,
    htlc_key: &SecretKey,
    preimage: Option<&[u8; 32]>,
    cltv_expiry: u32,
    anchors: bool,
    destination: ScriptBuf,
    feerate: FeeratePerKw,
) -> Result<Transaction, SweepError> {
    single_input_sweep(
        outpoint,
        value,
        if anchors {
            Sequence::from_height(1)
        } else {
            Sequence::ENABLE_RBF_NO_LOCKTIME
        },
        LockTime::from_consensus(if preimage.is_some() { 0 } else { cltv_expiry }),
        destination,
        feerate,
        |sig| {
            let mut w = Witness::new();
            w.push(sig);
            match preimage {
                Some(p) => w.push(p),
                None => w.push([]),
            }
            w.push(witness_script.as_bytes());
            w
        },
        |tx| sign_input(tx, 0, witness_script, value, htlc_key),
    )
}
