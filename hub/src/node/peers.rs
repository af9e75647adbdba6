//! Peer connections: accepting and dialing, the reader and writer tasks, and what happens
//! on connect (channel_reestablish) and disconnect.

use super::{Node, NodeError};
use crate::peer::{accept, connect, PeerReader, PeerWriter};
use bitcoin::secp256k1::PublicKey;
use channel::msgs::{ErrorMessage, Message, Warning};
use channel::ChannelId;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};

/// Inbound connections being served, in all and per IP address.
#[derive(Default)]
struct InboundSlots {
    open: std::sync::Mutex<(usize, std::collections::HashMap<std::net::IpAddr, usize>)>,
}

/// One inbound connection's place among [`InboundSlots`], given back when dropped.
struct InboundSlot {
    slots: Arc<InboundSlots>,
    ip: std::net::IpAddr,
}

impl InboundSlots {
    /// A place for a connection from `ip`, if there is one under both limits.
    fn take(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        max: usize,
        per_ip: usize,
    ) -> Option<InboundSlot> {
        let mut open = self.open.lock().expect("inbound slots lock");
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= max || from_ip >= per_ip {
            return None;
        }
        open.0 += 1;
        open.1.insert(ip, from_ip + 1);
        Some(InboundSlot {
            slots: self.clone(),
            ip,
        })
    }
}

impl Drop for InboundSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().expect("inbound slots lock");
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// Messages queued for one peer at most. A peer that lets its queue fill (it does not
/// read) is disconnected, so a silent peer costs bounded memory.
pub(super) const PEER_QUEUE: usize = 256;

impl Node {
    pub(super) fn spawn_listener(self: Arc<Self>, listener: TcpListener) {
        let node = self.clone();
        let slots = Arc::new(InboundSlots::default());
        node.spawn_task(async move {
            loop {
                let (stream, from) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors, say: wait instead of spinning.
                        tracing::warn!("accepting a peer connection failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(slot) = slots.take(
                    from.ip(),
                    self.config.max_inbound,
                    self.config.max_inbound_per_ip,
                ) else {
                    tracing::info!(%from, "inbound connection refused: too many connections");
                    drop(stream);
                    continue;
                };
                let node = self.clone();
                self.spawn_task(async move {
                    let _slot = slot;
                    match accept(stream, node.node_key, node.chain_hash()).await {
                        Ok((peer, _, _)) if !node.accepts_peer(&peer) => {
                            tracing::info!(%peer, "light node: refusing a peer that is not its hub");
                        }
                        Ok((peer, w, r)) => node.run_peer(peer, w, r).await,
                        Err(e) => tracing::info!(%from, "inbound peer refused: {e}"),
                    }
                });
            }
        });
    }

    /// Connects to a peer and keeps the connection running in the background.
    pub async fn connect_peer(
        self: &Arc<Self>,
        peer: PublicKey,
        addr: SocketAddr,
    ) -> Result<(), NodeError> {
        let (w, r) = connect(addr, self.node_key, peer, self.chain_hash()).await?;
        let fresh = self.peer_addrs.lock().await.insert(peer, addr).is_none();
        if fresh {
            self.group
                .commit(vec![crate::store::Write::Meta {
                    key: format!("peer:{peer}"),
                    value: addr.to_string().into_bytes(),
                }])
                .await?;
            self.clone().spawn_redialer(peer);
        }
        let node = self.clone();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        self.spawn_task(async move {
            node.run_peer_with(peer, w, r, Some(ready_tx)).await;
        });
        let _ = ready_rx.await;
        Ok(())
    }

    /// Whether this node talks to `peer` (a light node talks only to its hub).
    pub(super) fn accepts_peer(&self, peer: &PublicKey) -> bool {
        match self.config.role {
            super::Role::Light { hub: Some(hub) } => hub == *peer,
            _ => true,
        }
    }

