//! Getting our commitment of an anchor channel confirmed in time (BOLT 3 option_anchors).
//! Its fee rate was fixed when it was signed; once it is broadcast, a child spending our
//! anchor and wallet coins pays for both (CPFP) at the chain's estimate for the blocks
//! left before its deadline: the earliest expiry among the HTLCs on it, or
//! [`NO_DEADLINE_TARGET`] blocks when it carries none. Every block the child is
//! replaced (BIP 125 RBF, paying at least the incremental relay fee more) when the
//! estimate for the blocks left has risen above what it pays. Its fee never exceeds the
//! budget: [`super::NodeConfig::fee_budget_percent`] of what the commitment holds for us
//! (to_local and the HTLC outputs); a commitment that pays enough itself gets no child.

use super::channels::ChannelStatus;
use super::Node;
use crate::monitor::FeeChild;
use bitcoin::transaction::Version;
use bitcoin::{absolute, Amount, FeeRate, OutPoint, Sequence, Transaction, TxIn, Weight};
use chain::wallet::{Wallet, WalletError, FALLBACK_FEE_RATE};
use channel::commitment::ANCHOR_OUTPUT_SAT;
use channel::ChannelId;

/// Default of [`super::NodeConfig::fee_budget_percent`]: LND's default budget ratio for
/// anchor sweeps and HTLC transactions.
pub const DEFAULT_FEE_BUDGET_PERCENT: u64 = 50;
/// Confirmation target of a commitment with no HTLC on it (nothing expires: a day).
pub const NO_DEADLINE_TARGET: u32 = 144;
/// The longest confirmation target asked of the estimator (Core's limit).
const MAX_TARGET_BLOCKS: u32 = 1008;
/// Bitcoin Core's incremental relay fee (BIP 125 rule 4).
const INCREMENTAL_RELAY: FeeRate =
    FeeRate::from_sat_per_kwu(super::justice_fees::INCREMENTAL_RELAY_PER_KW);

/// A commitment of ours waiting to confirm, as seen under its channel's lock.
struct Waiting {
    id: ChannelId,
    commitment: Transaction,
    anchor: OutPoint,
    /// The commitment's own fee.
    fee: Amount,
    deadline: Option<u32>,
    /// What the commitment's outputs hold for us.
    at_stake: Amount,
    child: Option<FeeChild>,
}

impl Node {
    /// After each block: every anchor commitment of ours broadcast and not yet confirmed
    /// gets a child at the fee rate its deadline needs; children of commitments that will
    /// never confirm (another transaction spent the funding output) free their coins.
    pub(super) async fn bump_anchor_commitments(&self) {
        let Ok(tip) = self.config.chain.tip().await else {
            return;
        };
        let (waiting, done) = self.anchor_commitments().await;
        for (id, child) in done {
            // Our commitment confirmed: the child stays valid and goes on as a sweep.
            // Another transaction spent the funding output: it can never confirm.
            let mut settled = None;
            let _ = self
                .with_channel(&id, |e, _| {
                    settled = e.monitor.settle_anchor_child();
                    Ok(())
                })
                .await;
            let keep = settled.as_ref().is_some_and(|(_, keep)| *keep);
            if !keep {
                // Its coins are free again.
                self.wallet.lock().await.unlock(&child.tx);
            }
        }
        for w in waiting {
            self.bump_one(w, tip.height).await;
        }
    }

    async fn anchor_commitments(&self) -> (Vec<Waiting>, Vec<(ChannelId, FeeChild)>) {
        let preimages = self.known_preimages();
        let channels = self.channels.lock().await;
        let mut waiting = Vec::new();
        let mut done = Vec::new();
        for (id, e) in channels.iter() {
            let e = e.lock().await;
            if e.monitor.funding_spent() {
                if let Some(c) = e.monitor.anchor_child() {
                    done.push((*id, c.clone()));
                }
                continue;
            }
            if e.status != ChannelStatus::ForceClosed || !e.channel.anchors() {
                continue;
            }
            let Some((commitment, built)) = e.channel.signed_local_commitment() else {
                continue;
            };
            let Some(anchor) = e.channel.local_anchor(&commitment) else {
                continue;
            };
            let paid_out: Amount = commitment.output.iter().map(|o| o.value).sum();
            let fee = Amount::from_sat(e.channel.setup().funding_sat) - paid_out;
            // What the commitment holds for us: to_local, the HTLCs we offered (ours
            // again by timeout), and those offered to us whose preimage we know. An HTLC
            // the counterparty can take back is neither worth paying for nor a deadline.
            let ours: Vec<&channel::commitment::HtlcOutput> = built
                .htlcs
                .iter()
                .filter(|h| h.htlc.offered || preimages.contains_key(&h.htlc.payment_hash))
                .collect();
            let at_stake = built
                .to_local
                .iter()
                .map(|(vout, _)| built.output_value(*vout))
                .chain(ours.iter().map(|h| built.output_value(h.vout)))
                .sum();
            waiting.push(Waiting {
                id: *id,
                anchor,
                fee,
                deadline: ours.iter().map(|h| h.htlc.cltv_expiry).min(),
                at_stake,
                child: e.monitor.anchor_child().cloned(),
                commitment,
            });
        }
        (waiting, done)
    }

