//! Our subscription at each watchtower, kept alive. A tower drops a user's appointments
//! once the subscription it granted ends (The Eye of Satoshi does the same), so the node
//! registers again when three quarters of it have passed, whether or not it has anything
//! to send. When a subscription lapsed anyway (the node was offline past its end, or the
//! tower no longer knows us), or at a tower that never had ours, every revoked commitment
//! of the channels still open is queued for it again from the node's own records: the
//! tower gets back the protection it lost.
//!
//! For that the client keeps each penalty it signed (one small transaction per revoked
//! commitment, only when towers are configured: the monitor itself keeps no commitment),
//! until the channel is closed.

use super::towers::{channel_tag, TowerJob};
use super::{ChannelStatus, Node};
use crate::store::{unix_now, Record, Write};
use serde::{Deserialize, Serialize};
use watchtower::client::TowerClient;

/// Our subscription at one tower, as the tower last granted it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subscription {
    /// The tower's URL.
    pub tower: String,
    /// The height at which the tower drops our appointments (0: lapsed or refused).
    pub expiry_height: u32,
    /// The height from which to register again.
    pub renew_at: u32,
}

impl Subscription {
    fn record(&self) -> Write {
        Write::Record(Record::json(
            "tower_subscription",
            &self.tower,
            "",
            unix_now(),
            self,
        ))
    }
}

impl Node {
    /// Loads the subscriptions recorded at the last registrations.
    pub(super) async fn load_subscriptions(&self) -> Result<(), super::NodeError> {
        let records = self.store.records("tower_subscription", None).await?;
        let mut book = self.towers.lock().expect("towers lock");
        for r in records {
            let s: Subscription = r.decode()?;
            if book.clients.contains_key(&s.tower) {
                book.subscriptions.insert(s.tower.clone(), s);
            }
        }
        Ok(())
    }

    /// Whether appointments may be sent to `tower` now.
    pub(super) fn subscribed(&self, tower: &str) -> bool {
        let tip = self.pay.lock().expect("pay lock").tip_height;
        self.towers
            .lock()
            .expect("towers lock")
            .subscriptions
            .get(tower)
            .is_some_and(|s| s.expiry_height > tip)
    }

    /// Registers again with every tower whose subscription is unknown, lapsed or three
    /// quarters through; after a lapse, or at a tower that never had ours, queues every
    /// revoked commitment of the open channels for it.
    pub(super) async fn keep_subscriptions(&self) {
        let tip = self.pay.lock().expect("pay lock").tip_height;
        if tip == 0 {
            // The chain is not followed yet: heights would mean nothing.
            return;
        }
        let due: Vec<(String, TowerClient, Option<Subscription>)> = {
            let book = self.towers.lock().expect("towers lock");
            book.clients
                .iter()
                .filter_map(|(url, c)| {
                    let known = book.subscriptions.get(url).cloned();
                    let due = known.as_ref().is_none_or(|s| tip >= s.renew_at);
                    due.then(|| (url.clone(), c.clone(), known))
                })
                .collect()
        };
        for (url, client, known) in due {
            let reg = match client.register().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::info!(tower = %url, "tower registration failed, will retry: {e}");
                    continue;
                }
            };
            if reg.subscription_expiry <= tip {
                tracing::warn!(
                    tower = %url,
                    expiry = reg.subscription_expiry,
                    "the tower granted a subscription that has already ended; will retry"
                );
                continue;
            }
            let length = reg.subscription_expiry - tip;
            let sub = Subscription {
                tower: url.clone(),
                expiry_height: reg.subscription_expiry,
                renew_at: tip + (length * 3 / 4).max(1),
            };
            let lost = known.as_ref().is_none_or(|k| k.expiry_height <= tip);
            let jobs = if lost {
                self.jobs_for_all_revoked(&url).await
            } else {
                Vec::new()
            };
            let mut writes = vec![sub.record()];
            writes.extend(jobs.iter().map(TowerJob::record));
            if let Err(e) = self.group.commit(writes).await {
                tracing::warn!(tower = %url, "recording a tower subscription: {e}");
                continue;
            }
            tracing::info!(
                tower = %url,
                expiry = sub.expiry_height,
                uploads = jobs.len(),
                "tower subscription {}",
                if lost { "started" } else { "renewed" }
            );
            let mut book = self.towers.lock().expect("towers lock");
            for job in jobs {
                book.jobs.insert(job.id(), job);
            }
            book.subscriptions.insert(url, sub);
        }
    }

    /// The tower refused us as unknown or expired: it has lost our appointments, so the
    /// next registration re-uploads them.
    pub(super) async fn subscription_lapsed(&self, tower: &str) {
        let sub = Subscription {
            tower: tower.to_string(),
            expiry_height: 0,
            renew_at: 0,
        };
        let _ = self.group.commit(vec![sub.record()]).await;
        self.towers
            .lock()
            .expect("towers lock")
            .subscriptions
            .insert(tower.to_string(), sub);
    }

    /// Keeps the penalty signed for `job`'s revoked commitment, for a tower that later
    /// loses our appointments.
    pub(super) async fn keep_penalty(&self, job: &TowerJob, penalty: &bitcoin::Transaction) {
        let kept = KeptPenalty {
            channel_id: job.channel_id,
            revoked_txid: job.revoked_txid,
            penalty: penalty.clone(),
            to_self_delay: job.to_self_delay,
        };
        let record = Record::json(
            "tower_penalty",
            &job.revoked_txid.to_string(),
            "",
            unix_now(),
            &kept,
        );
        if let Err(e) = self.group.commit(vec![Write::Record(record)]).await {
            tracing::warn!(channel = %job.channel_id, "keeping a penalty: {e}");
        }
    }

    /// A job for `tower` for every penalty kept for a channel still open; the penalties
    /// of channels closed since are forgotten.
    async fn jobs_for_all_revoked(&self, tower: &str) -> Vec<TowerJob> {
        let open: std::collections::HashSet<channel::ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = std::collections::HashSet::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if !e.monitor.funding_spent() && e.status != ChannelStatus::Closed {
                    v.insert(*id);
                }
            }
            v
        };
        let kept = match self.store.records("tower_penalty", None).await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!("reading kept penalties: {e}");
                return Vec::new();
            }
        };
        let mut jobs = Vec::new();
        let mut forget = Vec::new();
        for r in kept {
            let k: KeptPenalty = match r.decode() {
                Ok(k) => k,
                Err(e) => {
                    tracing::warn!("a kept penalty: {e}");
                    continue;
                }
            };
            if !open.contains(&k.channel_id) {
                forget.push(Write::DeleteRecord {
                    kind: "tower_penalty".into(),
                    id: r.id,
                });
                continue;
            }
            jobs.push(TowerJob {
                tower: tower.to_string(),
                revoked_txid: k.revoked_txid,
                channel_id: k.channel_id,
                revoked: None,
                penalty: Some(k.penalty),
                to_self_delay: k.to_self_delay,
                tag: channel_tag(&self.tag_key, &k.channel_id),
                attempts: 0,
                next_attempt_at: 0,
            });
        }
        if !forget.is_empty() {
            let _ = self.group.commit(forget).await;
        }
        jobs
    }
}

/// A penalty signed for a tower, kept for re-uploads.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeptPenalty {
    channel_id: channel::ChannelId,
    revoked_txid: bitcoin::Txid,
    penalty: bitcoin::Transaction,
    to_self_delay: u32,
}
