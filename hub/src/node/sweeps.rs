//! The node's transactions that take funds out of a commitment on chain, kept until they
//! confirm: broadcast every block; when one can never confirm because the counterparty
//! spent its input first, replaced by what that spend leaves us (the output of a
//! cheater's second-stage transaction); and extended when a preimage is learnt after the
//! channel went to chain (BOLT 5: an HTLC output is claimed with its preimage as soon as
//! the node has it).

use super::channels::ChannelStatus;
use super::pay::FollowUp;
use super::sweep_fees::NO_DEADLINE_BLOCKS;
use super::Node;
use bitcoin::{OutPoint, ScriptBuf, Transaction};
use channel::ChannelId;
use std::collections::HashSet;

/// Confirmations after which a transaction that resolved an HTLC is taken as final.
pub(super) const ANTI_REORG_DEPTH: u32 = 6;

impl Node {
    /// Broadcasts pending sweeps (a CSV-locked one is refused until it matures) and
    /// forgets those confirmed `ANTI_REORG_DEPTH` deep.
    pub(super) async fn rebroadcast_sweeps(&self) {
        let pending: Vec<(ChannelId, Vec<Transaction>)> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if !e.monitor.sweeps().is_empty() {
                    v.push((*id, e.monitor.sweeps().to_vec()));
                }
            }
            v
        };
        for (id, sweeps) in pending {
            // Sweeps without a deadline go out from `sweep_batch`, alone or together.
            let batchable: HashSet<bitcoin::Txid> = self
                .own_pending_sweeps(&id)
                .await
                .into_iter()
                .filter(|p| p.deadline.is_none())
                .map(|p| p.old.compute_txid())
                .collect();
            // Settled for the close: confirmed, or lost to the counterparty. Forgotten:
            // lost, or confirmed `ANTI_REORG_DEPTH` deep; until then a confirmed sweep is
            // kept, so that a reorganisation that takes it out of the chain (and perhaps
            // puts the cheater's transaction in its place) finds it here again.
            let mut done = Vec::new();
            let mut forget = Vec::new();
            let mut replacements = Vec::new();
            for tx in &sweeps {
                let txid = tx.compute_txid();
                // One a batch holds is settled by the batch: confirmed with it, or sent
                // alone again once the batch is forgotten.
                if let Some(batch) = tx
                    .input
                    .first()
                    .and_then(|i| self.batch_holding(&i.previous_output))
                {
                    let depth = self
                        .config
                        .chain
                        .confirmations(&batch.compute_txid())
                        .await
                        .unwrap_or(0);
                    if depth >= 1 {
                        done.push(txid);
                        if depth >= ANTI_REORG_DEPTH {
                            forget.push(txid);
                        }
                    }
                    continue;
                }
                let depth = self.config.chain.confirmations(&txid).await.unwrap_or(0);
                if depth >= 1 {
                    done.push(txid);
                    if depth >= ANTI_REORG_DEPTH {
                        forget.push(txid);
                    }
                } else if self.lost_race(tx, &sweeps, &forget).await {
                    match self.mined_earlier_version(tx).await {
                        // The chain did not answer: kept, and asked again next block.
                        Err(()) => continue,
                        Ok(Some(depth)) => {
                            // Settled by an earlier version of itself (one it replaced,
                            // mined by a miner that had not seen the replacement). Kept
                            // until that is deep: a reorganisation that takes it out of
                            // the chain finds this one here again, to go out in its place.
                            done.push(txid);
                            if depth >= ANTI_REORG_DEPTH {
                                forget.push(txid);
                            }
                            continue;
                        }
                        Ok(None) => {}
                    }
                    // Never possible: the counterparty took that output first. If it was
                    // a revoked HTLC output taken by the cheater's HTLC-success or
                    // HTLC-timeout, that transaction's output is ours in turn.
                    // Or, if it was an HTLC transaction of ours whose earlier version
                    // was mined, that version's output is ours to sweep.
                    let claims = self.second_stage_claims(&id, tx, &sweeps).await;
                    let earlier = self.sweep_of_earlier_version(&id, tx).await;
                    if let (Some(claims), Some(earlier)) = (claims, earlier) {
                        // Wallet coins it carried (an anchor channel's HTLC transaction)
                        // are free again.
                        self.wallet.lock().await.unlock(tx);
                        done.push(txid);
                        forget.push(txid);
                        replacements.extend(claims);
                        replacements.extend(earlier);
                    }
                } else if batchable.contains(&txid) {
                    // Out with the batches, alone or together.
                } else if let Err(e) = self.config.chain.broadcast(tx).await {
                    tracing::debug!(%txid, "sweep not accepted yet: {e}");
                }
            }
            if !done.is_empty() {
                // The last sweep confirmed: the channel is closed unless an HTLC output
                // is still to claim (an anchor channel's HTLC transaction the wallet
                // could not pay for yet is tried again every block).
                let all_done = replacements.is_empty()
                    && sweeps.iter().all(|t| done.contains(&t.compute_txid()));
                let closed = all_done && !self.has_unclaimed_htlc_outputs(&id).await;
                let _ = self
                    .with_channel(&id, |e, _| {
                        e.monitor.forget_sweeps(&forget);
                        e.monitor.add_sweeps(replacements);
                        let settled = e
                            .monitor
                            .sweeps()
                            .iter()
                            .all(|t| done.contains(&t.compute_txid()));
                        if closed && settled {
                            e.status = ChannelStatus::Closed;
                        }
                        Ok(())
                    })
                    .await;
            }
        }
    }

    /// For a sweep of ours that lost its race (`lost`): the claims, with the revocation
    /// key, of the outputs of the cheater's second-stage transactions that spent the
    /// revoked commitment's HTLC outputs it wanted (BOLT 5: such an output pays the same
    /// revocable script as to_local, and its CSV delay gives us the time to take it).
    /// `None` when the chain, the store or the wallet could not answer: the lost sweep is
    /// then kept and this is tried again at the next block.
    async fn second_stage_claims(
        &self,
        id: &ChannelId,
        lost: &Transaction,
        ours: &[Transaction],
    ) -> Option<Vec<Transaction>> {
        let chain = &self.config.chain;
        let mut claims = Vec::new();
        for input in &lost.input {
            let parent = input.previous_output.txid;
            let entry = self.entry(id).await.ok()?;
            let breach = entry.lock().await.monitor.breach().cloned();
            let Some(revoked) = breach.filter(|r| r.commitment.txid() == parent) else {
                continue;
            };
            let tip = chain.tip().await.ok()?;
            let from = self.confirmed_height(&parent).await.ok()??;
            let spend = chain
                .find_spend(&input.previous_output, from)
                .await
                .ok()??;
            // Only a confirmed spend is final (one in the mempool may yet lose).
            spend.block.as_ref()?;
            if ours.contains(&spend.tx) {
                continue;
            }
            // Before the cheater's CSV delay on that output ends.
            let spend_depth = spend
                .block
                .as_ref()
                .map_or(0, |b| (tip.height + 1).saturating_sub(b.height));
            let rate = self
                .justice_rate(
                    u32::from(revoked.commitment.to_self_delay).saturating_sub(spend_depth),
                )
                .await;
            let build = |dest: ScriptBuf| async {
                let e = entry.lock().await;
                e.channel
                    .second_stage_justice(&revoked, &spend.tx, dest, rate)
            };
            // A wallet address only for a claim there is.
            match build(ScriptBuf::new()).await {
                None => continue,
                Some(Err(e)) => {
                    tracing::warn!(channel = %id, "second-stage justice: {e}");
                    continue;
                }
                Some(Ok(_)) => {}
            }
            let dest = self.wallet.lock().await.new_address().ok()?;
            if let Some(Ok(tx)) = build(dest.script_pubkey()).await {
                tracing::warn!(
                    channel = %id,
                    cheater = %spend.tx.compute_txid(),
                    "revoked HTLC output taken by a second-stage transaction: claiming its output"
                );
                claims.push(tx);
            }
        }
        Some(claims)
    }

    /// When `tx` (one input, one output) lost its input to an earlier version of itself,
    /// confirmed (the same input, paying the same script of ours at least as much), that
    /// version's depth. `Err` when the chain could not answer.
    async fn mined_earlier_version(&self, tx: &Transaction) -> Result<Option<u32>, ()> {
        if tx.input.len() != 1 || tx.output.len() != 1 {
            return Ok(None);
        }
        let chain = &self.config.chain;
        let input = &tx.input[0];
        let Some(parent_height) = self
            .confirmed_height(&input.previous_output.txid)
            .await
            .map_err(|_| ())?
        else {
            return Ok(None);
        };
        // No version could be mined before the input's CSV delay ended.
        let csv = super::sweep_fees::csv_blocks(input);
        let Some(spend) = chain
            .find_spend(&input.previous_output, parent_height.saturating_add(csv))
            .await
            .map_err(|_| ())?
        else {
            return Ok(None);
        };
        let earlier = spend.block.is_some()
            && spend.tx.input.len() == 1
            && spend.tx.output.len() == 1
            && spend.tx != *tx
            && spend.tx.output[0].script_pubkey == tx.output[0].script_pubkey
            // It paid less in fees than its replacement.
            && spend.tx.output[0].value >= tx.output[0].value;
        if !earlier {
            return Ok(None);
        }
        let depth = chain
            .confirmations(&spend.tx.compute_txid())
            .await
            .map_err(|_| ())?;
        Ok(Some(depth))
    }

    /// The height of the block of the active chain that holds `txid`; `None` while it is
    /// not in one.
    pub(super) async fn confirmed_height(
        &self,
        txid: &bitcoin::Txid,
    ) -> Result<Option<u32>, chain::ChainError> {
        Ok(match self.config.chain.tx_status(txid).await? {
            chain::TxStatus::Confirmed { block, .. } => Some(block.height),
            _ => None,
        })
    }

    /// Whether `tx` can never confirm: one of its inputs was spent on chain by another
    /// transaction, or it spends a sweep of ours that can never confirm. An answer the
    /// chain could not give counts as "not lost" (tried again at the next block).
    async fn lost_race(
        &self,
        tx: &Transaction,
        ours: &[Transaction],
        gone: &[bitcoin::Txid],
    ) -> bool {
        let chain = &self.config.chain;
        for input in &tx.input {
            let parent = input.previous_output.txid;
            let Ok(parent_depth) = chain.confirmations(&parent).await else {
                return false;
            };
            if gone.contains(&parent)
                && ours.iter().any(|t| t.compute_txid() == parent)
                && parent_depth == 0
            {
                return true;
            }
            let Ok(unspent) = chain.tx_out(&input.previous_output, false).await else {
                return false;
            };
            if parent_depth >= 1 && unspent.is_none() {
                return true;
            }
        }
        false
    }

    /// BOLT 5: an HTLC output of a commitment on chain that the node can take with a
    /// preimage learnt since the channel closed (the downstream settled off chain or on
    /// chain after the upstream channel went to chain): its claim is added to the
    /// channel's sweeps. On our commitment that is the HTLC-success transaction and the
    /// delayed sweep of its output; on the counterparty's, a direct claim. `only` limits
    /// the look to one channel; `None` looks at every channel still being resolved.
    /// Returns the follow-ups of the channel updates, for the caller to run.
    pub(super) async fn claim_with_learnt_preimages(
        &self,
        only: Option<ChannelId>,
    ) -> Vec<FollowUp> {
        let mut follow = Vec::new();
        let ids: Vec<ChannelId> = match only {
            Some(id) => match self.entry(&id).await {
                Ok(e) if e.lock().await.monitor.onchain_commitment().is_some() => vec![id],
                _ => vec![],
            },
            None => {
                let channels = self.channels.lock().await;
                let mut v = Vec::new();
                for (id, e) in channels.iter() {
                    let e = e.lock().await;
                    if e.status == ChannelStatus::ForceClosed
                        && e.monitor.onchain_commitment().is_some()
                    {
                        v.push(*id);
                    }
                }
                v
            }
        };
        if ids.is_empty() {
            return follow;
        }
        let preimages = self.known_preimages();
        let preimage_for = |h: &channel::PaymentHash| preimages.get(h).copied();
        for id in ids {
            // What could be claimed now, built with a placeholder destination: only the
            // claims of outputs still unspent and not already claimed are new.
            let Some((_, built)) = self.htlc_claims(&id, &preimage_for, ScriptBuf::new()).await
            else {
                continue;
            };
            let new_outputs = self.unclaimed(&id, &built).await;
            if new_outputs.is_empty() {
                if only.is_none() {
                    // Nothing left to claim and no sweep waiting (the counterparty took
                    // an output whose claim was still waiting for a wallet coin, say).
                    let (_, more) = self
                        .with_channel_once(&id, |e, _| {
                            if e.monitor.sweeps().is_empty()
                                && e.status == ChannelStatus::ForceClosed
                            {
                                e.status = ChannelStatus::Closed;
                            }
                            Ok(())
                        })
                        .await;
                    follow.extend(more);
                }
                continue;
            }
            let Ok(dest) = self.wallet.lock().await.new_address() else {
                continue;
            };
            let Some((side, claims)) = self
                .htlc_claims(&id, &preimage_for, dest.script_pubkey())
                .await
            else {
                continue;
            };
            let first: Vec<Transaction> = claims
                .into_iter()
                .filter(|t| new_outputs.contains(&t.input[0].previous_output))
                .collect();
            let added = match side {
                channel::Side::Local => {
                    self.complete_local_htlc_txs(&id, first, dest.script_pubkey())
                        .await
                }
                channel::Side::Remote => first,
            };
            if added.is_empty() {
                continue;
            }
            tracing::info!(channel = %id, claims = added.len(), "claiming HTLC outputs on chain with preimages learnt after the close");
            let (_, more) = self
                .with_channel_once(&id, |e, _| {
                    e.monitor.add_sweeps(added.iter().cloned());
                    e.status = ChannelStatus::ForceClosed;
                    Ok(())
                })
                .await;
            follow.extend(more);
            // At the rate their deadlines need, then out at once (recorded first): the
            // HTLC's expiry is running.
            follow.extend(self.bump_own_sweeps(&id).await);
            let added: Vec<Transaction> = match self.entry(&id).await {
                Ok(e) => {
                    let e = e.lock().await;
                    let inputs: HashSet<OutPoint> = added
                        .iter()
                        .flat_map(|t| t.input.iter().map(|i| i.previous_output))
                        .collect();
                    e.monitor
                        .sweeps()
                        .iter()
                        .filter(|t| t.input.iter().any(|i| inputs.contains(&i.previous_output)))
                        .cloned()
                        .collect()
                }
                Err(_) => added,
            };
            for tx in &added {
                if let Err(e) = self.config.chain.broadcast(tx).await {
                    tracing::debug!(txid = %tx.compute_txid(), "claim not accepted yet: {e}");
                }
            }
        }
        follow
    }

    /// The HTLC claims the channel's on-chain commitment allows with `preimage_for`, and
    /// whose commitment that is. On our own commitment these are the signed HTLC-timeout
    /// and HTLC-success transactions, still to be completed
    /// ([`Node::complete_local_htlc_txs`]); on the counterparty's, direct claims to `dest`.
    async fn htlc_claims(
        &self,
        id: &ChannelId,
        preimage_for: &impl Fn(&channel::PaymentHash) -> Option<channel::PaymentPreimage>,
        dest: ScriptBuf,
    ) -> Option<(channel::Side, Vec<Transaction>)> {
        let rate = self.sweep_rate(NO_DEADLINE_BLOCKS).await;
        let entry = self.entry(id).await.ok()?;
        let e = entry.lock().await;
        e.monitor.htlc_claims(&e.channel, preimage_for, dest, rate)
    }

    /// Our commitment's HTLC transactions `txs` made ready to broadcast, each followed by
    /// the CSV-delayed sweep of its output to `dest`. Under option_anchors_zero_fee_htlc_tx
    /// they pay no fee of their own: the wallet adds inputs and change at the chain's fee
    /// estimate first, and our signature is made again over the result (SIGHASH_ALL; the
    /// txid the sweep spends changes). One the wallet cannot pay
    /// for now is left out with a warning; its output stays unclaimed, so the per-block
    /// look ([`Node::claim_with_learnt_preimages`]) tries again.
    pub(super) async fn complete_local_htlc_txs(
        &self,
        id: &ChannelId,
        txs: Vec<Transaction>,
        dest: ScriptBuf,
    ) -> Vec<Transaction> {
        let Ok(entry) = self.entry(id).await else {
            return vec![];
        };
        let (anchors, local) = {
            let e = entry.lock().await;
            let local = e.channel.signed_local_commitment().map(|(_, built)| built);
            (e.channel.anchors(), local)
        };
        let txs = if anchors && !txs.is_empty() {
            // Each at the estimate for the blocks left before its deadline
            // (`htlc_tx_fees`, which also bumps it later).
            let tip = self.config.chain.tip().await.map_or(0, |t| t.height);
            let mut rates = Vec::with_capacity(txs.len());
            for tx in &txs {
                let deadline = local.as_ref().and_then(|c| {
                    self.local_htlc_deadline(id, c, tx.input[0].previous_output.vout)
                });
                let blocks_left = deadline.map_or(NO_DEADLINE_BLOCKS, |d| {
                    d.saturating_sub(tip).clamp(1, NO_DEADLINE_BLOCKS)
                });
                rates.push(
                    chain::wallet::Wallet::fee_rate(&*self.config.chain, blocks_left as u16)
                        .await
                        .unwrap_or(chain::wallet::FALLBACK_FEE_RATE),
                );
            }
            let mut wallet = self.wallet.lock().await;
            let mut funded = Vec::with_capacity(txs.len());
            for (tx, rate) in txs.into_iter().zip(rates) {
                // The fee may take at most the budget's share of the HTLC.
                let value: bitcoin::Amount = tx.output.iter().map(|o| o.value).sum();
                let budget = value * self.config.fee_budget_percent / 100;
                let tx = match wallet.add_fee_inputs(tx.clone(), rate) {
                    Ok((funded, fee)) if fee > budget => {
                        wallet.unlock(&funded);
                        let scaled = rate.to_sat_per_kwu() * budget.to_sat() / fee.to_sat().max(1);
                        if scaled < u64::from(super::justice_fees::JUSTICE_FLOOR.0) {
                            // Not even the relay floor within the budget: left unclaimed,
                            // tried again every block.
                            tracing::warn!(channel = %id, budget = budget.to_sat(), "HTLC transaction not worth its fee now");
                            continue;
                        }
                        tracing::info!(channel = %id, budget = budget.to_sat(), "HTLC transaction fee held to its budget");
                        wallet.add_fee_inputs(tx, bitcoin::FeeRate::from_sat_per_kwu(scaled))
                    }
                    other => other,
                };
                match tx {
                    Ok((tx, fee)) => {
                        tracing::info!(channel = %id, txid = %tx.compute_txid(), fee = fee.to_sat(), "HTLC transaction funded by the wallet");
                        funded.push(tx);
                    }
                    Err(err) => {
                        tracing::warn!(channel = %id, "cannot pay the fee of an HTLC transaction yet: {err}")
                    }
                }
            }
            funded
        } else {
            txs
        };
        let sweep_rate = self.sweep_rate(NO_DEADLINE_BLOCKS).await;
        let e = entry.lock().await;
        let mut out = Vec::with_capacity(2 * txs.len());
        for mut tx in txs {
            if anchors {
                // Our signature, made again over the inputs and outputs the wallet added.
                if let Err(err) = e.channel.sign_local_htlc_input(&mut tx) {
                    tracing::warn!(channel = %id, "HTLC transaction not signed: {err}");
                    self.wallet.lock().await.unlock(&tx);
                    continue;
                }
            }
            let sweep = e
                .channel
                .sweep_local_htlc_output(&tx, dest.clone(), sweep_rate);
            out.push(tx);
            match sweep {
                Ok(sweep) => out.push(sweep),
                Err(err) => tracing::warn!(channel = %id, "HTLC output not swept: {err}"),
            }
        }
        out
    }

    /// Whether the channel's commitment on chain has an HTLC output the node can claim
    /// (its preimage known, or its own offer) that nothing has spent or claims yet.
    async fn has_unclaimed_htlc_outputs(&self, id: &ChannelId) -> bool {
        let preimages = self.known_preimages();
        let preimage_for = |h: &channel::PaymentHash| preimages.get(h).copied();
        match self.htlc_claims(id, &preimage_for, ScriptBuf::new()).await {
            Some((_, claims)) => !self.unclaimed(id, &claims).await.is_empty(),
            None => false,
        }
    }

    /// The commitment outputs that `claims` spend and that are neither spent on chain
    /// (or in the mempool) nor spent by a sweep the channel already has.
    async fn unclaimed(&self, id: &ChannelId, claims: &[Transaction]) -> HashSet<OutPoint> {
        let (commitment, swept): (Option<bitcoin::Txid>, HashSet<OutPoint>) = {
            let Ok(entry) = self.entry(id).await else {
                return HashSet::new();
            };
            let e = entry.lock().await;
            (
                e.monitor.onchain_commitment(),
                e.monitor
                    .sweeps()
                    .iter()
                    .flat_map(|t| t.input.iter().map(|i| i.previous_output))
                    .collect(),
            )
        };
        let mut out = HashSet::new();
        for tx in claims {
            let o = tx.input[0].previous_output;
            if Some(o.txid) != commitment || swept.contains(&o) {
                continue;
            }
            if matches!(self.config.chain.tx_out(&o, true).await, Ok(Some(_))) {
                out.insert(o);
            }
        }
        out
    }

    /// For a forward whose outgoing channel went to chain: whether its outgoing HTLC is
    /// settled there without a preimage, so that failing the incoming one back cannot
    /// cost us (BOLT 5: only once the resolving transaction is `ANTI_REORG_DEPTH` deep).
    /// That is: the HTLC's output on the commitment on chain was spent by a transaction
    /// that deep (a spend with the preimage would have settled the forward already), or
    /// the HTLC has no output there (trimmed, or not in that commitment) and the
    /// commitment is that deep. `None` when the commitment on chain is not known (a
    /// channel closed before this was recorded).
    pub(super) async fn outgoing_htlc_timed_out(&self, f: &super::ForwardRecord) -> Option<bool> {
        let out_id = f.out_htlc?;
        let (txid, side, built, swept) = {
            let entry = self.entry(&f.out_channel).await.ok()?;
            let e = entry.lock().await;
            let txid = e.monitor.onchain_commitment()?;
            let swept: HashSet<OutPoint> = e
                .monitor
                .sweeps()
                .iter()
                .flat_map(|t| t.input.iter().map(|i| i.previous_output))
                .collect();
            match e.channel.commitment_by_txid(&txid) {
                Some((side, c)) => (txid, side, c, swept),
                None => {
                    let r = e.monitor.breach().filter(|r| r.commitment.txid() == txid)?;
                    (txid, channel::Side::Remote, r.commitment.clone(), swept)
                }
            }
        };
        let chain = &self.config.chain;
        let tip = chain.tip().await.ok()?.height;
        let depth = |height: u32| (tip + 1).saturating_sub(height);
        let confirmations = chain.confirmations(&txid).await.ok()?;
        // Our offer is "offered" on our commitment, "received" on theirs.
        let output = built
            .htlcs
            .iter()
            .find(|h| h.htlc.id.0 == out_id && h.htlc.offered == (side == channel::Side::Local));
        let Some(h) = output else {
            return Some(confirmations >= ANTI_REORG_DEPTH);
        };
        if confirmations == 0 {
            return Some(false);
        }
        let outpoint = OutPoint::new(txid, h.vout);
        let from = self.confirmed_height(&txid).await.ok()??;
        let Some(spend) = chain.find_spend(&outpoint, from).await.ok()? else {
            // Unspent. An output we could build no claim for (worth less than its fee)
            // is as good as trimmed.
            return Some(!swept.contains(&outpoint) && confirmations >= ANTI_REORG_DEPTH);
        };
        // A spend that reveals the preimage settles the forward (the chain follower
        // learns it when it reaches that block, also while catching up): never fail.
        let reveals = spend.tx.input.iter().any(|i| {
            i.witness.iter().any(|w| {
                <[u8; 32]>::try_from(w)
                    .is_ok_and(|p| channel::PaymentPreimage(p).payment_hash() == f.payment_hash)
            })
        });
        Some(
            !reveals
                && spend
                    .block
                    .is_some_and(|b| depth(b.height) >= ANTI_REORG_DEPTH),
        )
    }
}
