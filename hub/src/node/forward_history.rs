//! How many resolved forwards the node keeps. Failed ones are pruned beyond a limit: a
//! peer that routes HTLCs through the hub only to have them fail downstream would
//! otherwise grow memory and the database without bound. Settled ones, the node's
//! earnings, are kept.

use super::pay::forward_key;
use super::Node;
use crate::store::Write;
use channel::{ChannelId, HtlcId, Side};

/// The default of [`super::NodeConfig::failed_forward_retention`].
pub const DEFAULT_FAILED_FORWARD_RETENTION: usize = 10_000;

impl Node {
    /// After each block: the oldest failed forwards beyond the retention limit are
    /// forgotten, each once its incoming HTLC is gone from its channel (while it is there
    /// the record is what answers it; without the record it would be forwarded again).
    pub(super) async fn prune_failed_forwards(&self) {
        let limit = self.config.failed_forward_retention;
        let mut failed: Vec<(u64, ChannelId, u64)> = {
            let pay = self.pay.lock().expect("pay lock");
            pay.forwards
                .values()
                .filter(|f| f.status == "failed")
                .map(|f| {
                    (
                        f.resolved_at.unwrap_or(f.created_at),
                        f.in_channel,
                        f.in_htlc,
                    )
                })
                .collect()
        };
        if failed.len() <= limit {
            return;
        }
        failed.sort_unstable_by_key(|(at, c, h)| (*at, c.0, *h));
        let excess = failed.len() - limit;
        let mut gone = Vec::new();
        for (_, channel_id, htlc) in failed.into_iter().take(excess) {
            if !self.incoming_htlc_present(&channel_id, htlc).await {
                gone.push((channel_id, htlc));
            }
        }
        if gone.is_empty() {
            return;
        }
        let writes: Vec<Write> = gone
            .iter()
            .map(|(c, h)| Write::DeleteRecord {
                kind: "forward".into(),
                id: forward_key(c, *h),
            })
            .collect();
        if let Err(e) = self.group.commit(writes).await {
            tracing::warn!("pruning failed forwards: {e}");
            return;
        }
        let mut pay = self.pay.lock().expect("pay lock");
        for key in &gone {
            if let Some(f) = pay.forwards.remove(key) {
                // Only if it still names this forward: the id may belong to a live one.
                if let Some(out) = f.out_htlc {
                    if pay.forward_out.get(&(f.out_channel, out)) == Some(key) {
                        pay.forward_out.remove(&(f.out_channel, out));
                    }
                }
            }
        }
        tracing::debug!(
            pruned = gone.len(),
            "failed forwards beyond the retention limit forgotten"
        );
    }

    /// Whether the peer's HTLC `htlc` is still in channel `channel_id` (not yet removed
    /// from both commitments).
    async fn incoming_htlc_present(&self, channel_id: &ChannelId, htlc: u64) -> bool {
        let Ok(entry) = self.entry(channel_id).await else {
            return false;
        };
        let e = entry.lock().await;
        e.channel
            .log()
            .find_htlc(Side::Remote, HtlcId(htlc))
            .is_some()
    }
}