    async fn bump_one(&self, w: Waiting, tip: u32) {
        let chain = &*self.config.chain;
        let blocks_left = w
            .deadline
            .map_or(NO_DEADLINE_TARGET, |d| d.saturating_sub(tip).max(1))
            .min(MAX_TARGET_BLOCKS);
        let wanted = Wallet::fee_rate(chain, blocks_left as u16)
            .await
            .unwrap_or(FALLBACK_FEE_RATE);
        let parent_weight = w.commitment.weight();
        let own_rate = rate_of(w.fee, parent_weight);
        // As a package: in a spike the commitment alone is below the mempool's minimum.
        let rebroadcast = |c: &FeeChild| {
            let tx = c.tx.clone();
            let parent = w.commitment.clone();
            async move {
                if let Err(e) = chain.broadcast_package(&parent, &tx).await {
                    tracing::debug!(txid = %tx.compute_txid(), "anchor child not accepted: {e}");
                }
            }
        };
        match &w.child {
            None if own_rate >= wanted => return,
            Some(c) if c.package_sat_per_kwu >= wanted.to_sat_per_kwu() => {
                rebroadcast(c).await;
                return;
            }
            _ => {}
        }
        let budget = w.at_stake * self.config.fee_budget_percent / 100;
        let Some(child) = self.build_child(&w, wanted, budget).await else {
            if let Some(c) = &w.child {
                rebroadcast(c).await;
            }
            return;
        };
        tracing::info!(
            channel = %w.id,
            txid = %child.tx.compute_txid(),
            fee = child.fee_sat,
            package_sat_per_kwu = child.package_sat_per_kwu,
            blocks_left,
            replaces = w.child.is_some(),
            "paying for our commitment through its anchor"
        );
        let stored = self
            .with_channel(&w.id, |e, _| {
                if e.monitor.funding_spent() {
                    return Err(super::NodeError::Invalid("the commitment is already spent"));
                }
                e.monitor.set_anchor_child(Some(child.clone()));
                Ok(())
            })
            .await;
        if stored.is_err() {
            self.wallet.lock().await.unlock(&child.tx);
            if let Some(old) = &w.child {
                self.wallet.lock().await.restore(&old.tx);
            }
            return;
        }
        let Some(old) = &w.child else {
            rebroadcast(&child).await;
            return;
        };
        // A replacement the mempool refuses leaves the old child there, on its coins:
        // it stays the child, and the replacement's coins are freed.
        if let Err(e) = chain.broadcast_package(&w.commitment, &child.tx).await {
            tracing::info!(channel = %w.id, "replacement child refused, keeping the old one: {e}");
            let _ = self
                .with_channel(&w.id, |e, _| {
                    e.monitor.set_anchor_child(Some(old.clone()));
                    Ok(())
                })
                .await;
            let mut wallet = self.wallet.lock().await;
            wallet.unlock(&child.tx);
            wallet.restore(&old.tx);
            drop(wallet);
            rebroadcast(old).await;
        }
    }

