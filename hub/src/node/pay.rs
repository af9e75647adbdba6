//! Payments: the records of invoices this node issues, payments it sends and HTLCs it
//! forwards, and their book-keeping as HTLCs settle or fail. What becomes of an incoming
//! HTLC is decided in `incoming`; routes are built in `route`.
//!
//! Everything here is decided under the lock of the channel an HTLC arrives on (or leaves
//! by), and the records it changes are written in the same database transaction as that
//! channel's state: an invoice is marked paid together with the fulfill that settles it, a
//! forward is recorded together with the outgoing HTLC that carries it, a preimage learnt
//! from downstream is stored together with the fulfill that revealed it. So after a crash
//! the records and the channels always tell the same story.

use super::channels::{ChannelEntry, ChannelStatus, Outcome};
use super::events::Event;
use crate::store::{unix_now, Record, Write};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::msgs::OnionPacket;
use channel::onion::{self};
use channel::state::Htlc;
use channel::{ChannelId, PaymentHash, PaymentPreimage};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// BOLT 4 failure codes this node sends.
pub mod codes {
    /// Bad onion flag.
    pub const BADONION: u16 = 0x8000;
    /// Permanent flag.
    pub const PERM: u16 = 0x4000;
    /// Node flag.
    pub const NODE: u16 = 0x2000;
    /// The failure carries a channel_update.
    pub const UPDATE: u16 = 0x1000;
    /// temporary_node_failure.
    pub const TEMPORARY_NODE_FAILURE: u16 = NODE | 2;
    /// permanent_channel_failure.
    pub const PERMANENT_CHANNEL_FAILURE: u16 = PERM | 8;
    /// unknown_next_peer.
    pub const UNKNOWN_NEXT_PEER: u16 = PERM | 10;
    /// temporary_channel_failure.
    pub const TEMPORARY_CHANNEL_FAILURE: u16 = UPDATE | 7;
    /// amount_below_minimum.
    pub const AMOUNT_BELOW_MINIMUM: u16 = UPDATE | 11;
    /// fee_insufficient.
    pub const FEE_INSUFFICIENT: u16 = UPDATE | 12;
    /// incorrect_cltv_expiry.
    pub const INCORRECT_CLTV_EXPIRY: u16 = UPDATE | 13;
    /// expiry_too_soon.
    pub const EXPIRY_TOO_SOON: u16 = UPDATE | 14;
    /// incorrect_or_unknown_payment_details.
    pub const INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS: u16 = PERM | 15;
    /// invalid_onion_payload.
    pub const INVALID_ONION_PAYLOAD: u16 = PERM | 22;
    /// final_incorrect_cltv_expiry.
    pub const FINAL_INCORRECT_CLTV_EXPIRY: u16 = 18;
    /// final_incorrect_htlc_amount.
    pub const FINAL_INCORRECT_HTLC_AMOUNT: u16 = 19;
    /// expiry_too_far.
    pub const EXPIRY_TOO_FAR: u16 = 21;
    /// mpp_timeout: the rest of a multi-part payment did not come in time.
    pub const MPP_TIMEOUT: u16 = 23;

    /// The BOLT 4 name of a failure code, for people.
    pub fn name(code: u16) -> &'static str {
        match code {
            TEMPORARY_NODE_FAILURE => "temporary_node_failure",
            PERMANENT_CHANNEL_FAILURE => "permanent_channel_failure",
            UNKNOWN_NEXT_PEER => "unknown_next_peer",
            TEMPORARY_CHANNEL_FAILURE => "temporary_channel_failure",
            AMOUNT_BELOW_MINIMUM => "amount_below_minimum",
            FEE_INSUFFICIENT => "fee_insufficient",
            INCORRECT_CLTV_EXPIRY => "incorrect_cltv_expiry",
            EXPIRY_TOO_SOON => "expiry_too_soon",
            INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS => "incorrect_or_unknown_payment_details",
            FINAL_INCORRECT_CLTV_EXPIRY => "final_incorrect_cltv_expiry",
            FINAL_INCORRECT_HTLC_AMOUNT => "final_incorrect_htlc_amount",
            EXPIRY_TOO_FAR => "expiry_too_far",
            INVALID_ONION_PAYLOAD => "invalid_onion_payload",
            MPP_TIMEOUT => "mpp_timeout",
            0x8004 => "invalid_onion_version",
            0x8005 => "invalid_onion_hmac",
            0x8006 => "invalid_onion_key",
            _ => "unknown_failure",
        }
    }
}

