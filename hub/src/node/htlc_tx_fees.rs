//! The fee of our anchor channel's HTLC transactions (option_anchors_zero_fee_htlc_tx:
//! they pay nothing themselves; the wallet adds coins and change), and their bumping.
//! Each has a deadline:
//! - HTLC-success: the HTLC's expiry (from then on the counterparty can take it back by
//!   timeout);
//! - HTLC-timeout: for a forward, 12 blocks before the incoming HTLC's expiry (the
//!   upstream node takes its HTLC back then, and a preimage the downstream reveals later
//!   would cost us the amount; the HTLC-timeout must be 6 deep before the incoming HTLC
//!   is failed back); for our own payment, a day after its expiry
//!   ([`super::sweep_fees::OWN_PAYMENT_TIMEOUT_BLOCKS`]).
//!
//! Every block one still unconfirmed is funded again (BIP 125 RBF, paying at least the
//! old fee plus the incremental relay fee over its size) when the chain's estimate for
//! the blocks left has risen above its rate, within the budget
//! ([`super::NodeConfig::fee_budget_percent`] of the HTLC); the sweep of its output is
//! rebuilt on the new txid. A replacement the mempool refuses leaves the old one in place.

use super::justice_fees::INCREMENTAL_RELAY_PER_KW;
use super::sweep_fees::NO_DEADLINE_BLOCKS;
use super::Node;
use bitcoin::{Amount, FeeRate, OutPoint, Transaction};
use chain::wallet::{Wallet, FALLBACK_FEE_RATE};
use channel::ChannelId;

/// An HTLC transaction of ours waiting to confirm.
struct Waiting {
    old: Transaction,
    /// What it pays in fees now.
    fee: Amount,
    /// The HTLC output's value.
    htlc_value: Amount,
    deadline: u32,
}

impl Node {
    /// The height by which our HTLC transaction spending output `vout` of our commitment
    /// `built` must confirm (see the module documentation).
    pub(super) fn local_htlc_deadline(
        &self,
        id: &ChannelId,
        built: &channel::commitment::CommitmentTx,
        vout: u32,
    ) -> Option<u32> {
        let h = built.htlcs.iter().find(|h| h.vout == vout)?;
        Some(if h.htlc.offered {
            self.timeout_deadline(id, h.htlc.id.0, h.htlc.cltv_expiry)
        } else {
            h.htlc.cltv_expiry
        })
    }

