//! The client side of watchtowers: after every revoke_and_ack the node receives, it builds
//! the penalty for the commitment just revoked (the justice transaction plus our own
//! to_remote output, so the tower alone returns the whole channel to our wallet) and
//! queues one appointment per configured tower. The queue is written in the same
//! transaction as the revocation, so a crash or a tower that is down loses nothing: a
//! worker keeps sending until each tower has acknowledged (its acknowledgement means the
//! appointment is durable there).

use super::channels::Outcome;
use super::Node;
use crate::store::{unix_now, Record, Write};
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::{Transaction, Txid};
use channel::state::RevokedCommitment;
use channel::ChannelId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use watchtower::client::{Appointment, ClientError, TowerClient};

/// One appointment waiting to be acknowledged by one tower.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TowerJob {
    /// Index of the tower in the node's configuration.
    pub tower: String,
    /// The revoked commitment's txid.
    pub revoked_txid: Txid,
    /// The channel.
    pub channel_id: ChannelId,
    /// What the penalty is built from: the worker signs it, off the payment path.
    #[serde(default)]
    pub revoked: Option<RevokedCommitment>,
    /// A penalty signed when the job was queued (jobs written before the worker built
    /// them carry one); sent as it is.
    #[serde(default)]
    pub penalty: Option<Transaction>,
    /// The CSV delay the cheater must wait out.
    pub to_self_delay: u32,
    /// Tag of the channel's appointments (derived from the channel id).
    pub tag: [u8; 16],
    /// Attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt_at: u64,
}

impl TowerJob {
    /// The job of sending `tower` the appointment for `revoked`, a commitment of
    /// `channel_id` (whose appointments carry `tag`).
    pub(super) fn new(
        tower: &str,
        channel_id: ChannelId,
        revoked: RevokedCommitment,
        tag: [u8; 16],
    ) -> TowerJob {
        TowerJob {
            tower: tower.to_string(),
            revoked_txid: revoked.commitment.txid(),
            channel_id,
            to_self_delay: u32::from(revoked.commitment.to_self_delay),
            revoked: Some(revoked),
            penalty: None,
            tag,
            attempts: 0,
            next_attempt_at: 0,
        }
    }

    pub(super) fn id(&self) -> String {
        format!("{}|{}", self.tower, self.revoked_txid)
    }

    pub(super) fn record(&self) -> Write {
        Write::Record(Record::json("tower_job", &self.id(), "", unix_now(), self))
    }
}

/// Confirmations of a channel's close (a mutual close, or a current commitment) before its
/// appointments are deleted at the towers: once the funding output's spend is this deep,
/// no revoked commitment of the channel can confirm short of a reorg that deep.
pub const PRUNE_CONFIRMATIONS: u32 = 6;

/// Default of [`super::NodeConfig::tower_penalty_feerate`]: 2,500 sat/kw (10 sat/vB, the
/// default sweep fee rate of LND's watchtower session policy). A penalty is signed once
/// and a tower cannot bump it, so it pays for being mined in a busy mempool.
pub const DEFAULT_TOWER_PENALTY_FEERATE: u32 = 2_500;

/// A channel closed without a breach: its appointments are to be deleted at one tower.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TowerPrune {
    /// The tower's URL.
    pub tower: String,
    /// The channel's appointment tag.
    pub tag: [u8; 16],
    /// The transaction that spent the funding output (the mutual close, or a current
    /// commitment), which must be `PRUNE_CONFIRMATIONS` deep first.
    pub closing_txid: Txid,
    /// Attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt_at: u64,
}

impl TowerPrune {
    fn id(&self) -> String {
        format!("{}|{}", self.tower, hex::encode(self.tag))
    }

    fn record(&self) -> Write {
        Write::Record(Record::json(
            "tower_prune",
            &self.id(),
            "",
            unix_now(),
            self,
        ))
    }
}

