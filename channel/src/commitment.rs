//! BOLT 3 commitment transactions and the HTLC-success / HTLC-timeout transactions that
//! spend their HTLC outputs. Every builder is a pure function of its inputs.

use crate::keys::CommitmentKeys;
use crate::script::{
    anchor_script, offered_htlc_script, received_htlc_script, to_local_script,
    to_remote_script_pubkey,
};
use crate::types::{CommitmentNumber, FeeratePerKw, HtlcId, Msat, PaymentHash};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::PublicKey;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};

/// BOLT 3 "Fees": weight of a commitment transaction with no HTLC outputs.
pub const COMMITMENT_BASE_WEIGHT: u64 = 724;
/// BOLT 3 "Fees": weight added by each untrimmed HTLC output.
pub const COMMITMENT_WEIGHT_PER_HTLC: u64 = 172;
/// BOLT 3 "Fees": weight of an HTLC-timeout transaction.
pub const HTLC_TIMEOUT_WEIGHT: u64 = 663;
/// BOLT 3 "Fees": weight of an HTLC-success transaction.
pub const HTLC_SUCCESS_WEIGHT: u64 = 703;
/// BOLT 3 "Fees", option_anchors: weight of a commitment transaction with no HTLC outputs.
pub const COMMITMENT_BASE_WEIGHT_ANCHORS: u64 = 1124;
/// BOLT 3 option_anchors: the value of each anchor output, taken from the funder.
pub const ANCHOR_OUTPUT_SAT: u64 = 330;

/// BOLT 3 commitment number obscuring factor: the low 48 bits of
/// `SHA256(payment_basepoint from open_channel || payment_basepoint from accept_channel)`.
pub fn obscure_factor(
    funder_payment_basepoint: &PublicKey,
    fundee_payment_basepoint: &PublicKey,
) -> u64 {
    let mut engine = sha256::Hash::engine();
    engine.input(&funder_payment_basepoint.serialize());
    engine.input(&fundee_payment_basepoint.serialize());
    let h = sha256::Hash::from_engine(engine).to_byte_array();
    let mut v = [0u8; 8];
    v[2..].copy_from_slice(&h[26..32]);
    u64::from_be_bytes(v)
}

/// An HTLC as seen from the holder of a commitment transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitmentHtlc {
    /// The id given by the node that offered it.
    pub id: HtlcId,
    /// True when the holder offered (pays) this HTLC.
    pub offered: bool,
    /// The HTLC's value.
    pub amount: Msat,
    /// The hash the HTLC is locked to.
    pub payment_hash: PaymentHash,
    /// The absolute block height after which an offered HTLC can time out.
    pub cltv_expiry: u32,
}

impl CommitmentHtlc {
    /// The fee of the second-stage transaction that spends this HTLC's output: zero under
    /// option_anchors_zero_fee_htlc_tx (its fee is brought by another input).
    fn second_stage_fee(&self, feerate: FeeratePerKw, anchors: bool) -> u64 {
        if anchors {
            0
        } else if self.offered {
            feerate.fee_for_weight(HTLC_TIMEOUT_WEIGHT)
        } else {
            feerate.fee_for_weight(HTLC_SUCCESS_WEIGHT)
        }
    }

    /// BOLT 3 "Trimmed Outputs": the HTLC is trimmed when its value minus the fee of its
    /// second-stage transaction is below the holder's dust limit.
    pub fn is_trimmed(&self, dust_limit_sat: u64, feerate: FeeratePerKw, anchors: bool) -> bool {
        let fee = self.second_stage_fee(feerate, anchors);
        self.amount.to_sat() < dust_limit_sat.saturating_add(fee)
    }
}

/// What a commitment transaction is made of, besides its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitmentParams {
    /// The funding output this commitment spends.
    pub funding_outpoint: OutPoint,
    /// The witness script of the funding output is made from these.
    pub funding_pubkeys: (PublicKey, PublicKey),
    /// The commitment number (0 for the first).
    pub number: CommitmentNumber,
    /// The XOR mask of the commitment number ([`obscure_factor`]).
    pub obscure_factor: u64,
    /// CSV delay on the holder's to_local output (set by the counterparty).
    pub to_self_delay: u16,
    /// The holder's dust limit.
    pub dust_limit_sat: u64,
    /// The commitment's fee rate.
    pub feerate: FeeratePerKw,
    /// Whether the holder opened the channel (and so pays the fee).
    pub holder_is_funder: bool,
    /// option_anchors_zero_fee_htlc_tx: anchor outputs, a CSV of 1 on to_remote and the
    /// HTLC outputs, zero-fee HTLC transactions.
    pub anchors: bool,
}

/// One HTLC output of a built commitment transaction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HtlcOutput {
    /// The HTLC.
    pub htlc: CommitmentHtlc,
    /// Its output index in the commitment transaction.
    pub vout: u32,
    /// The output's witness script.
    pub witness_script: ScriptBuf,
}

