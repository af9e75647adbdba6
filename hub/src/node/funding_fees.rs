//! Getting the funding transaction of a channel we opened confirmed. It goes out again
//! every block until it confirms: a crash between storing the channel and broadcasting,
//! or a mempool that dropped it, must not leave the open hanging (the peer forgets an
//! unconfirmed funding after 2016 blocks). Its txid cannot change (both commitments are
//! signed on it), so it cannot be replaced: when the chain's estimate for
//! [`FUNDING_TARGET_BLOCKS`] (the target it was built for) rises more than
//! [`FEE_RAISE_THRESHOLD_PERCENT`] above what it pays, a child spending its change pays
//! for both (CPFP), and is replaced (RBF) as the estimate keeps rising. The child's fee
//! stays within [`super::NodeConfig::funding_fee_budget_percent`] of the channel's
//! capacity, less what the funding paid itself: nothing is at risk while a funding waits,
//! so the budget is small. Followed while the funding has not reached its depth and its
//! output is unspent, whatever became of the channel meanwhile (a peer's `error`, a force
//! close); a child left over once the funding confirmed is forgotten when it is not in
//! the mempool any more, and its coins are freed.

use super::anchor_cpfp::{child_in_budget, rate_of, ParentFee};
use super::channels::ChannelStatus;
use super::commitment_fees::FEE_RAISE_THRESHOLD_PERCENT;
use super::Node;
use crate::monitor::FeeChild;
use bitcoin::{Amount, FeeRate, Transaction};
use chain::wallet::{Wallet, FALLBACK_FEE_RATE};
use channel::ChannelId;

/// The confirmation target a funding transaction is built for and held to.
pub(super) const FUNDING_TARGET_BLOCKS: u16 = 6;
/// Default of [`super::NodeConfig::funding_fee_budget_percent`].
pub const DEFAULT_FUNDING_FEE_BUDGET_PERCENT: u64 = 5;
/// Core's minimum relay fee: a child paying less is refused.
const MIN_RELAY_SAT_PER_KWU: u64 = 250;

/// A funding transaction of ours not yet confirmed, as seen under its channel's lock.
struct Unconfirmed {
    id: ChannelId,
    funding: Transaction,
    /// What it pays itself; unknown for channels opened before it was recorded.
    fee: Option<Amount>,
    /// Its output back to our wallet.
    change: Option<u32>,
    capacity: Amount,
    child: Option<FeeChild>,
}

impl Node {
    /// After each block: every funding transaction of ours still unconfirmed goes out
    /// again, with a child when the estimate has risen past what it pays.
    pub(super) async fn bump_fundings(&self) {
        for u in self.unconfirmed_fundings().await {
            self.bump_funding(u).await;
        }
    }

    async fn unconfirmed_fundings(&self) -> Vec<Unconfirmed> {
        let channels = self.channels.lock().await;
        let mut v = Vec::new();
        for (id, e) in channels.iter() {
            let e = e.lock().await;
            let Some(funding) = &e.funding_tx else {
                continue;
            };
            // Until the funding reached its depth (or while a child of it is kept), and
            // not once anything spent its output.
            let waiting = !e.ready_sent || e.funding_child.is_some();
            if !waiting || e.monitor.funding_spent() || e.status == ChannelStatus::Closed {
                continue;
            }
            let setup = e.channel.setup();
            // The wallet builds a funding as the channel's output and its change.
            let change =
                (0..funding.output.len() as u32).find(|&i| i != setup.funding_outpoint.vout);
            v.push(Unconfirmed {
                id: *id,
                funding: funding.clone(),
                fee: e.funding_fee_sat.map(Amount::from_sat),
                change,
                capacity: Amount::from_sat(setup.funding_sat),
                child: e.funding_child.clone(),
            });
        }
        v
    }

