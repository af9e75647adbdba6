//! Channel messages: establishment, updates, the commitment dance, closing and
//! reestablishment, each applied under the channel's lock and made durable before any
//! reply leaves.

use super::events::Event;
use super::gossip::{AnnouncementLink, AnnouncementState, GossipCache};
use super::pay::ForwardingPolicy;
use super::pay::{codes, usable, Ctx, Failure, FollowUp};
use super::{Node, NodeError, Role};
use crate::monitor::{ChannelMonitor, FeeChild};
use crate::store::{StoredChannel, Write};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, Txid};
use chain::wallet::Wallet;
use channel::channel_type::ChannelType;
use channel::close::closing_tx_weight;
use channel::msgs::*;
use channel::state::open::{
    check_accept_channel, check_open_channel, setup_from_messages, OpenPolicy,
};
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

/// A channel being opened, before the funding signatures.
pub(super) struct PendingOpen {
    peer: PublicKey,
    index: u64,
    open: OpenChannel,
    /// Whose open_channel this is: ours (we fund; the peer's accept_channel comes next)
    /// or the peer's (it funds; its funding_created comes next). A message for the other
    /// side's role is refused: a peer's accept_channel on its own opening would have us
    /// fund a 2-of-2 of its two keys.
    we_fund: bool,
    since: std::time::Instant,
}

/// Channels a peer may have in opening at once (open_channel received, funding_created
/// not yet): beyond, its open_channel gets an `error`.
const MAX_PENDING_OPENS_PER_PEER: usize = 4;
/// Channels in opening at once, all peers together.
const MAX_PENDING_OPENS: usize = 256;
/// An opening that has not progressed in this long is forgotten.
const PENDING_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

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
/// Lowest commitment fee rate a peer may set (BOLT 2's floor: 253 sat/kw).
pub(super) const UPDATE_FEE_FLOOR: FeeratePerKw = FeeratePerKw(253);
/// A peer's update_fee may go down to the chain's estimate divided by this.
const UPDATE_FEE_MIN_DIVISOR: u64 = 2;
/// How far above the chain's estimate a peer's update_fee may go.
const UPDATE_FEE_MAX_MULTIPLE: u64 = 10;
/// Highest commitment fee rate a peer may set, whatever the estimate (400 sat/vB).
const UPDATE_FEE_CEILING: FeeratePerKw = FeeratePerKw(100_000);

/// Most channel_updates kept for channels whose funding we have not yet seen confirmed.
const MAX_PENDING_UPDATES: usize = 1024;

