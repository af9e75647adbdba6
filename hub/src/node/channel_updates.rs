//! Messages of an established channel (BOLT 2 normal operation and reestablishment,
//! BOLT 7 channel updates), direct payments over one channel, and the fee rates accepted
//! from the peer.

use super::pay::Failure;
use super::pay::ForwardingPolicy;
use super::{Node, NodeError};
use bitcoin::secp256k1::PublicKey;
use channel::msgs::*;
use channel::*;

use super::channel_close::{error_message, fail_on_chain};
use super::channels::{now, ChannelEntry, ChannelStatus, Effect};

/// Lowest commitment fee rate a peer may set (BOLT 2's floor: 253 sat/kw).
pub(super) const UPDATE_FEE_FLOOR: FeeratePerKw = FeeratePerKw(253);
/// A peer's update_fee may go down to the chain's estimate divided by this.
pub(super) const UPDATE_FEE_MIN_DIVISOR: u64 = 2;
/// How far above the chain's estimate a peer's update_fee may go.
pub(super) const UPDATE_FEE_MAX_MULTIPLE: u64 = 10;
/// Highest commitment fee rate a peer may set, whatever the estimate (400 sat/vB).
pub(super) const UPDATE_FEE_CEILING: FeeratePerKw = FeeratePerKw(100_000);

/// Most channel_updates kept for channels whose funding we have not yet seen confirmed.
pub(super) const MAX_PENDING_UPDATES: usize = 1024;

