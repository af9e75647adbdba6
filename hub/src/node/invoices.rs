//! Issuing BOLT 11 invoices and paying them.

use super::channels::ChannelStatus;
use super::pay::{usable, InvoiceRecord, PaymentRecord, DEFAULT_MIN_FINAL_CLTV};
use super::route::{build_route, final_cltv, Hop};
use super::{Node, NodeError, Role};
use crate::store::{unix_now, Write};
use bitcoin::secp256k1::rand::{thread_rng, RngCore};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::invoice::{Description, Invoice, InvoiceBuilder, RouteHintHop};
use channel::msgs::Message;
use channel::{ChannelId, Msat, PaymentHash, PaymentPreimage};
use std::time::Duration;

/// Longest description accepted (BOLT 11 `d` fields are at most 639 bytes).
const MAX_DESCRIPTION: usize = 639;
/// Longest expiry accepted: a year.
const MAX_EXPIRY: u64 = 365 * 24 * 3600;
/// Largest amount accepted: the 21 million bitcoin supply.
/// Default bound on the blocks a payment's HTLC may lock our funds (LDK's default).
const DEFAULT_MAX_CLTV_EXPIRY_DELTA: u32 = 1008;
/// The highest bound a caller may set (two weeks of blocks).
const MAX_CLTV_EXPIRY_DELTA: u32 = 2016;

/// What paying an invoice may cost at most. Unset: fees of 1% of the amount plus 50 sat,
/// and 1008 blocks of CLTV (LDK's defaults).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PaymentLimits {
    /// Most the route may charge in fees, in msat.
    pub max_fee_msat: Option<u64>,
    /// Most blocks between the tip and the expiry of the HTLC we send.
    pub max_cltv_expiry_delta: Option<u32>,
}

pub const MAX_MSAT: u64 = 21_000_000 * 100_000_000 * 1000;

