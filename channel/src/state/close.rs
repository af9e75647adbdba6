//! BOLT 2 channel close: shutdown, then closing_signed fee negotiation.

use super::{Channel, ChannelError, ViewOf};
use crate::close::build_closing_tx;
use crate::msgs::{ClosingSigned, FeeRange, Shutdown};
use crate::sign::{funding_witness, sign_input, verify_input};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{ScriptBuf, Transaction};

/// Where the channel is in closing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShutdownState {
    local_script: Option<ScriptBuf>,
    remote_script: Option<ScriptBuf>,
    fee_range: Option<FeeRange>,
    last_sent_fee: Option<u64>,
    closing_tx: Option<Transaction>,
}

impl ShutdownState {
    /// We sent shutdown.
    pub fn local_sent(&self) -> bool {
        self.local_script.is_some()
    }
    /// We received shutdown.
    pub fn remote_received(&self) -> bool {
        self.remote_script.is_some()
    }
    /// Both sides' shutdown scripts, as far as known.
    pub fn scripts(&self) -> Vec<ScriptBuf> {
        self.local_script
            .iter()
            .chain(self.remote_script.iter())
            .cloned()
            .collect()
    }

    /// The agreed, fully signed closing transaction.
    pub fn closing_tx(&self) -> Option<&Transaction> {
        self.closing_tx.as_ref()
    }

    /// BOLT 2: after a reconnection both sides send shutdown again and fee negotiation
    /// starts over, unless a closing transaction was already agreed.
    pub(super) fn restart_after_disconnect(&mut self) {
        if self.closing_tx.is_none() {
            self.remote_script = None;
            self.fee_range = None;
            self.last_sent_fee = None;
        }
    }
}

/// What to do after a closing_signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosingOutcome {
    /// The closing_signed to send back, if any.
    pub reply: Option<ClosingSigned>,
    /// The fully signed closing transaction once both agree on the fee.
    pub closing_tx: Option<Transaction>,
}

/// BOLT 2: the scriptpubkey forms a shutdown may use (P2PKH, P2SH, P2WPKH, P2WSH, and
/// witness v1–v16 programs of 2 to 40 bytes under option_shutdown_anysegwit).
pub fn is_valid_shutdown_script(script: &ScriptBuf) -> bool {
    script.is_p2pkh()
        || script.is_p2sh()
        || script.is_p2wpkh()
        || script.is_p2wsh()
        || (script.witness_version().is_some_and(|v| v.to_num() >= 1)
            && (4..=42).contains(&script.len()))
}

impl Channel {
    /// The shutdown we sent, to send again after a reconnection (BOLT 2), if any.
    pub fn sent_shutdown(&self) -> Option<Shutdown> {
        self.s.shutdown.local_script.as_ref().map(|s| Shutdown {
            channel_id: self.s.channel_id,
            scriptpubkey: s.to_bytes(),
        })
    }

    /// Starts a cooperative close: returns the shutdown to send. Our own updates must all
    /// be signed first (BOLT 2).
    pub fn send_shutdown(&mut self, script: ScriptBuf) -> Result<Shutdown, ChannelError> {
        if self.s.shutdown.local_sent() {
            return Err(ChannelError::Unexpected("shutdown already sent"));
        }
        if !is_valid_shutdown_script(&script) {
            return Err(ChannelError::InvalidShutdownScript);
        }
        if self.s.log.remote_has_changes() {
            return Err(ChannelError::Unexpected("unsigned updates pending"));
        }
        self.s.shutdown.local_script = Some(script.clone());
        Ok(Shutdown {
            channel_id: self.s.channel_id,
            scriptpubkey: script.into_bytes(),
        })
    }

    /// Takes the remote's shutdown.
    pub fn receive_shutdown(&mut self, msg: &Shutdown) -> Result<(), ChannelError> {
        self.check_channel(&msg.channel_id)?;
        let script = ScriptBuf::from_bytes(msg.scriptpubkey.clone());
        if !is_valid_shutdown_script(&script) {
            return Err(ChannelError::InvalidShutdownScript);
        }
        match &self.s.shutdown.remote_script {
            Some(s) if *s != script => {
                return Err(ChannelError::Unexpected("shutdown script changed"))
            }
            _ => {}
        }
        self.s.shutdown.remote_script = Some(script);
        Ok(())
    }

    /// Both shutdowns exchanged and no HTLC or update left: fee negotiation may begin.
    pub fn ready_to_negotiate_close(&self) -> bool {
        self.s.shutdown.local_sent()
            && self.s.shutdown.remote_received()
            && self.s.log.updates.is_empty()
            && self.s.log.committed_htlcs.is_empty()
            && !self.awaiting_revoke()
    }

    /// The unsigned closing transaction we sign, with the funder paying `fee_sat`: outputs
    /// below our own dust limit are left out (BOLT 3 "Closing Transaction").
    fn closing_tx(&self, fee_sat: u64) -> Result<Transaction, ChannelError> {
        self.closing_variant(fee_sat, self.s.setup.local_params.dust_limit_sat, false)
    }

