//! The fee rates of the node's own sweeps, and their bumping: what a commitment on chain
//! pays us that only we can take (to_local after its CSV delay, to_remote, the output of
//! our HTLC transactions) and the HTLC outputs of the counterparty's commitment that we
//! claim with a preimage or after their timeout. Each pays its fee out of the output it
//! takes, and has a deadline:
//! - an HTLC offered to us, claimed with its preimage: its expiry (from then on the
//!   counterparty can take it back by timeout);
//! - an HTLC we offered, claimed by timeout: for a forward, 12 blocks before the
//!   incoming HTLC's expiry (after it the upstream node takes its HTLC back, and a
//!   preimage the downstream reveals later would cost us the amount; the claim must be
//!   6 deep before the incoming HTLC is failed back); for our own payment,
//!   [`OWN_PAYMENT_TIMEOUT_BLOCKS`] after the expiry (the counterparty may still claim
//!   it with the preimage until then, which settles our payment);
//! - anything else (nobody else can take it): [`NO_DEADLINE_BLOCKS`] after the output
//!   becomes spendable, LND's confirmation target for sweeps without a deadline.
//!
//! Each is built at the chain's estimate for the blocks left before its deadline (at
//! least the relay floor), and every block one still unconfirmed is replaced (BIP 125:
//! the old fee plus 1 sat/vB of its size at least) when that estimate has risen above
//! what it pays, so the rate climbs as the deadline nears. A sweep with no deadline is
//! left at its rate until [`NO_DEADLINE_PATIENCE`] blocks before its nominal one: it
//! waits a spike out instead of paying for it. Its fee never exceeds the
//! budget, [`super::NodeConfig::fee_budget_percent`] of the output. Justice transactions
//! are bumped by [`super::justice_fees`], whose budget is the whole output.

use super::justice_fees::{INCREMENTAL_RELAY_PER_KW, JUSTICE_FLOOR};
use super::Node;
use bitcoin::{Amount, ScriptBuf, Transaction, Txid};
use chain::wallet::{Wallet, FALLBACK_FEE_RATE};
use channel::commitment::CommitmentTx;
use channel::{ChannelId, FeeratePerKw, Side};

/// The deadline of a sweep nobody else can take: this many blocks after its output
/// becomes spendable (LND's `sweeper.nodeadlineconftarget` default; Core's longest
/// estimate).
pub const NO_DEADLINE_BLOCKS: u32 = 1008;
/// A sweep with no deadline is bumped only within this many blocks of its nominal
/// deadline (a day): before that, it waits for fees to come down.
pub const NO_DEADLINE_PATIENCE: u32 = 144;
/// The deadline of the timeout claim of our own payment's HTLC, after its expiry (a day).
pub const OWN_PAYMENT_TIMEOUT_BLOCKS: u32 = 144;

/// How a sweep is built again at another fee rate.
enum Rebuild {
    /// to_local of our commitment (CSV-delayed).
    ToLocal(Box<CommitmentTx>),
    /// to_remote of the counterparty's commitment (current or revoked).
    ToRemote(Transaction),
    /// An HTLC output of the counterparty's current commitment.
    RemoteHtlc(Txid),
    /// The output of our HTLC transaction `0` (CSV-delayed).
    LocalHtlcOutput(Transaction),
}

/// An unconfirmed sweep of ours and what it takes.
pub(super) struct Pending {
    /// The sweep.
    pub(super) old: Transaction,
    rebuild: Rebuild,
    /// The value of the output it spends.
    pub(super) value: Amount,
    /// The height by which it must confirm, when someone else could take the output.
    pub(super) deadline: Option<u32>,
}

/// The relative locktime in blocks that `input` waits for (its CSV delay), 0 for none.
pub(super) fn csv_blocks(input: &bitcoin::TxIn) -> u32 {
    input
        .sequence
        .to_relative_lock_time()
        .and_then(|l| match l {
            bitcoin::relative::LockTime::Blocks(h) => Some(u32::from(h.value())),
            _ => None,
        })
        .unwrap_or(0)
}