    /// Dials `peer` again whenever it is not connected.
    pub(super) fn spawn_redialer(self: Arc<Self>, peer: PublicKey) {
        let node = self.clone();
        node.spawn_task(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                if self.peers.lock().await.contains_key(&peer) {
                    continue;
                }
                let Some(addr) = self.peer_addrs.lock().await.get(&peer).copied() else {
                    return;
                };
                match connect(addr, self.node_key, peer, self.chain_hash()).await {
                    Ok((w, r)) => {
                        let node = self.clone();
                        self.spawn_task(async move { node.run_peer(peer, w, r).await });
                    }
                    Err(e) => tracing::debug!(%peer, "redial failed: {e}"),
                }
            }
        });
    }

    /// Restores the remembered outbound peers and starts dialing them.
    pub(super) async fn restore_peers(self: &Arc<Self>) -> Result<(), NodeError> {
        for (key, value) in self.store.metas_with_prefix("peer:").await? {
            let (Some(id), Ok(addr)) = (
                key.strip_prefix("peer:")
                    .and_then(|k| k.parse::<PublicKey>().ok()),
                String::from_utf8_lossy(&value).parse::<SocketAddr>(),
            ) else {
                continue;
            };
            self.peer_addrs.lock().await.insert(id, addr);
            self.clone().spawn_redialer(id);
        }
        Ok(())
    }

    async fn run_peer(self: Arc<Self>, peer: PublicKey, w: PeerWriter, r: PeerReader) {
        self.run_peer_with(peer, w, r, None).await
    }

    async fn run_peer_with(
        self: Arc<Self>,
        peer: PublicKey,
        mut w: PeerWriter,
        mut r: PeerReader,
        ready: Option<tokio::sync::oneshot::Sender<()>>,
    ) {
        let (tx, mut rx) = mpsc::channel::<Message>(PEER_QUEUE);
        r.answer_pings(tx.clone());
        // The start of a connection and the end of another with the same peer never
        // interleave: an old connection that is ending forgets its uncommitted updates
        // before this one computes its channel_reestablish, never after.
        let session = self.peer_session_lock(&peer);
        let setup = session.lock().await;
        // A new connection from a peer we are connected to supersedes the old one: the
        // old one's uncommitted updates are forgotten now (BOLT 2), before our
        // channel_reestablish is computed, and the old connection, when it ends, changes
        // nothing.
        if self.peers.lock().await.remove(&peer).is_some() {
            tracing::info!(%peer, "peer reconnected: the old connection is superseded");
            self.on_peer_disconnected(peer).await;
        }
        tracing::info!(%peer, "peer connected");
        let mut writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if w.send(&m).await.is_err() {
                    break;
                }
            }
        });
        // Reestablish every channel with this peer: queued before the connection is
        // visible to the rest of the node, so nothing goes out ahead of it.
        let ours: Vec<_> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for e in channels.values() {
                let e = e.lock().await;
                // BOLT 2: closed channels are not reestablished.
                if e.peer == peer && !e.is_failed() {
                    v.push(Message::ChannelReestablish(e.channel.reestablish_message()));
                    if self.config.role == super::Role::Hub {
                        v.extend(self.channel_update(&e).map(Message::ChannelUpdate));
                    }
                }
            }
            v
        };
        for m in ours {
            let _ = tx.try_send(m);
        }
        self.peer_features
            .lock()
            .expect("peer features lock")
            .insert(peer, r.remote_features().to_vec());
        self.peers.lock().await.insert(peer, tx.clone());
        drop(setup);
        if let Some(ready) = ready {
            let _ = ready.send(());
        }
        loop {
            let msg = match r.recv().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::info!(%peer, "peer disconnected: {e}");
                    break;
                }
            };
            if !self.is_current(&peer, &tx).await {
                // Superseded by a newer connection: its messages are the ones that count.
                break;
            }
            if let Err(e) = self.dispatch(peer, msg.clone()).await {
                if let NodeError::ChannelRefused { channel_id, reason } = e {
                    // One channel refused: tell the peer, keep the connection (BOLT 1).
                    tracing::info!(%peer, channel = %channel_id, "refused {}: {reason}", msg.msg_type());
                    let _ = tx.try_send(Message::ErrorMessage(ErrorMessage {
                        channel_id,
                        data: reason.into_bytes(),
                    }));
                    continue;
                }
                tracing::warn!(%peer, "refused {}: {e}", msg.msg_type());
                let channel_id = channel_of(&msg).unwrap_or(ChannelId([0; 32]));
                let _ = tx.try_send(Message::Warning(Warning {
                    channel_id,
                    data: e.to_string().into_bytes(),
                }));
                // A peer that breaks the channel protocol is disconnected (BOLT 1 warning
                // semantics); the channel keeps its last good state and is reestablished
                // on reconnection.
                if !matches!(e, NodeError::UnknownChannel) {
                    break;
                }
            }
        }
        // Ours (or dropped by `send_all` for a full queue): this connection's end is the
        // peer's disconnection, handled before any new connection of the peer starts.
        // Superseded by a newer one: that one already handled it.
        let teardown = session.lock().await;
        let disconnected = {
            let mut peers = self.peers.lock().await;
            match peers.get(&peer) {
                Some(t) if t.same_channel(&tx) => {
                    peers.remove(&peer);
                    self.peer_features
                        .lock()
                        .expect("peer features lock")
                        .remove(&peer);
                    true
                }
                Some(_) => false,
                None => true,
            }
        };
        if disconnected {
            self.on_peer_disconnected(peer).await;
        }
        drop(teardown);
        drop(tx);
        drop(r);
        // Let the writer flush what is queued (the warning), then end.
        if tokio::time::timeout(std::time::Duration::from_secs(2), &mut writer)
            .await
            .is_err()
        {
            // A peer that does not read: the socket goes with the writer.
            tracing::debug!(%peer, "writer did not finish in time");
            writer.abort();
        }
    }

    /// The lock that orders the start and the end of connections with `peer`.
    fn peer_session_lock(&self, peer: &PublicKey) -> Arc<Mutex<()>> {
        let mut locks = self.peer_sessions.lock().expect("peer sessions lock");
        // Locks no connection holds or waits for are dropped, so the map does not grow
        // with every peer that ever connected.
        locks.retain(|_, l| Arc::strong_count(l) > 1);
        locks.entry(*peer).or_default().clone()
    }

    async fn dispatch(&self, peer: PublicKey, msg: Message) -> Result<(), NodeError> {
        match msg {
            Message::OpenChannel(m) => self.on_open_channel(peer, m).await,
            Message::AcceptChannel(m) => self.on_accept_channel(peer, m).await,
            Message::FundingCreated(m) => self.on_funding_created(peer, m).await,
            Message::FundingSigned(m) => self.on_funding_signed(peer, m).await,
            Message::ErrorMessage(ErrorMessage { channel_id, data }) => {
                let text = printable(&data);
                tracing::warn!(%peer, channel = %channel_id, "peer sent error: {text}");
                self.on_peer_error(peer, channel_id, &text).await;
                Ok(())
            }
            Message::Warning(Warning { data, .. }) => {
                tracing::warn!(%peer, "peer sent warning: {}", printable(&data));
                Ok(())
            }
            Message::ChannelReestablish(m) if !self.has_channel(&peer, &m.channel_id).await => {
                // BOLT 2: a reestablish for a channel we do not know gets an error for
                // that channel and nothing else.
                Err(NodeError::ChannelRefused {
                    channel_id: m.channel_id,
                    reason: "unknown channel".into(),
                })
            }
            Message::Init(_)
            | Message::Ping(_)
            | Message::Pong(_)
            | Message::Unknown { .. }
            | Message::Announcement { .. }
            | Message::ReplyChannelRange(_)
            | Message::ReplyShortChannelIdsEnd(_) => Ok(()),
            // Others' gossip is not relayed; a peer's filter gets our own gossip.
            Message::ChannelAnnouncement(_) | Message::NodeAnnouncement(_) => Ok(()),
            Message::GossipTimestampFilter(f) => {
                self.on_gossip_filter(&peer, f.chain_hash).await;
                Ok(())
            }
            Message::QueryChannelRange(q) => {
                let reply = self.reply_channel_range(&q).await;
                self.send_gossip(&peer, reply).await;
                Ok(())
            }
            Message::QueryShortChannelIds(q) => {
                let reply = self.reply_short_channel_ids(&q).await?;
                self.send_gossip(&peer, reply).await;
                Ok(())
            }
            other => self.on_channel_message(peer, other).await,
        }
    }

    /// Whether `tx` is the sender of `peer`'s current connection.
    async fn is_current(&self, peer: &PublicKey, tx: &mpsc::Sender<Message>) -> bool {
        self.peers
            .lock()
            .await
            .get(peer)
            .is_some_and(|t| t.same_channel(tx))
    }

    /// Whether `peer` has the channel `id` with us (another peer's channel is unknown to
    /// it, and answered the same way, so ids do not leak).
    async fn has_channel(&self, peer: &PublicKey, id: &ChannelId) -> bool {
        let entry = self.channels.lock().await.get(id).cloned();
        match entry {
            Some(e) => e.lock().await.peer == *peer,
            None => false,
        }
    }

    /// BOLT 2: forget uncommitted updates of every channel with this peer.
    async fn on_peer_disconnected(&self, peer: PublicKey) {
        self.forget_gossip_peer(&peer);
        let ids: Vec<ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                if e.lock().await.peer == peer {
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            let _ = self
                .with_channel(&id, |e, out| {
                    e.reestablished = false;
                    e.announcement_link = Default::default();
                    let channel_id = e.channel.channel_id();
                    for dropped in e.channel.on_disconnect() {
                        if let channel::state::UpdateKind::Add(h) = dropped {
                            if h.offerer == channel::Side::Local {
                                self.pay.lock().expect("pay lock").on_failed(
                                    channel_id,
                                    &h,
                                    super::pay::Failure::Local("peer disconnected".into()),
                                    out,
                                );
                            }
                        }
                    }
                    Ok(())
                })
                .await;
        }
    }
}

/// A peer's text made safe for logs: printable ASCII only, at most 200 characters.
fn printable(data: &[u8]) -> String {
    data.iter()
        .take(200)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

fn channel_of(msg: &Message) -> Option<ChannelId> {
    Some(match msg {
        Message::UpdateAddHtlc(m) => m.channel_id,
        Message::UpdateFulfillHtlc(m) => m.channel_id,
        Message::UpdateFailHtlc(m) => m.channel_id,
        Message::CommitmentSigned(m) => m.channel_id,
        Message::RevokeAndAck(m) => m.channel_id,
        Message::UpdateFee(m) => m.channel_id,
        Message::Shutdown(m) => m.channel_id,
        Message::ClosingSigned(m) => m.channel_id,
        Message::ChannelReestablish(m) => m.channel_id,
        Message::AnnouncementSignatures(m) => m.channel_id,
        Message::ChannelReady(m) => m.channel_id,
        _ => return None,
    })
}