/// What this node charges to forward, and the CLTV margin it keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingPolicy {
    /// Fixed fee per forwarded HTLC.
    pub fee_base_msat: u32,
    /// Proportional fee, in millionths of the forwarded amount.
    pub fee_proportional_millionths: u32,
    /// Blocks between an incoming HTLC's expiry and the outgoing one's: the time this
    /// node has to resolve the outgoing HTLC on chain before the incoming one expires.
    pub cltv_expiry_delta: u16,
}

impl Default for ForwardingPolicy {
    fn default() -> Self {
        ForwardingPolicy {
            fee_base_msat: 1000,
            fee_proportional_millionths: 100,
            cltv_expiry_delta: 40,
        }
    }
}

impl ForwardingPolicy {
    /// The fee for forwarding `amount_msat` (BOLT 7: base + amount × proportional / 10⁶,
    /// rounded down), `None` on overflow.
    pub fn fee_msat(&self, amount_msat: u64) -> Option<u64> {
        let prop = (amount_msat as u128) * u128::from(self.fee_proportional_millionths) / 1_000_000;
        u64::try_from(prop)
            .ok()?
            .checked_add(u64::from(self.fee_base_msat))
    }
}

/// Blocks a final HTLC's expiry must be above the tip (BOLT 11 default of the `c` field).
pub const DEFAULT_MIN_FINAL_CLTV: u32 = 18;

/// An incoming HTLC to forward may expire at most this many blocks ahead (two weeks, as
/// LDK's limit); beyond it the hub answers expiry_too_far.
pub const MAX_CLTV_EXPIRY_BLOCKS: u32 = 2016;
/// Blocks added to the tip when choosing an outgoing payment's final expiry, so a block
/// found while the HTLC travels does not make it too close.
pub(super) const FINAL_CLTV_MARGIN: u32 = 3;

/// An invoice this node issued.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvoiceRecord {
    /// Its payment hash (hex in the API).
    pub payment_hash: PaymentHash,
    /// The BOLT 11 string.
    pub bolt11: String,
    /// Amount asked, if any.
    pub amount_msat: Option<u64>,
    /// Description.
    pub description: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds after which it is no longer paid.
    pub expires_at: u64,
    /// Minimum blocks between the tip and the final HTLC's expiry.
    pub min_final_cltv_expiry_delta: u32,
    /// "open" or "paid" ("expired" is computed when read).
    pub status: String,
    /// What the payer paid.
    pub amount_received_msat: Option<u64>,
    /// When it was paid.
    pub paid_at: Option<u64>,
    /// The preimage: revealed to the payer by fulfilling, never by the API.
    pub preimage: PaymentPreimage,
    /// The payment secret the payer must put in its onion (BOLT 11 `s`).
    pub payment_secret: [u8; 32],
    /// The merchant it belongs to (`""` for the operator).
    #[serde(default)]
    pub owner: String,
    /// The HTLCs (channel, id) that paid it: the parts of the set that completed. Only
    /// they are fulfilled; written with the `paid` status, so a restart in the middle
    /// of fulfilling them still fulfills them all.
    #[serde(default)]
    pub paid_parts: Vec<(ChannelId, u64)>,
}

/// A payment this node sends.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaymentRecord {
    /// Its payment hash.
    pub payment_hash: PaymentHash,
    /// The invoice paid, if paid from one.
    pub bolt11: Option<String>,
    /// The payee.
    pub payee: Option<PublicKey>,
    /// What the payee receives.
    pub amount_msat: u64,
    /// Fees paid to intermediate nodes.
    pub fee_msat: u64,
    /// "pending", "succeeded" or "failed".
    pub status: String,
    /// The proof of payment, once it succeeded.
    pub preimage: Option<PaymentPreimage>,
    /// Why it failed.
    pub failure: Option<String>,
    /// The BOLT 4 failure code, when a node on the route reported one.
    pub failure_code: Option<u16>,
    /// Unix seconds.
    pub created_at: u64,
    /// When it succeeded or failed.
    pub completed_at: Option<u64>,
    /// The first hop.
    pub channel_id: ChannelId,
    /// The HTLC on the first hop.
    pub htlc_id: Option<u64>,
    /// Shared secrets with each hop of the onion, to read a failure.
    pub shared_secrets: Vec<[u8; 32]>,
    /// Unix milliseconds when sent (for the latency histogram).
    #[serde(default)]
    pub sent_at_ms: u64,
}

