//! The node's channels: each one's entry (state machine, monitor, status), loading them
//! at start-up, and the one way a channel changes (`with_channel`): under the channel's
//! lock, made durable before any reply leaves, then its messages, effects and follow-ups.
//! What each message does is in `channel_open` (establishment), `channel_updates`
//! (normal operation and reestablishment) and `channel_close`.

use super::events::Event;
use super::gossip::{AnnouncementLink, AnnouncementState, GossipCache};
use super::pay::ForwardingPolicy;
use super::pay::{codes, usable, Ctx, FollowUp};
use super::{Node, NodeError, Role};
use crate::monitor::{ChannelMonitor, FeeChild};
use crate::store::{StoredChannel, Write};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{OutPoint, ScriptBuf, Transaction};
use channel::channel_type::ChannelType;
use channel::close::closing_tx_weight;
use channel::msgs::*;
use channel::state::{Channel, ChannelParams, ChannelState, ViewOf};
use channel::*;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// Where a channel is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChannelStatus {
    /// Funding signed; waiting for confirmations and channel_ready.
    AwaitingLock,
    /// Usable.
    Normal,
    /// shutdown sent or received.
    ShuttingDown,
    /// Closing transaction agreed and broadcast.
    Closing,
    /// A commitment transaction is on chain (ours or theirs), or ours was broadcast.
    ForceClosed,
    /// The peer proved (channel_reestablish) that it holds a newer state than ours: our
    /// commitment may be revoked, so it is never broadcast; we wait for the peer's.
    AwaitingRemoteClose,
    /// The channel's funds are settled on chain.
    Closed,
}

impl ChannelStatus {
    /// The status as the API and the database spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::AwaitingLock => "awaiting_lock",
            ChannelStatus::Normal => "normal",
            ChannelStatus::ShuttingDown => "shutting_down",
            ChannelStatus::Closing => "closing",
            ChannelStatus::ForceClosed => "force_closed",
            ChannelStatus::AwaitingRemoteClose => "awaiting_remote_close",
            ChannelStatus::Closed => "closed",
        }
    }
}

/// What is stored per channel: the state machine's state plus the node's bookkeeping.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    state: ChannelState,
    status: ChannelStatus,
    minimum_depth: u32,
    funding_tx: Option<Transaction>,
    #[serde(default)]
    funding_fee_sat: Option<u64>,
    #[serde(default)]
    funding_child: Option<FeeChild>,
    ready_sent: bool,
    ready_received: bool,
    closing_tx: Option<Transaction>,
    closing_started: bool,
    /// The monitor's fields sit beside the rest, as they did before it was a type of
    /// its own: rows written before then read unchanged.
    #[serde(flatten)]
    monitor: ChannelMonitor,
    #[serde(default)]
    spent_in: Option<super::reorg::SpentIn>,
    #[serde(default)]
    awaiting_funding_since: Option<u32>,
    #[serde(default)]
    scid: Option<u64>,
    #[serde(default)]
    remote_policy: Option<ForwardingPolicy>,
    #[serde(default)]
    remote_alias: Option<u64>,
    #[serde(default)]
    opened_reported: bool,
    #[serde(default)]
    closed_reported: bool,
    #[serde(default)]
    announce: bool,
    #[serde(default)]
    announcement: AnnouncementState,
}

