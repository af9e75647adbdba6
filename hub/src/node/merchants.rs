//! Merchants, the tenants of a hub: their accounts and API keys (created, rotated and
//! revoked by the operator) and the quotas that keep one merchant from taking the hub's
//! liquidity or its delivery capacity from the others.

use super::events::random_hex;
use super::{Node, NodeError};
use crate::store::{unix_now, Record, Write};
use bitcoin::secp256k1::PublicKey;
use channel::{ChannelId, Msat};
use serde::{Deserialize, Serialize};

/// A merchant account on a hub.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MerchantRecord {
    /// Random id (hex).
    pub id: String,
    /// Display name.
    pub name: String,
    /// The merchant's light node.
    pub node_id: PublicKey,
    /// SHA-256 of its API key (hex); the key itself is shown once and never stored.
    /// Empty once the key is revoked.
    pub key_hash: String,
    /// Unix seconds.
    pub created_at: u64,
    /// When the key was last replaced or revoked (unix seconds).
    #[serde(default)]
    pub key_changed_at: Option<u64>,
}

/// What one merchant may hold. The operator's key is not limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MerchantQuotas {
    /// Channels the hub funds to the merchant's node (open or being opened).
    pub max_channels: usize,
    /// Their capacity together, in satoshis.
    pub max_capacity_sat: u64,
    /// Webhooks.
    pub max_webhooks: usize,
}

/// The default of [`MerchantQuotas::max_channels`].
pub const DEFAULT_MERCHANT_MAX_CHANNELS: usize = 5;
/// The default of [`MerchantQuotas::max_capacity_sat`]: 0.5 BTC.
pub const DEFAULT_MERCHANT_MAX_CAPACITY_SAT: u64 = 50_000_000;
/// The default of [`MerchantQuotas::max_webhooks`].
pub const DEFAULT_MERCHANT_MAX_WEBHOOKS: usize = 10;

impl Default for MerchantQuotas {
    fn default() -> Self {
        MerchantQuotas {
            max_channels: DEFAULT_MERCHANT_MAX_CHANNELS,
            max_capacity_sat: DEFAULT_MERCHANT_MAX_CAPACITY_SAT,
            max_webhooks: DEFAULT_MERCHANT_MAX_WEBHOOKS,
        }
    }
}

impl Node {
    /// Creates a merchant whose light node is `node_id`; returns it and its API key
    /// (shown once; only its hash is stored).
    pub async fn create_merchant(
        &self,
        name: &str,
        node_id: PublicKey,
    ) -> Result<(MerchantRecord, String), NodeError> {
        if name.trim().is_empty() || name.len() > 200 {
            return Err(NodeError::BadRequest(
                "name must be 1 to 200 characters".into(),
            ));
        }
        let _quota = self.quota_lock.lock().await;
        if self
            .pay
            .lock()
            .expect("pay lock")
            .events
            .merchant_nodes
            .contains_key(&node_id)
        {
            return Err(NodeError::Conflict("a merchant with this node id exists"));
        }
        let key = new_key();
        let m = MerchantRecord {
            id: random_hex(16),
            name: name.into(),
            node_id,
            key_hash: crate::api::key_hash_hex(&key),
            created_at: unix_now(),
            key_changed_at: None,
        };
        self.put_merchant(m.clone()).await?;
        Ok((m, key))
    }

    /// Replaces merchant `id`'s API key: the old one stops working at once. Returns the
    /// new key (shown once).
    pub async fn rotate_merchant_key(
        &self,
        id: &str,
    ) -> Result<(MerchantRecord, String), NodeError> {
        let _quota = self.quota_lock.lock().await;
        let mut m = self.merchant(id).ok_or(NodeError::NotFound("merchant"))?;
        let key = new_key();
        m.key_hash = crate::api::key_hash_hex(&key);
        m.key_changed_at = Some(unix_now());
        self.put_merchant(m.clone()).await?;
        Ok((m, key))
    }