    /// After each block: every anchor channel's HTLC transaction of ours that pays less
    /// than the estimate for the blocks left before its deadline is funded again.
    pub(super) async fn bump_htlc_txs(&self) {
        let ids: Vec<ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.channel.anchors()
                    && e.monitor.onchain_commitment().is_some()
                    && !e.monitor.sweeps().is_empty()
                {
                    v.push(*id);
                }
            }
            v
        };
        let Ok(tip) = self.config.chain.tip().await else {
            return;
        };
        for id in ids {
            for w in self.waiting_htlc_txs(&id).await {
                // An HTLC-timeout cannot be relayed before its locktime: nothing to bump.
                let lock = w.old.lock_time;
                if lock.is_block_height() && lock.to_consensus_u32() > tip.height {
                    continue;
                }
                let blocks_left = w.deadline.saturating_sub(tip.height).max(1);
                let target = blocks_left.min(NO_DEADLINE_BLOCKS) as u16;
                let wanted = Wallet::fee_rate(&*self.config.chain, target)
                    .await
                    .unwrap_or(FALLBACK_FEE_RATE);
                let weight = w.old.weight();
                if wanted.fee_wu(weight).unwrap_or(Amount::MAX) <= w.fee {
                    continue;
                }
                self.refund_htlc_tx(&id, w, wanted).await;
            }
        }
    }

    /// Channel `id`'s wallet-funded HTLC transactions not yet confirmed, with their fee
    /// and deadline.
    async fn waiting_htlc_txs(&self, id: &ChannelId) -> Vec<Waiting> {
        let Ok(entry) = self.entry(id).await else {
            return vec![];
        };
        let (built, sweeps) = {
            let e = entry.lock().await;
            let Some(txid) = e.monitor.onchain_commitment() else {
                return vec![];
            };
            match e.channel.commitment_by_txid(&txid) {
                Some((channel::Side::Local, built)) => (built, e.monitor.sweeps().to_vec()),
                _ => return vec![],
            }
        };
        let mut out = Vec::new();
        for tx in sweeps {
            let prev = tx.input[0].previous_output;
            if tx.input.len() < 2 || prev.txid != built.txid() {
                continue;
            }
            let Some(deadline) = self.local_htlc_deadline(id, &built, prev.vout) else {
                continue;
            };
            if self
                .config
                .chain
                .confirmations(&tx.compute_txid())
                .await
                .unwrap_or(1)
                > 0
            {
                continue;
            }
            let htlc_value = built.output_value(prev.vout);
            let coins: Option<Amount> = {
                let wallet = self.wallet.lock().await;
                tx.input[1..]
                    .iter()
                    .map(|i| {
                        wallet
                            .utxos()
                            .find(|u| u.outpoint == i.previous_output)
                            .map(|u| u.output.value)
                    })
                    .sum()
            };
            let Some(coins) = coins else { continue };
            let paid: Amount = tx.output.iter().map(|o| o.value).sum();
            let Some(fee) = (htlc_value + coins).checked_sub(paid) else {
                continue;
            };
            out.push(Waiting {
                old: tx,
                fee,
                htlc_value,
                deadline,
            });
        }
        out
    }

    /// Funds `w.old` again at `wanted` (within the budget and above BIP 125's floor),
    /// rebuilds the sweep of its output, stores both and broadcasts the replacement; a
    /// refusal puts the old one back.
    async fn refund_htlc_tx(&self, id: &ChannelId, w: Waiting, wanted: FeeRate) {
        let Ok(entry) = self.entry(id).await else {
            return;
        };
        let prev = w.old.input[0].previous_output;
        let preimages = self.known_preimages();
        let preimage_for = |h: &channel::PaymentHash| preimages.get(h).copied();
        let Some(base) = entry
            .lock()
            .await
            .channel
            .signed_local_htlc_txs(preimage_for)
            .into_iter()
            .find(|t| t.input[0].previous_output == prev)
        else {
            return;
        };
        let budget = w.htlc_value * self.config.fee_budget_percent / 100;
        let incremental = FeeRate::from_sat_per_kwu(INCREMENTAL_RELAY_PER_KW);
        let mut wallet = self.wallet.lock().await;
        wallet.unlock(&w.old);
        let mut rate = wanted;
        let mut funded = None;
        for _ in 0..3 {
            let (tx, fee) = match wallet.add_fee_inputs(base.clone(), rate) {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!(channel = %id, "cannot fund a higher fee for an HTLC transaction: {e}");
                    break;
                }
            };
            let floor = w.fee + incremental.fee_wu(tx.weight()).unwrap_or(Amount::MAX);
            let per_kwu = |fee: Amount| {
                FeeRate::from_sat_per_kwu(fee.to_sat() * 1000 / tx.weight().to_wu().max(1) + 1)
            };
            if fee <= floor {
                wallet.unlock(&tx);
                rate = per_kwu(floor);
                continue;
            }
            if fee > budget {
                wallet.unlock(&tx);
                if budget <= floor {
                    break; // no replacement within the budget: keep the one there is
                }
                // Scaled down to the budget (the wallet counts its inputs at their
                // largest witness size), rounded down.
                rate = FeeRate::from_sat_per_kwu(
                    (rate.to_sat_per_kwu() * budget.to_sat() / fee.to_sat().max(1))
                        .saturating_sub(1),
                );
                continue;
            }
            funded = Some((tx, fee));
            break;
        }
        let Some((mut tx, fee)) = funded else {
            wallet.restore(&w.old);
            return;
        };
        drop(wallet);
        let old_txid = w.old.compute_txid();
        let (signed, sweep) = {
            let e = entry.lock().await;
            let signed = e.channel.sign_local_htlc_input(&mut tx);
            // The sweep of its output, to the same place at the same rate.
            let old_sweep = e.monitor.sweep_of(&OutPoint::new(old_txid, 0)).cloned();
            let sweep = old_sweep.and_then(|s| {
                let prev_value = w.old.output[0].value;
                let rate =
                    (prev_value - s.output[0].value).to_sat() * 1000 / s.weight().to_wu().max(1);
                e.channel
                    .sweep_local_htlc_output(
                        &tx,
                        s.output[0].script_pubkey.clone(),
                        channel::FeeratePerKw(rate as u32),
                    )
                    .ok()
                    .map(|n| (s, n))
            });
            (signed, sweep)
        };
        if let Err(err) = signed {
            tracing::warn!(channel = %id, "HTLC transaction not signed again: {err}");
            let mut wallet = self.wallet.lock().await;
            wallet.unlock(&tx);
            wallet.restore(&w.old);
            return;
        }
        let stored = self
            .with_channel(id, |e, _| {
                // The sweeps changed since they were read (the old one settled, say):
                // nothing is replaced.
                if !e.monitor.replace_sweep(&w.old, &tx) {
                    return Err(super::NodeError::Invalid("the HTLC transaction changed"));
                }
                if let Some((old, new)) = &sweep {
                    e.monitor.replace_sweep(old, new);
                }
                Ok(())
            })
            .await;
        if stored.is_err() {
            let mut wallet = self.wallet.lock().await;
            wallet.unlock(&tx);
            wallet.restore(&w.old);
            return;
        }
        match self.config.chain.broadcast(&tx).await {
            Ok(_) => tracing::info!(
                channel = %id,
                old = %old_txid,
                new = %tx.compute_txid(),
                fee = fee.to_sat(),
                "HTLC transaction funded again at a higher fee as its deadline nears"
            ),
            Err(err) => {
                // Not yet valid (an HTLC-timeout before its locktime) is no refusal:
                // the old one was not in the mempool either.
                let refused_replacement = self
                    .config
                    .chain
                    .transaction(&old_txid)
                    .await
                    .is_ok_and(|t| t.is_some());
                if !refused_replacement {
                    return;
                }
                tracing::info!(channel = %id, "replacement HTLC transaction refused, keeping the old one: {err}");
                let _ = self
                    .with_channel(id, |e, _| {
                        e.monitor.replace_sweep(&tx, &w.old);
                        if let Some((old, new)) = &sweep {
                            e.monitor.replace_sweep(new, old);
                        }
                        Ok(())
                    })
                    .await;
                let mut wallet = self.wallet.lock().await;
                wallet.unlock(&tx);
                wallet.restore(&w.old);
            }
        }
    }
}