/// The tag a channel's appointments carry: lets the node delete them all once the
/// channel closed cleanly, without telling the tower which channel it is.
pub fn channel_tag(seed_tag_key: &[u8; 32], channel: &ChannelId) -> [u8; 16] {
    let mut e = sha256::Hash::engine();
    e.input(b"tower tag");
    e.input(seed_tag_key);
    e.input(&channel.0);
    let h = sha256::Hash::from_engine(e).to_byte_array();
    h[..16].try_into().expect("16 bytes")
}

/// Why a job's penalty could not be had.
enum PenaltyError {
    /// The channel is not in memory: keep the job.
    ChannelNotLoaded,
    /// The channel cannot build it: the job can never succeed.
    Invalid(String),
}

/// The node's towers and its queue of appointments to send.
#[derive(Default)]
pub struct TowerBook {
    /// Clients by tower URL.
    pub clients: HashMap<String, TowerClient>,
    /// Jobs not yet acknowledged.
    pub jobs: HashMap<String, TowerJob>,
    /// Channels closed cleanly whose appointments are still at a tower.
    pub prunes: HashMap<String, TowerPrune>,
    /// Our subscription at each tower.
    pub subscriptions: HashMap<String, super::tower_subscriptions::Subscription>,
}

impl Node {
    /// Queues the appointments for `revoked` (called under the channel's lock, with the
    /// writes of the revocation itself, so a crash cannot lose them). Only the job is
    /// written here; the worker builds and signs the penalty later, so a payment does not
    /// wait for it.
    pub(super) fn queue_appointments(
        &self,
        channel: &channel::state::Channel,
        revoked: &RevokedCommitment,
        out: &mut Outcome,
    ) {
        let mut book = self.towers.lock().expect("towers lock");
        if book.clients.is_empty() {
            return;
        }
        let tag = channel_tag(&self.tag_key, &channel.channel_id());
        let urls: Vec<String> = book.clients.keys().cloned().collect();
        for tower in urls {
            let job = TowerJob::new(&tower, channel.channel_id(), revoked.clone(), tag);
            out.writes.push(job.record());
            book.jobs.insert(job.id(), job);
        }
        out.follow.push(super::pay::FollowUp::Towers);
    }

    /// Loads queued jobs and starts the sender.
    pub(super) async fn start_towers(self: &Arc<Self>) -> Result<(), super::NodeError> {
        if self.config.towers.is_empty() {
            return Ok(());
        }
        let key =
            bitcoin::secp256k1::SecretKey::from_slice(&super::tagged_hash(&self.seed, b"tower", 0))
                .expect("hash is a valid key");
        let jobs = self.store.records("tower_job", None).await?;
        let prunes = self.store.records("tower_prune", None).await?;
        {
            let mut book = self.towers.lock().expect("towers lock");
            for url in &self.config.towers {
                book.clients
                    .insert(url.clone(), TowerClient::new(url.clone(), key));
            }
            for r in jobs {
                let job: TowerJob = r.decode()?;
                if book.clients.contains_key(&job.tower) {
                    book.jobs.insert(job.id(), job);
                }
            }
            for r in prunes {
                let prune: TowerPrune = r.decode()?;
                if book.clients.contains_key(&prune.tower) {
                    book.prunes.insert(prune.id(), prune);
                }
            }
        }
        self.load_subscriptions().await?;
        let node = Arc::downgrade(self);
        let wake = self.towers_wake.clone();
        self.spawn_task(async move {
            loop {
                let Some(node) = node.upgrade() else { return };
                node.keep_subscriptions().await;
                node.send_appointments().await;
                node.prune_appointments().await;
                drop(node);
                let _ = tokio::time::timeout(Duration::from_secs(2), wake.notified()).await;
            }
        });
        Ok(())
    }

