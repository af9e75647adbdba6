//! Following the chain: the wallet's coins, funding confirmations (then channel_ready),
//! and closing transactions confirming.

use super::channels::ChannelStatus;
use super::{Node, NodeError};
use crate::monitor::{records, ClaimParams, Spend};
use bitcoin::Transaction;
use chain::{ChainEvent, ChainPoller};

/// Blocks before an incoming HTLC's expiry by which it must be settled off chain, or
/// claimed on chain with its preimage.
pub(super) const FULFILL_SAFETY: u32 = 6;

/// Blocks a fundee waits for the funding transaction before forgetting the channel.
pub(super) const FUNDING_TIMEOUT_BLOCKS: u32 = 2016;

use channel::msgs::Message;
use channel::ChannelId;

/// The parts of an HTLC the payment book-keeping looks at, for one resolved on chain.
fn fake_htlc(id: u64, hash: channel::PaymentHash) -> channel::state::Htlc {
    channel::state::Htlc {
        offerer: channel::Side::Local,
        id: channel::HtlcId(id),
        amount: channel::Msat(0),
        payment_hash: hash,
        cltv_expiry: 0,
        onion: Default::default(),
    }
}
use std::sync::Arc;

/// The process's exit status when the handling of a block panicked.
pub const BLOCK_HANDLER_PANIC_EXIT: i32 = 70;

