//! Channel establishment (BOLT 2): `open_channel`, `accept_channel`, `funding_created`
//! and `funding_signed`, as funder and as fundee, with the checks each side makes and
//! the limits on opens not yet funded.

use super::{Node, NodeError};
use crate::store::Write;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use chain::wallet::Wallet;
use channel::channel_type::ChannelType;
use channel::msgs::*;
use channel::state::open::{
    check_accept_channel, check_open_channel, setup_from_messages, OpenPolicy,
};
use channel::state::Channel;
use channel::*;

use super::channels::{our_params, ChannelEntry};
use std::sync::Arc;
use tokio::sync::Mutex;

/// A channel being opened, before the funding signatures.
pub(super) struct PendingOpen {
    pub(super) peer: PublicKey,
    pub(super) index: u64,
    pub(super) open: OpenChannel,
    /// Whose open_channel this is: ours (we fund; the peer's accept_channel comes next)
    /// or the peer's (it funds; its funding_created comes next). A message for the other
    /// side's role is refused: a peer's accept_channel on its own opening would have us
    /// fund a 2-of-2 of its two keys.
    pub(super) we_fund: bool,
    pub(super) since: std::time::Instant,
}

/// Channels a peer may have in opening at once (open_channel received, funding_created
/// not yet): beyond, its open_channel gets an `error`.
pub(super) const MAX_PENDING_OPENS_PER_PEER: usize = 4;
/// Channels in opening at once, all peers together.
pub(super) const MAX_PENDING_OPENS: usize = 256;
/// An opening that has not progressed in this long is forgotten.
pub(super) const PENDING_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

impl Node {
    /// Opens a channel of `capacity_sat` to a connected peer, funded by the on-chain
    /// wallet; returns its id once the funding transaction is signed and broadcast.
    pub async fn open_channel(
        &self,
        peer: PublicKey,
        capacity_sat: u64,
        push: Msat,
    ) -> Result<ChannelId, NodeError> {
        self.open_channel_with(peer, capacity_sat, push, false)
            .await
    }