/// An HTLC this node forwards from one channel to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ForwardRecord {
    /// The incoming channel.
    pub in_channel: ChannelId,
    /// The incoming HTLC's id.
    pub in_htlc: u64,
    /// The incoming amount.
    pub in_amount_msat: u64,
    /// The incoming expiry.
    pub in_cltv: u32,
    /// The outgoing channel.
    pub out_channel: ChannelId,
    /// The outgoing HTLC's id, once added.
    pub out_htlc: Option<u64>,
    /// The outgoing amount.
    pub out_amount_msat: u64,
    /// The outgoing expiry.
    pub out_cltv: u32,
    /// The payment hash.
    pub payment_hash: PaymentHash,
    /// The onion for the next hop, until it is added.
    pub next_onion: Option<OnionPacket>,
    /// The shared secret with the payer's onion, to wrap a failure coming back.
    pub shared_secret: [u8; 32],
    /// "pending", "settled" or "failed".
    pub status: String,
    /// The failure to send back (already wrapped with `shared_secret`).
    pub failure: Option<Vec<u8>>,
    /// Why it failed, for people.
    pub failure_reason: Option<String>,
    /// The preimage, once settled.
    pub preimage: Option<PaymentPreimage>,
    /// The merchant whose channel is the outgoing one (`""` if none).
    pub owner: String,
    /// Unix seconds.
    pub created_at: u64,
    /// When it settled or failed.
    pub resolved_at: Option<u64>,
    /// Unix milliseconds when received (for the latency histogram).
    #[serde(default)]
    pub received_at_ms: u64,
}

impl ForwardRecord {
    /// The fee earned (incoming minus outgoing).
    pub fn fee_msat(&self) -> u64 {
        self.in_amount_msat.saturating_sub(self.out_amount_msat)
    }

    fn key(&self) -> String {
        forward_key(&self.in_channel, self.in_htlc)
    }
}

pub(super) fn forward_key(channel: &ChannelId, htlc: u64) -> String {
    format!("{}:{}", hex::encode(channel.0), htlc)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What to do after a channel's state is durable, beyond sending its messages.
pub(super) enum FollowUp {
    /// Add the outgoing HTLC of a forward (keyed by the incoming channel and HTLC).
    Forward(ChannelId, u64),
    /// Re-run the update logic of a channel (a forward it carries was resolved).
    Advance(ChannelId),
    /// A payment finished: wake whoever waits for it.
    PaymentDone(PaymentHash, Result<PaymentPreimage, String>),
    /// Webhook deliveries were queued.
    Deliveries,
    /// Tower appointments were queued.
    Towers,
}

/// The node's payment book-keeping, behind one (synchronous) lock that is only ever taken
/// for short, non-blocking sections.
#[derive(Default)]
pub(super) struct PayState {
    /// Preimages registered by the operator or learnt from downstream.
    pub preimages: HashMap<PaymentHash, PaymentPreimage>,
    /// Hashes whose incoming HTLCs are held.
    pub held: HashSet<PaymentHash>,
    /// Invoices by hash.
    pub invoices: HashMap<PaymentHash, InvoiceRecord>,
    /// Payments by hash.
    pub payments: HashMap<PaymentHash, PaymentRecord>,
    /// First-hop HTLC → payment.
    pub payment_htlcs: HashMap<(ChannelId, u64), PaymentHash>,
    /// Forwards by incoming channel and HTLC.
    pub forwards: HashMap<(ChannelId, u64), ForwardRecord>,
    /// Outgoing channel and HTLC → incoming.
    pub forward_out: HashMap<(ChannelId, u64), (ChannelId, u64)>,
    /// Our channels by short channel id.
    pub scids: HashMap<u64, ChannelId>,
    /// Webhooks, deliveries and merchants.
    pub events: super::events::EventBook,
    /// Best block height seen.
    pub tip_height: u32,
    /// Multi-part payments being gathered.
    pub htlc_sets: super::mpp::HtlcSets,
    /// Peers' channel_updates for channels not yet confirmed on our side.
    pub pending_updates: HashMap<u64, (PublicKey, ForwardingPolicy)>,
}

/// A node-wide view the channel logic needs to decide on an incoming HTLC.
pub(super) struct Ctx<'a> {
    pub node_key: &'a SecretKey,
    pub policy: &'a ForwardingPolicy,
    pub forwards_allowed: bool,
    pub pay: &'a mut PayState,
}