/// A channel and the node's bookkeeping about it.
pub(super) struct ChannelEntry {
    pub channel: Channel,
    pub peer: PublicKey,
    pub index: u64,
    pub status: ChannelStatus,
    pub minimum_depth: u32,
    pub funding_tx: Option<Transaction>,
    /// What our funding transaction pays itself (recorded since funding fees are bumped).
    pub funding_fee_sat: Option<u64>,
    /// The child paying for our funding transaction through its change, while it waits.
    pub funding_child: Option<FeeChild>,
    pub ready_sent: bool,
    pub ready_received: bool,
    pub closing_tx: Option<Transaction>,
    pub closing_started: bool,
    /// On-chain enforcement: the funding spend, what we must get confirmed.
    pub monitor: ChannelMonitor,
    /// The block whose transaction spent the funding output, and the status before.
    pub spent_in: Option<super::reorg::SpentIn>,
    /// The peer's channel_reestablish on this connection was taken in (or the channel was
    /// opened on it): only then may updates be sent (BOLT 2; LDK fails a channel whose
    /// peer sends an update before it). Not stored: false after a restart or disconnect.
    pub reestablished: bool,
    /// The first block height at which the node saw this channel waiting for its
    /// funding to confirm (BOLT 2: a fundee forgets a funding unseen for 2016 blocks).
    pub awaiting_funding_since: Option<u32>,
    /// BOLT 7 short channel id, once the funding transaction is confirmed.
    pub scid: Option<u64>,
    /// The peer's forwarding policy for this channel (from its channel_update).
    pub remote_policy: Option<ForwardingPolicy>,
    /// The short channel id alias the peer sent in channel_ready (option_scid_alias):
    /// what our invoices' route hints name, so they do not reveal the funding outpoint.
    pub remote_alias: Option<u64>,
    /// channel.opened was reported.
    pub opened_reported: bool,
    /// channel.closed was reported.
    pub closed_reported: bool,
    /// The channel id under which the event book knows this channel's peer (not stored:
    /// set when loaded).
    pub peer_noted: Option<ChannelId>,
    /// Opened with `announce_channel`: a public channel (BOLT 7).
    pub announce: bool,
    /// The peer's announcement signatures and channel_update, for a public channel.
    pub announcement: AnnouncementState,
    /// This connection's announcement_signatures exchange (not stored).
    pub announcement_link: AnnouncementLink,
    /// The public channel's gossip once built (not stored).
    pub gossip_cache: Option<GossipCache>,
}

/// A channel as the API reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSummary {
    /// Its id.
    pub channel_id: ChannelId,
    /// The peer.
    pub peer: PublicKey,
    /// Its state.
    pub status: ChannelStatus,
    /// Capacity.
    pub capacity_sat: u64,
    /// Our balance in our current commitment (before fees).
    pub local: Msat,
    /// Their balance.
    pub remote: Msat,
    /// HTLCs in our current commitment.
    pub htlcs: usize,
    /// Nothing pending in either direction.
    pub quiescent: bool,
    /// The peer is connected and the channel reestablished on that connection: updates
    /// (payments) can go out.
    pub active: bool,
    /// The agreed closing transaction, once there is one.
    pub closing_tx: Option<Transaction>,
    /// Our sweeps of a commitment on chain still waiting to confirm.
    pub pending_sweeps: Vec<Transaction>,
    /// BOLT 7 short channel id, once confirmed.
    pub short_channel_id: Option<u64>,
    /// The funding outpoint.
    pub funding_outpoint: OutPoint,
    /// The peer's forwarding policy over this channel, from its channel_update.
    pub peer_policy: Option<ForwardingPolicy>,
    /// The commitment format negotiated at open.
    pub channel_type: ChannelType,
    /// We opened and funded it.
    pub we_funded: bool,
    /// The fee rate of our current commitment.
    pub feerate_per_kw: u32,
    /// Opened with `announce_channel`: to be announced to the network.
    pub public: bool,
    /// Both ends have signed its channel_announcement (and the funding is unspent).
    pub announced: bool,
}

/// Things to do after a channel's new state is durable.
pub(super) enum Effect {
    Broadcast(Transaction),
    /// Our own gossip, for every connected peer.
    Gossip(Vec<Message>),
}

