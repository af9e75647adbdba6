//! Justice against a revoked commitment of the counterparty's (BOLT 5, "Revoked
//! Transaction Close Handling"): every output it can take is taken with the revocation
//! key, each in a transaction of its own, so that the cheater spending one of them first
//! (its pre-signed HTLC-success or HTLC-timeout, broadcast together with the revoked
//! commitment) invalidates only that one; the output of such a second-stage transaction
//! pays the same revocable script as to_local and is taken in turn.

use super::{Channel, ChannelError, RevokedCommitment};
use crate::commitment::CommitmentTx;
use crate::keys::{derive_revocation_privkey, point_from_secret};
use crate::sweep::{build_justice_tx, RevokedOutput, RevokedOutputKind, SweepError};
use crate::types::FeeratePerKw;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{OutPoint, ScriptBuf, Transaction};

impl Channel {
    /// The revocation private key of a revoked commitment, after checking its secret.
    fn revocation_privkey(&self, revoked: &RevokedCommitment) -> Result<SecretKey, ChannelError> {
        let secret = SecretKey::from_slice(&revoked.per_commitment_secret)
            .map_err(|_| ChannelError::InvalidRevocationSecret)?;
        if point_from_secret(&revoked.per_commitment_secret)
            != revoked.commitment.keys.per_commitment_point
        {
            return Err(ChannelError::InvalidRevocationSecret);
        }
        Ok(derive_revocation_privkey(
            &self.secrets.revocation_basepoint_secret,
            &secret,
        ))
    }

