//! What the node builds to take its own funds out of a commitment on chain: to_remote of
//! the counterparty's commitment, to_local of ours and the outputs of our HTLC
//! transactions after their CSV delay, our HTLC transactions made ready under anchors,
//! and claims of the HTLC outputs of the counterparty's commitment. Also the signature of
//! such an output's input in a transaction that sweeps several outputs at once.

use super::{Channel, ChannelError, ViewOf};
use crate::commitment::CommitmentTx;
use crate::keys::{derive_privkey, secp};
use crate::sign::{sig_all, sign_input};
use crate::types::{CommitmentNumber, FeeratePerKw, PaymentHash, PaymentPreimage, Side};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, Witness};

impl Channel {
    /// Which of the commitments this channel can still see on chain has id `txid`: our
    /// current one (`Side::Local`), or the counterparty's latest or previous, not yet
    /// revoked, one (`Side::Remote`). Revoked ones are found through their revocation.
    pub fn commitment_by_txid(&self, txid: &bitcoin::Txid) -> Option<(Side, CommitmentTx)> {
        if let Some((_, built)) = self
            .signed_local_commitment()
            .filter(|(tx, _)| tx.compute_txid() == *txid)
        {
            return Some((Side::Local, built));
        }
        [Some(&self.s.remote_tx), self.s.remote_revocable.as_ref()]
            .into_iter()
            .flatten()
            .find(|c| c.txid() == *txid)
            .map(|c| (Side::Remote, c.clone()))
    }