    /// [`Node::open_channel`], for a public channel when `announce` is set: once its
    /// funding is six blocks deep it is announced to the network (BOLT 7).
    pub async fn open_channel_with(
        &self,
        peer: PublicKey,
        capacity_sat: u64,
        push: Msat,
        announce: bool,
    ) -> Result<ChannelId, NodeError> {
        if !self.peers.lock().await.contains_key(&peer) {
            return Err(NodeError::NotConnected);
        }
        let spendable = self.wallet.lock().await.balance().spendable.to_sat();
        if spendable < capacity_sat {
            return Err(NodeError::InsufficientCapacity(format!(
                "the wallet has {spendable} sat confirmed and spendable; the channel needs \
                 {capacity_sat} sat and the funding fee"
            )));
        }
        let index = self.next_channel_index().await?;
        let secrets = self.channel_secrets(index);
        let b = secrets.basepoints();
        let temp = ChannelId(super::tagged_hash(
            &self.seed,
            b"temporary_channel_id",
            index,
        ));
        let params = our_params(capacity_sat);
        // option_anchors_zero_fee_htlc_tx when the peer offers it (as LND, Core Lightning
        // and LDK propose to each other) and the wallet keeps its reserve for anchor
        // channels after this funding; static_remotekey otherwise.
        let peer_anchors = self
            .peer_features
            .lock()
            .expect("peer features lock")
            .get(&peer)
            .is_some_and(|f| crate::peer::offers(f, crate::peer::ANCHORS_ZERO_FEE_HTLC_TX));
        let channel_type = if peer_anchors && self.keeps_anchor_reserve(capacity_sat).await {
            ChannelType::AnchorsZeroFeeHtlcTx
        } else {
            ChannelType::StaticRemoteKey
        };
        let open = OpenChannel {
            chain_hash: self.chain_hash(),
            temporary_channel_id: temp,
            funding_satoshis: capacity_sat,
            push_msat: push.0,
            dust_limit_satoshis: params.dust_limit_sat,
            max_htlc_value_in_flight_msat: params.max_htlc_value_in_flight.0,
            channel_reserve_satoshis: params.channel_reserve_sat,
            htlc_minimum_msat: params.htlc_minimum.0,
            feerate_per_kw: 2500,
            to_self_delay: params.to_self_delay,
            max_accepted_htlcs: params.max_accepted_htlcs,
            funding_pubkey: b.funding_pubkey,
            revocation_basepoint: b.revocation_basepoint,
            payment_basepoint: b.payment_basepoint,
            delayed_payment_basepoint: b.delayed_payment_basepoint,
            htlc_basepoint: b.htlc_basepoint,
            first_per_commitment_point: secrets.per_commitment_point(CommitmentNumber(0)),
            // announce_channel (BOLT 2/7): a public channel.
            channel_flags: u8::from(announce),
            upfront_shutdown_script: None,
            channel_type: Some(channel_type.to_bytes()),
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.open_waiters.lock().await.insert(temp, tx);
        self.pending_opens.lock().await.insert(
            temp,
            PendingOpen {
                peer,
                index,
                open: open.clone(),
                we_fund: true,
                since: std::time::Instant::now(),
            },
        );
        self.send_all(&peer, vec![Message::OpenChannel(open)]).await;
        match tokio::time::timeout(std::time::Duration::from_secs(60), rx).await {
            Ok(Ok(Ok(id))) => Ok(id),
            Ok(Ok(Err(reason))) => Err(NodeError::ChannelRefused {
                channel_id: temp,
                reason,
            }),
            _ => {
                // A late funding_signed must not broadcast a funding the caller was told
                // failed.
                self.pending_opens.lock().await.remove(&temp);
                self.open_waiters.lock().await.remove(&temp);
                self.forget_unsigned_funding(&peer, &temp).await;
                Err(NodeError::Invalid("channel open did not complete"))
            }
        }
    }

    pub(super) async fn on_open_channel(
        &self,
        peer: PublicKey,
        open: OpenChannel,
    ) -> Result<(), NodeError> {
        let params = our_params(open.funding_satoshis);
        if open.chain_hash != self.chain_hash() {
            return Err(NodeError::Invalid("open_channel for another chain"));
        }
        self.check_pending_open_room(&peer, &open.temporary_channel_id)
            .await?;
        let channel_type =
            check_open_channel(&open, &params, &OpenPolicy::default()).map_err(|e| {
                tracing::info!(%peer, "refusing open_channel: {e}");
                NodeError::ChannelRefused {
                    channel_id: open.temporary_channel_id,
                    reason: format!("open_channel refused: {e}"),
                }
            })?;
        if channel_type == ChannelType::AnchorsZeroFeeHtlcTx && !self.keeps_anchor_reserve(0).await
        {
            // As LDK does: the funder may propose static_remotekey instead (LDK does so
            // on this error by itself).
            return Err(NodeError::ChannelRefused {
                channel_id: open.temporary_channel_id,
                reason: format!(
                    "anchor channel refused: the on-chain reserve for anchor channels ({} sat each) is not there; static_remotekey is accepted",
                    self.config.anchor_reserve_sat
                ),
            });
        }
        let index = self.next_channel_index().await?;
        let secrets = self.channel_secrets(index);
        let b = secrets.basepoints();
        let accept = AcceptChannel {
            temporary_channel_id: open.temporary_channel_id,
            dust_limit_satoshis: params.dust_limit_sat,
            max_htlc_value_in_flight_msat: params.max_htlc_value_in_flight.0,
            channel_reserve_satoshis: params.channel_reserve_sat,
            htlc_minimum_msat: params.htlc_minimum.0,
            minimum_depth: self.config.minimum_depth,
            to_self_delay: params.to_self_delay,
            max_accepted_htlcs: params.max_accepted_htlcs,
            funding_pubkey: b.funding_pubkey,
            revocation_basepoint: b.revocation_basepoint,
            payment_basepoint: b.payment_basepoint,
            delayed_payment_basepoint: b.delayed_payment_basepoint,
            htlc_basepoint: b.htlc_basepoint,
            first_per_commitment_point: secrets.per_commitment_point(CommitmentNumber(0)),
            upfront_shutdown_script: None,
            channel_type: Some(channel_type.to_bytes()),
        };
        let temp = open.temporary_channel_id;
        self.pending_opens.lock().await.insert(
            temp,
            PendingOpen {
                peer,
                index,
                open: open.clone(),
                we_fund: false,
                since: std::time::Instant::now(),
            },
        );
        self.fundee_accepts
            .lock()
            .await
            .insert(temp, accept.clone());
        self.send_all(&peer, vec![Message::AcceptChannel(accept)])
            .await;
        Ok(())
    }

    /// Forgets stale openings, then refuses an open_channel beyond the per-peer and total
    /// limits (or reusing a temporary id of another peer's opening), with an `error` on
    /// its temporary channel id.
    async fn check_pending_open_room(
        &self,
        peer: &PublicKey,
        temp: &ChannelId,
    ) -> Result<(), NodeError> {
        let mut pending = self.pending_opens.lock().await;
        let stale: Vec<ChannelId> = pending
            .iter()
            .filter(|(_, p)| p.since.elapsed() > PENDING_OPEN_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        if !stale.is_empty() {
            let mut accepts = self.fundee_accepts.lock().await;
            for id in &stale {
                pending.remove(id);
                accepts.remove(id);
            }
        }
        let refuse = |reason: &str| NodeError::ChannelRefused {
            channel_id: *temp,
            reason: reason.into(),
        };
        if pending.get(temp).is_some_and(|p| p.peer != *peer) {
            return Err(refuse("temporary_channel_id in use"));
        }
        if pending.values().filter(|p| p.peer == *peer).count() >= MAX_PENDING_OPENS_PER_PEER {
            return Err(refuse("too many channels being opened with this node"));
        }
        if pending.len() >= MAX_PENDING_OPENS {
            return Err(refuse("too many channels being opened, try again later"));
        }
        Ok(())
    }

    /// Takes the pending open `temp` if `peer` is the one it is with and we are its
    /// funder (`we_fund`) or not, as the message in hand requires; anything else leaves
    /// it in place.
    async fn take_pending_open(
        &self,
        temp: &ChannelId,
        peer: &PublicKey,
        we_fund: bool,
        what: &'static str,
    ) -> Result<PendingOpen, NodeError> {
        let mut pending = self.pending_opens.lock().await;
        match pending.get(temp) {
            Some(p) if p.peer == *peer && p.we_fund == we_fund => {
                Ok(pending.remove(temp).expect("present"))
            }
            _ => Err(NodeError::Invalid(what)),
        }
    }

    /// Ends an opening of ours: whoever waits for it gets `reason`, and the error to send
    /// the peer (an `error` on the temporary channel id) is returned.
    async fn fail_our_open(&self, temp: ChannelId, reason: String) -> NodeError {
        if let Some(w) = self.open_waiters.lock().await.remove(&temp) {
            let _ = w.send(Err(reason.clone()));
        }
        NodeError::ChannelRefused {
            channel_id: temp,
            reason,
        }
    }

    pub(super) async fn on_accept_channel(
        &self,
        peer: PublicKey,
        accept: AcceptChannel,
    ) -> Result<(), NodeError> {
        let temp = accept.temporary_channel_id;
        let pending = self
            .take_pending_open(&temp, &peer, true, "unexpected accept_channel")
            .await?;
        if let Err(e) = check_accept_channel(&pending.open, &accept, &OpenPolicy::default()) {
            return Err(self
                .fail_our_open(temp, format!("accept_channel refused: {e}"))
                .await);
        }
        let script =
            channel::script::funding_script(&pending.open.funding_pubkey, &accept.funding_pubkey);
        let fee_rate = Wallet::fee_rate(
            self.config.chain.as_ref(),
            super::funding_fees::FUNDING_TARGET_BLOCKS,
        )
        .await?;
        let built = self.wallet.lock().await.build_funding_tx(
            ScriptBuf::new_p2wsh(&script.wscript_hash()),
            Amount::from_sat(pending.open.funding_satoshis),
            fee_rate,
        );
        let funding = match built {
            Ok(f) => f,
            Err(e) => {
                // Our wallet cannot fund it (its coins went elsewhere since the open was
                // sent): the peer gets an `error` for this opening only, and the
                // connection stays up.
                return Err(self
                    .fail_our_open(temp, format!("the wallet cannot fund the channel: {e}"))
                    .await);
            }
        };
        let outpoint = OutPoint::new(funding.tx.compute_txid(), funding.funding_output_index);
        let setup = setup_from_messages(&pending.open, &accept, outpoint, true);
        let channel = Channel::new(setup, self.channel_secrets(pending.index));
        let created = FundingCreated {
            temporary_channel_id: temp,
            funding_txid: outpoint.txid.to_byte_array(),
            funding_output_index: outpoint.vout as u16,
            signature: channel.sign_initial_remote_commitment()?,
        };
        let mut entry = ChannelEntry::opened(
            channel,
            peer,
            pending.index,
            accept.minimum_depth,
            Some(funding.tx),
        );
        entry.funding_fee_sat = Some(funding.fee.to_sat());
        entry.announce = pending.open.channel_flags & 1 == 1;
        {
            // The caller may have given up (the open timed out) while this was built: then
            // nothing is sent and the coins are free again. Checked under the lock that
            // `forget_unsigned_funding`, which the giving up runs after, takes.
            let mut unsigned = self.unsigned_funder.lock().await;
            if !self.open_waiters.lock().await.contains_key(&temp) {
                drop(unsigned);
                if let Some(tx) = &entry.funding_tx {
                    self.wallet.lock().await.unlock(tx);
                }
                return Err(NodeError::ChannelRefused {
                    channel_id: temp,
                    reason: "the channel open was given up".into(),
                });
            }
            unsigned.insert(entry.channel.channel_id(), (temp, entry));
        }
        self.send_all(&peer, vec![Message::FundingCreated(created)])
            .await;
        Ok(())
    }

    pub(super) async fn on_funding_created(
        &self,
        peer: PublicKey,
        msg: FundingCreated,
    ) -> Result<(), NodeError> {
        let temp = msg.temporary_channel_id;
        let pending = self
            .take_pending_open(&temp, &peer, false, "unexpected funding_created")
            .await?;
        let accept = self
            .fundee_accepts
            .lock()
            .await
            .remove(&temp)
            .ok_or(NodeError::Invalid("unexpected funding_created"))?;
        let outpoint = OutPoint::new(
            Txid::from_byte_array(msg.funding_txid),
            u32::from(msg.funding_output_index),
        );
        let setup = setup_from_messages(&pending.open, &accept, outpoint, false);
        let mut channel = Channel::new(setup, self.channel_secrets(pending.index));
        channel.receive_initial_signature(msg.signature)?;
        let signed = FundingSigned {
            channel_id: channel.channel_id(),
            signature: channel.sign_initial_remote_commitment()?,
        };
        let mut entry = ChannelEntry::opened(
            channel,
            peer,
            pending.index,
            self.config.minimum_depth,
            None,
        );
        entry.announce = pending.open.channel_flags & 1 == 1;
        let id = entry.channel.channel_id();
        {
            // The channel id is the funding outpoint: one that names the outpoint of a
            // channel we have must not replace it. Checked and inserted under one lock.
            let mut channels = self.channels.lock().await;
            if channels.contains_key(&id) || self.unsigned_funder.lock().await.contains_key(&id) {
                return Err(NodeError::ChannelRefused {
                    channel_id: temp,
                    reason: "funding_created names the funding outpoint of an existing channel"
                        .into(),
                });
            }
            // Durable before funding_signed lets the funder broadcast.
            self.group
                .commit(vec![Write::Channel(entry.stored())])
                .await?;
            channels.insert(id, Arc::new(Mutex::new(entry)));
        }
        self.send_all(&peer, vec![Message::FundingSigned(signed)])
            .await;
        Ok(())
    }

    pub(super) async fn on_funding_signed(
        &self,
        peer: PublicKey,
        msg: FundingSigned,
    ) -> Result<(), NodeError> {
        // Checked in place: a wrong sender or a bad signature leaves the open pending.
        let (temp, entry) = {
            let mut unsigned = self.unsigned_funder.lock().await;
            match unsigned.get_mut(&msg.channel_id) {
                Some((_, e)) if e.peer == peer => {
                    e.channel.receive_initial_signature(msg.signature)?
                }
                _ => return Err(NodeError::Invalid("unexpected funding_signed")),
            }
            unsigned.remove(&msg.channel_id).expect("present")
        };
        if self.channels.lock().await.contains_key(&msg.channel_id) {
            // Someone else's funding_created named our funding outpoint first; ours is not
            // broadcast.
            return Err(NodeError::ChannelRefused {
                channel_id: msg.channel_id,
                reason: "a channel with this id exists".into(),
            });
        }
        self.group
            .commit(vec![Write::Channel(entry.stored())])
            .await?;
        let funding = entry.funding_tx.clone().expect("funder has the funding tx");
        let id = entry.channel.channel_id();
        self.channels
            .lock()
            .await
            .insert(id, Arc::new(Mutex::new(entry)));
        self.config.chain.broadcast(&funding).await?;
        if let Some(w) = self.open_waiters.lock().await.remove(&temp) {
            let _ = w.send(Ok(id));
        }
        Ok(())
    }
}