/// The default of [`super::NodeConfig::unpaid_invoice_retention`]: a day.
pub const DEFAULT_UNPAID_INVOICE_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl Node {
    /// Issues an invoice for `amount_msat` (or any amount), valid for `expiry_secs`.
    /// A light node adds a route hint through its hub, so payers reach it over the hub's
    /// channel.
    pub async fn create_invoice(
        &self,
        amount_msat: Option<u64>,
        description: &str,
        expiry_secs: u64,
        owner: &str,
    ) -> Result<InvoiceRecord, NodeError> {
        if let Some(a) = amount_msat {
            if a == 0 || a > MAX_MSAT {
                return Err(NodeError::BadRequest(
                    "amount_msat must be between 1 and 21e17".into(),
                ));
            }
        }
        if description.len() > MAX_DESCRIPTION {
            return Err(NodeError::BadRequest(format!(
                "description is longer than {MAX_DESCRIPTION} bytes"
            )));
        }
        if expiry_secs == 0 || expiry_secs > MAX_EXPIRY {
            return Err(NodeError::BadRequest(
                "expiry_secs must be between 1 and one year".into(),
            ));
        }
        let mut preimage = [0u8; 32];
        thread_rng().fill_bytes(&mut preimage);
        let preimage = PaymentPreimage(preimage);
        let mut payment_secret = [0u8; 32];
        thread_rng().fill_bytes(&mut payment_secret);
        let hints = self.route_hints().await;
        let created_at = unix_now();
        let mut builder = InvoiceBuilder::new(
            self.config.network,
            preimage.payment_hash(),
            payment_secret,
            Description::Direct(description.to_string()),
            created_at,
        )
        .expiry_secs(Some(expiry_secs))
        .min_final_cltv_expiry_delta(Some(u64::from(DEFAULT_MIN_FINAL_CLTV)))
        .basic_mpp();
        if let Some(a) = amount_msat {
            builder = builder.amount_msat(a);
        }
        for hint in hints {
            builder = builder.route_hint(vec![hint]);
        }
        let invoice = builder
            .build_signed(&self.node_key)
            .map_err(|e| NodeError::BadRequest(format!("invoice: {e}")))?;
        let record = InvoiceRecord {
            payment_hash: preimage.payment_hash(),
            bolt11: invoice.to_string(),
            amount_msat,
            description: description.into(),
            created_at,
            expires_at: created_at + expiry_secs,
            min_final_cltv_expiry_delta: DEFAULT_MIN_FINAL_CLTV,
            status: "open".into(),
            amount_received_msat: None,
            paid_at: None,
            preimage,
            payment_secret,
            owner: owner.into(),
            paid_parts: Vec::new(),
        };
        let mut writes: Vec<Write> = Vec::new();
        // Written and kept in memory before the API returns it, so a payment arriving
        // right away finds it.
        let mut pay_writes = Vec::new();
        {
            let mut pay = self.pay.lock().expect("pay lock");
            pay.put_invoice(record.clone(), &mut pay_writes);
        }
        writes.extend(pay_writes);
        self.group.commit(writes).await?;
        Ok(record)
    }

    /// After each block: invoices that expired unpaid longer than the retention ago are
    /// forgotten (memory and database), which also makes room in their merchant's quota.
    /// None with parts still being gathered.
    pub(super) async fn prune_expired_invoices(&self) {
        let now = unix_now();
        let retention = self.config.unpaid_invoice_retention.as_secs();
        let stale: Vec<PaymentHash> = {
            let pay = self.pay.lock().expect("pay lock");
            pay.invoices
                .values()
                .filter(|i| {
                    i.status != "paid"
                        && i.expires_at.saturating_add(retention) < now
                        && !pay.htlc_sets.has_set(&i.payment_hash)
                })
                .map(|i| i.payment_hash)
                .collect()
        };
        if stale.is_empty() {
            return;
        }
        let writes: Vec<Write> = stale
            .iter()
            .map(|h| Write::DeleteRecord {
                kind: "invoice".into(),
                id: hex::encode(h.0),
            })
            .collect();
        if let Err(e) = self.group.commit(writes).await {
            tracing::warn!("forgetting expired invoices: {e}");
            return;
        }
        let mut pay = self.pay.lock().expect("pay lock");
        for h in &stale {
            pay.invoices.remove(h);
        }
        tracing::debug!(forgotten = stale.len(), "invoices expired unpaid forgotten");
    }

    /// Route hints for our invoices: each usable channel with the hub, with the hub's
    /// policy from its channel_update.
    async fn route_hints(&self) -> Vec<RouteHintHop> {
        let Role::Light { .. } = self.config.role else {
            return vec![];
        };
        let entries: Vec<_> = self.channels.lock().await.values().cloned().collect();
        let mut hints = Vec::new();
        for e in entries {
            let e = e.lock().await;
            if e.status != ChannelStatus::Normal {
                continue;
            }
            let (Some(scid), Some(policy)) = (e.scid, e.remote_policy) else {
                continue;
            };
            hints.push(RouteHintHop {
                src_node_id: e.peer,
                // The hub's alias when it sent one: the invoice then does not name the
                // funding transaction.
                short_channel_id: e.remote_alias.unwrap_or(scid),
                fee_base_msat: policy.fee_base_msat,
                fee_proportional_millionths: policy.fee_proportional_millionths,
                cltv_expiry_delta: policy.cltv_expiry_delta,
            });
        }
        hints
    }

    /// Pays a BOLT 11 invoice. Idempotent: paying an invoice whose payment is pending or
    /// succeeded returns that payment; a failed one is tried again. Waits up to `wait`
    /// for the outcome, then returns the payment as it stands.
    pub async fn pay_invoice(
        &self,
        bolt11: &str,
        amount_msat: Option<u64>,
        wait: Duration,
    ) -> Result<PaymentRecord, NodeError> {
        self.pay_invoice_within(bolt11, amount_msat, PaymentLimits::default(), wait)
            .await
    }

    /// [`Node::pay_invoice`] with explicit `limits` on the route's fee and CLTV; a route
    /// over them is not tried (a thief's invoice can name any fee in its route hint).
    pub async fn pay_invoice_within(
        &self,
        bolt11: &str,
        amount_msat: Option<u64>,
        limits: PaymentLimits,
        wait: Duration,
    ) -> Result<PaymentRecord, NodeError> {
        if limits
            .max_cltv_expiry_delta
            .is_some_and(|d| d > MAX_CLTV_EXPIRY_DELTA)
        {
            return Err(NodeError::BadRequest(format!(
                "max_cltv_expiry_delta above {MAX_CLTV_EXPIRY_DELTA}"
            )));
        }
        let invoice: Invoice = bolt11
            .trim()
            .parse()
            .map_err(|e| NodeError::BadRequest(format!("invalid invoice: {e}")))?;
        if invoice.network() != self.config.network {
            return Err(NodeError::BadRequest(
                "the invoice is for another network".into(),
            ));
        }
        let now = unix_now();
        if invoice.is_expired(now) {
            return Err(NodeError::InvoiceExpired);
        }
        let amount = match (invoice.amount_msat(), amount_msat) {
            (Some(a), None) => a,
            (Some(a), Some(b)) if a == b => a,
            (Some(_), Some(_)) => {
                return Err(NodeError::BadRequest(
                    "amount_msat differs from the invoice's amount".into(),
                ))
            }
            (None, Some(b)) if b > 0 && b <= MAX_MSAT => b,
            (None, _) => {
                return Err(NodeError::BadRequest(
                    "the invoice has no amount: give amount_msat (1 to 21e17)".into(),
                ))
            }
        };
        if invoice.payee() == self.node_id() {
            return Err(NodeError::BadRequest("the invoice is our own".into()));
        }
        let hash = invoice.payment_hash();
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let existing = self.payment(&hash);
            if let Some(p) = existing.filter(|p| p.status != "failed") {
                return Ok(p);
            }
            // One attempt at a time per hash: the waiter slot doubles as the lock.
            let mut waiters = self.waiters.lock().await;
            if waiters.contains_key(&hash) {
                drop(waiters);
                return self.payment(&hash).ok_or(NodeError::Conflict(
                    "a payment for this hash is being started",
                ));
            }
            waiters.insert(hash, tx);
        }
        let result = self.send_payment(&invoice, bolt11, amount, limits).await;
        if let Err(e) = result {
            self.waiters.lock().await.remove(&hash);
            return Err(e);
        }
        let _ = tokio::time::timeout(wait, rx).await;
        self.payment(&hash).ok_or(NodeError::NotFound("payment"))
    }

    async fn send_payment(
        &self,
        invoice: &Invoice,
        bolt11: &str,
        amount: u64,
        limits: PaymentLimits,
    ) -> Result<(), NodeError> {
        let max_fee = limits.max_fee_msat.unwrap_or(amount / 100 + 50_000);
        let max_delta = limits
            .max_cltv_expiry_delta
            .unwrap_or(DEFAULT_MAX_CLTV_EXPIRY_DELTA);
        let payee = invoice.payee();
        let tip = self.config.chain.tip().await?.height;
        let cltv = final_cltv(tip, invoice.min_final_cltv_expiry_delta().min(1000) as u32);
        let hash = invoice.payment_hash();
        let secret = invoice.payment_secret();
        // Candidate routes: straight to the payee if it is our peer, else through each
        // route hint whose entry node is our peer.
        let mut candidates: Vec<(PublicKey, Vec<Hop>)> = vec![(payee, vec![])];
        for hint in invoice.route_hints() {
            if let Some(first) = hint.first() {
                let hops = hint
                    .iter()
                    .map(|h| Hop {
                        node: h.src_node_id,
                        scid: h.short_channel_id,
                        policy: super::ForwardingPolicy {
                            fee_base_msat: h.fee_base_msat,
                            fee_proportional_millionths: h.fee_proportional_millionths,
                            cltv_expiry_delta: h.cltv_expiry_delta,
                        },
                    })
                    .collect();
                candidates.push((first.src_node_id, hops));
            }
        }
        let entries: Vec<_> = self.channels.lock().await.values().cloned().collect();
        let mut last_error = NodeError::NoRoute;
        for (first_node, hops) in candidates {
            for entry in &entries {
                let channel_id: ChannelId = {
                    let e = entry.lock().await;
                    if e.peer != first_node || !usable(&e) {
                        continue;
                    }
                    e.channel.channel_id()
                };
                let session = SecretKey::new(&mut thread_rng());
                let route = build_route(&session, &hops, payee, amount, cltv, secret, &hash)
                    .map_err(NodeError::BadRequest)?;
                let delta = route.first_cltv.saturating_sub(tip);
                if route.fee_msat > max_fee || delta > max_delta {
                    last_error = NodeError::RouteOverLimit(format!(
                        "the route through {first_node} costs {} msat in fees and locks funds \
                         for {delta} blocks; the limits are {max_fee} msat and {max_delta} blocks",
                        route.fee_msat
                    ));
                    continue;
                }
                let bolt11 = bolt11.to_string();
                let result = self
                    .with_channel(&channel_id, |e, out| {
                        if !usable(e) {
                            return Err(NodeError::Invalid("channel is not open for payments"));
                        }
                        let m = e.channel.send_add_htlc(
                            Msat(route.first_amount_msat),
                            hash,
                            route.first_cltv,
                            route.onion.clone(),
                        )?;
                        let record = PaymentRecord {
                            payment_hash: hash,
                            bolt11: Some(bolt11),
                            payee: Some(payee),
                            amount_msat: amount,
                            fee_msat: route.fee_msat,
                            status: "pending".into(),
                            preimage: None,
                            failure: None,
                            failure_code: None,
                            created_at: unix_now(),
                            completed_at: None,
                            channel_id,
                            htlc_id: Some(m.id),
                            shared_secrets: route.shared_secrets.clone(),
                            sent_at_ms: super::now_ms(),
                        };
                        self.pay.lock().expect("pay lock").put_payment(record, out);
                        out.messages.push(Message::UpdateAddHtlc(m));
                        Ok(())
                    })
                    .await;
                match result {
                    Ok(()) => return Ok(()),
                    Err(NodeError::Channel(e)) => {
                        last_error = NodeError::InsufficientCapacity(e.to_string())
                    }
                    Err(e) => last_error = e,
                }
            }
        }
        Err(last_error)
    }
}
