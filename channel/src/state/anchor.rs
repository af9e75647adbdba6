//! Our anchor on our own commitment (BOLT 3 option_anchors, "to_local_anchor"): the
//! output a child transaction spends to pay for the commitment (CPFP), signed with our
//! funding key.

use super::{Channel, ChannelError};
use crate::commitment::ANCHOR_OUTPUT_SAT;
use crate::script::anchor_script;
use crate::sign::sign_input;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, Witness};

/// Weight of the witness of an anchor input with the largest signature: item count,
/// signature (73 with its sighash byte) and the 40-byte witness script, each with its
/// length byte.
pub const ANCHOR_INPUT_WITNESS_WEIGHT: u64 = 1 + 1 + 73 + 1 + 40;

impl Channel {
    /// The witness script of our anchor.
    fn our_anchor_script(&self) -> ScriptBuf {
        anchor_script(&self.local_basepoints.funding_pubkey)
    }

    /// Our anchor output on `commitment` (our commitment on an anchor channel).
    pub fn local_anchor(&self, commitment: &Transaction) -> Option<OutPoint> {
        if !self.s.setup.anchors {
            return None;
        }
        let spk = ScriptBuf::new_p2wsh(&self.our_anchor_script().wscript_hash());
        let txid = commitment.compute_txid();
        commitment
            .output
            .iter()
            .position(|o| o.script_pubkey == spk && o.value.to_sat() == ANCHOR_OUTPUT_SAT)
            .map(|vout| OutPoint::new(txid, vout as u32))
    }

    /// A placeholder witness of the largest size for an anchor input, for fee estimates
    /// before signing.
    pub fn anchor_placeholder_witness(&self) -> Witness {
        Witness::from_slice(&[vec![0u8; 73], self.our_anchor_script().to_bytes()])
    }

    /// Signs input `input` of `tx`, which spends our anchor (SIGHASH_ALL: sign last,
    /// after every other input and output is in place).
    pub fn sign_anchor_input(
        &self,
        tx: &mut Transaction,
        input: usize,
    ) -> Result<(), ChannelError> {
        if input >= tx.input.len() {
            return Err(ChannelError::Unexpected("no such anchor input"));
        }
        let script = self.our_anchor_script();
        let sig = sign_input(
            tx,
            input,
            &script,
            Amount::from_sat(ANCHOR_OUTPUT_SAT),
            &self.secrets.funding_key,
        );
        let mut der = sig.serialize_der().to_vec();
        der.push(bitcoin::EcdsaSighashType::All as u8);
        tx.input[input].witness = Witness::from_slice(&[der, script.to_bytes()]);
        Ok(())
    }
}
