//! A revoked commitment of the counterparty's, rebuilt from its broadcast. The node does
//! not keep revoked commitments: it keeps the shachain of the secrets the counterparty
//! revealed (49 entries at most) and each HTLC once, with the range of commitment numbers
//! it was part of. When a transaction spends the funding output, its commitment number is
//! read from its locktime and sequence (BOLT 3 obscures it with the payment basepoints);
//! if the counterparty revoked that number, the secret gives every key of that
//! commitment, the scripts of to_local, to_remote and each candidate HTLC follow, and the
//! outputs are found on the transaction itself (their values are what was broadcast).

use super::{Channel, RevokedCommitment};
use crate::commitment::{htlc_witness_script, CommitmentHtlc, CommitmentTx, HtlcOutput};
use crate::keys::point_from_secret;
use crate::script::{to_local_script, to_remote_script_pubkey};
use crate::types::{CommitmentNumber, FeeratePerKw};
use bitcoin::{ScriptBuf, Transaction, Witness};

/// The commitment number BOLT 3 hides in a commitment transaction's locktime (upper byte
/// 0x20, lower 24 bits) and its input's sequence (upper byte 0x80, upper 24 bits), still
/// XORed with the obscuring factor. `None` for a transaction that is not shaped like a
/// commitment (a mutual close has neither marker).
pub fn obscured_commitment_number(tx: &Transaction) -> Option<u64> {
    let input = match tx.input.as_slice() {
        [one] => one,
        _ => return None,
    };
    let lock = tx.lock_time.to_consensus_u32();
    let seq = input.sequence.0;
    if lock >> 24 != 0x20 || seq >> 24 != 0x80 {
        return None;
    }
    Some((u64::from(seq & 0x00ff_ffff) << 24) | u64::from(lock & 0x00ff_ffff))
}

impl Channel {
    /// The number of the counterparty's commitment `tx` when `tx` spends this channel's
    /// funding output and is shaped like a commitment whose number the counterparty has
    /// revoked, with the secret it revealed for it.
    pub fn revoked_commitment_number(
        &self,
        tx: &Transaction,
    ) -> Option<(CommitmentNumber, [u8; 32])> {
        if tx.input.first()?.previous_output != self.s.setup.funding_outpoint {
            return None;
        }
        let number = CommitmentNumber(obscured_commitment_number(tx)? ^ self.s.obscure);
        // Only numbers below the counterparty's current (and, while we wait for its
        // revocation, previous) commitment can have been revoked.
        let unrevoked_from = self.s.remote_number - u64::from(self.awaiting_revoke());
        if number.0 >= unrevoked_from {
            return None;
        }
        let secret = self.s.counterparty_secrets.get(number.secret_index())?;
        Some((number, secret))
    }

    /// Rebuilds the revoked commitment `tx` of the counterparty's from the transaction
    /// itself and `candidates`, the HTLCs (seen from the counterparty, the commitment's
    /// holder) that may have been in it: those the node recorded for its commitment number.
    /// An HTLC whose output is not on `tx` was trimmed there. `None` when `tx` is not a
    /// revoked commitment of this channel (among them our own old commitments, which
    /// share the counterparty's number space but pay none of these scripts).
    pub fn revoked_from_chain(
        &self,
        tx: &Transaction,
        candidates: &[CommitmentHtlc],
    ) -> Option<RevokedCommitment> {
        let (number, secret) = self.revoked_commitment_number(tx)?;
        let keys = self.remote_keys_for(&point_from_secret(&secret));
        let anchors = self.s.setup.anchors;
        let to_self_delay = self.s.setup.local_params.to_self_delay;
        let find = |spk: &ScriptBuf, value: Option<u64>, taken: &[u32]| {
            tx.output
                .iter()
                .enumerate()
                .map(|(i, o)| (i as u32, o))
                .find(|(i, o)| {
                    o.script_pubkey == *spk
                        && value.is_none_or(|v| o.value.to_sat() == v)
                        && !taken.contains(i)
                })
                .map(|(i, _)| i)
        };

        let to_local_ws =
            to_local_script(&keys.revocation_key, to_self_delay, &keys.local_delayed_key);
        let to_local = find(
            &ScriptBuf::new_p2wsh(&to_local_ws.wscript_hash()),
            None,
            &[],
        )
        .map(|vout| (vout, to_local_ws));
        let to_remote = find(
            &to_remote_script_pubkey(&keys.to_remote_key, anchors),
            None,
            &[],
        );

        // Identical HTLCs (same hash, amount and expiry) pay the same script: each takes
        // an output of its own.
        let mut taken = Vec::new();
        let mut htlcs = Vec::new();
        for h in candidates {
            let ws = htlc_witness_script(&keys, h, anchors);
            let spk = ScriptBuf::new_p2wsh(&ws.wscript_hash());
            if let Some(vout) = find(&spk, Some(h.amount.to_sat()), &taken) {
                taken.push(vout);
                htlcs.push(HtlcOutput {
                    htlc: *h,
                    vout,
                    witness_script: ws,
                });
            }
        }
        htlcs.sort_by_key(|h| h.vout);
        // A commitment of the counterparty's has an output of its own keys (our own old
        // commitments have the same number space, but none of these scripts).
        if to_local.is_none() && to_remote.is_none() && htlcs.is_empty() {
            return None;
        }

        let mut stripped = tx.clone();
        stripped
            .input
            .iter_mut()
            .for_each(|i| i.witness = Witness::new());
        let paid_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        Some(RevokedCommitment {
            number,
            commitment: CommitmentTx {
                tx: stripped,
                keys,
                htlcs,
                to_local,
                to_remote,
                fee_sat: self.s.setup.funding_sat.saturating_sub(paid_out),
                to_self_delay,
                // Not recoverable from the transaction, and not needed: the revoked
                // commitment's own HTLC transactions are the cheater's, never ours.
                feerate: FeeratePerKw(0),
                anchors,
            },
            per_commitment_secret: secret,
        })
    }
}

impl RevokedCommitment {
    /// The HTLCs with an output on this commitment (seen from its holder, the
    /// counterparty): what the node records, once per HTLC, to rebuild it.
    pub fn htlcs(&self) -> impl Iterator<Item = &CommitmentHtlc> {
        self.commitment.htlcs.iter().map(|h| &h.htlc)
    }
}