/// What one step on a channel produced.
#[derive(Default)]
pub(super) struct Outcome {
    pub messages: Vec<Message>,
    pub writes: Vec<Write>,
    pub effects: Vec<Effect>,
    pub follow: Vec<FollowUp>,
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The limits this node announces.
pub(super) fn our_params(funding_sat: u64) -> ChannelParams {
    ChannelParams {
        dust_limit_sat: 546,
        max_htlc_value_in_flight: Msat(funding_sat * 1000),
        channel_reserve_sat: (funding_sat / 100).max(546),
        htlc_minimum: Msat(1),
        to_self_delay: 144,
        max_accepted_htlcs: 30,
    }
}

impl ChannelEntry {
    /// A channel whose funding has just been signed.
    pub(super) fn opened(
        channel: Channel,
        peer: PublicKey,
        index: u64,
        minimum_depth: u32,
        funding_tx: Option<Transaction>,
    ) -> Self {
        ChannelEntry {
            channel,
            peer,
            index,
            status: ChannelStatus::AwaitingLock,
            minimum_depth,
            funding_tx,
            funding_fee_sat: None,
            funding_child: None,
            ready_sent: false,
            ready_received: false,
            closing_tx: None,
            closing_started: false,
            monitor: ChannelMonitor::default(),
            spent_in: None,
            reestablished: true,
            awaiting_funding_since: None,
            scid: None,
            remote_policy: None,
            remote_alias: None,
            opened_reported: false,
            closed_reported: false,
            peer_noted: None,
            announce: false,
            announcement: AnnouncementState::default(),
            announcement_link: AnnouncementLink::default(),
            gossip_cache: None,
        }
    }

    pub(super) fn stored(&self) -> StoredChannel {
        let stored = Stored {
            state: self.channel.state().clone(),
            status: self.status,
            minimum_depth: self.minimum_depth,
            funding_tx: self.funding_tx.clone(),
            funding_fee_sat: self.funding_fee_sat,
            funding_child: self.funding_child.clone(),
            ready_sent: self.ready_sent,
            ready_received: self.ready_received,
            closing_tx: self.closing_tx.clone(),
            closing_started: self.closing_started,
            monitor: self.monitor.clone(),
            spent_in: self.spent_in.clone(),
            awaiting_funding_since: self.awaiting_funding_since,
            scid: self.scid,
            remote_policy: self.remote_policy,
            remote_alias: self.remote_alias,
            opened_reported: self.opened_reported,
            closed_reported: self.closed_reported,
            announce: self.announce,
            announcement: self.announcement.clone(),
        };
        StoredChannel {
            channel_id: self.channel.channel_id().0,
            peer_id: self.peer.serialize().to_vec(),
            channel_index: self.index,
            status: self.status.as_str().into(),
            state: serde_json::to_vec(&stored).expect("channel state serializes"),
            updated_at: now(),
        }
    }

    pub fn summary(&self) -> ChannelSummary {
        let v = self.channel.view(ViewOf::CurrentLocal);
        ChannelSummary {
            channel_id: self.channel.channel_id(),
            peer: self.peer,
            status: self.status,
            capacity_sat: self.channel.setup().funding_sat,
            local: v.local,
            remote: v.remote,
            htlcs: v.htlcs.len(),
            quiescent: self.channel.log().updates.is_empty() && !self.channel.awaiting_revoke(),
            active: self.reestablished,
            closing_tx: self.closing_tx.clone(),
            pending_sweeps: self.monitor.sweeps().to_vec(),
            short_channel_id: self.scid,
            funding_outpoint: self.channel.setup().funding_outpoint,
            peer_policy: self.remote_policy,
            we_funded: self.channel.setup().is_funder,
            feerate_per_kw: v.feerate.0,
            public: self.announce,
            announced: self.announce
                && self.announcement.remote.is_some()
                && !self.monitor.funding_spent(),
            channel_type: if self.channel.anchors() {
                ChannelType::AnchorsZeroFeeHtlcTx
            } else {
                ChannelType::StaticRemoteKey
            },
        }
    }

    /// The channel is over off-chain: its funding is spent, our commitment was broadcast,
    /// or our state is known to be outdated. No message may change it any more.
    pub(super) fn is_failed(&self) -> bool {
        self.monitor.funding_spent()
            || matches!(
                self.status,
                ChannelStatus::ForceClosed
                    | ChannelStatus::Closed
                    | ChannelStatus::AwaitingRemoteClose
            )
    }