    async fn send_appointments(&self) {
        let now = unix_now();
        let due: Vec<(TowerJob, TowerClient)> = {
            let book = self.towers.lock().expect("towers lock");
            book.jobs
                .values()
                .filter(|j| j.next_attempt_at <= now)
                .filter_map(|j| book.clients.get(&j.tower).map(|c| (j.clone(), c.clone())))
                .collect()
        };
        // Only to towers that hold a subscription of ours (the others are registered
        // with again first: `keep_subscriptions`).
        let due: Vec<(TowerJob, TowerClient)> = due
            .into_iter()
            .filter(|(j, _)| self.subscribed(&j.tower))
            .collect();
        let mut penalties: HashMap<Txid, Transaction> = HashMap::new();
        for (mut job, client) in due {
            let penalty = match penalties.get(&job.revoked_txid) {
                Some(tx) => tx.clone(),
                None => match self.penalty_for(&job).await {
                    Ok(tx) => {
                        penalties.insert(job.revoked_txid, tx.clone());
                        tx
                    }
                    Err(PenaltyError::ChannelNotLoaded) => {
                        // Keep it: the channel may come back; never drop protection.
                        tracing::warn!(channel = %job.channel_id, "tower job for a channel not loaded");
                        self.retry_later(job).await;
                        continue;
                    }
                    Err(PenaltyError::Invalid(e)) => {
                        // This commitment can never be punished by a penalty (the
                        // channel refuses to build one): say so, drop the job.
                        tracing::warn!(
                            "no penalty for revoked commitment {}: {e}",
                            job.revoked_txid
                        );
                        self.forget_job(&job).await;
                        continue;
                    }
                },
            };
            let appointment = Appointment::new(job.revoked_txid, &penalty, job.to_self_delay)
                .with_tag(job.tag.to_vec());
            match client.add_appointment(&appointment).await {
                Ok(_) => self.forget_job(&job).await,
                // Unknown or expired there, or the tower has a new id (its database was
                // replaced): it holds none of ours any more.
                Err(ClientError::Refused { code, .. })
                    if code == "unknown_user"
                        || code == "subscription_expired"
                        || code == "invalid_signature" =>
                {
                    self.subscription_lapsed(&job.tower).await;
                    self.retry_later(job).await;
                }
                Err(e) if e.is_retryable() => {
                    tracing::info!(tower = %job.tower, "tower unreachable, will retry: {e}");
                    self.retry_later(job).await;
                }
                Err(e) => {
                    // Refused for good (too large, over quota): keep it, retry slowly, and
                    // say so loudly; the node still watches the chain itself when online.
                    tracing::warn!(tower = %job.tower, "tower refused an appointment: {e}");
                    job.attempts = job.attempts.max(8);
                    self.retry_later(job).await;
                }
            }
        }
    }

    /// Queues, with the writes of the close itself, the deletion of a closed channel's
    /// appointments at every tower (after a mutual close, or a current commitment on chain;
    /// never after a breach, whose penalty the towers may be carrying out).
    pub(super) fn queue_prunes(&self, channel: &ChannelId, closing_txid: Txid, out: &mut Outcome) {
        let mut book = self.towers.lock().expect("towers lock");
        let tag = channel_tag(&self.tag_key, channel);
        let urls: Vec<String> = book.clients.keys().cloned().collect();
        for tower in urls {
            let prune = TowerPrune {
                tower,
                tag,
                closing_txid,
                attempts: 0,
                next_attempt_at: 0,
            };
            out.writes.push(prune.record());
            book.prunes.insert(prune.id(), prune);
        }
    }

