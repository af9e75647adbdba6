//! The commitment fee rate the node sets as a channel's funder. A static_remotekey
//! commitment cannot be bumped once broadcast, so when the chain's 6-block estimate
//! climbs more than a fifth above its rate the node sends `update_fee` with the estimate
//! (BOLT 2: the funder keeps the commitment fee timely). When the estimate falls below
//! half the rate, the node lowers it to the estimate (as LDK does), so that a force close
//! does not pay a spike's fee long after it passed; between the two, nothing changes.
//! The estimate followed is the larger of the 6-block and the 144-block ones.
//! Anchor channels keep their rate, which their anchors bump on chain.

use super::channel_updates::UPDATE_FEE_FLOOR;
use super::channels::ChannelStatus;
use super::Node;
use channel::msgs::Message;
use channel::state::ViewOf;
use channel::FeeratePerKw;

/// The estimate must exceed the commitment's rate by this many percent before the
/// funder raises it (fewer updates for small moves).
pub const FEE_RAISE_THRESHOLD_PERCENT: u64 = 20;

/// The funder lowers the rate when the estimate falls below the rate divided by this.
pub const FEE_LOWER_DIVISOR: u64 = 2;

/// Confirmation target of the commitment fee estimate, in blocks.
const COMMITMENT_TARGET_BLOCKS: u16 = 6;
/// The rate followed is never below the estimate for this many blocks (a day): a fundee
/// checks our rate against its own slow estimate (ldk-node refuses one below its
/// 144-block estimate less 250 sat/kw, and closes the channel).
const SLOW_TARGET_BLOCKS: u16 = 144;

impl Node {
    /// After each block: every static_remotekey channel this node funds, usable and
    /// reestablished, whose rate the estimate has outgrown (or fallen far below) gets an
    /// update_fee.
    pub(super) async fn follow_commitment_fees(&self) {
        let chain = &self.config.chain;
        let Ok(Some(estimate)) = chain.estimate_fee_rate(COMMITMENT_TARGET_BLOCKS).await else {
            return;
        };
        let Ok(Some(slow)) = chain.estimate_fee_rate(SLOW_TARGET_BLOCKS).await else {
            return;
        };
        let (_, ceiling) = self.acceptable_feerates().await;
        let target = estimate
            .max(slow)
            .to_sat_per_kwu()
            .clamp(u64::from(UPDATE_FEE_FLOOR.0), u64::from(ceiling.0));
        let target = FeeratePerKw(target as u32);
        let ids: Vec<channel::ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if e.channel.setup().is_funder
                    && !e.channel.anchors()
                    && e.status == ChannelStatus::Normal
                    && e.reestablished
                    && off_target(e.channel.view(ViewOf::Everything).feerate, target)
                {
                    v.push(*id);
                }
            }
            v
        };
        for id in ids {
            let _ = self
                .with_channel(&id, |e, out| {
                    // Checked again under the channel's lock: the peer may have gone (or
                    // come back without its channel_reestablish yet) since the list.
                    if e.status != ChannelStatus::Normal
                        || !e.reestablished
                        || e.is_failed()
                        || !off_target(e.channel.view(ViewOf::Everything).feerate, target)
                    {
                        return Ok(());
                    }
                    let from = e.channel.view(ViewOf::Everything).feerate.0;
                    match e.channel.send_update_fee(target) {
                        Ok(m) => {
                            tracing::info!(channel = %id, from, feerate = target.0, "following the fee estimate: update_fee");
                            out.messages.push(Message::UpdateFee(m));
                        }
                        Err(err) => {
                            tracing::warn!(channel = %id, from, feerate = target.0, "cannot change the commitment fee rate: {err}");
                        }
                    }
                    Ok(())
                })
                .await;
        }
    }
}

/// Whether `current` is more than the threshold below `target`, or more than
/// [`FEE_LOWER_DIVISOR`] times above it.
fn off_target(current: FeeratePerKw, target: FeeratePerKw) -> bool {
    let (current, target) = (u64::from(current.0), u64::from(target.0));
    target * 100 > current * (100 + FEE_RAISE_THRESHOLD_PERCENT)
        || target * FEE_LOWER_DIVISOR < current
}