impl Node {
    /// The fee rate of a sweep with `blocks_left` before its deadline: the chain's
    /// estimate (at least the relay floor).
    pub(super) async fn sweep_rate(&self, blocks_left: u32) -> FeeratePerKw {
        let target = blocks_left.clamp(1, NO_DEADLINE_BLOCKS) as u16;
        let estimate = Wallet::fee_rate(&*self.config.chain, target)
            .await
            .unwrap_or(FALLBACK_FEE_RATE)
            .to_sat_per_kwu();
        FeeratePerKw(estimate.clamp(u64::from(JUSTICE_FLOOR.0), u64::from(u32::MAX)) as u32)
    }

    /// The height by which the timeout claim of HTLC `htlc_id` we offered on channel `id`,
    /// expiring at `cltv_expiry`, must confirm: for a forward still pending, early enough
    /// to be `ANTI_REORG_DEPTH` deep (when the incoming HTLC is failed back) with
    /// `FULFILL_SAFETY` blocks to spare before the incoming HTLC's expiry (but not before
    /// the claim can be mined); else [`OWN_PAYMENT_TIMEOUT_BLOCKS`] after its own expiry.
    pub(super) fn timeout_deadline(&self, id: &ChannelId, htlc_id: u64, cltv_expiry: u32) -> u32 {
        let pay = self.pay.lock().expect("pay lock");
        let margin = super::sweeps::ANTI_REORG_DEPTH + super::onchain::FULFILL_SAFETY;
        pay.forwards
            .values()
            .filter(|f| f.status == "pending" && f.out_channel == *id)
            .find(|f| f.out_htlc == Some(htlc_id))
            .map_or(cltv_expiry + OWN_PAYMENT_TIMEOUT_BLOCKS, |f| {
                f.in_cltv.saturating_sub(margin).max(cltv_expiry + 1)
            })
    }

    /// The channels with a commitment on chain and sweeps still kept.
    pub(super) async fn channels_with_sweeps(&self) -> Vec<ChannelId> {
        let channels = self.channels.lock().await;
        let mut v = Vec::new();
        for (id, e) in channels.iter() {
            let e = e.lock().await;
            if e.monitor.onchain_commitment().is_some() && !e.monitor.sweeps().is_empty() {
                v.push(*id);
            }
        }
        v
    }

    /// [`Node::bump_own_sweeps`] for every channel with a commitment on chain.
    pub(super) async fn bump_all_own_sweeps(&self) {
        for id in self.channels_with_sweeps().await {
            let follow = self.bump_own_sweeps(&id).await;
            self.run_follow_ups(follow).await;
        }
    }