    /// Follow-ups after any change: settle, fail or forward incoming HTLCs, sign pending
    /// changes, and start closing negotiation when the channel is clean.
    fn advance(&mut self, ctx: &mut Ctx<'_>, out: &mut Outcome) -> Result<(), NodeError> {
        if !matches!(
            self.status,
            ChannelStatus::Normal | ChannelStatus::ShuttingDown
        ) {
            return Ok(());
        }
        self.resolve_incoming(ctx, out)?;
        if self.channel.has_changes_to_sign()
            && !self.channel.awaiting_revoke()
            && self.ready_received
        {
            out.messages
                .push(Message::CommitmentSigned(self.channel.send_commitment()?));
        }
        if self.status == ChannelStatus::ShuttingDown
            && !self.closing_started
            && self.channel.ready_to_negotiate_close()
        {
            let feerate = self.channel.view(ViewOf::CurrentLocal).feerate;
            let scripts: Vec<ScriptBuf> = self.channel.shutdown_state().scripts();
            let weight = closing_tx_weight(&scripts.iter().collect::<Vec<_>>());
            let fee = feerate.fee_for_weight(weight);
            let range = FeeRange {
                min_fee_satoshis: fee / 2,
                max_fee_satoshis: fee * 2,
            };
            self.closing_started = true;
            if let Some(m) = self.channel.start_closing(fee, range)? {
                out.messages.push(Message::ClosingSigned(m));
            }
        }
        Ok(())
    }
}

impl Node {
    /// Loads stored channels at start-up.
    pub(super) async fn load_channels(&self) -> Result<(), NodeError> {
        for row in self.store.channels().await? {
            let stored: Stored = serde_json::from_slice(&row.state)
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
            let channel = Channel::restore(stored.state, self.channel_secrets(row.channel_index))
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
            let peer = PublicKey::from_slice(&row.peer_id)
                .map_err(|e| NodeError::Corrupt(e.to_string()))?;
            {
                // Coins the wallet added to sweeps still to confirm stay theirs, their
                // change is pending again and its address is not handed out again (the
                // wallet, replaying the chain after this, settles what confirmed).
                let mut wallet = self.wallet.lock().await;
                stored
                    .monitor
                    .sweeps()
                    .iter()
                    .for_each(|tx| wallet.restore(tx));
                if let Some(c) = stored.monitor.anchor_child() {
                    wallet.restore(&c.tx);
                }
                // Our funding transaction and its child, until they confirm (the wallet
                // learns of their spends only from blocks): no other transaction may
                // take their coins meanwhile.
                if !stored.ready_sent && !stored.monitor.funding_spent() {
                    stored.funding_tx.iter().for_each(|tx| wallet.restore(tx));
                }
                if let Some(c) = &stored.funding_child {
                    wallet.restore(&c.tx);
                }
            }
            let entry = ChannelEntry {
                channel,
                peer,
                index: row.channel_index,
                status: stored.status,
                minimum_depth: stored.minimum_depth,
                funding_tx: stored.funding_tx,
                funding_fee_sat: stored.funding_fee_sat,
                funding_child: stored.funding_child,
                ready_sent: stored.ready_sent,
                ready_received: stored.ready_received,
                closing_tx: stored.closing_tx,
                closing_started: stored.closing_started,
                monitor: stored.monitor,
                spent_in: stored.spent_in,
                reestablished: false,
                awaiting_funding_since: stored.awaiting_funding_since,
                scid: stored.scid,
                remote_policy: stored.remote_policy,
                remote_alias: stored.remote_alias,
                opened_reported: stored.opened_reported,
                closed_reported: stored.closed_reported,
                peer_noted: Some(ChannelId(row.channel_id)),
                announce: stored.announce,
                announcement: stored.announcement,
                announcement_link: AnnouncementLink::default(),
                gossip_cache: None,
            };
            {
                let mut pay = self.pay.lock().expect("pay lock");
                if let Some(scid) = entry.scid {
                    pay.scids.insert(scid, ChannelId(row.channel_id));
                }
                if entry.ready_sent {
                    pay.scids
                        .insert(self.scid_alias(entry.index), ChannelId(row.channel_id));
                }
                pay.events
                    .channel_peers
                    .insert(ChannelId(row.channel_id), peer);
            }
            self.channels
                .lock()
                .await
                .insert(ChannelId(row.channel_id), Arc::new(Mutex::new(entry)));
        }
        let metas = self.store.metas_with_prefix("preimage:").await?;
        let mut records = Vec::new();
        for kind in [
            "merchant", "webhook", "delivery", "invoice", "payment", "forward",
        ] {
            records.extend(self.store.records(kind, None).await?);
        }
        let mut pay = self.pay.lock().expect("pay lock");
        for (_, value) in metas {
            if let Ok(p) = <[u8; 32]>::try_from(value.as_slice()) {
                let p = PaymentPreimage(p);
                pay.preimages.insert(p.payment_hash(), p);
            }
        }
        for r in &records {
            pay.load(r)?;
        }
        Ok(())
    }