/// A built, unsigned commitment transaction and what is needed to spend its outputs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitmentTx {
    /// The transaction, without witness.
    pub tx: Transaction,
    /// The keys it was built with.
    pub keys: CommitmentKeys,
    /// The untrimmed HTLC outputs, in output order.
    pub htlcs: Vec<HtlcOutput>,
    /// to_local: output index and witness script, when not trimmed.
    pub to_local: Option<(u32, ScriptBuf)>,
    /// to_remote: output index, when not trimmed.
    pub to_remote: Option<u32>,
    /// The fee the funder paid (trimmed HTLC value also goes to fees).
    pub fee_sat: u64,
    /// The CSV delay on to_local and on the HTLC transactions' outputs.
    pub to_self_delay: u16,
    /// The fee rate, used again for the HTLC transactions.
    pub feerate: FeeratePerKw,
    /// Built under option_anchors_zero_fee_htlc_tx.
    #[serde(default)]
    pub anchors: bool,
}

impl CommitmentTx {
    /// The commitment transaction's id.
    pub fn txid(&self) -> Txid {
        self.tx.compute_txid()
    }

    /// Value of output `vout`.
    pub fn output_value(&self, vout: u32) -> Amount {
        self.tx.output[vout as usize].value
    }

    /// The unsigned HTLC-success or HTLC-timeout transaction for `htlcs[i]`.
    pub fn htlc_tx(&self, i: usize) -> Transaction {
        let out = &self.htlcs[i];
        build_htlc_tx(
            OutPoint::new(self.txid(), out.vout),
            &out.htlc,
            &self.keys,
            self.to_self_delay,
            self.feerate,
            self.anchors,
        )
    }
}

/// BOLT 3 base fee: `feerate_per_kw * (724 + 172 * num_untrimmed_htlc_outputs) / 1000`,
/// with 1124 in place of 724 under option_anchors.
pub fn commitment_fee_sat(feerate: FeeratePerKw, untrimmed_htlcs: usize, anchors: bool) -> u64 {
    let base = if anchors {
        COMMITMENT_BASE_WEIGHT_ANCHORS
    } else {
        COMMITMENT_BASE_WEIGHT
    };
    feerate.fee_for_weight(base + COMMITMENT_WEIGHT_PER_HTLC * untrimmed_htlcs as u64)
}

/// The witness script of `htlc`'s output in a commitment built with `keys` (BOLT 3
/// "Offered HTLC Outputs" / "Received HTLC Outputs", seen from the holder).
pub fn htlc_witness_script(
    keys: &CommitmentKeys,
    htlc: &CommitmentHtlc,
    anchors: bool,
) -> ScriptBuf {
    if htlc.offered {
        offered_htlc_script(keys, &htlc.payment_hash, anchors)
    } else {
        received_htlc_script(keys, &htlc.payment_hash, htlc.cltv_expiry, anchors)
    }
}

/// What the funder gives up besides the commitment fee: the two anchors under
/// option_anchors.
pub fn anchors_cost_sat(anchors: bool) -> u64 {
    if anchors {
        2 * ANCHOR_OUTPUT_SAT
    } else {
        0
    }
}