    /// Replaces, in channel `id`'s sweeps, each unconfirmed sweep of ours that pays less
    /// than the estimate for the blocks left before its deadline, within its budget.
    /// Returns the follow-ups of the channel update, for the caller to run.
    pub(super) async fn bump_own_sweeps(&self, id: &ChannelId) -> Vec<super::pay::FollowUp> {
        let chain = &self.config.chain;
        let Ok(tip) = chain.tip().await else {
            return vec![];
        };
        let mut replace: Vec<(Transaction, Transaction)> = Vec::new();
        for p in self.own_pending_sweeps(id).await {
            let txid = p.old.compute_txid();
            if chain.confirmations(&txid).await.unwrap_or(1) > 0 {
                continue;
            }
            // A batch holding it is bumped as a whole (`sweep_batch`).
            if self
                .batch_holding(&p.old.input[0].previous_output)
                .is_some()
            {
                continue;
            }
            // A timeout claim cannot be relayed before its locktime: nothing to bump.
            let lock = p.old.lock_time;
            if lock.is_block_height() && lock.to_consensus_u32() > tip.height {
                continue;
            }
            let deadline = match p.deadline {
                Some(d) => d,
                None => {
                    let Some(deadline) = self.nominal_deadline(&p.old).await else {
                        continue;
                    };
                    if deadline > tip.height + NO_DEADLINE_PATIENCE {
                        continue;
                    }
                    deadline
                }
            };
            let blocks_left = deadline.saturating_sub(tip.height).max(1);
            let rate = self.sweep_rate(blocks_left).await;
            let Some(old_fee) = p.value.checked_sub(p.old.output[0].value) else {
                continue;
            };
            let weight = p.old.weight().to_wu().max(1);
            let wanted = u64::from(rate.0) * weight / 1000;
            if wanted <= old_fee.to_sat() {
                continue;
            }
            let budget = p.value.to_sat() * self.config.fee_budget_percent / 100;
            // BIP 125: the old fee plus the incremental relay fee over its size.
            let floor = old_fee.to_sat() + INCREMENTAL_RELAY_PER_KW * weight / 1000;
            let fee = wanted.max(floor + 1).min(budget);
            if fee <= floor {
                tracing::debug!(channel = %id, %txid, budget, "sweep at its budget: not bumped");
                continue;
            }
            let mut rate = FeeratePerKw((fee * 1000 / weight + 1).min(u64::from(u32::MAX)) as u32);
            let Some(mut new) = self.rebuild_sweep(id, &p, rate).await else {
                continue;
            };
            let fee_of = |t: &Transaction| {
                p.value
                    .checked_sub(t.output[0].value)
                    .unwrap_or(Amount::ZERO)
                    .to_sat()
            };
            if fee_of(&new) > budget {
                // The builder counts our signature at its largest size: scaled down to
                // the budget once, rounded down.
                rate = FeeratePerKw(
                    (u64::from(rate.0) * budget / fee_of(&new).max(1)).saturating_sub(1) as u32,
                );
                let Some(again) = self.rebuild_sweep(id, &p, rate).await else {
                    continue;
                };
                new = again;
            }
            let new_fee = Amount::from_sat(fee_of(&new));
            let same_input = new.input.len() == 1
                && new.input[0].previous_output == p.old.input[0].previous_output;
            if same_input && new_fee.to_sat() > floor && new_fee.to_sat() <= budget.max(floor) {
                replace.push((p.old, new));
            }
        }
        if replace.is_empty() {
            return vec![];
        }
        let (_, follow) = self
            .with_channel_once(id, |e, _| {
                for (old, new) in &replace {
                    if e.monitor.replace_sweep(old, new) {
                        tracing::info!(
                            channel = %id,
                            old = %old.compute_txid(),
                            new = %new.compute_txid(),
                            "sweep replaced at a higher fee as its deadline nears"
                        );
                    }
                }
                Ok(())
            })
            .await;
        follow
    }

    /// The nominal deadline of `sweep`, which nobody else can take: [`NO_DEADLINE_BLOCKS`]
    /// after its input becomes spendable (its parent's confirmation plus any CSV delay,
    /// or the sweep's own locktime). `None` while the parent is unconfirmed.
    pub(super) async fn nominal_deadline(&self, sweep: &Transaction) -> Option<u32> {
        let input = sweep.input.first()?;
        // The parent's block height as the chain gives it now (not worked out from a tip
        // read earlier: blocks may have come since).
        let confirmed_at = self
            .confirmed_height(&input.previous_output.txid)
            .await
            .ok()??;
        let csv = csv_blocks(input);
        let spendable = confirmed_at
            .saturating_add(csv)
            .max(sweep.lock_time.to_consensus_u32().min(500_000_000));
        Some(spendable + NO_DEADLINE_BLOCKS)
    }

