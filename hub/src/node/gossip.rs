//! BOLT 7 for the node's own public channels: `announcement_signatures` for channels
//! opened with `announce_channel`, the `channel_announcement`, `channel_update` and
//! `node_announcement` that follow, and the answers to peers' gossip queries. The node
//! relays no one else's gossip: what it sends and answers is what it generated itself.

use super::channels::{ChannelEntry, ChannelStatus, Effect, Outcome};
use super::{Node, NodeError};
use bitcoin::secp256k1::{ecdsa::Signature, PublicKey};
use channel::gossip::{
    check_announcement_signatures, complete_channel_announcement, decode_query_flags,
    decode_short_ids, encode_short_ids, scid_block, sign_channel_announcement,
    unsigned_channel_announcement, ChannelEnd, ANNOUNCEMENT_DEPTH, MAX_SHORT_IDS_PER_REPLY,
};
use channel::msgs::{
    AnnouncementSignatures, ChannelAnnouncement, ChannelUpdate, Message, NodeAnnouncement,
    QueryChannelRange, QueryShortChannelIds, ReplyChannelRange, ReplyShortChannelIdsEnd,
};

/// Blocks between two broadcasts of a public channel's gossip (a week: BOLT 7 lets the
/// network forget a channel whose updates are two weeks old).
pub const REBROADCAST_BLOCKS: u32 = 1008;

/// How long one gossip message may wait for room in a peer's queue before the rest of
/// the answer is dropped (the peer is not reading).
const GOSSIP_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a public channel keeps of its announcement (stored with the channel).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct AnnouncementState {
    /// The peer's node and bitcoin signatures, checked against our announcement.
    pub remote: Option<(Signature, Signature)>,
    /// The peer's latest channel_update for the channel, as received (answered to
    /// gossip queries with ours).
    pub remote_update: Option<Vec<u8>>,
    /// The block height at which the channel's gossip last went to every peer.
    #[serde(default)]
    pub published_at: Option<u32>,
}

/// What a public channel's gossip is made of once built (not stored: rebuilt after a
/// restart), so answering queries signs nothing.
#[derive(Clone, Debug)]
pub(super) struct GossipCache {
    pub announcement: ChannelAnnouncement,
    pub update: Option<ChannelUpdate>,
}

/// What one connection has done about a channel's announcement (not stored: a new
/// connection starts over, as BOLT 7 asks).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct AnnouncementLink {
    /// Our announcement_signatures went out on this connection.
    pub sent: bool,
    /// The peer's arrived before we could answer (our funding not six blocks deep yet):
    /// ours goes out as soon as it is.
    pub reply_owed: bool,
}

impl Node {
    fn local_end(&self, e: &ChannelEntry) -> ChannelEnd {
        ChannelEnd {
            node_id: self.node_id(),
            funding_key: e.channel.local_basepoints().funding_pubkey,
        }
    }

    fn remote_end(e: &ChannelEntry) -> ChannelEnd {
        ChannelEnd {
            node_id: e.peer,
            funding_key: e.channel.setup().remote_basepoints.funding_pubkey,
        }
    }

    /// The channel's announcement before signing, once its funding is confirmed.
    fn unsigned_announcement(&self, e: &ChannelEntry) -> Option<ChannelAnnouncement> {
        let scid = e.scid?;
        Some(unsigned_channel_announcement(
            self.chain_hash(),
            scid,
            self.local_end(e),
            Self::remote_end(e),
        ))
    }

    /// Our signatures of `unsigned`, the channel's announcement.
    fn sign_announcement(
        &self,
        e: &ChannelEntry,
        unsigned: &ChannelAnnouncement,
    ) -> AnnouncementSignatures {
        sign_channel_announcement(
            unsigned,
            e.channel.channel_id(),
            &self.node_key,
            &self.channel_secrets(e.index).funding_key,
        )
    }

    fn our_announcement_signatures(&self, e: &ChannelEntry) -> Option<AnnouncementSignatures> {
        let unsigned = self.unsigned_announcement(e)?;
        Some(self.sign_announcement(e, &unsigned))
    }

    /// BOLT 7: announcement_signatures only for a channel opened with `announce_channel`,
    /// not shutting down, once channel_ready went both ways and the funding is six
    /// blocks deep.
    fn may_sign_announcement(&self, e: &ChannelEntry) -> bool {
        e.announce
            && e.status == ChannelStatus::Normal
            && e.ready_sent
            && e.ready_received
            && e.reestablished
            && e.channel.sent_shutdown().is_none()
            && self.announcement_deep_enough(e)
    }

    /// Whether our announcement_signatures are due on this connection now.
    pub(super) fn announcement_signatures_owed(&self, e: &ChannelEntry) -> bool {
        !e.announcement_link.sent
            && (e.announcement.remote.is_none() || e.announcement_link.reply_owed)
            && self.may_sign_announcement(e)
    }