    /// A closing transaction with outputs below `dust_sat` left out, and the remote's
    /// output too when `drop_remote` (a signer MAY leave out its own output).
    fn closing_variant(
        &self,
        fee_sat: u64,
        dust_sat: u64,
        drop_remote: bool,
    ) -> Result<Transaction, ChannelError> {
        let (Some(local_script), Some(remote_script)) = (
            &self.s.shutdown.local_script,
            &self.s.shutdown.remote_script,
        ) else {
            return Err(ChannelError::Unexpected("shutdown not exchanged"));
        };
        let view = self.s.log.view(ViewOf::CurrentLocal);
        let (mut local, mut remote) = (view.local.to_sat(), view.remote.to_sat());
        let funder = if self.s.setup.is_funder {
            &mut local
        } else {
            &mut remote
        };
        *funder = funder
            .checked_sub(fee_sat)
            .ok_or(ChannelError::ClosingFee("fee above the funder's balance"))?;
        if drop_remote {
            remote = 0;
        }
        Ok(build_closing_tx(
            self.s.setup.funding_outpoint,
            [
                (local_script.clone(), local),
                (remote_script.clone(), remote),
            ],
            dust_sat,
        ))
    }

    /// The variant of the closing transaction the remote signed for `fee_sat`: trimmed at
    /// the remote's dust limit, with or without its own output (BOLT 3 allows both).
    fn remote_signed_variant(
        &self,
        fee_sat: u64,
        sig: &Signature,
    ) -> Result<Transaction, ChannelError> {
        let dust = self.s.setup.remote_params.dust_limit_sat;
        for drop_remote in [false, true] {
            let tx = self.closing_variant(fee_sat, dust, drop_remote)?;
            if verify_input(
                &tx,
                0,
                &self.s.funding_script,
                self.funding_value(),
                sig,
                &self.s.setup.remote_basepoints.funding_pubkey,
            ) {
                return Ok(tx);
            }
        }
        Err(ChannelError::InvalidCommitmentSignature)
    }

    fn sign_closing(&self, tx: &Transaction) -> Signature {
        sign_input(
            tx,
            0,
            &self.s.funding_script,
            self.funding_value(),
            &self.secrets.funding_key,
        )
    }

    fn closing_signed(&self, fee_sat: u64, tx: &Transaction) -> ClosingSigned {
        ClosingSigned {
            channel_id: self.s.channel_id,
            fee_satoshis: fee_sat,
            signature: self.sign_closing(tx),
            fee_range: self.s.shutdown.fee_range,
        }
    }

    fn complete_closing(&mut self, mut tx: Transaction, remote_sig: &Signature) -> Transaction {
        let local_sig = self.sign_closing(&tx);
        tx.input[0].witness = funding_witness(
            &self.s.funding_script,
            (&self.local_basepoints.funding_pubkey, &local_sig),
            (&self.s.setup.remote_basepoints.funding_pubkey, remote_sig),
        );
        self.s.shutdown.closing_tx = Some(tx.clone());
        tx
    }

    /// Sets the closing fees we accept; the funder also gets its first closing_signed,
    /// proposing `proposed_fee_sat` (clamped into the range).
    pub fn start_closing(
        &mut self,
        proposed_fee_sat: u64,
        range: FeeRange,
    ) -> Result<Option<ClosingSigned>, ChannelError> {
        if !self.ready_to_negotiate_close() {
            return Err(ChannelError::Unexpected(
                "channel not ready to negotiate a close",
            ));
        }
        if range.min_fee_satoshis > range.max_fee_satoshis {
            return Err(ChannelError::ClosingFee("empty fee range"));
        }
        self.s.shutdown.fee_range = Some(range);
        if !self.s.setup.is_funder {
            return Ok(None);
        }
        let fee = proposed_fee_sat.clamp(range.min_fee_satoshis, range.max_fee_satoshis);
        let tx = self.closing_tx(fee)?;
        self.s.shutdown.last_sent_fee = Some(fee);
        Ok(Some(self.closing_signed(fee, &tx)))
    }

    /// Takes the remote's closing_signed: agrees, counter-proposes, or finishes.
    pub fn receive_closing_signed(
        &mut self,
        msg: &ClosingSigned,
    ) -> Result<ClosingOutcome, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        let ours = self.s.shutdown.fee_range.ok_or(ChannelError::Unexpected(
            "closing_signed before start_closing",
        ))?;
        if self.s.shutdown.closing_tx.is_some() {
            return Err(ChannelError::Unexpected("closing already agreed"));
        }
        // We sign the variant the remote signed, so both signatures are on one transaction.
        let tx = self.remote_signed_variant(msg.fee_satoshis, &msg.signature)?;
        let fee = msg.fee_satoshis;
        if self.s.shutdown.last_sent_fee == Some(fee) {
            let signed = self.complete_closing(tx, &msg.signature);
            return Ok(ClosingOutcome {
                reply: None,
                closing_tx: Some(signed),
            });
        }
        let acceptable = match msg.fee_range {
            Some(theirs) => {
                let lo = theirs.min_fee_satoshis.max(ours.min_fee_satoshis);
                let hi = theirs.max_fee_satoshis.min(ours.max_fee_satoshis);
                if lo > hi {
                    return Err(ChannelError::ClosingFee("fee ranges do not overlap"));
                }
                (lo, hi)
            }
            None => (ours.min_fee_satoshis, ours.max_fee_satoshis),
        };
        if (ours.min_fee_satoshis..=ours.max_fee_satoshis).contains(&fee) {
            // Agree: echo the fee with our signature.
            let reply = self.closing_signed(fee, &tx);
            self.s.shutdown.last_sent_fee = Some(fee);
            let signed = self.complete_closing(tx, &msg.signature);
            return Ok(ClosingOutcome {
                reply: Some(reply),
                closing_tx: Some(signed),
            });
        }
        let counter = fee.clamp(acceptable.0, acceptable.1);
        let counter_tx = self.closing_tx(counter)?;
        self.s.shutdown.last_sent_fee = Some(counter);
        Ok(ClosingOutcome {
            reply: Some(self.closing_signed(counter, &counter_tx)),
            closing_tx: None,
        })
    }
}