    /// Sweeps our to_remote output of the counterparty's commitment `commitment` (under
    /// anchors a P2WSH with a 1-block CSV: nSequence 1). `None` if it has no such output.
    pub fn sweep_to_remote(
        &self,
        commitment: &Transaction,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Option<Result<Transaction, ChannelError>> {
        let key = &self.secrets.payment_basepoint_secret;
        let pubkey = PublicKey::from_secret_key(secp(), key);
        let anchors = self.s.setup.anchors;
        let script = if anchors {
            let ws = crate::script::to_remote_anchor_script(&pubkey);
            ScriptBuf::new_p2wsh(&ws.wscript_hash())
        } else {
            ScriptBuf::new_p2wpkh(&bitcoin::CompressedPublicKey(pubkey).wpubkey_hash())
        };
        let vout = commitment
            .output
            .iter()
            .position(|o| o.script_pubkey == script)?;
        let own = crate::sweep::OwnOutput {
            outpoint: OutPoint::new(commitment.compute_txid(), vout as u32),
            value: commitment.output[vout].value,
            key,
            anchors,
        };
        Some(
            crate::sweep::build_to_remote_sweep(&own, destination, feerate)
                .map_err(ChannelError::from),
        )
    }

    /// Sweeps to_local of our commitment `number` (as built in `commitment`) once its CSV
    /// delay has passed.
    pub fn sweep_local_to_local(
        &self,
        number: CommitmentNumber,
        commitment: &CommitmentTx,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Option<Result<Transaction, ChannelError>> {
        let (vout, ws) = commitment.to_local.as_ref()?;
        let outpoint = OutPoint::new(commitment.txid(), *vout);
        Some(
            crate::sweep::build_delayed_sweep(
                outpoint,
                commitment.output_value(*vout),
                ws,
                commitment.to_self_delay,
                &self.local_delayed_key(number),
                destination,
                feerate,
            )
            .map_err(ChannelError::from),
        )
    }
}

impl Channel {
    /// Signs input 0 of `tx` again (SIGHASH_ALL, over the whole transaction): one of our
    /// commitment's HTLC transactions ([`Self::signed_local_htlc_txs`]) to which the
    /// wallet added its fee inputs and change under option_anchors_zero_fee_htlc_tx. The
    /// counterparty's signature (`SIGHASH_SINGLE|ANYONECANPAY`) and the preimage stay;
    /// ours now commits to every input and output, so nobody can move our HTLC input into
    /// a transaction of theirs.
    pub fn sign_local_htlc_input(&self, tx: &mut Transaction) -> Result<(), ChannelError> {
        let c = self.build_local(
            self.s.local_number,
            &self.s.local_keys,
            &self.s.log.view(ViewOf::CurrentLocal),
        );
        let input = tx.input.first().ok_or(ChannelError::NotOurHtlcTx)?;
        let out = c
            .htlcs
            .iter()
            .find(|h| input.previous_output == OutPoint::new(c.txid(), h.vout))
            .ok_or(ChannelError::NotOurHtlcTx)?;
        let old: Vec<Vec<u8>> = input.witness.iter().map(|w| w.to_vec()).collect();
        if old.len() != 5 {
            return Err(ChannelError::NotOurHtlcTx);
        }
        let htlc_key = derive_privkey(
            &self.secrets.htlc_basepoint_secret,
            &c.keys.per_commitment_point,
        );
        let local_sig = sign_input(
            tx,
            0,
            &out.witness_script,
            c.output_value(out.vout),
            &htlc_key,
        );
        let mut w = bitcoin::Witness::new();
        w.push(&old[0]);
        w.push(&old[1]);
        w.push(
            bitcoin::ecdsa::Signature {
                signature: local_sig,
                sighash_type: bitcoin::EcdsaSighashType::All,
            }
            .to_vec(),
        );
        w.push(&old[3]);
        w.push(&old[4]);
        tx.input[0].witness = w;
        Ok(())
    }

    /// The CSV-delayed sweep to `destination` of output 0 of `htlc_tx`, one of our
    /// commitment's HTLC-timeout or HTLC-success transactions
    /// ([`Self::signed_local_htlc_txs`]), as broadcast (under anchors with the wallet's fee
    /// inputs, which change its txid).
    pub fn sweep_local_htlc_output(
        &self,
        htlc_tx: &Transaction,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Result<Transaction, ChannelError> {
        let number = self.local_commitment_number();
        let key = self.local_delayed_key(number);
        let keys = self.s.local_keys;
        let ws = crate::script::to_local_script(
            &keys.revocation_key,
            self.s.setup.remote_params.to_self_delay,
            &keys.local_delayed_key,
        );
        crate::sweep::build_delayed_sweep(
            OutPoint::new(htlc_tx.compute_txid(), 0),
            htlc_tx.output[0].value,
            &ws,
            self.s.setup.remote_params.to_self_delay,
            &key,
            destination,
            feerate,
        )
        .map_err(ChannelError::from)
    }

    /// Whether the channel runs option_anchors_zero_fee_htlc_tx: its HTLC transactions
    /// ([`Self::signed_local_htlc_txs`]) then pay no fee and need wallet inputs.
    pub fn anchors(&self) -> bool {
        self.s.setup.anchors
    }

    /// Claims of the HTLC outputs of the counterparty's commitment `commitment_txid` (its
    /// latest, or the one before while it is not yet revoked): HTLCs it offered us whose
    /// preimage we know, at once; HTLCs we offered it, after their cltv_expiry.
    pub fn remote_htlc_claims(
        &self,
        commitment_txid: &bitcoin::Txid,
        preimage_for: impl Fn(&PaymentHash) -> Option<PaymentPreimage>,
        destination: ScriptBuf,
        feerate: FeeratePerKw,
    ) -> Vec<Transaction> {
        let Some(c) = [Some(&self.s.remote_tx), self.s.remote_revocable.as_ref()]
            .into_iter()
            .flatten()
            .find(|c| c.txid() == *commitment_txid)
        else {
            return vec![];
        };
        let key = derive_privkey(
            &self.secrets.htlc_basepoint_secret,
            &c.keys.per_commitment_point,
        );
        let mut out = Vec::new();
        for h in &c.htlcs {
            let outpoint = OutPoint::new(*commitment_txid, h.vout);
            let value = c.output_value(h.vout);
            let claim = if h.htlc.offered {
                // They offered it: ours with the preimage.
                match preimage_for(&h.htlc.payment_hash) {
                    Some(p) => crate::sweep::build_htlc_claim(
                        outpoint,
                        value,
                        &h.witness_script,
                        &key,
                        Some(&p.0),
                        0,
                        c.anchors,
                        destination.clone(),
                        feerate,
                    ),
                    None => continue,
                }
            } else {
                // We offered it: ours again after the timeout.
                crate::sweep::build_htlc_claim(
                    outpoint,
                    value,
                    &h.witness_script,
                    &key,
                    None,
                    h.htlc.cltv_expiry,
                    c.anchors,
                    destination.clone(),
                    feerate,
                )
            };
            if let Ok(tx) = claim {
                out.push(tx);
            }
        }
        out
    }
}

impl Channel {
    /// Signs input `index` of `tx` (SIGHASH_ALL), a transaction of the node's own that
    /// sweeps, with other inputs, an output only this channel's keys can take and that
    /// nobody else can: to_local of our current commitment or the output of one of its
    /// HTLC transactions (witness `<sig> 0 <to_local script>`), or our to_remote of a
    /// commitment of the counterparty's (`<sig> <pubkey>`, or `<sig> <script>` under
    /// anchors). `template` is the input's witness in the channel's own single-input
    /// sweep of that output ([`Self::sweep_local_to_local`], [`Self::sweep_to_remote`],
    /// [`Self::sweep_local_htlc_output`]), which says which output it is; `value` is the
    /// output's. Anything else is refused: this never signs for an HTLC or a revoked
    /// output, whose claims have deadlines and stay single.
    pub fn sign_own_sweep_input(
        &self,
        tx: &mut Transaction,
        index: usize,
        value: Amount,
        template: &Witness,
    ) -> Result<(), ChannelError> {
        if index >= tx.input.len() {
            return Err(ChannelError::NotOurSweep);
        }
        let payment_key = &self.secrets.payment_basepoint_secret;
        let payment_pubkey = PublicKey::from_secret_key(secp(), payment_key);
        let anchors = self.s.setup.anchors;
        let keys = self.s.local_keys;
        let to_local = crate::script::to_local_script(
            &keys.revocation_key,
            self.s.setup.remote_params.to_self_delay,
            &keys.local_delayed_key,
        );
        let parts: Vec<&[u8]> = template.iter().collect();
        let (key, script_code, rest): (SecretKey, ScriptBuf, Vec<&[u8]>) = match parts[..] {
            [_, script] if anchors => {
                let ws = crate::script::to_remote_anchor_script(&payment_pubkey);
                if script != ws.as_bytes() {
                    return Err(ChannelError::NotOurSweep);
                }
                (*payment_key, ws, vec![script])
            }
            [_, pubkey] if !anchors => {
                let pk = bitcoin::CompressedPublicKey(payment_pubkey);
                if pubkey != pk.to_bytes() {
                    return Err(ChannelError::NotOurSweep);
                }
                // A P2WPKH input is signed with the P2PKH script of its key hash.
                (
                    *payment_key,
                    ScriptBuf::new_p2pkh(&pk.pubkey_hash()),
                    vec![pubkey],
                )
            }
            [_, empty, script] if empty.is_empty() && script == to_local.as_bytes() => {
                let key = self.local_delayed_key(self.local_commitment_number());
                (key, to_local.clone(), vec![empty, script])
            }
            _ => return Err(ChannelError::NotOurSweep),
        };
        let sig = sign_input(tx, index, &script_code, value, &key);
        let mut w = Witness::new();
        w.push(sig_all(&sig));
        for item in rest {
            w.push(item);
        }
        tx.input[index].witness = w;
        Ok(())
    }
}