    /// The channel's gossip: its announcement and our channel_update, built once.
    fn gossip_of(&self, e: &mut ChannelEntry) -> Option<GossipCache> {
        if !self.channel_announcement_valid(e) {
            return None;
        }
        if e.gossip_cache.is_none() {
            let announcement = self.channel_announcement(e)?;
            let update = self.channel_update(e);
            e.gossip_cache = Some(GossipCache {
                announcement,
                update,
            });
        }
        e.gossip_cache.clone()
    }

    /// A public channel both ends signed, not spent or failed.
    fn channel_announcement_valid(&self, e: &ChannelEntry) -> bool {
        e.announce
            && !e.monitor.funding_spent()
            && !e.is_failed()
            && e.announcement.remote.is_some()
    }

    /// Whether the channel's funding is six blocks deep.
    fn announcement_deep_enough(&self, e: &ChannelEntry) -> bool {
        let tip = self.pay.lock().expect("pay lock").tip_height;
        e.scid
            .is_some_and(|s| tip + 1 >= scid_block(s) + ANNOUNCEMENT_DEPTH)
    }

    /// The complete channel_announcement of a public channel both ends have signed:
    /// channel_ready went both ways (so the funding was verified), the funding is six
    /// blocks deep and unspent.
    fn channel_announcement(&self, e: &ChannelEntry) -> Option<ChannelAnnouncement> {
        if !e.announce
            || e.monitor.funding_spent()
            || e.is_failed()
            || !e.ready_sent
            || !e.ready_received
            || !self.announcement_deep_enough(e)
        {
            return None;
        }
        let (node_signature, bitcoin_signature) = e.announcement.remote?;
        let unsigned = self.unsigned_announcement(e)?;
        let ours = self.sign_announcement(e, &unsigned);
        let theirs = AnnouncementSignatures {
            channel_id: e.channel.channel_id(),
            short_channel_id: unsigned.short_channel_id,
            node_signature,
            bitcoin_signature,
        };
        Some(complete_channel_announcement(
            unsigned,
            &self.node_id(),
            &ours,
            &theirs,
        ))
    }

    /// Sends our announcement_signatures when they are due: at six confirmations, again
    /// after a reconnection until the peer's have arrived, and in answer to the peer's.
    pub(super) fn announcement_signatures_due(&self, e: &mut ChannelEntry, out: &mut Outcome) {
        if !self.announcement_signatures_owed(e) {
            return;
        }
        let Some(ours) = self.our_announcement_signatures(e) else {
            return;
        };
        out.messages.push(Message::AnnouncementSignatures(ours));
        e.announcement_link = AnnouncementLink {
            sent: true,
            reply_owed: false,
        };
        self.publish_if_announced(e, out);
    }

    /// The peer's announcement_signatures: checked against the announcement we build
    /// (short channel id, node key, funding key), kept, and answered with ours.
    pub(super) fn on_announcement_signatures(
        &self,
        e: &mut ChannelEntry,
        m: &AnnouncementSignatures,
        out: &mut Outcome,
    ) -> Result<(), NodeError> {
        if !e.announce || !e.ready_sent || e.is_failed() {
            // BOLT 7: not sent for a channel opened without announce_channel, and ignored
            // before we sent channel_ready (our funding check) or once the channel failed.
            tracing::debug!(channel = %m.channel_id, "announcement_signatures ignored");
            return Ok(());
        }
        let Some(unsigned) = self.unsigned_announcement(e) else {
            // Our funding is not confirmed yet: the peer sends it again after a
            // reconnection (BOLT 7 allows deferring or ignoring it).
            tracing::debug!(channel = %m.channel_id, "announcement_signatures before our funding confirmed: ignored");
            return Ok(());
        };
        check_announcement_signatures(&unsigned, m, &Self::remote_end(e))?;
        e.announcement.remote = Some((m.node_signature, m.bitcoin_signature));
        if !e.announcement_link.sent {
            e.announcement_link.reply_owed = true;
            self.announcement_signatures_due(e, out);
        } else {
            self.publish_if_announced(e, out);
        }
        Ok(())
    }

