//! The commitment fee rate the node sets as a channel's funder. A static_remotekey
//! commitment cannot be bumped once broadcast, so when the chain's 6-block estimate
//! climbs more than a fifth above its rate the node sends `update_fee` with the estimate
//! (BOLT 2: the funder keeps the commitment fee timely). Anchor channels keep their
//! rate, which their anchors bump on chain; the node never lowers a rate, so a fee
//! that was enough stays enough.

use super::channels::{ChannelStatus, UPDATE_FEE_FLOOR};
use super::Node;
use channel::msgs::Message;
use channel::state::ViewOf;
use channel::FeeratePerKw;

/// The estimate must exceed the commitment's rate by this many percent before the
/// funder raises it (fewer updates for small moves).
pub const FEE_RAISE_THRESHOLD_PERCENT: u64 = 20;

/// Confirmation target of the commitment fee estimate, in blocks.
const COMMITMENT_TARGET_BLOCKS: u16 = 6;

impl Node {
    /// After each block: every static_remotekey channel this node funds, usable and
    /// reestablished, whose rate the estimate has outgrown gets an update_fee.
    pub(super) async fn raise_commitment_fees(&self) {
        let Ok(Some(estimate)) = self
            .config
            .chain
            .estimate_fee_rate(COMMITMENT_TARGET_BLOCKS)
            .await
        else {
            return;
        };
        let (_, ceiling) = self.acceptable_feerates().await;
        let target = estimate
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
                    && below(e.channel.view(ViewOf::Everything).feerate, target)
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
                        || !below(e.channel.view(ViewOf::Everything).feerate, target)
                    {
                        return Ok(());
                    }
                    match e.channel.send_update_fee(target) {
                        Ok(m) => {
                            tracing::info!(channel = %id, feerate = target.0, "raising the commitment fee rate");
                            out.messages.push(Message::UpdateFee(m));
                        }
                        Err(err) => {
                            tracing::warn!(channel = %id, feerate = target.0, "cannot raise the commitment fee rate: {err}");
                        }
                    }
                    Ok(())
                })
                .await;
        }
    }
}

/// Whether `current` is more than the threshold below `target`.
fn below(current: FeeratePerKw, target: FeeratePerKw) -> bool {
    u64::from(target.0) * 100 > u64::from(current.0) * (100 + FEE_RAISE_THRESHOLD_PERCENT)
}