/// A task aborted when its handle is dropped: a block's handler does not outlive the
/// chain follower (stopped at shutdown, before the store closes).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Node {
    pub(super) async fn spawn_chain_follower(self: Arc<Self>) -> Result<(), NodeError> {
        // Start from genesis so the wallet sees every coin (the devnet and regtest chains
        // are short; a production node keeps its wallet's birthday instead).
        let genesis = self
            .config
            .chain
            .block_hash(0)
            .await?
            .ok_or(NodeError::Invalid("chain has no genesis"))?;
        let poller = ChainPoller::from_block(
            self.config.chain.clone(),
            chain::BlockRef {
                hash: genesis,
                height: 0,
            },
        );
        let mut events = poller.spawn(self.config.chain_poll);
        let node = self.clone();
        self.spawn_task(async move {
            while let Some(event) = events.recv().await {
                if let Err(e) = node.wallet.lock().await.apply(&event) {
                    tracing::warn!("wallet could not apply a chain event: {e}");
                }
                // Each block is handled in a task of its own, so that a panic in its
                // handling (a bug) is seen here. The node then stops the process: a block
                // handled in part (a close not noticed, a preimage not learnt, a lock
                // poisoned) must not be left behind while the node goes on. Restarted, it
                // follows the chain again from genesis and handles that block anew.
                let (handler, kind) = (node.clone(), event.clone());
                let mut handled = AbortOnDrop(tokio::spawn(async move {
                    match &kind {
                        ChainEvent::BlockConnected { block, block_ref } => {
                            handler.on_block(block, block_ref).await
                        }
                        ChainEvent::BlockDisconnected { block_ref } => {
                            handler.on_block_disconnected(block_ref).await
                        }
                    }
                }));
                if let Err(e) = (&mut handled.0).await {
                    if e.is_panic() {
                        tracing::error!(
                            "handling a block panicked (a bug): stopping, so that a restart \
                             handles it again"
                        );
                        std::process::exit(BLOCK_HANDLER_PANIC_EXIT);
                    }
                    return; // cancelled: the node is shutting down
                }
                node.synced_blocks
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(())
    }

    async fn on_block(&self, block: &bitcoin::Block, block_ref: &chain::BlockRef) {
        // Funding outputs spent in this block: a close of some kind.
        let funding: std::collections::HashMap<bitcoin::OutPoint, ChannelId> = {
            let channels = self.channels.lock().await;
            let mut m = std::collections::HashMap::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if !e.monitor.funding_spent() {
                    m.insert(e.channel.setup().funding_outpoint, *id);
                }
            }
            m
        };
        for tx in &block.txdata {
            for input in &tx.input {
                if let Some(id) = funding.get(&input.previous_output) {
                    if let Err(e) = self.on_funding_spent(id, tx, block_ref).await {
                        tracing::warn!("handling the close of {id}: {e}");
                    }
                }
            }
        }
        if let Ok(tip) = self.config.chain.tip().await {
            self.pay.lock().expect("pay lock").tip_height = tip.height;
        }
        self.learn_preimages(block).await;
        self.bump_all_justice().await;
        self.bump_all_own_sweeps().await;
        self.bump_htlc_txs().await;
        self.rebroadcast_sweeps().await;
        self.sweep_in_batches().await;
        let follow = self.claim_with_learnt_preimages(None).await;
        self.run_follow_ups(follow).await;
        self.rebroadcast_commitments().await;
        self.enforce_htlc_deadlines().await;
        self.bump_anchor_commitments().await;
        self.bump_fundings().await;
        self.check_confirmations().await;
        self.follow_commitment_fees().await;
        if let Ok(tip) = self.config.chain.tip().await {
            self.forget_unconfirmed_fundings(tip.height).await;
        }
        self.assign_short_channel_ids().await;
        self.announce_channels().await;
        self.reconcile_forwards().await;
        self.prune_failed_forwards().await;
        self.prune_expired_invoices().await;
    }

    /// Every preimage this node may use on chain: registered, learnt, or of an invoice it
    /// accepted a payment for.
    pub(super) fn known_preimages(
        &self,
    ) -> std::collections::HashMap<channel::PaymentHash, channel::PaymentPreimage> {
        let pay = self.pay.lock().expect("pay lock");
        let mut m = pay.preimages.clone();
        for i in pay.invoices.values().filter(|i| i.status == "paid") {
            m.insert(i.payment_hash, i.preimage);
        }
        m
    }

    /// Whether `hash`'s preimage is one `known_preimages` would return (without copying
    /// them all).
    fn knows_preimage(&self, hash: &channel::PaymentHash) -> bool {
        let pay = self.pay.lock().expect("pay lock");
        pay.preimages.contains_key(hash)
            || pay.invoices.get(hash).is_some_and(|i| i.status == "paid")
    }

    /// A counterparty that claims an HTLC we offered on chain reveals the preimage in its
    /// witness: learn it, so the incoming HTLC of a forward (or our payment) settles.
    async fn learn_preimages(&self, block: &bitcoin::Block) {
        let wanted: std::collections::HashSet<channel::PaymentHash> = {
            let pay = self.pay.lock().expect("pay lock");
            pay.forwards
                .values()
                .filter(|f| f.status == "pending")
                .map(|f| f.payment_hash)
                .chain(
                    pay.payments
                        .values()
                        .filter(|p| p.status == "pending")
                        .map(|p| p.payment_hash),
                )
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let mut found = Vec::new();
        for tx in &block.txdata {
            for input in &tx.input {
                for item in input.witness.iter().filter(|w| w.len() == 32) {
                    let p = channel::PaymentPreimage(item.try_into().expect("32 bytes"));
                    if wanted.contains(&p.payment_hash()) {
                        found.push(p);
                    }
                }
            }
        }
        for p in found {
            tracing::info!(hash = %hex::encode(p.payment_hash().0), "learnt a preimage on chain");
            let mut out = super::channels::Outcome::default();
            {
                let mut pay = self.pay.lock().expect("pay lock");
                let keys: Vec<(ChannelId, u64)> = pay
                    .forwards
                    .iter()
                    .filter(|(_, f)| f.status == "pending" && f.payment_hash == p.payment_hash())
                    .filter_map(|(_, f)| f.out_htlc.map(|o| (f.out_channel, o)))
                    .collect();
                let payments: Vec<(ChannelId, u64)> = pay
                    .payments
                    .values()
                    .filter(|x| x.status == "pending" && x.payment_hash == p.payment_hash())
                    .filter_map(|x| x.htlc_id.map(|h| (x.channel_id, h)))
                    .collect();
                for (channel, id) in keys.into_iter().chain(payments) {
                    let htlc = fake_htlc(id, p.payment_hash());
                    pay.on_fulfilled(channel, &htlc, p, &mut out);
                }
            }
            if let Err(e) = self.group.commit(out.writes).await {
                tracing::warn!("recording a preimage learnt on chain: {e}");
                continue;
            }
            self.run_follow_ups(out.follow).await;
        }
    }

    /// Gives each confirmed channel its short channel id (and sends our channel_update to
    /// the peer: it is how a light node learns the hub's fees for its route hints).
    async fn assign_short_channel_ids(&self) {
        let todo: Vec<(ChannelId, bitcoin::OutPoint)> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.scid.is_none() && !e.monitor.funding_spent() {
                    v.push((*id, e.channel.setup().funding_outpoint));
                }
            }
            v
        };
        for (id, outpoint) in todo {
            let Ok(chain::TxStatus::Confirmed { block, .. }) =
                self.config.chain.tx_status(&outpoint.txid).await
            else {
                continue;
            };
            let Ok(Some(b)) = self.config.chain.block(&block.hash).await else {
                continue;
            };
            let Some(index) = b
                .txdata
                .iter()
                .position(|t| t.compute_txid() == outpoint.txid)
            else {
                continue;
            };
            if block.height >= 1 << 24 || index >= 1 << 24 || outpoint.vout >= 1 << 16 {
                continue;
            }
            let scid =
                (u64::from(block.height) << 40) | ((index as u64) << 16) | u64::from(outpoint.vout);
            let hub = self.config.role == super::Role::Hub;
            let _ = self
                .with_channel(&id, |e, out| {
                    e.scid = Some(scid);
                    let mut pay = self.pay.lock().expect("pay lock");
                    pay.scids.insert(scid, id);
                    if let Some((peer, policy)) = pay.pending_updates.remove(&scid) {
                        if peer == e.peer {
                            e.remote_policy = Some(policy);
                        }
                    }
                    drop(pay);
                    if hub {
                        out.messages
                            .extend(self.channel_update(e).map(Message::ChannelUpdate));
                    }
                    Ok(())
                })
                .await;
        }
    }

    /// Forwards whose outgoing HTLC can no longer settle off chain: failed back when it
    /// is gone from the outgoing channel, or when the outgoing channel closed on chain
    /// and the incoming HTLC is about to expire with no preimage seen.
    async fn reconcile_forwards(&self) {
        let tip = self.pay.lock().expect("pay lock").tip_height;
        let pending: Vec<super::ForwardRecord> = {
            let pay = self.pay.lock().expect("pay lock");
            pay.forwards
                .values()
                .filter(|f| f.status == "pending" && f.out_htlc.is_some())
                .cloned()
                .collect()
        };
        for f in pending {
            let Ok(entry) = self.entry(&f.out_channel).await else {
                continue;
            };
            let (spent, present) = {
                let e = entry.lock().await;
                let present = e
                    .channel
                    .log()
                    .find_htlc(
                        channel::Side::Local,
                        channel::HtlcId(f.out_htlc.unwrap_or(0)),
                    )
                    .is_some();
                (e.monitor.funding_spent(), present)
            };
            let why = if !spent && !present {
                "the outgoing HTLC is gone"
            } else if spent
                && self
                    .outgoing_htlc_timed_out(&f)
                    .await
                    .unwrap_or(tip + 2 >= f.in_cltv)
            {
                "the outgoing channel closed on chain and the HTLC timed out there"
            } else {
                continue;
            };
            let mut out = super::channels::Outcome::default();
            {
                let mut pay = self.pay.lock().expect("pay lock");
                let Some(cur) = pay
                    .forwards
                    .get(&(f.in_channel, f.in_htlc))
                    .cloned()
                    .filter(|c| c.status == "pending")
                else {
                    continue;
                };
                let packet = channel::onion::build_failure(
                    &cur.shared_secret,
                    super::codes::PERMANENT_CHANNEL_FAILURE,
                    &[],
                );
                pay.fail_forward(cur, packet, why.into(), &mut out);
            }
            if self.group.commit(out.writes).await.is_ok() {
                self.run_follow_ups(out.follow).await;
            }
        }
    }

    /// At start-up: a forward recorded without its outgoing HTLC never left (the two are
    /// written together), so it is failed back.
    pub(super) async fn fail_unsent_forwards(&self) {
        let mut out = super::channels::Outcome::default();
        {
            let mut pay = self.pay.lock().expect("pay lock");
            let unsent: Vec<super::ForwardRecord> = pay
                .forwards
                .values()
                .filter(|f| f.status == "pending" && f.out_htlc.is_none())
                .cloned()
                .collect();
            for f in unsent {
                let packet = channel::onion::build_failure(
                    &f.shared_secret,
                    super::codes::TEMPORARY_CHANNEL_FAILURE,
                    &0u16.to_be_bytes(),
                );
                pay.fail_forward(
                    f,
                    packet,
                    "node restarted before forwarding".into(),
                    &mut out,
                );
            }
        }
        if !out.writes.is_empty() {
            if let Err(e) = self.group.commit(out.writes).await {
                tracing::warn!("failing unsent forwards: {e}");
            }
        }
    }

    /// The funding output was spent by `tx`: a mutual close, our commitment, the
    /// counterparty's current commitment, or a revoked one (breach).
    async fn on_funding_spent(
        &self,
        id: &ChannelId,
        tx: &Transaction,
        block_ref: &chain::BlockRef,
    ) -> Result<(), NodeError> {
        let txid = tx.compute_txid();
        let revoked = self.rebuild_revoked(id, tx).await?;
        // Our own sweeps start at the estimate for the longest target; those with a
        // deadline are raised to it in this same block (`bump_all_own_sweeps`).
        let sweep = self.sweep_rate(super::sweep_fees::NO_DEADLINE_BLOCKS).await;
        // Justice pays the estimate for the blocks left before the cheater can take each
        // output: to_local after her CSV delay, an HTLC output at once.
        let dest = self.wallet.lock().await.new_address()?.script_pubkey();
        let params = match &revoked {
            Some(r) => ClaimParams {
                dest: dest.clone(),
                sweep,
                justice_to_local: self.justice_rate(Self::blocks_left(r, 1, false)).await,
                justice_htlc: self.justice_rate(Self::blocks_left(r, 1, true)).await,
            },
            None => ClaimParams {
                dest: dest.clone(),
                sweep,
                justice_to_local: sweep,
                justice_htlc: sweep,
            },
        };
        let preimages = self.known_preimages();
        let preimage_for = |h: &channel::PaymentHash| preimages.get(h).copied();
        // Our commitment's HTLC transactions, completed (under anchors, paid for by the
        // wallet) once the channel is released.
        let mut local_htlc_txs = Vec::new();
        self.with_channel(id, |e, out| {
            e.spent_in = Some(super::reorg::SpentIn {
                block: block_ref.hash,
                height: block_ref.height,
                status_before: e.status,
            });
            self.pay.lock().expect("pay lock").scids.retain(|_, c| c != id);
            let closing = e.closing_tx.as_ref().map(|t| t.compute_txid());
            let resolution = e.monitor.resolve_spend(
                &e.channel,
                tx,
                revoked.clone(),
                closing,
                &params,
                preimage_for,
            );
            for (what, err) in &resolution.skipped {
                if *what == "justice" {
                    // A breach we cannot punish: the operator must know.
                    tracing::error!(channel = %id, "justice not built: {err}");
                } else {
                    tracing::warn!(channel = %id, "{what} not claimed: {err}");
                }
            }
            match resolution.spend {
                Spend::MutualClose => {
                    e.status = ChannelStatus::Closed;
                    // A clean close: the towers may forget this channel once it is deep.
                    self.queue_prunes(id, txid, out);
                    return Ok(());
                }
                Spend::Revoked(number) => {
                    tracing::warn!(%txid, "counterparty broadcast revoked commitment {}: justice", number.0);
                }
                // A current commitment spent the funding output: once that is deep, no
                // revoked one can confirm, so the towers may forget the channel too.
                Spend::Local | Spend::Remote => self.queue_prunes(id, txid, out),
            }
            e.status = if resolution.settles_nothing(&e.monitor) {
                ChannelStatus::Closed
            } else {
                ChannelStatus::ForceClosed
            };
            local_htlc_txs = resolution.local_htlc_txs;
            Ok(())
        })
        .await?;
        if local_htlc_txs.is_empty() {
            return Ok(());
        }
        let completed = self.complete_local_htlc_txs(id, local_htlc_txs, dest).await;
        self.with_channel(id, |e, _| {
            e.monitor.add_sweeps(completed);
            Ok(())
        })
        .await
    }

    /// `tx`, which spent the funding output of channel `id`, rebuilt as the revoked
    /// commitment of the counterparty's it is, from the monitor's records; `None` when
    /// it is none (a mutual close, our commitment, the counterparty's current one).
    async fn rebuild_revoked(
        &self,
        id: &ChannelId,
        tx: &Transaction,
    ) -> Result<Option<channel::state::RevokedCommitment>, NodeError> {
        let entry = self.entry(id).await?;
        let number = entry.lock().await.channel.revoked_commitment_number(tx);
        let Some((number, _)) = number else {
            return Ok(None);
        };
        let candidates = records::revoked_htlcs(&self.store, id, number).await?;
        let e = entry.lock().await;
        Ok(e.channel.revoked_from_chain(tx, &candidates))
    }

    /// A commitment we broadcast to fail a channel goes out again every block until the
    /// funding output is spent: one refused once (a node briefly unreachable, a full
    /// mempool) must not leave the channel's HTLCs unenforced. So does an agreed closing
    /// transaction (a crash between storing it and broadcasting it, a mempool that
    /// dropped it, must not leave the channel half closed).
    async fn rebroadcast_commitments(&self) {
        let txs: Vec<Transaction> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for e in channels.values() {
                let e = e.lock().await;
                if e.monitor.funding_spent() {
                    continue;
                }
                match e.status {
                    ChannelStatus::ForceClosed => {
                        v.extend(e.channel.signed_local_commitment().map(|(tx, _)| tx));
                    }
                    ChannelStatus::Closing => v.extend(e.closing_tx.clone()),
                    _ => {}
                }
            }
            v
        };
        for tx in txs {
            if let Err(e) = self.config.chain.broadcast(&tx).await {
                tracing::debug!(txid = %tx.compute_txid(), "closing transaction not accepted: {e}");
            }
        }
    }

    /// BOLT 2 deadlines: an HTLC we offered that the peer has not removed by its
    /// cltv_expiry, or one offered to us whose preimage we know when its expiry is
    /// `FULFILL_SAFETY` blocks away, can only be resolved on chain: force-close.
    async fn enforce_htlc_deadlines(&self) {
        let Ok(tip) = self.config.chain.tip().await else {
            return;
        };
        let due: Vec<ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.monitor.funding_spent()
                    || !matches!(
                        e.status,
                        ChannelStatus::Normal | ChannelStatus::ShuttingDown
                    )
                {
                    continue;
                }
                let view = e.channel.view(channel::state::ViewOf::Everything);
                let late = view.htlcs.iter().any(|h| match h.offerer {
                    channel::Side::Local => tip.height >= h.cltv_expiry,
                    // Near the deadline only: then look the preimage up.
                    channel::Side::Remote => {
                        tip.height + FULFILL_SAFETY >= h.cltv_expiry
                            && self.knows_preimage(&h.payment_hash)
                    }
                });
                if late {
                    v.push(*id);
                }
            }
            v
        };
        for id in due {
            tracing::warn!(channel = %id, "an HTLC reached its deadline: force-closing");
            if let Err(e) = self.force_close(&id).await {
                tracing::warn!(channel = %id, "force close failed: {e}");
            }
        }
    }

    /// BOLT 2: the fundee forgets a channel whose funding transaction has not confirmed
    /// within `FUNDING_TIMEOUT_BLOCKS` of the node first waiting for it (the funder may
    /// have spent its inputs elsewhere; nothing of ours is in it). The peer gets an
    /// `error`; the channel is closed with nothing on chain.
    async fn forget_unconfirmed_fundings(&self, tip: u32) {
        let waiting: Vec<ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.status == ChannelStatus::AwaitingLock && !e.channel.setup().is_funder {
                    v.push(*id);
                }
            }
            v
        };
        for id in waiting {
            let txid = match self.entry(&id).await {
                Ok(e) => e.lock().await.channel.setup().funding_outpoint.txid,
                Err(_) => continue,
            };
            // Confirmed, or the chain source could not answer: leave it be.
            if !matches!(self.config.chain.confirmations(&txid).await, Ok(0)) {
                continue;
            }
            let _ = self
                .with_channel(&id, |e, out| {
                    let since = *e.awaiting_funding_since.get_or_insert(tip);
                    if tip >= since + FUNDING_TIMEOUT_BLOCKS {
                        tracing::warn!(channel = %id, "funding unconfirmed after {FUNDING_TIMEOUT_BLOCKS} blocks: forgotten");
                        e.status = ChannelStatus::Closed;
                        out.messages
                            .push(Message::ErrorMessage(channel::msgs::ErrorMessage {
                                channel_id: id,
                                data: b"funding transaction not confirmed in time".to_vec(),
                            }));
                    }
                    Ok(())
                })
                .await;
        }
    }

    async fn check_confirmations(&self) {
        let entries: Vec<(ChannelId, ChannelStatus, Option<bitcoin::Txid>, u32, bool)> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                let watch = match e.status {
                    ChannelStatus::AwaitingLock | ChannelStatus::Normal => {
                        Some(e.channel.setup().funding_outpoint.txid)
                    }
                    ChannelStatus::Closing => e.closing_tx.as_ref().map(|t| t.compute_txid()),
                    _ => None,
                };
                v.push((*id, e.status, watch, e.minimum_depth, e.ready_sent));
            }
            v
        };
        for (id, status, watch, depth, ready_sent) in entries {
            let Some(txid) = watch else { continue };
            let confirmations = match self.config.chain.confirmations(&txid).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(%txid, "confirmations: {e}");
                    continue;
                }
            };
            match status {
                ChannelStatus::AwaitingLock | ChannelStatus::Normal
                    if !ready_sent && confirmations >= depth =>
                {
                    match self.verify_funding(&id).await {
                        FundingCheck::Valid => {}
                        FundingCheck::NotYet => continue,
                        FundingCheck::Invalid(why) => {
                            self.fail_fake_funding(&id, why).await;
                            continue;
                        }
                    }
                    let _ = self
                        .with_channel(&id, |e, out| {
                            e.ready_sent = true;
                            // option_scid_alias: the peer names the channel by our alias
                            // in its invoices; we forward what arrives for it.
                            let alias = self.scid_alias(e.index);
                            self.pay.lock().expect("pay lock").scids.insert(alias, id);
                            let mut ready = e.channel.channel_ready();
                            ready.short_channel_id = Some(alias);
                            out.messages.push(Message::ChannelReady(ready));
                            if e.ready_received {
                                e.status = ChannelStatus::Normal;
                            }
                            Ok(())
                        })
                        .await;
                }
                ChannelStatus::Closing if confirmations >= 1 => {
                    let _ = self
                        .with_channel(&id, |e, _| {
                            e.status = ChannelStatus::Closed;
                            Ok(())
                        })
                        .await;
                }
                _ => {}
            }
        }
    }

    /// BOLT 2: `channel_ready` only once the funding outpoint pays exactly
    /// `funding_satoshis` to the 2-of-2 P2WSH. A peer that names some other confirmed
    /// transaction (or output) as its funding gets no usable channel.
    async fn verify_funding(&self, id: &ChannelId) -> FundingCheck {
        let Ok(entry) = self.entry(id).await else {
            return FundingCheck::NotYet;
        };
        let (outpoint, script, value) = {
            let e = entry.lock().await;
            let setup = e.channel.setup();
            (
                setup.funding_outpoint,
                bitcoin::ScriptBuf::new_p2wsh(&e.channel.funding_script().wscript_hash()),
                setup.funding_sat,
            )
        };
        match self.config.chain.tx_out(&outpoint, false).await {
            Ok(Some(info)) if info.output.script_pubkey != script => {
                FundingCheck::Invalid("the funding output does not pay the 2-of-2 script")
            }
            Ok(Some(info)) if info.output.value.to_sat() != value => {
                FundingCheck::Invalid("the funding output does not hold funding_satoshis")
            }
            Ok(Some(_)) => FundingCheck::Valid,
            // No such unspent output: a transaction without that output, or an output
            // already spent (the chain follower sees the spend and closes the channel).
            Ok(None) => {
                tracing::warn!(channel = %id, %outpoint, "funding outpoint not found unspent; no channel_ready");
                FundingCheck::NotYet
            }
            Err(e) => {
                tracing::warn!(channel = %id, "funding check: {e}");
                FundingCheck::NotYet
            }
        }
    }

    /// A channel whose funding output is not what was agreed: nothing of ours is in it, so
    /// nothing goes to chain; the peer is told and the channel is closed.
    async fn fail_fake_funding(&self, id: &ChannelId, why: &'static str) {
        tracing::warn!(channel = %id, "refusing the channel: {why}");
        let _ = self
            .with_channel(id, |e, out| {
                e.status = ChannelStatus::Closed;
                out.messages
                    .push(Message::ErrorMessage(channel::msgs::ErrorMessage {
                        channel_id: *id,
                        data: why.as_bytes().to_vec(),
                    }));
                Ok(())
            })
            .await;
    }

    /// Blocks the chain follower has processed (for tests waiting on the wallet).
    pub fn synced_blocks(&self) -> u64 {
        self.synced_blocks
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// What the chain says of a channel's funding output.
enum FundingCheck {
    /// It pays the agreed amount to the agreed script.
    Valid,
    /// Not (yet) found unspent.
    NotYet,
    /// It exists and is wrong.
    Invalid(&'static str),
}