impl Node {
    /// For an HTLC transaction of ours, `lost`, that can never confirm: when what spent its
    /// HTLC output is an earlier version of it (one it replaced, mined by a miner that had
    /// not seen the replacement), the sweep of that version's output, which is ours as
    /// well. `Some(None)` when there is none; `None` when the chain or the wallet could
    /// not answer (the caller keeps `lost` and asks again at the next block).
    pub(super) async fn sweep_of_earlier_version(
        &self,
        id: &ChannelId,
        lost: &Transaction,
    ) -> Option<Option<Transaction>> {
        let Ok(entry) = self.entry(id).await else {
            return Some(None);
        };
        let commitment = {
            let e = entry.lock().await;
            let local = e
                .monitor
                .onchain_commitment()
                .and_then(|txid| e.channel.commitment_by_txid(&txid));
            match local {
                Some((channel::Side::Local, built)) => built,
                _ => return Some(None),
            }
        };
        let Some(input) = lost.input.first().map(|i| i.previous_output) else {
            return Some(None);
        };
        if input.txid != commitment.txid() || lost.input.len() < 2 {
            return Some(None);
        }
        let chain = &self.config.chain;
        let Some(from) = self.confirmed_height(&input.txid).await.ok()? else {
            return Some(None);
        };
        let Some(spend) = chain.find_spend(&input, from).await.ok()? else {
            return Some(None);
        };
        // Every version pays the HTLC to the same delayed script of ours; the
        // counterparty's own claims pay elsewhere.
        let same_script = spend.tx.output.first().map(|o| &o.script_pubkey)
            == lost.output.first().map(|o| &o.script_pubkey);
        if spend.block.is_none() || spend.tx == *lost || !same_script {
            return Some(None);
        }
        let rate = self.sweep_rate(NO_DEADLINE_BLOCKS).await;
        let dest = self.wallet.lock().await.new_address().ok()?;
        let sweep = entry.lock().await.channel.sweep_local_htlc_output(
            &spend.tx,
            dest.script_pubkey(),
            rate,
        );
        match sweep {
            Ok(sweep) => {
                tracing::info!(
                    channel = %id,
                    mined = %spend.tx.compute_txid(),
                    "an earlier version of our HTLC transaction confirmed: sweeping its output"
                );
                Some(Some(sweep))
            }
            Err(err) => {
                tracing::warn!(channel = %id, "output of an earlier HTLC transaction not swept: {err}");
                Some(None)
            }
        }
    }
}
