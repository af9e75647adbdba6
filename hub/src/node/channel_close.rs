//! Closing a channel: the cooperative close (`shutdown`), the force close, and a
//! peer's `error`, which fails the channel on chain.

use super::{Node, NodeError};
use bitcoin::secp256k1::PublicKey;
use bitcoin::Txid;
use channel::channel_type::ChannelType;
use channel::msgs::*;
use channel::*;

use super::channels::{ChannelEntry, ChannelStatus, Effect, Outcome};

impl Node {
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
    pub(super) async fn needs_our_shutdown(&self, peer: &PublicKey, id: &ChannelId) -> bool {
        let Ok(entry) = self.entry(id).await else {
            return false;
        };
        let e = entry.lock().await;
        e.peer == *peer && !e.channel.shutdown_state().local_sent()
    }

    /// Drops a channel we fund whose funding_signed has not come (by its temporary or its
    /// final id): its funding transaction is never broadcast, and the wallet's coins it
    /// would have spent are free again. Returns the temporary id of the one dropped.
    pub(super) async fn forget_unsigned_funding(
        &self,
        peer: &PublicKey,
        id: &ChannelId,
    ) -> Option<ChannelId> {
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
}

/// BOLT 1 `error` for one channel.
pub(super) fn error_message(channel_id: ChannelId, text: &str) -> Message {
    Message::ErrorMessage(ErrorMessage {
        channel_id,
        data: text.as_bytes().to_vec(),
    })
}

/// Fails a channel on chain: broadcasts our latest signed commitment. Returns its txid, or
/// `None` before there is one (nothing can be on chain then).
pub(super) fn fail_on_chain(e: &mut ChannelEntry, out: &mut Outcome) -> Option<Txid> {
    let (tx, _) = e.channel.signed_local_commitment()?;
    let txid = tx.compute_txid();
    e.status = ChannelStatus::ForceClosed;
    out.effects.push(Effect::Broadcast(tx));
    Some(txid)
}