    /// A fresh channel index (its keys and per-commitment secrets derive from it): read,
    /// incremented and made durable under one lock, so two opens at once never share one.
    /// Whether the wallet, after spending `spend_sat` (a funding), still holds
    /// `anchor_reserve_sat` for each anchor channel not yet closed and one more: the coins
    /// that pay for their zero-fee HTLC transactions on chain (LDK keeps the same reserve
    /// before it takes on an anchor channel).
    pub(super) async fn keeps_anchor_reserve(&self, spend_sat: u64) -> bool {
        let reserve = self.config.anchor_reserve_sat;
        if reserve == 0 {
            return true;
        }
        let anchor_channels = {
            let channels = self.channels.lock().await;
            let mut n = 0u64;
            for e in channels.values() {
                let e = e.lock().await;
                if e.channel.anchors() && e.status != ChannelStatus::Closed {
                    n += 1;
                }
            }
            n
        };
        // Our own unconfirmed change counts (as LDK's wallet counts it): a funding just
        // sent must not make the next open look coinless.
        let spendable = {
            let b = self.wallet.lock().await.balance();
            (b.spendable + b.trusted_pending).to_sat()
        };
        spendable.saturating_sub(spend_sat) >= reserve.saturating_mul(anchor_channels + 1)
    }

    pub(super) async fn next_channel_index(&self) -> Result<u64, NodeError> {
        let _one_at_a_time = self.channel_index_lock.lock().await;
        let next = self
            .store
            .meta("next_channel_index")
            .await?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        self.group
            .commit(vec![Write::Meta {
                key: "next_channel_index".into(),
                value: (next + 1).to_be_bytes().to_vec(),
            }])
            .await?;
        Ok(next)
    }

    pub(super) async fn entry(
        &self,
        id: &ChannelId,
    ) -> Result<Arc<Mutex<ChannelEntry>>, NodeError> {
        self.channels
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or(NodeError::UnknownChannel)
    }

    /// Runs `f` on a channel under its lock, then advances it, makes the result durable,
    /// and only then sends the messages, carries out the effects and runs the follow-ups
    /// (which may touch other channels: a forward's outgoing HTLC, a settlement flowing
    /// back upstream).
    pub(super) async fn with_channel<F>(&self, id: &ChannelId, f: F) -> Result<(), NodeError>
    where
        F: FnOnce(&mut ChannelEntry, &mut Outcome) -> Result<(), NodeError>,
    {
        let (result, follow) = self.with_channel_once(id, f).await;
        self.run_follow_ups(follow).await;
        result
    }

    /// [`Node::with_channel`] without the follow-ups, which are returned.
    pub(super) async fn with_channel_once<F>(
        &self,
        id: &ChannelId,
        f: F,
    ) -> (Result<(), NodeError>, Vec<FollowUp>)
    where
        F: FnOnce(&mut ChannelEntry, &mut Outcome) -> Result<(), NodeError>,
    {
        let entry = match self.entry(id).await {
            Ok(e) => e,
            Err(e) => return (Err(e), vec![]),
        };
        let mut e = entry.lock().await;
        let connected = self.peers.lock().await.contains_key(&e.peer);
        let before = e.channel.clone();
        let before_flags = (e.opened_reported, e.closed_reported);
        let mut out = Outcome::default();
        let mut result = f(&mut e, &mut out);
        self.report_lifecycle(&mut e, &mut out);
        // Updates are only made while the peer is connected: one made offline would never
        // be sent, and the next commitment_signed would not match the peer's view.
        if result.is_ok() && connected && e.reestablished {
            let mut pay = self.pay.lock().expect("pay lock");
            let mut ctx = Ctx {
                node_key: &self.node_key,
                policy: &self.config.policy,
                forwards_allowed: self.config.role == Role::Hub,
                pay: &mut pay,
            };
            result = e.advance(&mut ctx, &mut out);
        }
        if result.is_ok()
            || e.channel != before
            || before_flags != (e.opened_reported, e.closed_reported)
        {
            out.writes.push(Write::Channel(e.stored()));
            if let Err(err) = self.group.commit(std::mem::take(&mut out.writes)).await {
                return (Err(err.into()), vec![]);
            }
            let peer = e.peer;
            self.send_all(&peer, out.messages).await;
            drop(e);
            self.run_effects(out.effects).await;
            return (result, out.follow);
        }
        (result, vec![])
    }