    /// Once both ends have signed, and then every [`REBROADCAST_BLOCKS`]: the
    /// announcement, our channel_update and our node_announcement go to every connected
    /// peer (our own gossip is sent whatever their filters, as BOLT 7 allows). A peer
    /// sending its signatures again does not make it go out again sooner.
    pub(super) fn publish_if_announced(&self, e: &mut ChannelEntry, out: &mut Outcome) {
        let tip = self.pay.lock().expect("pay lock").tip_height;
        if e.announcement
            .published_at
            .is_some_and(|at| tip < at.saturating_add(REBROADCAST_BLOCKS))
        {
            return;
        }
        if e.announcement.published_at.is_some() {
            // A week on: a fresh channel_update keeps the channel in others' graphs.
            e.gossip_cache = None;
        }
        let Some(gossip) = self.gossip_of(e) else {
            return;
        };
        tracing::info!(channel = %e.channel.channel_id(), scid = gossip.announcement.short_channel_id, "channel announced");
        e.announcement.published_at = Some(tip);
        let mut messages = vec![Message::ChannelAnnouncement(gossip.announcement)];
        messages.extend(gossip.update.map(Message::ChannelUpdate));
        messages.extend(self.node_announcement().map(Message::NodeAnnouncement));
        out.effects.push(Effect::Gossip(messages));
    }

    /// The node's node_announcement, made once per run (its timestamp is the time it was
    /// made), or none while no channel of ours is announced.
    pub(super) fn node_announcement(&self) -> Option<NodeAnnouncement> {
        let mut cached = self.node_announcement.lock().expect("announcement lock");
        if let Some(n) = cached.as_ref() {
            return Some(n.clone());
        }
        let made = channel::gossip::node_announcement(
            &self.node_key,
            crate::peer::local_features(),
            super::channels::now() as u32,
            self.config.color,
            &self.config.alias,
            &self.config.announce_addresses,
        );
        match made {
            Ok(n) => {
                *cached = Some(n.clone());
                Some(n)
            }
            Err(err) => {
                tracing::warn!("node_announcement: {err}");
                None
            }
        }
    }

    /// The peer's channel_update for one of our public channels, kept for queries when it
    /// can be relayed: the peer's direction, no dont_forward, within the capacity, and
    /// newer than the one kept.
    pub(super) fn keep_remote_update(&self, e: &mut ChannelEntry, m: &ChannelUpdate) {
        let peer_is_1 = e.peer.serialize() < self.node_id().serialize();
        let newer = match e.announcement.remote_update.as_deref().map(Message::decode) {
            Some(Ok(Message::ChannelUpdate(kept))) => m.timestamp > kept.timestamp,
            _ => true,
        };
        if e.announce
            && e.scid == Some(m.short_channel_id)
            && (m.channel_flags & 1 == 0) == peer_is_1
            && m.message_flags & 2 == 0
            && m.htlc_minimum_msat <= m.htlc_maximum_msat
            && m.htlc_maximum_msat <= e.channel.capacity().0
            && newer
        {
            e.announcement.remote_update = Some(Message::ChannelUpdate(m.clone()).encode());
        }
    }

    /// The gossip of every announced channel whose short channel id `want` accepts, each
    /// with the query flags asked (bit 0 announcement, 1 and 2 the updates of node 1 and
    /// 2, 3 and 4 their node_announcements), our node_announcement last, once.
    async fn own_gossip(&self, want: impl Fn(u64) -> Option<u64>) -> Vec<Message> {
        let entries: Vec<_> = self.channels.lock().await.values().cloned().collect();
        let mut gossip = Vec::new();
        let mut ours_wanted = false;
        let we = self.node_id();
        for entry in entries {
            let mut e = entry.lock().await;
            let Some(flags) = e.scid.and_then(&want) else {
                continue;
            };
            let Some(cached) = self.gossip_of(&mut e) else {
                continue;
            };
            let we_are_1 = cached.announcement.node_id_1 == we;
            let (our_bit, their_bit) = if we_are_1 { (1, 2) } else { (2, 1) };
            if flags & 1 != 0 {
                gossip.push(Message::ChannelAnnouncement(cached.announcement));
            }
            if flags & (1 << our_bit) != 0 {
                gossip.extend(cached.update.map(Message::ChannelUpdate));
            }
            if flags & (1 << their_bit) != 0 {
                if let Some(Ok(m)) = e.announcement.remote_update.as_deref().map(Message::decode) {
                    gossip.push(m);
                }
            }
            ours_wanted |= flags & (1 << (our_bit + 2)) != 0;
        }
        if ours_wanted {
            gossip.extend(self.node_announcement().map(Message::NodeAnnouncement));
        }
        gossip
    }

    /// BOLT 7 gossip_timestamp_filter: the first one on a connection gets the node's own
    /// gossip (which ignores filters); the node relays nothing else.
    pub(super) async fn on_gossip_filter(&self, peer: &PublicKey, chain_hash: [u8; 32]) {
        if chain_hash != self.chain_hash()
            || !self
                .gossip_peers
                .lock()
                .expect("gossip peers lock")
                .insert(*peer)
        {
            return;
        }
        let gossip = self.own_gossip(|_| Some(0x1f)).await;
        self.send_gossip(peer, gossip).await;
    }

