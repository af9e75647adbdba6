//! BOLT 2 "Message Retransmission": what survives a disconnection and what
//! channel_reestablish makes each side send again.

use super::{Channel, ChannelError, Removal, UpdateKind};
use crate::msgs::{
    ChannelReestablish, Message, UpdateAddHtlc, UpdateFailHtlc, UpdateFailMalformedHtlc, UpdateFee,
    UpdateFulfillHtlc,
};
use crate::types::{CommitmentNumber, Side};

impl Channel {
    /// On disconnection, forgets every update no commitment_signed covers (BOLT 2). Returns
    /// our own forgotten updates, which the caller may propose again.
    pub fn on_disconnect(&mut self) -> Vec<UpdateKind> {
        let before_remote_adds = self.count_adds(Side::Remote);
        let dropped = self.s.log.drop_uncommitted();
        let dropped_local_adds = dropped
            .iter()
            .filter(|k| matches!(k, UpdateKind::Add(_)))
            .count() as u64;
        let dropped_remote_adds = (before_remote_adds - self.count_adds(Side::Remote)) as u64;
        self.s.next_local_htlc_id -= dropped_local_adds;
        self.s.next_remote_htlc_id -= dropped_remote_adds;
        self.s.shutdown.restart_after_disconnect();
        dropped
    }

    fn count_adds(&self, sender: Side) -> usize {
        self.s
            .log
            .updates
            .iter()
            .filter(|u| u.sender == sender && matches!(u.kind, UpdateKind::Add(_)))
            .count()
    }

    /// Our channel_reestablish.
    pub fn reestablish_message(&self) -> ChannelReestablish {
        let next_revocation_number = if self.awaiting_revoke() {
            self.s.remote_number - 1
        } else {
            self.s.remote_number
        };
        let your_last_per_commitment_secret = match next_revocation_number.checked_sub(1) {
            Some(n) => self
                .s
                .counterparty_secrets
                .get(CommitmentNumber(n).secret_index())
                .unwrap_or([0; 32]),
            None => [0; 32],
        };
        ChannelReestablish {
            channel_id: self.s.channel_id,
            next_commitment_number: self.s.local_number + 1,
            next_revocation_number,
            your_last_per_commitment_secret,
            my_current_per_commitment_point: self.s.local_keys.per_commitment_point,
        }
    }

    /// Takes the remote's channel_reestablish and returns what must be sent again, in the
    /// order it was first sent.
    pub fn handle_reestablish(
        &mut self,
        msg: &ChannelReestablish,
    ) -> Result<Vec<Message>, ChannelError> {
        self.check_channel(&msg.channel_id)?;
        // option_data_loss_protect: a peer that expects a revocation we never sent, and
        // proves it with our own secret, holds a newer state than ours: we lost state and
        // must not broadcast our (revoked) commitment (BOLT 2).
        if msg.next_revocation_number > self.s.local_number {
            let proven = msg.next_revocation_number - 1 < (1 << 48)
                && msg.your_last_per_commitment_secret
                    == self
                        .secrets
                        .per_commitment_secret(CommitmentNumber(msg.next_revocation_number - 1));
            return Err(if proven {
                ChannelError::LocalStateLost
            } else {
                ChannelError::Reestablish("next_revocation_number ahead, secret not proven")
            });
        }
        // A peer that is behind us (it restored an old backup, or forgot the channel and
        // sends LDK's all-zero "bogus" reestablish) cannot resume: it needs us to fail the
        // channel on chain so it can take its funds.
        let behind_revocation =
            self.s.local_number >= 1 && msg.next_revocation_number < self.s.local_number - 1;
        let behind_commitment = msg.next_commitment_number < self.s.remote_number
            || (msg.next_commitment_number == self.s.remote_number && !self.awaiting_revoke());
        if behind_revocation || behind_commitment {
            return Err(ChannelError::RemoteStateLost);
        }
        // Did they get our last revoke_and_ack?
        let resend_revoke = msg.next_revocation_number + 1 == self.s.local_number;
        // They prove they know our secrets up to the one before it.
        if let Some(n) = msg.next_revocation_number.checked_sub(1) {
            if msg.your_last_per_commitment_secret
                != self.secrets.per_commitment_secret(CommitmentNumber(n))
            {
                return Err(ChannelError::Reestablish(
                    "your_last_per_commitment_secret is wrong",
                ));
            }
        }
        // Did they get our last commitment_signed?
        let resend_commitment = if msg.next_commitment_number == self.s.remote_number + 1 {
            false
        } else if self.awaiting_revoke() && msg.next_commitment_number == self.s.remote_number {
            true
        } else {
            return Err(ChannelError::Reestablish(
                "next_commitment_number ahead of what we signed",
            ));
        };

        let mut out = Vec::new();
        let revoke = resend_revoke
            .then(|| Message::RevokeAndAck(self.revoke_message(self.s.local_number - 1)));
        let commitment = if resend_commitment {
            self.retransmit_commitment()
        } else {
            vec![]
        };
        if self.s.last_sent_was_revoke {
            out.extend(commitment);
            out.extend(revoke);
        } else {
            out.extend(revoke);
            out.extend(commitment);
        }
        Ok(out)
    }

    /// Our updates in the last commitment_signed, then that commitment_signed again
    /// (deterministic signatures make it byte-identical).
    fn retransmit_commitment(&self) -> Vec<Message> {
        let mut out = Vec::new();
        for u in self
            .s
            .log
            .updates
            .iter()
            .filter(|u| u.sender == Side::Local && u.in_remote && !u.locked_remote)
        {
            let channel_id = self.s.channel_id;
            out.push(match &u.kind {
                UpdateKind::Add(h) => Message::UpdateAddHtlc(UpdateAddHtlc {
                    channel_id,
                    id: h.id.0,
                    amount_msat: h.amount.0,
                    payment_hash: h.payment_hash,
                    cltv_expiry: h.cltv_expiry,
                    onion_routing_packet: h.onion.clone(),
                    blinding_point: None,
                }),
                UpdateKind::Remove(id, Removal::Fulfill(p)) => {
                    Message::UpdateFulfillHtlc(UpdateFulfillHtlc {
                        channel_id,
                        id: id.0,
                        payment_preimage: *p,
                    })
                }
                UpdateKind::Remove(id, Removal::Fail(reason)) => {
                    Message::UpdateFailHtlc(UpdateFailHtlc {
                        channel_id,
                        id: id.0,
                        reason: reason.clone(),
                    })
                }
                UpdateKind::Remove(
                    id,
                    Removal::FailMalformed {
                        sha256_of_onion,
                        failure_code,
                    },
                ) => Message::UpdateFailMalformedHtlc(UpdateFailMalformedHtlc {
                    channel_id,
                    id: id.0,
                    sha256_of_onion: *sha256_of_onion,
                    failure_code: *failure_code,
                }),
                UpdateKind::Fee(f) => Message::UpdateFee(UpdateFee {
                    channel_id,
                    feerate_per_kw: f.0,
                }),
            });
        }
        let (signature, htlc_signatures) = self.sign_remote(&self.s.remote_tx);
        out.push(Message::CommitmentSigned(crate::msgs::CommitmentSigned {
            channel_id: self.s.channel_id,
            signature,
            htlc_signatures,
        }));
        out
    }
}