    /// channel.opened once a channel is usable, channel.closed once its funding is spent.
    fn report_lifecycle(&self, e: &mut ChannelEntry, out: &mut Outcome) {
        let id = e.channel.channel_id();
        let opened = e.status == ChannelStatus::Normal && !e.opened_reported;
        let closed = e.monitor.funding_spent() && !e.closed_reported;
        let noted = e.peer_noted == Some(id);
        if noted && !opened && !closed {
            // The common case, every channel step: nothing to report, no lock to take.
            return;
        }
        let mut pay = self.pay.lock().expect("pay lock");
        if !noted {
            pay.events.channel_peers.entry(id).or_insert(e.peer);
            e.peer_noted = Some(id);
        }
        let owner = pay.events.owner_of_peer(&e.peer);
        let data = || {
            serde_json::json!({
                "channel_id": hex::encode(id.0),
                "peer_id": e.peer.to_string(),
                "capacity_sat": e.channel.setup().funding_sat,
                "status": e.status.as_str(),
            })
        };
        if opened {
            e.opened_reported = true;
            let d = data();
            pay.events
                .emit(Event::new("channel.opened", &owner, d), out);
        }
        if closed {
            e.closed_reported = true;
            let d = data();
            pay.events
                .emit(Event::new("channel.closed", &owner, d), out);
        }
    }

    /// Runs follow-ups until none are left.
    pub(super) async fn run_follow_ups(&self, follow: Vec<FollowUp>) {
        let mut queue: std::collections::VecDeque<FollowUp> = follow.into();
        while let Some(f) = queue.pop_front() {
            match f {
                FollowUp::Forward(in_channel, in_htlc) => {
                    queue.extend(self.add_forward(in_channel, in_htlc).await);
                }
                FollowUp::Advance(id) => {
                    let (r, more) = self.with_channel_once(&id, |_, _| Ok(())).await;
                    if let Err(e) = r {
                        tracing::debug!(channel = %id, "advancing: {e}");
                    }
                    queue.extend(more);
                    // A preimage for an HTLC of a channel already on chain: claim it
                    // there now, not at the next block.
                    queue.extend(self.claim_with_learnt_preimages(Some(id)).await);
                }
                FollowUp::PaymentDone(hash, result) => {
                    if let Some(w) = self.waiters.lock().await.remove(&hash) {
                        let _ = w.send(result);
                    }
                }
                FollowUp::Deliveries => self.deliveries_wake.notify_one(),
                FollowUp::Towers => self.towers_wake.notify_one(),
            }
        }
    }