impl Node {
    /// Handles a message for an established channel.
    pub(super) async fn on_channel_message(
        &self,
        peer: PublicKey,
        msg: Message,
    ) -> Result<(), NodeError> {
        let id = match &msg {
            Message::ChannelReady(m) => m.channel_id,
            Message::UpdateAddHtlc(m) => m.channel_id,
            Message::UpdateFulfillHtlc(m) => m.channel_id,
            Message::UpdateFailHtlc(m) => m.channel_id,
            Message::UpdateFailMalformedHtlc(m) => m.channel_id,
            Message::UpdateFee(m) => m.channel_id,
            Message::CommitmentSigned(m) => m.channel_id,
            Message::RevokeAndAck(m) => m.channel_id,
            Message::Shutdown(m) => m.channel_id,
            Message::ClosingSigned(m) => m.channel_id,
            Message::ChannelReestablish(m) => m.channel_id,
            Message::AnnouncementSignatures(m) => m.channel_id,
            Message::ChannelUpdate(m) => return self.on_channel_update(peer, m.clone()).await,
            _ => return Ok(()),
        };
        let feerate_bounds = if matches!(msg, Message::UpdateFee(_)) {
            Some(self.acceptable_feerates().await)
        } else {
            None
        };
        // A wallet address only for a shutdown we will answer with ours: one for an unknown
        // channel, or one repeated, would push the wallet's address index past its gap.
        let shutdown_script =
            if matches!(msg, Message::Shutdown(_)) && self.needs_our_shutdown(&peer, &id).await {
                Some(self.wallet.lock().await.new_address()?.script_pubkey())
            } else {
                None
            };
        self.with_channel(&id, move |e, out| {
            if e.peer != peer {
                return Err(NodeError::UnknownChannel);
            }
            // Once our commitment is broadcast (or the channel is over, or our state is
            // known to be old), nothing may change it: a commitment_signed answered with
            // revoke_and_ack would revoke the very commitment on its way to the chain.
            let failed = e.is_failed();
            if failed && !matches!(msg, Message::ChannelReestablish(_)) {
                return Err(NodeError::ChannelRefused {
                    channel_id: id,
                    reason: "channel is closed".into(),
                });
            }
            let ch = &mut e.channel;
            match msg {
                Message::ChannelReady(m) => {
                    if !e.ready_received {
                        ch.receive_channel_ready(&m)?;
                        e.ready_received = true;
                    }
                    if m.short_channel_id.is_some() {
                        e.remote_alias = m.short_channel_id;
                    }
                    if e.ready_sent && e.status == ChannelStatus::AwaitingLock {
                        e.status = ChannelStatus::Normal;
                    }
                }
                Message::UpdateAddHtlc(m) => ch.receive_add_htlc(&m)?,
                Message::UpdateFulfillHtlc(m) => {
                    let h = ch.receive_fulfill(&m)?;
                    let id = ch.channel_id();
                    self.pay.lock().expect("pay lock").on_fulfilled(
                        id,
                        &h,
                        m.payment_preimage,
                        out,
                    );
                }
                Message::UpdateFailHtlc(m) => {
                    let h = ch.receive_fail(&m)?;
                    let id = ch.channel_id();
                    self.pay.lock().expect("pay lock").on_failed(
                        id,
                        &h,
                        Failure::Onion(m.reason),
                        out,
                    );
                }
                Message::UpdateFailMalformedHtlc(m) => {
                    let h = ch.receive_fail_malformed(&m)?;
                    let id = ch.channel_id();
                    self.pay.lock().expect("pay lock").on_failed(
                        id,
                        &h,
                        Failure::Malformed(m.failure_code, m.sha256_of_onion),
                        out,
                    );
                }
                Message::UpdateFee(m) => {
                    let (lo, hi) = feerate_bounds.expect("prepared for update_fee");
                    // An anchor commitment is bumped through its anchor, not its own fee:
                    // any rate from the relay floor is fine (LND sets at most 2,500 sat/kw
                    // on anchor channels; LDK and Core Lightning accept as low).
                    let lo = if ch.anchors() { UPDATE_FEE_FLOOR } else { lo };
                    if !(lo.0..=hi.0).contains(&m.feerate_per_kw) {
                        // BOLT 2: too low to confirm in time, or unreasonably large.
                        return Err(NodeError::Invalid(
                            "update_fee outside the acceptable range",
                        ));
                    }
                    ch.receive_update_fee(&m)?
                }
                Message::CommitmentSigned(m) => {
                    let raa = ch.receive_commitment(&m)?;
                    out.messages.push(Message::RevokeAndAck(raa));
                }
                Message::RevokeAndAck(m) => {
                    let revoked = ch.receive_revoke(&m)?;
                    out.writes.push(crate::monitor::records::revocation_write(
                        ch.channel_id(),
                        &revoked,
                    ));
                    self.queue_appointments(ch, &revoked, out);
                }
                Message::Shutdown(m) => {
                    let answer = !ch.shutdown_state().local_sent();
                    if answer && shutdown_script.is_none() {
                        return Err(NodeError::Invalid("shutdown raced with our own close"));
                    }
                    ch.receive_shutdown(&m)?;
                    if answer {
                        let script = shutdown_script.expect("checked above");
                        out.messages
                            .push(Message::Shutdown(ch.send_shutdown(script)?));
                    }
                    e.status = ChannelStatus::ShuttingDown;
                }
                Message::ClosingSigned(m) => {
                    let outcome = ch.receive_closing_signed(&m)?;
                    out.messages
                        .extend(outcome.reply.map(Message::ClosingSigned));
                    if let Some(tx) = outcome.closing_tx {
                        e.closing_tx = Some(tx.clone());
                        e.status = ChannelStatus::Closing;
                        out.effects.push(Effect::Broadcast(tx));
                    }
                }
                Message::ChannelReestablish(m) => {
                    if failed {
                        return Err(NodeError::ChannelRefused {
                            channel_id: m.channel_id,
                            reason: "channel is closed".into(),
                        });
                    }
                    match ch.handle_reestablish(&m) {
                        Ok(resend) => {
                            e.reestablished = true;
                            out.messages.extend(resend);
                            // BOLT 2: a shutdown we sent is sent again; the fee
                            // negotiation starts over once both sides have.
                            if ch.shutdown_state().closing_tx().is_none() {
                                out.messages
                                    .extend(ch.sent_shutdown().map(Message::Shutdown));
                                e.closing_started = false;
                            }
                        }
                        Err(err @ channel::state::ChannelError::LocalStateLost) => {
                            tracing::error!(channel = %m.channel_id, "{err}");
                            e.status = ChannelStatus::AwaitingRemoteClose;
                            out.messages.push(error_message(
                                m.channel_id,
                                "we lost channel state: please close the channel",
                            ));
                            return Ok(());
                        }
                        Err(err) => {
                            // The peer is behind us or its numbers prove nothing: fail the
                            // channel on chain (our latest commitment), as BOLT 2 says.
                            tracing::warn!(channel = %m.channel_id, "{err}: failing the channel");
                            out.messages
                                .push(error_message(m.channel_id, &err.to_string()));
                            fail_on_chain(e, out);
                            return Ok(());
                        }
                    }
                    if e.ready_sent
                        && ch.remote_commitment_number().0 == 0
                        && ch.local_commitment_number().0 == 0
                    {
                        let mut ready = ch.channel_ready();
                        ready.short_channel_id = Some(self.scid_alias(e.index));
                        out.messages.insert(0, Message::ChannelReady(ready));
                    }
                    // BOLT 7: announcement_signatures again until the peer's arrive.
                    self.announcement_signatures_due(e, out);
                }
                Message::AnnouncementSignatures(m) => {
                    self.on_announcement_signatures(e, &m, out)?;
                }
                _ => {}
            }
            Ok(())
        })
        .await
    }