    /// Revokes merchant `id`'s API key: nothing answers to it any more, until the
    /// operator gives the merchant a new one. Its channels and records stay.
    pub async fn revoke_merchant_key(&self, id: &str) -> Result<MerchantRecord, NodeError> {
        let _quota = self.quota_lock.lock().await;
        let mut m = self.merchant(id).ok_or(NodeError::NotFound("merchant"))?;
        m.key_hash = String::new();
        m.key_changed_at = Some(unix_now());
        self.put_merchant(m.clone()).await?;
        Ok(m)
    }

    async fn put_merchant(&self, m: MerchantRecord) -> Result<(), NodeError> {
        self.group
            .commit(vec![Write::Record(Record::json(
                "merchant",
                &m.id,
                &m.id,
                m.created_at,
                &m,
            ))])
            .await?;
        self.pay.lock().expect("pay lock").events.add_merchant(m);
        Ok(())
    }

    /// The merchant holding an API key with this hash.
    pub fn merchant_by_key_hash(&self, hash_hex: &str) -> Option<MerchantRecord> {
        if hash_hex.is_empty() {
            return None;
        }
        let pay = self.pay.lock().expect("pay lock");
        let id = pay.events.merchant_keys.get(hash_hex)?;
        pay.events.merchants.get(id).cloned()
    }

    /// Merchant `id`.
    pub fn merchant(&self, id: &str) -> Option<MerchantRecord> {
        self.pay
            .lock()
            .expect("pay lock")
            .events
            .merchants
            .get(id)
            .cloned()
    }

    /// Every merchant.
    pub fn merchants(&self) -> Vec<MerchantRecord> {
        let pay = self.pay.lock().expect("pay lock");
        let mut v: Vec<_> = pay.events.merchants.values().cloned().collect();
        v.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        v
    }

    /// Opens a channel of `capacity_sat`, funded by the hub, to merchant `m`'s node,
    /// within the merchant's quotas: the hub-funded channels to its node not yet closed,
    /// this one included, may number at most `max_channels` and hold at most
    /// `max_capacity_sat` (channels the merchant's node funded itself cost the hub no
    /// liquidity and do not count).
    pub async fn open_merchant_channel(
        &self,
        m: &MerchantRecord,
        capacity_sat: u64,
    ) -> Result<ChannelId, NodeError> {
        // One open per merchant at a time: two requests at once cannot both fit in the
        // room left for one. Other merchants are not held up by this one's node.
        let lock = self
            .merchant_open_locks
            .lock()
            .expect("merchant locks")
            .entry(m.id.clone())
            .or_default()
            .clone();
        let _open = lock.lock().await;
        let q = self.config.merchant_quotas;
        let held: Vec<u64> = self
            .list_channels()
            .await
            .into_iter()
            .filter(|c| c.peer == m.node_id && c.we_funded)
            .filter(|c| c.status != super::ChannelStatus::Closed)
            .map(|c| c.capacity_sat)
            .collect();
        if held.len() >= q.max_channels {
            return Err(NodeError::QuotaExceeded(format!(
                "a merchant may have {} channels from the hub",
                q.max_channels
            )));
        }
        let total = held.iter().sum::<u64>().saturating_add(capacity_sat);
        if total > q.max_capacity_sat {
            return Err(NodeError::QuotaExceeded(format!(
                "a merchant's channels from the hub may hold {} sat in all; {} are held",
                q.max_capacity_sat,
                held.iter().sum::<u64>()
            )));
        }
        self.open_channel(m.node_id, capacity_sat, Msat(0)).await
    }

    /// Whether `owner` (a merchant id; `""`, the operator, is not limited) may add one
    /// more webhook. The caller holds `quota_lock` until the webhook is stored.
    pub(super) fn check_webhook_quota(&self, owner: &str) -> Result<(), NodeError> {
        if owner.is_empty() {
            return Ok(());
        }
        let max = self.config.merchant_quotas.max_webhooks;
        let held = self
            .pay
            .lock()
            .expect("pay lock")
            .events
            .webhooks
            .values()
            .filter(|w| w.owner == owner)
            .count();
        if held >= max {
            return Err(NodeError::QuotaExceeded(format!(
                "a merchant may have {max} webhooks"
            )));
        }
        Ok(())
    }
}

fn new_key() -> String {
    format!("mk_{}", random_hex(32))
}