    /// Adds the outgoing HTLC of a forward; a refusal fails the incoming one back.
    async fn add_forward(&self, in_channel: ChannelId, in_htlc: u64) -> Vec<FollowUp> {
        let f = {
            let pay = self.pay.lock().expect("pay lock");
            match pay.forwards.get(&(in_channel, in_htlc)) {
                Some(f) if f.status == "pending" && f.out_htlc.is_none() => f.clone(),
                _ => return vec![],
            }
        };
        let out_peer = match self.entry(&f.out_channel).await {
            Ok(e) => Some(e.lock().await.peer),
            Err(_) => None,
        };
        let connected = match out_peer {
            Some(p) => self.peers.lock().await.contains_key(&p),
            None => false,
        };
        let onion = f.next_onion.clone().unwrap_or_default();
        let (result, mut follow) = if connected {
            let f2 = f.clone();
            self.with_channel_once(&f.out_channel, move |e, out| {
                if !usable(e) {
                    return Err(NodeError::Invalid("outgoing channel is not usable"));
                }
                let m = e.channel.send_add_htlc(
                    Msat(f2.out_amount_msat),
                    f2.payment_hash,
                    f2.out_cltv,
                    onion,
                )?;
                let mut f2 = f2;
                f2.out_htlc = Some(m.id);
                f2.next_onion = None;
                self.pay.lock().expect("pay lock").put_forward(f2, out);
                out.messages.push(Message::UpdateAddHtlc(m));
                Ok(())
            })
            .await
        } else {
            (Err(NodeError::NotConnected), vec![])
        };
        if let Err(e) = result {
            let code = match e {
                NodeError::NotConnected | NodeError::UnknownChannel => codes::UNKNOWN_NEXT_PEER,
                _ => codes::TEMPORARY_CHANNEL_FAILURE,
            };
            let data: Vec<u8> = if code & codes::UPDATE != 0 {
                0u16.to_be_bytes().to_vec()
            } else {
                vec![]
            };
            let mut out = Outcome::default();
            {
                let mut pay = self.pay.lock().expect("pay lock");
                let current = pay.forwards.get(&(in_channel, in_htlc)).cloned();
                if let Some(cur) = current.filter(|c| c.status == "pending" && c.out_htlc.is_none())
                {
                    let packet = channel::onion::build_failure(&cur.shared_secret, code, &data);
                    pay.fail_forward(cur, packet, format!("could not forward: {e}"), &mut out);
                }
            }
            if let Err(e) = self.group.commit(out.writes).await {
                tracing::warn!("recording a failed forward: {e}");
                return follow;
            }
            follow.extend(out.follow);
        }
        follow
    }

    pub(super) async fn send_all(&self, peer: &PublicKey, messages: Vec<Message>) {
        let mut peers = self.peers.lock().await;
        let Some(tx) = peers.get(peer) else {
            return;
        };
        for m in messages {
            if tx.try_send(m).is_err() {
                // Its queue is full: it does not read. Dropped from the peers, its
                // connection ends at its next message and it must reconnect
                // (channel_reestablish resends what matters).
                tracing::warn!(%peer, "peer's queue is full: disconnecting it");
                peers.remove(peer);
                return;
            }
        }
    }

    async fn run_effects(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Broadcast(tx) => {
                    if let Err(e) = self.config.chain.broadcast(&tx).await {
                        tracing::warn!(txid = %tx.compute_txid(), "broadcast failed: {e}");
                    }
                }
                Effect::Gossip(messages) => {
                    let peers: Vec<PublicKey> = self.peers.lock().await.keys().copied().collect();
                    for peer in peers {
                        self.send_all(&peer, messages.clone()).await;
                    }
                }
            }
        }
    }

    /// Our current commitment transaction, fully signed: what a force close broadcasts.
    pub async fn signed_commitment(
        &self,
        channel_id: &ChannelId,
    ) -> Result<Transaction, NodeError> {
        let entry = self.entry(channel_id).await?;
        let e = entry.lock().await;
        if e.status == ChannelStatus::AwaitingRemoteClose {
            return Err(NodeError::Invalid(
                "our state is outdated: this commitment may be revoked",
            ));
        }
        e.channel
            .signed_local_commitment()
            .map(|(tx, _)| tx)
            .ok_or(NodeError::Invalid("no signed commitment yet"))
    }

    /// Summaries of every channel.
    pub async fn list_channels(&self) -> Vec<ChannelSummary> {
        let entries: Vec<_> = self.channels.lock().await.values().cloned().collect();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            out.push(e.lock().await.summary());
        }
        out
    }

    /// One channel's summary.
    pub async fn channel(&self, id: &ChannelId) -> Result<ChannelSummary, NodeError> {
        Ok(self.entry(id).await?.lock().await.summary())
    }
}