    /// Deletes the appointments of channels closed cleanly, once their close is deep
    /// enough; appointments of theirs still queued are dropped unsent.
    async fn prune_appointments(&self) {
        let now = unix_now();
        let due: Vec<(TowerPrune, TowerClient)> = {
            let book = self.towers.lock().expect("towers lock");
            book.prunes
                .values()
                .filter(|p| p.next_attempt_at <= now)
                .filter_map(|p| book.clients.get(&p.tower).map(|c| (p.clone(), c.clone())))
                .collect()
        };
        for (mut prune, client) in due {
            let deep = self
                .config
                .chain
                .confirmations(&prune.closing_txid)
                .await
                .unwrap_or(0)
                >= PRUNE_CONFIRMATIONS;
            if !deep {
                // Not yet (or reorged out): look again later, without counting an attempt.
                prune.next_attempt_at = unix_now() + 5;
                self.towers
                    .lock()
                    .expect("towers lock")
                    .prunes
                    .insert(prune.id(), prune);
                continue;
            }
            let unsent: Vec<TowerJob> = self
                .towers
                .lock()
                .expect("towers lock")
                .jobs
                .values()
                .filter(|j| j.tower == prune.tower && j.tag == prune.tag)
                .cloned()
                .collect();
            for job in &unsent {
                self.forget_job(job).await;
            }
            match client.delete_by_tag(&prune.tag).await {
                Ok(d) => {
                    tracing::info!(tower = %prune.tower, deleted = d.deleted, "appointments of a closed channel deleted");
                    let _ = self
                        .group
                        .commit(vec![Write::DeleteRecord {
                            kind: "tower_prune".into(),
                            id: prune.id(),
                        }])
                        .await;
                    self.towers
                        .lock()
                        .expect("towers lock")
                        .prunes
                        .remove(&prune.id());
                }
                Err(e) => {
                    tracing::info!(tower = %prune.tower, "deleting appointments failed, will retry: {e}");
                    prune.attempts += 1;
                    prune.next_attempt_at = unix_now() + (1u64 << prune.attempts.min(10)).min(600);
                    let _ = self.group.commit(vec![prune.record()]).await;
                    self.towers
                        .lock()
                        .expect("towers lock")
                        .prunes
                        .insert(prune.id(), prune);
                }
            }
        }
    }

    /// The signed penalty of a job's revoked commitment, built from its channel's keys
    /// (or the one the job carries).
    async fn penalty_for(&self, job: &TowerJob) -> Result<Transaction, PenaltyError> {
        if let Some(tx) = &job.penalty {
            return Ok(tx.clone());
        }
        let revoked = job.revoked.as_ref().ok_or_else(|| {
            PenaltyError::Invalid("job holds neither penalty nor commitment".into())
        })?;
        let entry = self
            .entry(&job.channel_id)
            .await
            .map_err(|_| PenaltyError::ChannelNotLoaded)?;
        let penalty = entry
            .lock()
            .await
            .channel
            .penalty_tx(
                revoked,
                self.penalty_script.clone(),
                channel::FeeratePerKw(self.config.tower_penalty_feerate),
            )
            .map_err(|e| PenaltyError::Invalid(e.to_string()))?;
        self.keep_penalty(job, &penalty).await;
        Ok(penalty)
    }

    /// A job is done (or can never be done): off the queue, durably.
    async fn forget_job(&self, job: &TowerJob) {
        let _ = self
            .group
            .commit(vec![Write::DeleteRecord {
                kind: "tower_job".into(),
                id: job.id(),
            }])
            .await;
        self.towers
            .lock()
            .expect("towers lock")
            .jobs
            .remove(&job.id());
    }

    async fn retry_later(&self, mut job: TowerJob) {
        job.attempts += 1;
        job.next_attempt_at = unix_now() + (1u64 << job.attempts.min(10)).min(600);
        let _ = self.group.commit(vec![job.record()]).await;
        self.towers
            .lock()
            .expect("towers lock")
            .jobs
            .insert(job.id(), job);
    }

    /// Closed channels whose appointments are not yet deleted at a tower.
    pub fn pending_prunes(&self) -> usize {
        self.towers.lock().expect("towers lock").prunes.len()
    }

    /// Appointments not yet acknowledged by their tower.
    pub fn pending_appointments(&self) -> usize {
        self.towers.lock().expect("towers lock").jobs.len()
    }

    /// Each configured tower: its URL, the height at which our subscription there ends
    /// (`None` before the first registration, 0 once lapsed) and the appointments not
    /// yet acknowledged by it.
    pub fn tower_status(&self) -> Vec<(String, Option<u32>, usize)> {
        let book = self.towers.lock().expect("towers lock");
        let mut v: Vec<_> = book
            .clients
            .keys()
            .map(|url| {
                (
                    url.clone(),
                    book.subscriptions.get(url).map(|s| s.expiry_height),
                    book.jobs.values().filter(|j| j.tower == *url).count(),
                )
            })
            .collect();
        v.sort();
        v
    }
}