    async fn bump_funding(&self, u: Unconfirmed) {
        let chain = &*self.config.chain;
        let txid = u.funding.compute_txid();
        match chain.confirmations(&txid).await {
            Ok(0) => {}
            Ok(_) => {
                // Confirmed: a child still in the mempool is left to confirm; one that
                // confirmed, or that the mempool dropped (its fee was for the parent, no
                // use sending it again), is forgotten, and a dropped one's coins are free.
                if let Some(c) = &u.child {
                    let child = c.tx.compute_txid();
                    let (Ok(depth), Ok(known)) = (
                        chain.confirmations(&child).await,
                        chain.transaction(&child).await,
                    ) else {
                        return;
                    };
                    if depth == 0 && known.is_some() {
                        return;
                    }
                    let _ = self
                        .with_channel(&u.id, |e, _| {
                            e.funding_child = None;
                            Ok(())
                        })
                        .await;
                    if depth == 0 {
                        self.wallet.lock().await.unlock(&c.tx);
                    }
                }
                return;
            }
            Err(e) => {
                tracing::debug!(channel = %u.id, "funding confirmations: {e}");
                return;
            }
        }
        let wanted = Wallet::fee_rate(chain, FUNDING_TARGET_BLOCKS)
            .await
            .unwrap_or(FALLBACK_FEE_RATE);
        // A funding whose fee was not recorded (opened before it was) is only sent again.
        let paying = match (&u.child, u.fee) {
            (Some(c), _) => Some(FeeRate::from_sat_per_kwu(c.package_sat_per_kwu)),
            (None, Some(fee)) => Some(rate_of(fee, u.funding.weight())),
            (None, None) => None,
        };
        let raise = paying.is_some_and(|p| {
            u128::from(wanted.to_sat_per_kwu()) * 100
                > u128::from(p.to_sat_per_kwu()) * u128::from(100 + FEE_RAISE_THRESHOLD_PERCENT)
        });
        let child = match (raise, u.fee, u.change) {
            (true, Some(fee), Some(vout)) => self.funding_child(&u, fee, vout, wanted).await,
            _ => None,
        };
        let Some(child) = child else {
            self.rebroadcast_funding(&u.funding, u.child.as_ref()).await;
            return;
        };
        tracing::info!(
            channel = %u.id,
            funding = %txid,
            child = %child.tx.compute_txid(),
            fee = child.fee_sat,
            package_sat_per_kwu = child.package_sat_per_kwu,
            replaces = u.child.is_some(),
            "paying for our funding transaction through its change"
        );
        let stored = self
            .with_channel(&u.id, |e, _| {
                if e.status != ChannelStatus::AwaitingLock {
                    return Err(super::NodeError::Invalid(
                        "the funding is no longer waiting",
                    ));
                }
                e.funding_child = Some(child.clone());
                Ok(())
            })
            .await;
        let accepted = match stored {
            Ok(()) => match chain.broadcast_package(&u.funding, &child.tx).await {
                Ok(()) => Ok(()),
                // An error that may hide an acceptance (a timeout after Core took it):
                // the mempool tells.
                Err(e) => match chain.transaction(&child.tx.compute_txid()).await {
                    Ok(Some(_)) => Ok(()),
                    _ => Err(e.to_string()),
                },
            },
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = accepted {
            // Refused (or not stored): the old child, if any, stays the child, and the
            // new one's coins are free again.
            tracing::info!(channel = %u.id, "funding child not accepted, keeping what was there: {e}");
            let _ = self
                .with_channel(&u.id, |e, _| {
                    e.funding_child = u.child.clone();
                    Ok(())
                })
                .await;
            let mut wallet = self.wallet.lock().await;
            wallet.unlock(&child.tx);
            if let Some(old) = &u.child {
                wallet.restore(&old.tx);
            }
            drop(wallet);
            self.rebroadcast_funding(&u.funding, u.child.as_ref()).await;
        }
    }

    /// A child of `u.funding` (paying `fee` itself) through its change output `vout`, at
    /// `wanted` for the two together, within the budget; replacing `u.child`.
    async fn funding_child(
        &self,
        u: &Unconfirmed,
        fee: Amount,
        vout: u32,
        wanted: FeeRate,
    ) -> Option<FeeChild> {
        let budget = (u.capacity * self.config.funding_fee_budget_percent / 100)
            .checked_sub(fee)
            .unwrap_or(Amount::ZERO);
        if budget == Amount::ZERO {
            return None;
        }
        let parent_weight = u.funding.weight();
        let mut wallet = self.wallet.lock().await;
        if let Some(old) = &u.child {
            wallet.unlock(&old.tx);
        }
        let built = child_in_budget(
            &mut wallet,
            "our funding",
            |wallet, rate| wallet.cpfp_child(&u.funding, vout, rate, fee),
            ParentFee {
                fee,
                weight: parent_weight,
            },
            u.child.as_ref(),
            wanted,
            budget,
        );
        let Some((tx, child_fee)) = built else {
            if let Some(old) = &u.child {
                wallet.restore(&old.tx);
            }
            return None;
        };
        let package = rate_of(fee + child_fee, parent_weight + tx.weight());
        // A child that would not raise the package above what is there, or that pays
        // less than the relay minimum itself, is not worth sending.
        let floor = u.child.as_ref().map_or(rate_of(fee, parent_weight), |c| {
            FeeRate::from_sat_per_kwu(c.package_sat_per_kwu)
        });
        if package <= floor
            || rate_of(child_fee, tx.weight()).to_sat_per_kwu() < MIN_RELAY_SAT_PER_KWU
        {
            wallet.unlock(&tx);
            if let Some(old) = &u.child {
                wallet.restore(&old.tx);
            }
            return None;
        }
        Some(FeeChild {
            fee_sat: child_fee.to_sat(),
            package_sat_per_kwu: package.to_sat_per_kwu(),
            tx,
        })
    }

    async fn rebroadcast_funding(&self, funding: &Transaction, child: Option<&FeeChild>) {
        let chain = &*self.config.chain;
        // As a package with its child: in a spike the funding alone may be below the
        // mempool's minimum.
        let sent = match child {
            Some(c) => chain.broadcast_package(funding, &c.tx).await,
            None => chain.broadcast(funding).await.map(|_| ()),
        };
        if let Err(e) = sent {
            tracing::debug!(txid = %funding.compute_txid(), "funding not accepted again: {e}");
        }
    }
}