    /// Channel `id`'s sweeps that are ours alone to bump: one input, one output, paid out
    /// of the output they spend (not justice, not a wallet-funded HTLC transaction).
    pub(super) async fn own_pending_sweeps(&self, id: &ChannelId) -> Vec<Pending> {
        let Ok(entry) = self.entry(id).await else {
            return vec![];
        };
        let (side, built, breach, sweeps) = {
            let e = entry.lock().await;
            let Some(txid) = e.monitor.onchain_commitment() else {
                return vec![];
            };
            match e.channel.commitment_by_txid(&txid) {
                Some((side, built)) => (Some(side), Some(built), None, e.monitor.sweeps().to_vec()),
                None => (
                    None,
                    None,
                    e.monitor.breach().cloned(),
                    e.monitor.sweeps().to_vec(),
                ),
            }
        };
        let mut out = Vec::new();
        for old in &sweeps {
            if old.input.len() != 1 || old.output.len() != 1 {
                continue;
            }
            let prev = old.input[0].previous_output;
            let value_in = |tx: &Transaction| tx.output.get(prev.vout as usize).map(|o| o.value);
            let pending = |rebuild, value, deadline| Pending {
                old: old.clone(),
                rebuild,
                value,
                deadline,
            };
            if let Some(r) = breach.as_ref().filter(|r| r.commitment.txid() == prev.txid) {
                // Of a revoked commitment only to_remote is ours alone; the rest is
                // justice.
                if r.commitment.to_remote == Some(prev.vout) {
                    let tx = r.commitment.tx.clone();
                    if let Some(v) = value_in(&tx) {
                        out.push(pending(Rebuild::ToRemote(tx), v, None));
                    }
                }
                continue;
            }
            let (Some(side), Some(built)) = (side, built.as_ref()) else {
                continue;
            };
            if prev.txid == built.txid() {
                let value = built.output_value(prev.vout);
                match side {
                    Side::Local if built.to_local.as_ref().map(|(v, _)| *v) == Some(prev.vout) => {
                        out.push(pending(
                            Rebuild::ToLocal(Box::new(built.clone())),
                            value,
                            None,
                        ));
                    }
                    Side::Local => {} // an HTLC transaction: pre-signed or wallet-funded
                    Side::Remote if built.to_remote == Some(prev.vout) => {
                        out.push(pending(Rebuild::ToRemote(built.tx.clone()), value, None));
                    }
                    Side::Remote => {
                        let Some(h) = built.htlcs.iter().find(|h| h.vout == prev.vout) else {
                            continue;
                        };
                        // Offered by the counterparty: ours with the preimage until its
                        // expiry. Offered by us: ours by timeout, due by the upstream's.
                        let deadline = Some(if h.htlc.offered {
                            h.htlc.cltv_expiry
                        } else {
                            self.timeout_deadline(id, h.htlc.id.0, h.htlc.cltv_expiry)
                        });
                        out.push(pending(Rebuild::RemoteHtlc(built.txid()), value, deadline));
                    }
                }
                continue;
            }
            if side != Side::Local {
                continue;
            }
            // The output of one of our HTLC transactions (kept as a sweep until deep, or
            // found on chain after).
            let parent = match sweeps.iter().find(|t| t.compute_txid() == prev.txid) {
                Some(t) => Some(t.clone()),
                None => match self.config.chain.transaction(&prev.txid).await {
                    Ok(Some((t, _))) => Some(t),
                    _ => None,
                },
            };
            let Some(parent) = parent.filter(|t| {
                t.input
                    .first()
                    .is_some_and(|i| i.previous_output.txid == built.txid())
            }) else {
                continue;
            };
            if let Some(v) = value_in(&parent) {
                out.push(pending(Rebuild::LocalHtlcOutput(parent), v, None));
            }
        }
        out
    }

    /// `p.old` built again at `rate`, to the same destination.
    async fn rebuild_sweep(
        &self,
        id: &ChannelId,
        p: &Pending,
        rate: FeeratePerKw,
    ) -> Option<Transaction> {
        let entry = self.entry(id).await.ok()?;
        let dest: ScriptBuf = p.old.output[0].script_pubkey.clone();
        let prev = p.old.input[0].previous_output;
        let preimages = self.known_preimages();
        let e = entry.lock().await;
        let built = match &p.rebuild {
            Rebuild::ToLocal(c) => {
                let number = e.channel.local_commitment_number();
                e.channel.sweep_local_to_local(number, c, dest, rate)?
            }
            Rebuild::ToRemote(tx) => e.channel.sweep_to_remote(tx, dest, rate)?,
            Rebuild::RemoteHtlc(txid) => {
                let preimage_for = |h: &channel::PaymentHash| preimages.get(h).copied();
                return e
                    .channel
                    .remote_htlc_claims(txid, preimage_for, dest, rate)
                    .into_iter()
                    .find(|t| t.input[0].previous_output == prev);
            }
            Rebuild::LocalHtlcOutput(parent) => {
                e.channel.sweep_local_htlc_output(parent, dest, rate)
            }
        };
        match built {
            Ok(t) => Some(t),
            Err(err) => {
                tracing::debug!(channel = %id, "sweep not rebuilt at {} sat/kw: {err}", rate.0);
                None
            }
        }
    }
}
