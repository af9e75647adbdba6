//! Webhooks and their durable deliveries, and the tenants' maps events are routed by.
//!
//! An event is turned into one delivery record per matching webhook, written in the same
//! database transaction as the state change it reports; a worker then POSTs it, signed,
//! and retries with exponential backoff until the receiver answers 2xx. A restart
//! resumes the deliveries that were still pending.

use super::channels::Outcome;
use super::merchants::MerchantRecord;
use super::pay::FollowUp;
use super::{Node, NodeError};
use crate::store::{unix_now, Record, StoreError, Write};
use bitcoin::secp256k1::rand::{thread_rng, RngCore};
use bitcoin::secp256k1::PublicKey;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Event types a webhook can subscribe to.
pub const EVENT_TYPES: &[&str] = &[
    "invoice.paid",
    "payment.succeeded",
    "payment.failed",
    "channel.opened",
    "channel.closed",
];

/// Deliveries give up after this many attempts.
pub const MAX_ATTEMPTS: u32 = 12;

/// A registered webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// Random id (hex).
    pub id: String,
    /// Owner: `""` for the operator, else a merchant id.
    pub owner: String,
    /// Where to POST.
    pub url: String,
    /// The HMAC key (hex); shown once at creation.
    pub secret: String,
    /// Event types it wants.
    pub events: Vec<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// One event to deliver to one webhook.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Random id (hex).
    pub id: String,
    /// The webhook.
    pub webhook_id: String,
    /// Owner of the webhook.
    pub owner: String,
    /// Event type.
    pub event: String,
    /// The exact JSON body to POST.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next_attempt_at: u64,
    /// "pending", "delivered" or "failed".
    pub status: String,
    /// The last error.
    pub last_error: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
}

/// An event to report.
pub struct Event {
    kind: &'static str,
    owner: String,
    data: serde_json::Value,
}

impl Event {
    /// An event of type `kind` about something `owner` (a merchant id, or `""`) owns.
    pub fn new(kind: &'static str, owner: &str, data: serde_json::Value) -> Event {
        Event {
            kind,
            owner: owner.into(),
            data,
        }
    }
}