impl PayState {
    /// Writes the forward record and keeps it in memory.
    pub(super) fn put_forward(&mut self, f: ForwardRecord, out: &mut Outcome) {
        out.writes.push(Write::Record(Record::json(
            "forward",
            &f.key(),
            &f.owner,
            f.created_at,
            &f,
        )));
        // A failed forward's outgoing HTLC id may be given to another HTLC (an
        // uncommitted one is dropped on a disconnection and its id reused): only live
        // forwards are found by it.
        if let (Some(o), false) = (f.out_htlc, f.status == "failed") {
            self.forward_out
                .insert((f.out_channel, o), (f.in_channel, f.in_htlc));
        }
        self.forwards.insert((f.in_channel, f.in_htlc), f);
    }

    pub(super) fn put_payment(&mut self, p: PaymentRecord, out: &mut Outcome) {
        out.writes.push(Write::Record(Record::json(
            "payment",
            &hex::encode(p.payment_hash.0),
            "",
            p.created_at,
            &p,
        )));
        if let Some(h) = p.htlc_id {
            self.payment_htlcs.insert((p.channel_id, h), p.payment_hash);
        }
        self.payments.insert(p.payment_hash, p);
    }

    pub(super) fn put_invoice(&mut self, i: InvoiceRecord, out: &mut Vec<Write>) {
        out.push(Write::Record(Record::json(
            "invoice",
            &hex::encode(i.payment_hash.0),
            &i.owner,
            i.created_at,
            &i,
        )));
        self.invoices.insert(i.payment_hash, i);
    }

    /// Loads a record read back from the database at start-up.
    pub(super) fn load(&mut self, r: &Record) -> Result<(), crate::store::StoreError> {
        match r.kind.as_str() {
            "invoice" => {
                let i: InvoiceRecord = r.decode()?;
                self.invoices.insert(i.payment_hash, i);
            }
            "payment" => {
                let p: PaymentRecord = r.decode()?;
                if let Some(h) = p.htlc_id {
                    self.payment_htlcs.insert((p.channel_id, h), p.payment_hash);
                }
                self.payments.insert(p.payment_hash, p);
            }
            "forward" => {
                let f: ForwardRecord = r.decode()?;
                if let (Some(o), false) = (f.out_htlc, f.status == "failed") {
                    self.forward_out
                        .insert((f.out_channel, o), (f.in_channel, f.in_htlc));
                }
                self.forwards.insert((f.in_channel, f.in_htlc), f);
            }
            _ => self.events.load(r)?,
        }
        Ok(())
    }