    /// A child paying for `w.commitment` at `wanted` (or, beyond `budget`, at the rate the
    /// budget buys), signed, its coins reserved; replacing `w.child` (whose coins it may
    /// reuse), it pays at least the old fee plus the incremental relay fee. `None` when no
    /// child can do better than what is there.
    async fn build_child(&self, w: &Waiting, wanted: FeeRate, budget: Amount) -> Option<FeeChild> {
        let entry = self.entry(&w.id).await.ok()?;
        let template = Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: w.anchor,
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: entry.lock().await.channel.anchor_placeholder_witness(),
                ..Default::default()
            }],
            output: vec![],
        };
        let parent_weight = w.commitment.weight();
        let surplus = Amount::from_sat(ANCHOR_OUTPUT_SAT);
        let mut wallet = self.wallet.lock().await;
        if let Some(old) = &w.child {
            wallet.unlock(&old.tx);
        }
        let what = format!("the commitment of {}", w.id);
        let built = child_in_budget(
            &mut wallet,
            &what,
            |wallet, rate| {
                wallet.add_package_fee_inputs(template.clone(), rate, parent_weight, w.fee, surplus)
            },
            ParentFee {
                fee: w.fee,
                weight: parent_weight,
            },
            w.child.as_ref(),
            wanted,
            budget,
        );
        let Some((mut tx, fee)) = built else {
            if let Some(old) = &w.child {
                wallet.restore(&old.tx);
            }
            return None;
        };
        drop(wallet);
        if let Err(e) = entry.lock().await.channel.sign_anchor_input(&mut tx, 0) {
            tracing::warn!(channel = %w.id, "anchor input not signed: {e}");
            let mut wallet = self.wallet.lock().await;
            wallet.unlock(&tx);
            if let Some(old) = &w.child {
                wallet.restore(&old.tx);
            }
            return None;
        }
        let package = rate_of(w.fee + fee, parent_weight + tx.weight());
        if w.child.is_none() && package <= rate_of(w.fee, parent_weight) {
            self.wallet.lock().await.unlock(&tx);
            return None;
        }
        Some(FeeChild {
            fee_sat: fee.to_sat(),
            package_sat_per_kwu: package.to_sat_per_kwu(),
            tx,
        })
    }
}

/// What a parent pays for itself.
pub(super) struct ParentFee {
    pub fee: Amount,
    pub weight: Weight,
}

/// A child built by `build` (given the wallet and a package fee rate: the child and its
/// own fee, its coins reserved) at `wanted`, or, beyond `budget` (the child's own fee),
/// at the rate the budget buys; replacing `old` (whose coins the caller has released),
/// it pays at least the old fee plus its own size at the incremental relay fee, and
/// beats the old child's rate (BIP 125, and Core's rule on the replacement's own rate).
/// `None` when the wallet cannot pay or no replacement fits the budget.
pub(super) fn child_in_budget(
    wallet: &mut Wallet,
    what: &str,
    mut build: impl FnMut(&mut Wallet, FeeRate) -> Result<(Transaction, Amount), WalletError>,
    parent: ParentFee,
    old: Option<&FeeChild>,
    wanted: FeeRate,
    budget: Amount,
) -> Option<(Transaction, Amount)> {
    let mut rate = wanted;
    for _ in 0..3 {
        let (tx, fee) = match build(wallet, rate) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("the wallet cannot pay for {what}: {e}");
                return None;
            }
        };
        let floor = old.map_or(Amount::ZERO, |c| {
            let old_rate = rate_of(Amount::from_sat(c.fee_sat), c.tx.weight());
            let by_rate = old_rate.fee_wu(tx.weight()).unwrap_or(Amount::MAX) + Amount::from_sat(1);
            let by_fee = Amount::from_sat(c.fee_sat)
                + INCREMENTAL_RELAY.fee_wu(tx.weight()).unwrap_or(Amount::MAX);
            by_fee.max(by_rate)
        });
        let retarget = |fee_wanted: Amount| {
            let r = rate_of(fee_wanted + parent.fee, parent.weight + tx.weight());
            FeeRate::from_sat_per_kwu(r.to_sat_per_kwu() + 1)
        };
        if fee < floor {
            wallet.unlock(&tx);
            rate = retarget(floor);
            continue;
        }
        if fee > budget {
            wallet.unlock(&tx);
            if budget < floor {
                return None; // no replacement fits the budget: keep the child there is
            }
            // Scaled so that the package fee is what the budget allows, over the weight
            // the builder counts (its placeholder witnesses may be larger than the
            // signed ones): a rate taken from the signed weight would overshoot again.
            let scaled = u128::from(rate.to_sat_per_kwu())
                * u128::from((budget + parent.fee).to_sat())
                / u128::from((fee + parent.fee).to_sat().max(1));
            rate = FeeRate::from_sat_per_kwu(u64::try_from(scaled).unwrap_or(u64::MAX));
            continue;
        }
        return Some((tx, fee));
    }
    None
}

/// The fee rate `fee` pays over `weight`, rounded down.
pub(super) fn rate_of(fee: Amount, weight: Weight) -> FeeRate {
    FeeRate::from_sat_per_kwu(fee.to_sat() * 1000 / weight.to_wu().max(1))
}