    /// The justice transaction against a revoked remote commitment: to_local and every
    /// HTLC output in one transaction to `destination`.
    pub fn justice_tx(
        &self,
        revoked: &RevokedCommitment,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Result<Transaction, ChannelError> {
        let key = self.revocation_privkey(revoked)?;
        Ok(build_justice_tx(
            &revoked_outputs(&revoked.commitment),
            &key,
            destination,
            feerate,
        )?)
    }

    /// Justice output by output: one transaction for to_local and one per HTLC output
    /// of the revoked commitment, each to `destination`, at `rate(output is an HTLC)`. An
    /// output worth less than its own transaction's fee is left out (it is not worth
    /// claiming, and the cheater cannot gain by taking it).
    pub fn justice_txs(
        &self,
        revoked: &RevokedCommitment,
        destination: ScriptBuf,
        rate: impl Fn(bool) -> FeeratePerKw,
    ) -> Result<Vec<Transaction>, ChannelError> {
        let key = self.revocation_privkey(revoked)?;
        let mut txs = Vec::new();
        for output in revoked_outputs(&revoked.commitment) {
            let htlc = output.kind == RevokedOutputKind::Htlc;
            match build_justice_tx(&[output], &key, destination.clone(), rate(htlc)) {
                Ok(tx) => txs.push(tx),
                Err(SweepError::ValueBelowFee { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(txs)
    }

    /// The justice transaction taking only output `vout` of the revoked commitment (to
    /// replace one at a higher `feerate`); `None` when that output is not one the
    /// revocation key takes.
    pub fn justice_tx_for_output(
        &self,
        revoked: &RevokedCommitment,
        vout: u32,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Option<Result<Transaction, ChannelError>> {
        let output = revoked_outputs(&revoked.commitment)
            .into_iter()
            .find(|o| o.outpoint.vout == vout)?;
        Some(
            self.revocation_privkey(revoked)
                .and_then(|key| Ok(build_justice_tx(&[output], &key, destination, feerate)?)),
        )
    }

    /// When `spender` spent HTLC outputs of the revoked commitment through the cheater's
    /// own path (its pre-signed HTLC-success or HTLC-timeout transaction, one or several
    /// inputs with SIGHASH_SINGLE under anchors): the transaction taking, with the
    /// revocation key, every output of `spender` that pays the revoked commitment's
    /// delayed script (input *i* pays output *i*). `None` when `spender` took nothing of
    /// that kind (it is ours, or it spent no HTLC output of that commitment).
    pub fn second_stage_justice(
        &self,
        revoked: &RevokedCommitment,
        spender: &Transaction,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Option<Result<Transaction, ChannelError>> {
        let outputs = second_stage_outputs(&revoked.commitment, spender);
        if outputs.is_empty() {
            return None;
        }
        Some(
            self.revocation_privkey(revoked)
                .and_then(|key| Ok(build_justice_tx(&outputs, &key, destination, feerate)?)),
        )
    }

    /// The penalty for a revoked commitment as a watchtower should hold it: to_local
    /// with the revocation key plus our own to_remote output of that commitment, both to
    /// `destination`, so the tower alone returns both balances to us. The HTLC outputs
    /// are left out, as LND's towers do: a tower holds one transaction per commitment,
    /// and the cheater could invalidate a penalty that spends them by confirming her
    /// HTLC-success or HTLC-timeout first, which would cost us to_local as well. They,
    /// and the second-stage outputs, are the node's own justice's to take.
    pub fn penalty_tx(
        &self,
        revoked: &RevokedCommitment,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Result<Transaction, ChannelError> {
        let key = self.revocation_privkey(revoked)?;
        let own = revoked
            .commitment
            .to_remote
            .map(|vout| crate::sweep::OwnOutput {
                outpoint: OutPoint::new(revoked.commitment.txid(), vout),
                value: revoked.commitment.output_value(vout),
                key: &self.secrets.payment_basepoint_secret,
                anchors: revoked.commitment.anchors,
            });
        let uncontested: Vec<RevokedOutput> = revoked_outputs(&revoked.commitment)
            .into_iter()
            .filter(|o| o.kind == RevokedOutputKind::DelayedToLocal)
            .collect();
        Ok(crate::sweep::build_penalty_tx(
            &uncontested,
            &key,
            own,
            destination,
            feerate,
        )?)
    }
}

/// The outputs of a (revoked) commitment that its revocation key can take.
pub fn revoked_outputs(c: &CommitmentTx) -> Vec<RevokedOutput> {
    let txid = c.txid();
    let mut outs = Vec::with_capacity(c.htlcs.len() + 1);
    if let Some((vout, ws)) = &c.to_local {
        outs.push(RevokedOutput {
            outpoint: OutPoint::new(txid, *vout),
            value: c.output_value(*vout),
            witness_script: ws.clone(),
            kind: RevokedOutputKind::DelayedToLocal,
        });
    }
    for h in &c.htlcs {
        outs.push(RevokedOutput {
            outpoint: OutPoint::new(txid, h.vout),
            value: c.output_value(h.vout),
            witness_script: h.witness_script.clone(),
            kind: RevokedOutputKind::Htlc,
        });
    }
    outs
}

/// The outputs of `spender` (an HTLC-success or HTLC-timeout transaction of the
/// commitment `c`'s holder) that pay `c`'s revocable delayed script: BOLT 3 gives the
/// second-stage output the same script as to_local (revocation key, the holder's
/// delayed key, the same to_self_delay).
pub fn second_stage_outputs(c: &CommitmentTx, spender: &Transaction) -> Vec<RevokedOutput> {
    let txid = c.txid();
    let ws = crate::script::to_local_script(
        &c.keys.revocation_key,
        c.to_self_delay,
        &c.keys.local_delayed_key,
    );
    let spk = ScriptBuf::new_p2wsh(&ws.wscript_hash());
    let spender_txid = spender.compute_txid();
    let mut outs = Vec::new();
    for (i, input) in spender.input.iter().enumerate() {
        let spends_htlc = input.previous_output.txid == txid
            && c.htlcs.iter().any(|h| h.vout == input.previous_output.vout);
        match spender.output.get(i) {
            Some(o) if spends_htlc && o.script_pubkey == spk => outs.push(RevokedOutput {
                outpoint: OutPoint::new(spender_txid, i as u32),
                value: o.value,
                witness_script: ws.clone(),
                kind: RevokedOutputKind::DelayedToLocal,
            }),
            _ => {}
        }
    }
    outs
}