    /// An HTLC we offered on `channel` was fulfilled by the peer.
    pub(super) fn on_fulfilled(
        &mut self,
        channel: ChannelId,
        htlc: &Htlc,
        preimage: PaymentPreimage,
        out: &mut Outcome,
    ) {
        let key = (channel, htlc.id.0);
        if let Some(in_key) = self.forward_out.get(&key).copied() {
            if let Some(mut f) = self.forwards.get(&in_key).cloned() {
                if f.status == "pending" {
                    f.status = "settled".into();
                    f.preimage = Some(preimage);
                    f.resolved_at = Some(unix_now());
                    crate::metrics::forward_done(true, f.received_at_ms);
                    self.preimages.insert(f.payment_hash, preimage);
                    out.writes.push(preimage_write(&preimage));
                    self.put_forward(f, out);
                    out.follow.push(FollowUp::Advance(in_key.0));
                }
            }
            return;
        }
        if let Some(hash) = self.payment_htlcs.get(&key).copied() {
            if let Some(mut p) = self.payments.get(&hash).cloned() {
                if p.status == "pending" {
                    p.status = "succeeded".into();
                    p.preimage = Some(preimage);
                    p.completed_at = Some(unix_now());
                    crate::metrics::payment_done(true, p.sent_at_ms);
                    self.events
                        .emit(Event::new("payment.succeeded", "", payment_event(&p)), out);
                    self.put_payment(p, out);
                }
            }
            out.follow.push(FollowUp::PaymentDone(hash, Ok(preimage)));
            return;
        }
        // A payment made without a record (the direct test API).
        out.follow
            .push(FollowUp::PaymentDone(htlc.payment_hash, Ok(preimage)));
    }

    /// An HTLC we offered on `channel` was failed (or dropped before it was committed).
    pub(super) fn on_failed(
        &mut self,
        channel: ChannelId,
        htlc: &Htlc,
        reason: Failure,
        out: &mut Outcome,
    ) {
        let key = (channel, htlc.id.0);
        if let Some(in_key) = self.forward_out.remove(&key) {
            if let Some(f) = self.forwards.get(&in_key).cloned() {
                if f.status == "pending" {
                    let (packet, why) = match reason {
                        Failure::Onion(packet) => (
                            onion::wrap_failure(&f.shared_secret, &packet),
                            "failed downstream".to_string(),
                        ),
                        Failure::Malformed(code, sha) => (
                            // BOLT 4: a malformed report from downstream becomes a failure
                            // this node reports itself, with the code it was given.
                            onion::build_failure(&f.shared_secret, code, &sha),
                            format!(
                                "downstream could not read the onion ({})",
                                codes::name(code)
                            ),
                        ),
                        Failure::Local(why) => (
                            onion::build_failure(
                                &f.shared_secret,
                                codes::TEMPORARY_CHANNEL_FAILURE,
                                &0u16.to_be_bytes(),
                            ),
                            why,
                        ),
                    };
                    self.fail_forward(f, packet, why, out);
                }
            }
            return;
        }
        if let Some(hash) = self.payment_htlcs.remove(&key) {
            if let Some(mut p) = self.payments.get(&hash).cloned() {
                if p.status == "pending" {
                    let (why, code) = match reason {
                        Failure::Onion(packet) => {
                            match onion::decode_failure(&p.shared_secrets, &packet) {
                                Ok(d) => {
                                    let at = if d.hop_index + 1 == p.shared_secrets.len() {
                                        "the payee".to_string()
                                    } else {
                                        format!("hop {}", d.hop_index + 1)
                                    };
                                    (format!("{} at {at}", codes::name(d.code)), Some(d.code))
                                }
                                Err(_) => (
                                    "a node on the route failed it (unreadable reason)".into(),
                                    None,
                                ),
                            }
                        }
                        Failure::Malformed(code, _) => (
                            format!(
                                "the first hop could not read the onion ({})",
                                codes::name(code)
                            ),
                            Some(code),
                        ),
                        Failure::Local(why) => (why, None),
                    };
                    p.status = "failed".into();
                    p.failure = Some(why.clone());
                    p.failure_code = code;
                    p.completed_at = Some(unix_now());
                    p.htlc_id = None;
                    crate::metrics::payment_done(false, p.sent_at_ms);
                    self.events
                        .emit(Event::new("payment.failed", "", payment_event(&p)), out);
                    self.put_payment(p, out);
                    out.follow.push(FollowUp::PaymentDone(hash, Err(why)));
                }
            }
            return;
        }
        out.follow.push(FollowUp::PaymentDone(
            htlc.payment_hash,
            Err(match reason {
                Failure::Local(why) => why,
                Failure::Malformed(code, _) => codes::name(code).into(),
                Failure::Onion(_) => "failed by peer".into(),
            }),
        ));
    }

