//! Our subscription at each watchtower, kept alive. A tower drops a user's appointments
//! once the subscription it granted ends (The Eye of Satoshi does the same), so the node
//! registers again when three quarters of it have passed, whether or not it has anything
//! to send. When a subscription lapsed anyway (the node was offline past its end, or the
//! tower no longer knows us), or at a tower that never had ours, every revoked commitment
//! of the channels still open is queued for it again from the node's own records: the
//! tower gets back the protection it lost.

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

    /// A job for `tower` for every commitment revoked in a channel still open.
    async fn jobs_for_all_revoked(&self, tower: &str) -> Vec<TowerJob> {
        let open: Vec<channel::ChannelId> = {
            let channels = self.channels.lock().await;
            let mut v = Vec::new();
            for (id, e) in channels.iter() {
                let e = e.lock().await;
                if !e.funding_spent && e.status != ChannelStatus::Closed {
                    v.push(*id);
                }
            }
            v
        };
        let mut jobs = Vec::new();
        for id in open {
            let tag = channel_tag(&self.tag_key, &id);
            let stored = match self.store.revoked_of_channel(&id.0).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(channel = %id, "reading revoked commitments: {e}");
                    continue;
                }
            };
            for data in stored {
                match serde_json::from_slice::<channel::state::RevokedCommitment>(&data) {
                    Ok(revoked) => jobs.push(TowerJob::new(tower, id, revoked, tag)),
                    Err(e) => tracing::warn!(channel = %id, "a stored revoked commitment: {e}"),
                }
            }
        }
        jobs
    }
}