/// A random 16-byte hex id or 32-byte secret.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The `Hub-Signature` header value: `t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
/// "<t>.<body>")>`.
pub fn signature_header(secret: &[u8], timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Merchants, webhooks and pending deliveries, in memory (the database has the durable copy).
#[derive(Default)]
pub struct EventBook {
    /// Merchants by id.
    pub merchants: HashMap<String, MerchantRecord>,
    /// Merchant id by API key hash.
    pub merchant_keys: HashMap<String, String>,
    /// Merchant id by node id.
    pub merchant_nodes: HashMap<PublicKey, String>,
    /// Webhooks by id.
    pub webhooks: HashMap<String, WebhookRecord>,
    /// Deliveries not yet delivered or given up.
    pub pending: HashMap<String, DeliveryRecord>,
    /// The peer of each channel (to find a channel's merchant).
    pub channel_peers: HashMap<channel::ChannelId, PublicKey>,
}

impl EventBook {
    /// Loads a record read at start-up.
    pub fn load(&mut self, r: &Record) -> Result<(), StoreError> {
        match r.kind.as_str() {
            "merchant" => {
                let m: MerchantRecord = r.decode()?;
                self.add_merchant(m);
            }
            "webhook" => {
                let w: WebhookRecord = r.decode()?;
                self.webhooks.insert(w.id.clone(), w);
            }
            "delivery" => {
                let d: DeliveryRecord = r.decode()?;
                if d.status == "pending" {
                    self.pending.insert(d.id.clone(), d);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Adds a merchant to the maps, or replaces it (its key changed).
    pub fn add_merchant(&mut self, m: MerchantRecord) {
        if let Some(old) = self.merchants.get(&m.id) {
            self.merchant_keys.remove(&old.key_hash);
        }
        if !m.key_hash.is_empty() {
            self.merchant_keys.insert(m.key_hash.clone(), m.id.clone());
        }
        self.merchant_nodes.insert(m.node_id, m.id.clone());
        self.merchants.insert(m.id.clone(), m);
    }

    /// The merchant whose node is the peer of `channel`, `""` if none.
    pub fn owner_of_peer_channel(&self, channel: &channel::ChannelId) -> String {
        self.channel_peers
            .get(channel)
            .and_then(|p| self.merchant_nodes.get(p))
            .cloned()
            .unwrap_or_default()
    }

    /// The merchant whose node is `peer`, `""` if none.
    pub fn owner_of_peer(&self, peer: &PublicKey) -> String {
        self.merchant_nodes.get(peer).cloned().unwrap_or_default()
    }

    /// Queues one delivery per webhook that wants `event`: the operator's webhooks see
    /// every event, a merchant's only its own.
    pub(super) fn emit(&mut self, event: Event, out: &mut Outcome) {
        let created_at = unix_now();
        let event_id = random_hex(16);
        let body = serde_json::json!({
            "id": event_id,
            "type": event.kind,
            "created_at": created_at,
            "data": event.data,
        })
        .to_string();
        let mut queued = false;
        for w in self.webhooks.values() {
            let wants = w.events.iter().any(|e| e == event.kind);
            let sees = w.owner.is_empty() || w.owner == event.owner;
            if !(wants && sees) {
                continue;
            }
            let d = DeliveryRecord {
                id: random_hex(16),
                webhook_id: w.id.clone(),
                owner: w.owner.clone(),
                event: event.kind.into(),
                body: body.clone(),
                attempts: 0,
                next_attempt_at: created_at,
                status: "pending".into(),
                last_error: None,
                created_at,
            };
            out.writes.push(Write::Record(Record::json(
                "delivery", &d.id, &d.owner, created_at, &d,
            )));
            self.pending.insert(d.id.clone(), d);
            queued = true;
        }
        if queued {
            out.follow.push(FollowUp::Deliveries);
        }
    }
}

/// The deliveries under way: their ids, and how many each owner has.
#[derive(Default)]
pub(super) struct DeliveriesInFlight {
    ids: std::collections::HashSet<String>,
    per_owner: HashMap<String, usize>,
}

/// The default of [`super::NodeConfig::webhook_concurrency`].
pub const DEFAULT_WEBHOOK_CONCURRENCY: usize = 16;
/// The default of [`super::NodeConfig::webhook_concurrency_per_owner`].
pub const DEFAULT_WEBHOOK_CONCURRENCY_PER_OWNER: usize = 2;
/// Test deliveries a merchant may have pending at once.
pub const MAX_PENDING_TEST_DELIVERIES: usize = 20;

/// How webhook deliveries are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Wait after the first failure; doubled after each further one (capped at an hour).
    pub base: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn delay(&self, attempts: u32) -> u64 {
        let secs = self.base.as_secs().max(1);
        secs.saturating_mul(1u64 << attempts.min(16).saturating_sub(1))
            .min(3600)
    }
}

impl Node {
    /// Runs webhook deliveries until the node stops: each due delivery in a task of its
    /// own, at most `webhook_concurrency` at once and `webhook_concurrency_per_owner` for
    /// one owner, so a merchant whose receiver hangs holds up none of the others.
    pub(super) fn spawn_delivery_worker(self: &Arc<Self>) {
        let node = Arc::downgrade(self);
        let wake = self.deliveries_wake.clone();
        self.spawn_task(async move {
            loop {
                let Some(node) = node.upgrade() else { return };
                node.start_due_deliveries();
                let next = node.next_delivery_in();
                drop(node);
                let _ = tokio::time::timeout(next, wake.notified()).await;
            }
        });
    }

    /// Starts every due delivery there is room for.
    fn start_due_deliveries(self: &Arc<Self>) {
        let now = unix_now();
        let mut due: Vec<(DeliveryRecord, Option<WebhookRecord>)> = {
            let pay = self.pay.lock().expect("pay lock");
            pay.events
                .pending
                .values()
                .filter(|d| d.next_attempt_at <= now)
                .map(|d| (d.clone(), pay.events.webhooks.get(&d.webhook_id).cloned()))
                .collect()
        };
        // Oldest first, so that each owner's deliveries keep their order.
        due.sort_by(|a, b| {
            (a.0.next_attempt_at, a.0.created_at).cmp(&(b.0.next_attempt_at, b.0.created_at))
        });
        let total = self.config.webhook_concurrency.max(1);
        let per_owner = self.config.webhook_concurrency_per_owner.max(1);
        for (d, hook) in due {
            {
                let mut flight = self.deliveries_in_flight.lock().expect("flight lock");
                if flight.ids.len() >= total {
                    return;
                }
                if flight.ids.contains(&d.id)
                    || flight.per_owner.get(&d.owner).copied().unwrap_or(0) >= per_owner
                {
                    continue;
                }
                flight.ids.insert(d.id.clone());
                *flight.per_owner.entry(d.owner.clone()).or_default() += 1;
            }
            let node = self.clone();
            self.spawn_task(async move {
                let (id, owner) = (d.id.clone(), d.owner.clone());
                node.attempt_delivery(d, hook).await;
                {
                    let mut flight = node.deliveries_in_flight.lock().expect("flight lock");
                    flight.ids.remove(&id);
                    if let Some(n) = flight.per_owner.get_mut(&owner) {
                        *n -= 1;
                        if *n == 0 {
                            flight.per_owner.remove(&owner);
                        }
                    }
                }
                // Room for the next one.
                node.deliveries_wake.notify_one();
            });
        }
    }

    fn next_delivery_in(&self) -> Duration {
        let pay = self.pay.lock().expect("pay lock");
        let now = unix_now();
        pay.events
            .pending
            .values()
            .map(|d| d.next_attempt_at.saturating_sub(now))
            .min()
            .map(|s| Duration::from_secs(s.clamp(1, 60)))
            .unwrap_or(Duration::from_secs(60))
    }

    /// One delivery: to the address the URL's host resolves to, checked (see
    /// [`super::webhook_target`]), with no redirect followed. The error a merchant sees
    /// says no more than the HTTP status, or that nothing answered.
    async fn deliver(&self, w: &WebhookRecord, d: &DeliveryRecord) -> Result<(), String> {
        let url = reqwest::Url::parse(&w.url).map_err(|_| "invalid URL".to_string())?;
        let addr = super::webhook_target::resolve(&url, &self.config.webhook_allow_ips)
            .await
            .map_err(|e| e.to_string())?;
        let client = super::webhook_target::pinned_client(&url, addr, Duration::from_secs(10))
            .map_err(|_| "no HTTP answer".to_string())?;
        let t = unix_now();
        let secret = hex::decode(&w.secret).unwrap_or_default();
        let r = client
            .post(url)
            .header("content-type", "application/json")
            .header("hub-signature", signature_header(&secret, t, &d.body))
            .header("hub-event", &d.event)
            .header("hub-delivery", &d.id)
            .body(d.body.clone())
            .send()
            .await
            .map_err(|_| "no HTTP answer".to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", r.status()))
        }
    }

    /// One attempt at delivery `d`, and its outcome recorded.
    async fn attempt_delivery(&self, mut d: DeliveryRecord, hook: Option<WebhookRecord>) {
        let result = match &hook {
            None => Err("webhook deleted".to_string()),
            Some(w) => self.deliver(w, &d).await,
        };
        d.attempts += 1;
        match result {
            Ok(()) => {
                d.status = "delivered".into();
                crate::metrics::webhook_delivery("delivered");
            }
            Err(e) => {
                tracing::info!(delivery = %d.id, attempt = d.attempts, "webhook delivery failed: {e}");
                d.last_error = Some(e);
                if hook.is_none() || d.attempts >= MAX_ATTEMPTS {
                    d.status = "failed".into();
                    crate::metrics::webhook_delivery("failed");
                } else {
                    d.next_attempt_at = unix_now() + self.config.webhook_retry.delay(d.attempts);
                    crate::metrics::webhook_delivery("retry");
                }
            }
        }
        let write = Write::Record(Record::json("delivery", &d.id, &d.owner, d.created_at, &d));
        if let Err(e) = self.group.commit(vec![write]).await {
            tracing::warn!("recording a webhook delivery: {e}");
            return;
        }
        let mut pay = self.pay.lock().expect("pay lock");
        if d.status == "pending" {
            pay.events.pending.insert(d.id.clone(), d);
        } else {
            pay.events.pending.remove(&d.id);
        }
    }

    /// Registers a webhook for `owner`; returns it with its secret (shown once).
    pub async fn add_webhook(
        &self,
        owner: &str,
        url: &str,
        events: Vec<String>,
    ) -> Result<WebhookRecord, NodeError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|_| NodeError::BadRequest("url is not a valid URL".into()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(NodeError::BadRequest("url must be http or https".into()));
        }
        // An address the hub will never deliver to is refused now; a name is resolved
        // again at every delivery (it may point elsewhere by then).
        if let Some(ip) = parsed
            .host_str()
            .and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse().ok())
        {
            if !super::webhook_target::is_public(ip) && !self.config.webhook_allow_ips.contains(&ip)
            {
                return Err(super::webhook_target::TargetError::Forbidden.into());
            }
        }
        let events = if events.is_empty() {
            EVENT_TYPES.iter().map(|s| s.to_string()).collect()
        } else {
            events
        };
        if let Some(bad) = events.iter().find(|e| !EVENT_TYPES.contains(&e.as_str())) {
            return Err(NodeError::BadRequest(format!("unknown event type {bad}")));
        }
        let _quota = self.quota_lock.lock().await;
        self.check_webhook_quota(owner)?;
        let w = WebhookRecord {
            id: random_hex(16),
            owner: owner.into(),
            url: url.into(),
            secret: random_hex(32),
            events,
            created_at: unix_now(),
        };
        self.group
            .commit(vec![Write::Record(Record::json(
                "webhook",
                &w.id,
                owner,
                w.created_at,
                &w,
            ))])
            .await?;
        self.pay
            .lock()
            .expect("pay lock")
            .events
            .webhooks
            .insert(w.id.clone(), w.clone());
        Ok(w)
    }

    /// Queues a `webhook.test` delivery to one of `owner`'s webhooks (to check a
    /// receiver and its signature verification); returns the delivery id.
    pub async fn test_webhook(&self, owner: &str, id: &str) -> Result<String, NodeError> {
        let created_at = unix_now();
        let d = {
            let pay = self.pay.lock().expect("pay lock");
            let Some(w) = pay.events.webhooks.get(id).filter(|w| w.owner == owner) else {
                return Err(NodeError::NotFound("webhook"));
            };
            let pending_tests = pay
                .events
                .pending
                .values()
                .filter(|d| d.owner == owner && d.event == "webhook.test")
                .count();
            if !owner.is_empty() && pending_tests >= MAX_PENDING_TEST_DELIVERIES {
                return Err(NodeError::QuotaExceeded(format!(
                    "{MAX_PENDING_TEST_DELIVERIES} test deliveries are pending already"
                )));
            }
            let body = serde_json::json!({
                "id": random_hex(16),
                "type": "webhook.test",
                "created_at": created_at,
                "data": {"webhook_id": w.id},
            })
            .to_string();
            DeliveryRecord {
                id: random_hex(16),
                webhook_id: w.id.clone(),
                owner: w.owner.clone(),
                event: "webhook.test".into(),
                body,
                attempts: 0,
                next_attempt_at: created_at,
                status: "pending".into(),
                last_error: None,
                created_at,
            }
        };
        self.group
            .commit(vec![Write::Record(Record::json(
                "delivery", &d.id, &d.owner, created_at, &d,
            ))])
            .await?;
        let id = d.id.clone();
        self.pay
            .lock()
            .expect("pay lock")
            .events
            .pending
            .insert(d.id.clone(), d);
        self.deliveries_wake.notify_one();
        Ok(id)
    }

    /// `owner`'s webhooks.
    pub fn webhooks(&self, owner: &str) -> Vec<WebhookRecord> {
        let pay = self.pay.lock().expect("pay lock");
        let mut v: Vec<_> = pay
            .events
            .webhooks
            .values()
            .filter(|w| w.owner == owner)
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// Deletes one of `owner`'s webhooks.
    pub async fn delete_webhook(&self, owner: &str, id: &str) -> Result<(), NodeError> {
        let exists = self
            .pay
            .lock()
            .expect("pay lock")
            .events
            .webhooks
            .get(id)
            .is_some_and(|w| w.owner == owner);
        if !exists {
            return Err(NodeError::NotFound("webhook"));
        }
        self.group
            .commit(vec![Write::DeleteRecord {
                kind: "webhook".into(),
                id: id.into(),
            }])
            .await?;
        self.pay
            .lock()
            .expect("pay lock")
            .events
            .webhooks
            .remove(id);
        Ok(())
    }

    /// `owner`'s deliveries (all states), newest last.
    pub async fn deliveries(&self, owner: &str) -> Result<Vec<DeliveryRecord>, NodeError> {
        let mut v = Vec::new();
        for r in self.store.records("delivery", Some(owner)).await? {
            v.push(r.decode()?);
        }
        Ok(v)
    }
}