    /// Sends gossip to `peer`, waiting for room in its queue (a long answer must not
    /// overflow it and get the peer dropped as a non-reader); gives up on the rest after
    /// [`GOSSIP_SEND_TIMEOUT`] without room.
    pub(super) async fn send_gossip(&self, peer: &PublicKey, messages: Vec<Message>) {
        let Some(tx) = self.peers.lock().await.get(peer).cloned() else {
            return;
        };
        for m in messages {
            match tokio::time::timeout(GOSSIP_SEND_TIMEOUT, tx.send(m)).await {
                Ok(Ok(())) => {}
                _ => {
                    tracing::debug!(%peer, "gossip not taken in time: the rest dropped");
                    return;
                }
            }
        }
    }

    /// A connection ended: its gossip filter goes with it.
    pub(super) fn forget_gossip_peer(&self, peer: &PublicKey) {
        self.gossip_peers
            .lock()
            .expect("gossip peers lock")
            .remove(peer);
    }

    /// BOLT 7 reply to `query_channel_range`: our announced channels in the range, in
    /// replies of at most `MAX_SHORT_IDS_PER_REPLY` ids that together cover it.
    pub(super) async fn reply_channel_range(&self, q: &QueryChannelRange) -> Vec<Message> {
        let ours = q.chain_hash == self.chain_hash();
        let end = q.first_blocknum.saturating_add(q.number_of_blocks);
        let mut ids = Vec::new();
        if ours {
            let entries: Vec<_> = self.channels.lock().await.values().cloned().collect();
            for entry in entries {
                let e = entry.lock().await;
                let Some(scid) = e.scid else { continue };
                let block = scid_block(scid);
                if block >= q.first_blocknum
                    && block < end
                    && self.channel_announcement_valid(&e)
                    && e.ready_sent
                    && e.ready_received
                    && self.announcement_deep_enough(&e)
                {
                    ids.push(scid);
                }
            }
        }
        ids.sort_unstable();
        let chunks: Vec<&[u64]> = if ids.is_empty() {
            vec![&[]]
        } else {
            ids.chunks(MAX_SHORT_IDS_PER_REPLY).collect()
        };
        let count = chunks.len();
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                // Each reply starts where the previous one ended; the last reaches the
                // end of the query's range.
                let first = if i == 0 {
                    q.first_blocknum
                } else {
                    scid_block(chunk[0])
                };
                let next = if i + 1 == count {
                    end
                } else {
                    scid_block(chunks[i + 1][0])
                };
                Message::ReplyChannelRange(ReplyChannelRange {
                    chain_hash: q.chain_hash,
                    first_blocknum: first,
                    number_of_blocks: next.saturating_sub(first).max(1),
                    sync_complete: u8::from(ours && i + 1 == count),
                    encoded_short_ids: encode_short_ids(chunk),
                })
            })
            .collect()
    }

    /// BOLT 7 answer to `query_short_channel_ids`: for each id of ours, what the flags
    /// ask (all of it without flags), then `reply_short_channel_ids_end`.
    pub(super) async fn reply_short_channel_ids(
        &self,
        q: &QueryShortChannelIds,
    ) -> Result<Vec<Message>, NodeError> {
        let ids = decode_short_ids(&q.encoded_short_ids)?;
        let flags = match &q.query_flags {
            Some(f) => decode_query_flags(f, ids.len())?,
            None => vec![0x1f; ids.len()],
        };
        let ours = q.chain_hash == self.chain_hash();
        let asked: std::collections::HashMap<u64, u64> = ids.into_iter().zip(flags).collect();
        let mut reply = if ours {
            self.own_gossip(|scid| asked.get(&scid).copied()).await
        } else {
            vec![]
        };
        reply.push(Message::ReplyShortChannelIdsEnd(ReplyShortChannelIdsEnd {
            chain_hash: q.chain_hash,
            full_information: u8::from(ours),
        }));
        Ok(reply)
    }
}

impl Node {
    /// After each block: public channels whose funding just reached six confirmations
    /// send their announcement_signatures; announced ones are broadcast again weekly.
    pub(super) async fn announce_channels(&self) {
        let ids: Vec<channel::ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            let tip = self.pay.lock().expect("pay lock").tip_height;
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                let rebroadcast = e.announcement.published_at.is_some_and(|at| {
                    tip >= at.saturating_add(REBROADCAST_BLOCKS)
                        && self.channel_announcement_valid(&e)
                });
                if e.announce && (self.announcement_signatures_owed(&e) || rebroadcast) {
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            let _ = self
                .with_channel(&id, |e, out| {
                    if self.announcement_signatures_owed(e) {
                        self.announcement_signatures_due(e, out);
                    } else {
                        self.publish_if_announced(e, out);
                    }
                    Ok(())
                })
                .await;
        }
    }
}