fn our_params(funding_sat: u64) -> ChannelParams {
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
    fn opened(
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

    fn stored(&self) -> StoredChannel {
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
    async fn keeps_anchor_reserve(&self, spend_sat: u64) -> bool {
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

    async fn next_channel_index(&self) -> Result<u64, NodeError> {
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

    // ---- establishment ----------------------------------------------------------------

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

    // ---- normal operation ---------------------------------------------------------------

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
                let route = super::pay::build_route(
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

    /// Starts a cooperative close: sends shutdown; the closing transaction is negotiated
    /// and broadcast when the channel is clean.
    pub async fn close_channel(&self, channel_id: &ChannelId) -> Result<(), NodeError> {
        let script = self.wallet.lock().await.new_address()?.script_pubkey();
        self.with_channel(channel_id, |e, out| {
            if e.status != ChannelStatus::Normal {
                return Err(NodeError::Invalid("channel is not open"));
            }
            out.messages
                .push(Message::Shutdown(e.channel.send_shutdown(script)?));
            e.status = ChannelStatus::ShuttingDown;
            Ok(())
        })
        .await
    }

    /// Force-closes: broadcasts our latest commitment. Our to_local comes back to the
    /// wallet after the CSV delay.
    pub async fn force_close(&self, channel_id: &ChannelId) -> Result<Txid, NodeError> {
        let mut txid = None;
        self.with_channel(channel_id, |e, out| {
            if e.monitor.funding_spent() {
                return Err(NodeError::Invalid("channel already closed on chain"));
            }
            if e.status == ChannelStatus::AwaitingRemoteClose {
                return Err(NodeError::Invalid(
                    "our state is outdated: only the peer's commitment can close this channel",
                ));
            }
            txid =
                Some(fail_on_chain(e, out).ok_or(NodeError::Invalid("no signed commitment yet"))?);
            Ok(())
        })
        .await?;
        Ok(txid.expect("set on success"))
    }

    /// Whether a shutdown from `peer` for `id` would make us send ours (the channel is
    /// the peer's and we have not sent one).
    async fn needs_our_shutdown(&self, peer: &PublicKey, id: &ChannelId) -> bool {
        let Ok(entry) = self.entry(id).await else {
            return false;
        };
        let e = entry.lock().await;
        e.peer == *peer && !e.channel.shutdown_state().local_sent()
    }

    /// Drops a channel we fund whose funding_signed has not come (by its temporary or its
    /// final id): its funding transaction is never broadcast, and the wallet's coins it
    /// would have spent are free again. Returns the temporary id of the one dropped.
    async fn forget_unsigned_funding(&self, peer: &PublicKey, id: &ChannelId) -> Option<ChannelId> {
        let dropped: Vec<(ChannelId, ChannelEntry)> = {
            let mut unsigned = self.unsigned_funder.lock().await;
            let keys: Vec<ChannelId> = unsigned
                .iter()
                .filter(|(final_id, (temp, e))| e.peer == *peer && (temp == id || *final_id == id))
                .map(|(k, _)| *k)
                .collect();
            keys.iter().filter_map(|k| unsigned.remove(k)).collect()
        };
        let mut wallet = self.wallet.lock().await;
        for tx in dropped.iter().filter_map(|(_, e)| e.funding_tx.as_ref()) {
            wallet.unlock(tx);
        }
        dropped.first().map(|(temp, _)| *temp)
    }

    /// BOLT 1 `error` from the peer: fails the channel it names, or every channel with the
    /// peer for the all-zero id; before funding it ends the pending open.
    pub(super) async fn on_peer_error(&self, peer: PublicKey, channel_id: ChannelId, text: &str) {
        // An anchor channel we proposed and the peer refused before accepting: proposed
        // again as static_remotekey, once (what LDK does; a peer short of the on-chain
        // reserve anchors need refuses them).
        let downgraded = {
            let mut opens = self.pending_opens.lock().await;
            match opens.get_mut(&channel_id) {
                Some(p)
                    if p.peer == peer
                        && p.we_fund
                        && p.open.channel_type.as_deref()
                            == Some(&ChannelType::AnchorsZeroFeeHtlcTx.to_bytes()[..]) =>
                {
                    p.open.channel_type = Some(ChannelType::StaticRemoteKey.to_bytes());
                    Some(p.open.clone())
                }
                _ => None,
            }
        };
        if let Some(open) = downgraded {
            tracing::info!(%peer, channel = %channel_id, "anchor channel refused ({text}): proposing static_remotekey");
            self.send_all(&peer, vec![Message::OpenChannel(open)]).await;
            return;
        }
        let pending = {
            let mut opens = self.pending_opens.lock().await;
            match opens.get(&channel_id) {
                Some(p) if p.peer == peer => opens.remove(&channel_id),
                _ => None,
            }
        };
        let unsigned = self.forget_unsigned_funding(&peer, &channel_id).await;
        if pending.is_some() || unsigned.is_some() {
            self.fundee_accepts.lock().await.remove(&channel_id);
            // The caller waits under the temporary id, whichever id the error names.
            let temp = unsigned.unwrap_or(channel_id);
            if let Some(w) = self.open_waiters.lock().await.remove(&temp) {
                let _ = w.send(Err(format!("peer refused the channel: {text}")));
            }
            return;
        }
        let ids: Vec<ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.peer == peer && (channel_id.0 == [0; 32] || *id == channel_id) {
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            let _ = self
                .with_channel(&id, |e, out| {
                    // A mutual close already agreed and broadcast stays: our commitment
                    // would only compete with it.
                    if !e.is_failed() && e.status != ChannelStatus::Closing {
                        tracing::warn!(channel = %id, "peer sent an error: failing the channel");
                        fail_on_chain(e, out);
                    }
                    Ok(())
                })
                .await;
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

/// BOLT 1 `error` for one channel.
fn error_message(channel_id: ChannelId, text: &str) -> Message {
    Message::ErrorMessage(ErrorMessage {
        channel_id,
        data: text.as_bytes().to_vec(),
    })
}

/// Fails a channel on chain: broadcasts our latest signed commitment. Returns its txid, or
/// `None` before there is one (nothing can be on chain then).
fn fail_on_chain(e: &mut ChannelEntry, out: &mut Outcome) -> Option<Txid> {
    let (tx, _) = e.channel.signed_local_commitment()?;
    let txid = tx.compute_txid();
    e.status = ChannelStatus::ForceClosed;
    out.effects.push(Effect::Broadcast(tx));
    Some(txid)
}
