//! The fee rate of the justice transactions against a revoked commitment (and against
//! the outputs of the cheater's second-stage transactions), and their bumping. A justice transaction has a deadline: the cheater takes to_local once her
//! CSV delay has passed, and a revoked HTLC output as soon as her own HTLC transaction
//! confirms. Each is built at the chain's estimate for the blocks left (at least the
//! relay floor), and every block one still unconfirmed is replaced (BIP 125: the old fee
//! plus 1 sat/vB of its size at least) when the estimate for the blocks left has risen.
//! Its fee comes out of the output it takes, so what it may pay is bounded by that output
//! (an output worth less than its fee is left: the cheater cannot gain from it either).

use super::Node;
use bitcoin::{ScriptBuf, Transaction};
use chain::wallet::{Wallet, FALLBACK_FEE_RATE};
use channel::state::RevokedCommitment;
use channel::{ChannelId, FeeratePerKw};

/// The lowest rate a justice transaction (or a budget-held HTLC transaction) is built at:
/// Core's long-standing minimum relay fee.
pub(super) const JUSTICE_FLOOR: FeeratePerKw = FeeratePerKw(253);
/// Confirmation target for a revoked HTLC output: the cheater may spend it at once.
const HTLC_OUTPUT_TARGET: u32 = 2;
/// Core's incremental relay fee (BIP 125 rule 4), sat per 1000 weight units: 1 sat/vB,
/// its long-standing default.
pub(super) const INCREMENTAL_RELAY_PER_KW: u64 = 250;

impl Node {
    /// The rate for a justice transaction with `blocks_left` before the cheater can take
    /// its output.
    pub(super) async fn justice_rate(&self, blocks_left: u32) -> FeeratePerKw {
        let target = blocks_left.clamp(1, 1008) as u16;
        let estimate = Wallet::fee_rate(&*self.config.chain, target)
            .await
            .unwrap_or(FALLBACK_FEE_RATE)
            .to_sat_per_kwu();
        FeeratePerKw(estimate.clamp(u64::from(JUSTICE_FLOOR.0), u64::from(u32::MAX)) as u32)
    }

    /// Blocks left before the cheater can take the outputs of `revoked` (confirmed at
    /// `confirmations` deep): to_local's CSV, or at once for an HTLC output.
    pub(super) fn blocks_left(revoked: &RevokedCommitment, confirmations: u32, htlc: bool) -> u32 {
        if htlc {
            HTLC_OUTPUT_TARGET
        } else {
            u32::from(revoked.commitment.to_self_delay).saturating_sub(confirmations)
        }
    }

    /// [`Node::bump_justice`] for every channel with a breach on chain.
    pub(super) async fn bump_all_justice(&self) {
        let ids: Vec<ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.monitor.breach().is_some() && !e.monitor.sweeps().is_empty() {
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            self.bump_justice(&id).await;
        }
    }

    /// Replaces, in channel `id`'s sweeps, each unconfirmed justice transaction against
    /// its revoked commitment that pays less than the estimate for its blocks left now.
    async fn bump_justice(&self, id: &ChannelId) {
        let Ok(entry) = self.entry(id).await else {
            return;
        };
        let (breach, sweeps) = {
            let e = entry.lock().await;
            match e.monitor.breach() {
                Some(b) => (b.clone(), e.monitor.sweeps().to_vec()),
                None => return,
            }
        };
        let revoked_txid = breach.commitment.txid();
        let confirmations = self
            .config
            .chain
            .confirmations(&revoked_txid)
            .await
            .unwrap_or(0);
        let mut replace: Vec<(Transaction, Transaction)> = Vec::new();
        for old in &sweeps {
            if old.output.len() != 1 || old.input.is_empty() {
                continue;
            }
            let depth =
                |txid| async move { self.config.chain.confirmations(&txid).await.unwrap_or(0) };
            if depth(old.compute_txid()).await > 0 {
                continue;
            }
            let parent_txid = old.input[0].previous_output.txid;
            let dest: ScriptBuf = old.output[0].script_pubkey.clone();
            // What the old transaction takes, the blocks left, and how to build it again
            // at a rate.
            let (value, blocks_left, second_stage) = if parent_txid == revoked_txid {
                let vout = old.input[0].previous_output.vout;
                if old.input.len() != 1 || Some(vout) == breach.commitment.to_remote {
                    continue; // our own output: no deadline
                }
                let htlc = breach.commitment.htlcs.iter().any(|h| h.vout == vout);
                (
                    breach.commitment.output_value(vout),
                    Self::blocks_left(&breach, confirmations, htlc),
                    None,
                )
            } else {
                // The output of the cheater's HTLC-success/timeout, taken with the
                // revocation key before her CSV delay ends.
                let Ok(Some((parent, _))) = self.config.chain.transaction(&parent_txid).await
                else {
                    continue;
                };
                let outs = channel::state::second_stage_outputs(&breach.commitment, &parent);
                let taken: Vec<_> = outs
                    .iter()
                    .filter(|o| old.input.iter().any(|i| i.previous_output == o.outpoint))
                    .collect();
                if taken.len() != old.input.len() {
                    continue;
                }
                let left = u32::from(breach.commitment.to_self_delay)
                    .saturating_sub(depth(parent_txid).await);
                (taken.iter().map(|o| o.value).sum(), left, Some(parent))
            };
            let rate = self.justice_rate(blocks_left).await;
            let old_fee = value - old.output[0].value;
            let weight = old.weight().to_wu();
            if u64::from(rate.0) * weight / 1000 <= old_fee.to_sat() {
                continue;
            }
            let floor = old_fee.to_sat() + INCREMENTAL_RELAY_PER_KW * weight / 1000;
            let rate = FeeratePerKw(rate.0.max((floor * 1000 / weight.max(1) + 1) as u32));
            let rebuilt = {
                let e = entry.lock().await;
                match &second_stage {
                    None => e
                        .channel
                        .justice_tx_for_output(
                            &breach,
                            old.input[0].previous_output.vout,
                            dest,
                            rate,
                        )
                        .and_then(Result::ok),
                    Some(parent) => {
                        match e.channel.second_stage_justice(&breach, parent, dest, rate) {
                            Some(Ok(t)) if t.input.len() == old.input.len() => Some(t),
                            _ => None,
                        }
                    }
                }
            };
            if let Some(new) = rebuilt {
                let same_inputs = new
                    .input
                    .iter()
                    .zip(&old.input)
                    .all(|(n, o)| n.previous_output == o.previous_output);
                if same_inputs && value - new.output[0].value > old_fee {
                    replace.push((old.clone(), new));
                }
            }
        }
        if replace.is_empty() {
            return;
        }
        let _ = self
            .with_channel(id, |e, _| {
                for (old, new) in &replace {
                    if e.monitor.replace_sweep(old, new) {
                        tracing::warn!(
                            channel = %id,
                            old = %old.compute_txid(),
                            new = %new.compute_txid(),
                            "justice transaction replaced at a higher fee"
                        );
                    }
                }
                Ok(())
            })
            .await;
    }
}