    /// Pays `amount` to the peer of `channel_id` for `payment_hash` (a one-hop onion
    /// with no payment secret: the peer settles it if it knows the preimage); returns the
    /// preimage once the peer reveals it. Invoices are paid with [`Node::pay_invoice`].
    pub async fn pay(
        &self,
        channel_id: &ChannelId,
        amount: Msat,
        payment_hash: PaymentHash,
        cltv_expiry: u32,
    ) -> Result<PaymentPreimage, NodeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.waiters.lock().await.insert(payment_hash, tx);
        let session =
            bitcoin::secp256k1::SecretKey::new(&mut bitcoin::secp256k1::rand::thread_rng());
        let added = self
            .with_channel(channel_id, |e, out| {
                if e.status != ChannelStatus::Normal {
                    return Err(NodeError::Invalid("channel is not open for payments"));
                }
                if !e.reestablished {
                    return Err(NodeError::NotConnected);
                }
                let route = super::route::build_route(
                    &session,
                    &[],
                    e.peer,
                    amount.0,
                    cltv_expiry,
                    None,
                    &payment_hash,
                )
                .map_err(NodeError::BadRequest)?;
                let m = e
                    .channel
                    .send_add_htlc(amount, payment_hash, cltv_expiry, route.onion)?;
                // Recorded like any payment, so a failure's reason can be read back.
                let record = super::pay::PaymentRecord {
                    payment_hash,
                    bolt11: None,
                    payee: Some(e.peer),
                    amount_msat: amount.0,
                    fee_msat: 0,
                    status: "pending".into(),
                    preimage: None,
                    failure: None,
                    failure_code: None,
                    created_at: now(),
                    completed_at: None,
                    channel_id: e.channel.channel_id(),
                    htlc_id: Some(m.id),
                    shared_secrets: route.shared_secrets,
                    sent_at_ms: super::now_ms(),
                };
                self.pay.lock().expect("pay lock").put_payment(record, out);
                out.messages.push(Message::UpdateAddHtlc(m));
                Ok(())
            })
            .await;
        if let Err(e) = added {
            self.waiters.lock().await.remove(&payment_hash);
            return Err(e);
        }
        match rx.await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(why)) => Err(NodeError::PaymentFailed(why)),
            Err(_) => Err(NodeError::PaymentFailed("node stopped".into())),
        }
    }

    /// A peer's forwarding policy for one of our channels with it (BOLT 7 channel_update
    /// sent directly for an unannounced channel). Checked against the peer's node key.
    async fn on_channel_update(&self, peer: PublicKey, m: ChannelUpdate) -> Result<(), NodeError> {
        // Only the peer's own policy for a channel with us matters; anything else is gossip
        // about other channels, which this node does not relay (BOLT 7: never a reason to
        // disconnect).
        let msg = bitcoin::secp256k1::Message::from_digest(m.signing_hash());
        if channel::keys::secp()
            .verify_ecdsa(&msg, &m.signature, &peer)
            .is_err()
            || m.chain_hash != self.chain_hash()
        {
            tracing::debug!(%peer, scid = m.short_channel_id, "ignoring channel_update not signed by the peer");
            return Ok(());
        }
        let policy = ForwardingPolicy {
            fee_base_msat: m.fee_base_msat,
            fee_proportional_millionths: m.fee_proportional_millionths,
            cltv_expiry_delta: m.cltv_expiry_delta,
        };
        // By the real short channel id, or by the alias the peer gave the channel in its
        // channel_ready (LDK names unannounced channels so).
        let mut by_alias = None;
        if !self
            .pay
            .lock()
            .expect("pay lock")
            .scids
            .contains_key(&m.short_channel_id)
        {
            let channels = self.channels.lock().await;
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.peer == peer && e.remote_alias == Some(m.short_channel_id) {
                    by_alias = Some(*id);
                    break;
                }
            }
        }
        let id = {
            let mut pay = self.pay.lock().expect("pay lock");
            let id = by_alias.or_else(|| pay.scids.get(&m.short_channel_id).copied());
            if id.is_none() && pay.pending_updates.len() < MAX_PENDING_UPDATES {
                // The funding is not confirmed on our side yet: applied when it is.
                pay.pending_updates
                    .insert(m.short_channel_id, (peer, policy));
            }
            id
        };
        let Some(id) = id else {
            return Ok(());
        };
        self.with_channel(&id, |e, _| {
            if e.peer != peer {
                return Err(NodeError::UnknownChannel);
            }
            e.remote_policy = Some(policy);
            self.keep_remote_update(e, &m);
            Ok(())
        })
        .await
    }

    /// The commitment fee rates a peer may set with update_fee: from half the chain's
    /// 6-block estimate (never below the relay floor, 253 sat/kw) to
    /// `UPDATE_FEE_MAX_MULTIPLE` times it, and never above `UPDATE_FEE_CEILING`. Without an
    /// estimate (a fresh regtest chain) the floor and the ceiling apply.
    pub(super) async fn acceptable_feerates(&self) -> (FeeratePerKw, FeeratePerKw) {
        let estimate = self
            .config
            .chain
            .estimate_fee_rate(6)
            .await
            .ok()
            .flatten()
            .map(|r| r.to_sat_per_kwu());
        let floor = u64::from(UPDATE_FEE_FLOOR.0);
        let ceiling = u64::from(UPDATE_FEE_CEILING.0);
        let (lo, hi) = match estimate {
            // Without anchors our commitment cannot be bumped: a rate far below the
            // estimate could leave it unconfirmed past its HTLCs' deadlines.
            Some(e) => (
                (e / UPDATE_FEE_MIN_DIVISOR).clamp(floor, ceiling),
                e.saturating_mul(UPDATE_FEE_MAX_MULTIPLE)
                    .clamp(floor * UPDATE_FEE_MAX_MULTIPLE, ceiling),
            ),
            None => (floor, ceiling),
        };
        (FeeratePerKw(lo as u32), FeeratePerKw(hi as u32))
    }

    /// Our channel_update for a confirmed channel, signed with the node key.
    pub(super) fn channel_update(&self, e: &ChannelEntry) -> Option<ChannelUpdate> {
        let scid = e.scid?;
        let ours = self.node_id().serialize();
        let direction = u8::from(ours > e.peer.serialize());
        let policy = self.config.policy;
        let remote = e.channel.setup().remote_params;
        let htlc_minimum_msat = remote.htlc_minimum.0;
        // BOLT 7: at most the capacity and the peer's max_htlc_value_in_flight_msat.
        let htlc_maximum_msat = e
            .channel
            .capacity()
            .0
            .min(remote.max_htlc_value_in_flight.0)
            .max(htlc_minimum_msat);
        let mut m = ChannelUpdate {
            signature: bitcoin::secp256k1::ecdsa::Signature::from_compact(&[1u8; 64]).ok()?,
            chain_hash: self.chain_hash(),
            short_channel_id: scid,
            timestamp: now() as u32,
            // must_be_one, and dont_forward for a channel that is not announced.
            message_flags: if e.announce { 1 } else { 3 },
            channel_flags: direction,
            cltv_expiry_delta: policy.cltv_expiry_delta,
            htlc_minimum_msat,
            fee_base_msat: policy.fee_base_msat,
            fee_proportional_millionths: policy.fee_proportional_millionths,
            htlc_maximum_msat,
        };
        let msg = bitcoin::secp256k1::Message::from_digest(m.signing_hash());
        m.signature = channel::keys::secp().sign_ecdsa(&msg, &self.node_key);
        Some(m)
    }
}