    /// Marks a forward failed with `packet` to send back upstream.
    pub(super) fn fail_forward(
        &mut self,
        mut f: ForwardRecord,
        packet: Vec<u8>,
        why: String,
        out: &mut Outcome,
    ) {
        tracing::info!(hash = %hex::encode(f.payment_hash.0), "forward failed: {why}");
        if let Some(o) = f.out_htlc {
            self.forward_out.remove(&(f.out_channel, o));
        }
        f.status = "failed".into();
        f.failure = Some(packet);
        f.failure_reason = Some(why);
        f.resolved_at = Some(unix_now());
        f.next_onion = None;
        crate::metrics::forward_done(false, f.received_at_ms);
        let in_channel = f.in_channel;
        self.put_forward(f, out);
        out.follow.push(FollowUp::Advance(in_channel));
    }
}

/// Why an HTLC we offered was removed.
pub(super) enum Failure {
    /// update_fail_htlc's encrypted reason.
    Onion(Vec<u8>),
    /// update_fail_malformed_htlc's code and onion hash.
    Malformed(u16, [u8; 32]),
    /// Never reached the peer (dropped at disconnection, refused locally).
    Local(String),
}

pub(super) fn preimage_write(p: &PaymentPreimage) -> Write {
    Write::Meta {
        key: format!("preimage:{}", hex::encode(p.payment_hash().0)),
        value: p.0.to_vec(),
    }
}

/// The webhook payload of a payment.
pub(super) fn payment_event(p: &PaymentRecord) -> serde_json::Value {
    serde_json::json!({
        "payment_hash": hex::encode(p.payment_hash.0),
        "amount_msat": p.amount_msat,
        "fee_msat": p.fee_msat,
        "status": p.status,
        "preimage": p.preimage.map(|x| hex::encode(x.0)),
        "failure": p.failure,
    })
}

/// The webhook payload of an invoice.
pub(super) fn invoice_event(i: &InvoiceRecord) -> serde_json::Value {
    serde_json::json!({
        "payment_hash": hex::encode(i.payment_hash.0),
        "amount_msat": i.amount_msat,
        "amount_received_msat": i.amount_received_msat,
        "description": i.description,
        "paid_at": i.paid_at,
    })
}

/// Whether a channel can carry a new payment now.
pub(super) fn usable(e: &ChannelEntry) -> bool {
    e.status == ChannelStatus::Normal && !e.monitor.funding_spent() && e.reestablished
}

impl super::Node {
    /// An invoice by payment hash, if `owner` may see it (`None` = the operator sees all).
    pub fn invoice(&self, hash: &PaymentHash, owner: Option<&str>) -> Option<InvoiceRecord> {
        let pay = self.pay.lock().expect("pay lock");
        pay.invoices
            .get(hash)
            .filter(|i| owner.is_none_or(|o| i.owner == o))
            .cloned()
    }

    /// Invoices, oldest first.
    pub fn invoices(&self, owner: Option<&str>) -> Vec<InvoiceRecord> {
        let pay = self.pay.lock().expect("pay lock");
        let mut v: Vec<_> = pay
            .invoices
            .values()
            .filter(|i| owner.is_none_or(|o| i.owner == o))
            .cloned()
            .collect();
        v.sort_by_key(|i| (i.created_at, i.payment_hash.0));
        v
    }

    /// A payment by hash.
    pub fn payment(&self, hash: &PaymentHash) -> Option<PaymentRecord> {
        self.pay
            .lock()
            .expect("pay lock")
            .payments
            .get(hash)
            .cloned()
    }

    /// Payments, oldest first.
    pub fn payments(&self) -> Vec<PaymentRecord> {
        let pay = self.pay.lock().expect("pay lock");
        let mut v: Vec<_> = pay.payments.values().cloned().collect();
        v.sort_by_key(|p| (p.created_at, p.payment_hash.0));
        v
    }

    /// Forwards, oldest first; only those into `owner`'s channels when given.
    pub fn forwards(&self, owner: Option<&str>) -> Vec<super::ForwardRecord> {
        let pay = self.pay.lock().expect("pay lock");
        let mut v: Vec<_> = pay
            .forwards
            .values()
            .filter(|f| owner.is_none_or(|o| f.owner == o))
            .cloned()
            .collect();
        v.sort_by_key(|f| (f.created_at, f.in_channel.0, f.in_htlc));
        v
    }
}
