//! Building both sides' commitment transactions for a view of the update log, with the
//! keys of a commitment number or point; signing the counterparty's and verifying the
//! signatures on ours (BOLT 3).

use super::{Channel, ChannelError, View};
use crate::commitment::{build_commitment, CommitmentHtlc, CommitmentParams, CommitmentTx};
use crate::keys::{
    derive_privkey, derive_revocation_pubkey_with_basepoint_secret,
    derive_revocation_pubkey_with_commitment_secret, secp, CommitmentKeys,
};
use crate::sign::{
    htlc_remote_sighash_type, sign_input, sign_input_with, verify_input, verify_input_with,
};
use crate::types::{CommitmentNumber, Side};
use bitcoin::secp256k1::{ecdsa::Signature, PublicKey, SecretKey};

impl Channel {
    // ---- building commitments ------------------------------------------------------

    pub(super) fn commitment_htlcs(view: &View, holder: Side) -> Vec<CommitmentHtlc> {
        view.htlcs
            .iter()
            .map(|h| CommitmentHtlc {
                id: h.id,
                offered: h.offerer == holder,
                amount: h.amount,
                payment_hash: h.payment_hash,
                cltv_expiry: h.cltv_expiry,
            })
            .collect()
    }

    pub(super) fn local_params_for(&self, number: u64, view: &View) -> CommitmentParams {
        CommitmentParams {
            funding_outpoint: self.s.setup.funding_outpoint,
            funding_pubkeys: (
                self.local_basepoints.funding_pubkey,
                self.s.setup.remote_basepoints.funding_pubkey,
            ),
            number: CommitmentNumber(number),
            obscure_factor: self.s.obscure,
            to_self_delay: self.s.setup.remote_params.to_self_delay,
            dust_limit_sat: self.s.setup.local_params.dust_limit_sat,
            feerate: view.feerate,
            holder_is_funder: self.s.setup.is_funder,
            anchors: self.s.setup.anchors,
        }
    }

    pub(super) fn build_local(
        &self,
        number: u64,
        keys: &CommitmentKeys,
        view: &View,
    ) -> CommitmentTx {
        build_commitment(
            &self.local_params_for(number, view),
            keys,
            view.local,
            view.remote,
            &Self::commitment_htlcs(view, Side::Local),
        )
    }

    pub(super) fn build_remote(
        &self,
        number: u64,
        keys: &CommitmentKeys,
        view: &View,
    ) -> CommitmentTx {
        let params = CommitmentParams {
            funding_pubkeys: (
                self.s.setup.remote_basepoints.funding_pubkey,
                self.local_basepoints.funding_pubkey,
            ),
            to_self_delay: self.s.setup.local_params.to_self_delay,
            dust_limit_sat: self.s.setup.remote_params.dust_limit_sat,
            holder_is_funder: !self.s.setup.is_funder,
            ..self.local_params_for(number, view)
        };
        build_commitment(
            &params,
            keys,
            view.remote,
            view.local,
            &Self::commitment_htlcs(view, Side::Remote),
        )
    }

    pub(super) fn local_keys_for(&self, number: u64) -> CommitmentKeys {
        let secret =
            SecretKey::from_slice(&self.secrets.per_commitment_secret(CommitmentNumber(number)))
                .expect("per-commitment secret is a valid key");
        let point = if number == self.s.local_number + 1 {
            self.s.next_local_point
        } else {
            secret.public_key(secp())
        };
        let revocation_key = derive_revocation_pubkey_with_commitment_secret(
            &self.s.setup.remote_basepoints.revocation_basepoint,
            &secret,
            &point,
        );
        CommitmentKeys::derive_with_revocation_key(
            &point,
            &self.local_basepoints,
            &self.s.setup.remote_basepoints,
            self.s.setup.static_remotekey,
            revocation_key,
        )
    }

    pub(super) fn remote_keys_for(&self, point: &PublicKey) -> CommitmentKeys {
        let revocation_key = derive_revocation_pubkey_with_basepoint_secret(
            &self.secrets.revocation_basepoint_secret,
            &self.local_basepoints.revocation_basepoint,
            point,
        );
        CommitmentKeys::derive_with_revocation_key(
            point,
            &self.s.setup.remote_basepoints,
            &self.local_basepoints,
            self.s.setup.static_remotekey,
            revocation_key,
        )
    }

    /// Signs the remote's commitment: funding signature and one signature per HTLC
    /// transaction, in output order.
    pub(super) fn sign_remote(&self, c: &CommitmentTx) -> (Signature, Vec<Signature>) {
        let sig = sign_input(
            &c.tx,
            0,
            &self.s.funding_script,
            self.funding_value(),
            &self.secrets.funding_key,
        );
        let htlc_key = derive_privkey(
            &self.secrets.htlc_basepoint_secret,
            &c.keys.per_commitment_point,
        );
        let htlc_sigs = (0..c.htlcs.len())
            .map(|i| {
                let out = &c.htlcs[i];
                sign_input_with(
                    &c.htlc_tx(i),
                    0,
                    &out.witness_script,
                    c.output_value(out.vout),
                    &htlc_key,
                    htlc_remote_sighash_type(c.anchors),
                )
            })
            .collect();
        (sig, htlc_sigs)
    }

    pub(super) fn verify_local(
        &self,
        c: &CommitmentTx,
        sig: &Signature,
        htlc_sigs: &[Signature],
    ) -> Result<(), ChannelError> {
        if !verify_input(
            &c.tx,
            0,
            &self.s.funding_script,
            self.funding_value(),
            sig,
            &self.s.setup.remote_basepoints.funding_pubkey,
        ) {
            return Err(ChannelError::InvalidCommitmentSignature);
        }
        if htlc_sigs.len() != c.htlcs.len() {
            return Err(ChannelError::WrongHtlcSignatureCount {
                expected: c.htlcs.len(),
                got: htlc_sigs.len(),
            });
        }
        for (i, (out, s)) in c.htlcs.iter().zip(htlc_sigs).enumerate() {
            if !verify_input_with(
                &c.htlc_tx(i),
                0,
                &out.witness_script,
                c.output_value(out.vout),
                s,
                &c.keys.remote_htlc_key,
                htlc_remote_sighash_type(c.anchors),
            ) {
                return Err(ChannelError::InvalidHtlcSignature(i));
            }
        }
        Ok(())
    }
}