/// Builds the holder's commitment transaction (BOLT 3 "Commitment Transaction
/// Construction"). `to_local`/`to_remote` are the balances before the fee; `htlcs` are
/// seen from the holder's side.
pub fn build_commitment(
    params: &CommitmentParams,
    keys: &CommitmentKeys,
    to_local: Msat,
    to_remote: Msat,
    htlcs: &[CommitmentHtlc],
) -> CommitmentTx {
    let anchors = params.anchors;
    let untrimmed: Vec<&CommitmentHtlc> = htlcs
        .iter()
        .filter(|h| !h.is_trimmed(params.dust_limit_sat, params.feerate, anchors))
        .collect();
    let fee_sat = commitment_fee_sat(params.feerate, untrimmed.len(), anchors);
    let fee = Msat(
        fee_sat
            .saturating_add(anchors_cost_sat(anchors))
            .saturating_mul(1000),
    );
    let (to_local, to_remote) = if params.holder_is_funder {
        (Msat(to_local.0.saturating_sub(fee.0)), to_remote)
    } else {
        (to_local, Msat(to_remote.0.saturating_sub(fee.0)))
    };

    // (value, script_pubkey, cltv for tie-breaks, what the output is)
    enum Kind {
        ToLocal(ScriptBuf),
        ToRemote,
        Anchor,
        Htlc(CommitmentHtlc, ScriptBuf),
    }
    let mut outputs: Vec<(TxOut, u32, Kind)> = Vec::with_capacity(untrimmed.len() + 2);
    for h in &untrimmed {
        let ws = htlc_witness_script(keys, h, anchors);
        let txout = TxOut {
            value: Amount::from_sat(h.amount.to_sat()),
            script_pubkey: ScriptBuf::new_p2wsh(&ws.wscript_hash()),
        };
        outputs.push((txout, h.cltv_expiry, Kind::Htlc(**h, ws)));
    }
    let has_htlcs = !untrimmed.is_empty();
    let to_local_untrimmed = to_local.to_sat() >= params.dust_limit_sat;
    let to_remote_untrimmed = to_remote.to_sat() >= params.dust_limit_sat;
    if to_local_untrimmed {
        let ws = to_local_script(
            &keys.revocation_key,
            params.to_self_delay,
            &keys.local_delayed_key,
        );
        let txout = TxOut {
            value: Amount::from_sat(to_local.to_sat()),
            script_pubkey: ScriptBuf::new_p2wsh(&ws.wscript_hash()),
        };
        outputs.push((txout, 0, Kind::ToLocal(ws)));
    }
    if to_remote_untrimmed {
        let txout = TxOut {
            value: Amount::from_sat(to_remote.to_sat()),
            script_pubkey: to_remote_script_pubkey(&keys.to_remote_key, anchors),
        };
        outputs.push((txout, 0, Kind::ToRemote));
    }
    // BOLT 3: each side's anchor, keyed to its funding pubkey, when that side has an
    // output or any HTLC is untrimmed.
    if anchors {
        let (holder_funding, counterparty_funding) = params.funding_pubkeys;
        for (present, key) in [
            (to_local_untrimmed || has_htlcs, holder_funding),
            (to_remote_untrimmed || has_htlcs, counterparty_funding),
        ] {
            if present {
                let txout = TxOut {
                    value: Amount::from_sat(ANCHOR_OUTPUT_SAT),
                    script_pubkey: ScriptBuf::new_p2wsh(&anchor_script(&key).wscript_hash()),
                };
                outputs.push((txout, 0, Kind::Anchor));
            }
        }
    }
    // BOLT 3 "Transaction Output Ordering": BIP 69 (value, then scriptPubKey), and for
    // identical HTLC outputs, increasing cltv_expiry.
    outputs.sort_by(|a, b| {
        (a.0.value, a.0.script_pubkey.as_bytes(), a.1).cmp(&(
            b.0.value,
            b.0.script_pubkey.as_bytes(),
            b.1,
        ))
    });

    let obscured = params.number.0 ^ params.obscure_factor;
    let tx_in = TxIn {
        previous_output: params.funding_outpoint,
        script_sig: ScriptBuf::new(),
        sequence: Sequence((0x80 << 24) | ((obscured >> 24) as u32 & 0x00ff_ffff)),
        witness: Witness::new(),
    };
    let lock_time = LockTime::from_consensus((0x20 << 24) | (obscured as u32 & 0x00ff_ffff));

    let mut tx_outs = Vec::with_capacity(outputs.len());
    let mut htlc_outputs = Vec::new();
    let mut to_local_out = None;
    let mut to_remote_out = None;
    for (vout, (txout, _, kind)) in outputs.into_iter().enumerate() {
        let vout = vout as u32;
        match kind {
            Kind::ToLocal(ws) => to_local_out = Some((vout, ws)),
            Kind::ToRemote => to_remote_out = Some(vout),
            Kind::Anchor => {}
            Kind::Htlc(htlc, witness_script) => htlc_outputs.push(HtlcOutput {
                htlc,
                vout,
                witness_script,
            }),
        }
        tx_outs.push(txout);
    }
    CommitmentTx {
        tx: Transaction {
            version: Version::TWO,
            lock_time,
            input: vec![tx_in],
            output: tx_outs,
        },
        keys: *keys,
        htlcs: htlc_outputs,
        to_local: to_local_out,
        to_remote: to_remote_out,
        fee_sat,
        to_self_delay: params.to_self_delay,
        feerate: params.feerate,
        anchors,
    }
}

/// Builds the unsigned HTLC-timeout (for an offered HTLC) or HTLC-success (for a
/// received HTLC) transaction spending `outpoint` of the holder's commitment (BOLT 3
/// "HTLC-Timeout and HTLC-Success Transactions"). Under option_anchors it pays no fee and
/// its input has nSequence 1 (the HTLC output's CSV).
pub fn build_htlc_tx(
    outpoint: OutPoint,
    htlc: &CommitmentHtlc,
    keys: &CommitmentKeys,
    to_self_delay: u16,
    feerate: FeeratePerKw,
    anchors: bool,
) -> Transaction {
    let fee = htlc.second_stage_fee(feerate, anchors);
    let lock_time = if htlc.offered {
        LockTime::from_consensus(htlc.cltv_expiry)
    } else {
        LockTime::ZERO
    };
    let ws = to_local_script(&keys.revocation_key, to_self_delay, &keys.local_delayed_key);
    Transaction {
        version: Version::TWO,
        lock_time,
        input: vec![TxIn {
            previous_output: outpoint,
            script_sig: ScriptBuf::new(),
            sequence: if anchors { Sequence(1) } else { Sequence::ZERO },
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(htlc.amount.to_sat().saturating_sub(fee)),
            script_pubkey: ScriptBuf::new_p2wsh(&ws.wscript_hash()),
        }],
    }
}
