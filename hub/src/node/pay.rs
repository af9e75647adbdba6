//! Payments: invoices this node issues, payments it sends, and HTLCs it forwards.
//!
//! Everything here is decided under the lock of the channel an HTLC arrives on (or leaves
//! by), and the records it changes are written in the same database transaction as that
//! channel's state: an invoice is marked paid together with the fulfill that settles it, a
//! forward is recorded together with the outgoing HTLC that carries it, a preimage learnt
//! from downstream is stored together with the fulfill that revealed it. So after a crash
//! the records and the channels always tell the same story.

use super::channels::{ChannelEntry, ChannelStatus, Outcome};
use super::events::Event;
use super::mpp::{PartFate, SetDecision};
use crate::store::{unix_now, Record, Write};
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::msgs::{Message, OnionPacket};
use channel::onion::{self, HopPayload};
use channel::state::{Htlc, HtlcStatus};
use channel::{ChannelId, HtlcId, PaymentHash, PaymentPreimage, Side};
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
const FINAL_CLTV_MARGIN: u32 = 3;

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

/// What to do with an incoming HTLC.
enum Decision {
    Wait,
    Fulfill(PaymentPreimage),
    Fail(Vec<u8>),
    Malformed([u8; 32], u16),
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

impl ChannelEntry {
    /// Settles, fails or forwards every committed incoming HTLC that has not been dealt
    /// with yet.
    pub(super) fn resolve_incoming(
        &mut self,
        ctx: &mut Ctx<'_>,
        out: &mut Outcome,
    ) -> Result<(), super::NodeError> {
        let channel_id = self.channel.channel_id();
        let incoming: Vec<Htlc> = self
            .channel
            .log()
            .committed_htlcs
            .iter()
            .filter(|h| h.offerer == Side::Remote)
            .filter(|h| {
                matches!(
                    self.channel.log().find_htlc(Side::Remote, h.id),
                    Some((_, HtlcStatus::Committed))
                )
            })
            .cloned()
            .collect();
        for h in incoming {
            let decision = if ctx.pay.held.contains(&h.payment_hash) {
                Decision::Wait
            } else {
                decide(self, ctx, &h, out)
            };
            let msg = match decision {
                Decision::Wait => continue,
                Decision::Fulfill(p) => {
                    Message::UpdateFulfillHtlc(self.channel.send_fulfill(h.id, p)?)
                }
                Decision::Fail(reason) => {
                    Message::UpdateFailHtlc(self.channel.send_fail(h.id, reason)?)
                }
                Decision::Malformed(sha, code) => Message::UpdateFailMalformedHtlc(
                    self.channel.send_fail_malformed(h.id, sha, code)?,
                ),
            };
            let _ = channel_id;
            out.messages.push(msg);
        }
        Ok(())
    }
}

fn decide(e: &ChannelEntry, ctx: &mut Ctx<'_>, h: &Htlc, out: &mut Outcome) -> Decision {
    let channel_id = e.channel.channel_id();
    if let Some(f) = ctx.pay.forwards.get(&(channel_id, h.id.0)) {
        return match f.status.as_str() {
            "settled" => f.preimage.map(Decision::Fulfill).unwrap_or(Decision::Wait),
            "failed" => Decision::Fail(f.failure.clone().unwrap_or_default()),
            _ => Decision::Wait,
        };
    }
    let peeled = match onion::peel_raw(ctx.node_key, &h.onion, &h.payment_hash.0) {
        Ok(p) => p,
        Err(err) => {
            let sha = err
                .sha256_of_onion()
                .unwrap_or_else(|| sha256::Hash::hash(&h.onion.0[..]).to_byte_array());
            let code = err
                .failure_code()
                .filter(|c| c & codes::BADONION != 0)
                .unwrap_or(codes::BADONION | 5);
            return Decision::Malformed(sha, code);
        }
    };
    // Beyond the dust exposure limit a dust HTLC is neither accepted nor forwarded: on
    // a force close its value would go to miners.
    let (onion::PeeledRaw::Final { shared_secret, .. }
    | onion::PeeledRaw::Forward { shared_secret, .. }) = &peeled;
    // A part of a multi-part payment, once taken into its set, is decided by the set
    // alone: held, fulfilled with it, or failed with it; never checked again on its own
    // (a part failed back while still counted would let the payer complete the set with
    // less than the total).
    if let Some(d) = decided_by_set(ctx, channel_id, h, shared_secret) {
        return d;
    }
    if e.channel.is_dust(h)
        && e.channel.dust_exposure(None) > channel::state::MAX_DUST_HTLC_EXPOSURE
    {
        return fail_with(
            shared_secret,
            codes::TEMPORARY_CHANNEL_FAILURE,
            &0u16.to_be_bytes(),
        );
    }
    match peeled {
        onion::PeeledRaw::Final {
            payload,
            shared_secret,
        } => match HopPayload::decode(&payload, true) {
            Ok(p) => decide_final(ctx, channel_id, h, &p, &shared_secret, out),
            Err(e) => invalid_payload(&shared_secret, e.tlv_type()),
        },
        onion::PeeledRaw::Forward {
            payload,
            next,
            shared_secret,
        } => match HopPayload::decode(&payload, false) {
            Ok(p) => decide_forward(e, ctx, h, p, next, shared_secret, out),
            Err(e) => invalid_payload(&shared_secret, e.tlv_type()),
        },
    }
}

/// What the HTLC sets say of incoming HTLC `h` on `channel_id`, if it is one of their
/// parts: held, fulfilled (its set completed and paid the invoice), or failed with its set.
fn decided_by_set(
    ctx: &mut Ctx<'_>,
    channel_id: ChannelId,
    h: &Htlc,
    ss: &[u8; 32],
) -> Option<Decision> {
    let key = (channel_id, h.id.0);
    if let Some(inv) = ctx.pay.invoices.get(&h.payment_hash) {
        if inv.paid_parts.contains(&key) {
            return Some(Decision::Fulfill(inv.preimage));
        }
    }
    match ctx.pay.htlc_sets.fate(&key)? {
        PartFate::Held => Some(Decision::Wait),
        PartFate::Failed(code) if code == codes::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS => {
            Some(unknown_details(ss, h, ctx.pay.tip_height))
        }
        PartFate::Failed(code) => Some(fail_with(ss, code, &[])),
    }
}

/// BOLT 4 invalid_onion_payload: the offending TLV type (BigSize) and offset 0.
fn invalid_payload(ss: &[u8; 32], tlv_type: u64) -> Decision {
    let mut w = channel::wire::Writer::new();
    w.bigsize(tlv_type);
    let mut data = w.into_bytes();
    data.extend_from_slice(&0u16.to_be_bytes());
    fail_with(ss, codes::INVALID_ONION_PAYLOAD, &data)
}

fn fail_with(shared_secret: &[u8; 32], code: u16, data: &[u8]) -> Decision {
    Decision::Fail(onion::build_failure(shared_secret, code, data))
}

fn unknown_details(shared_secret: &[u8; 32], h: &Htlc, height: u32) -> Decision {
    let mut data = h.amount.0.to_be_bytes().to_vec();
    data.extend_from_slice(&height.to_be_bytes());
    fail_with(
        shared_secret,
        codes::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS,
        &data,
    )
}

fn decide_final(
    ctx: &mut Ctx<'_>,
    channel_id: ChannelId,
    h: &Htlc,
    payload: &HopPayload,
    ss: &[u8; 32],
    out: &mut Outcome,
) -> Decision {
    let height = ctx.pay.tip_height;
    // BOLT 4: the final hop checks the onion against the HTLC itself.
    if payload.outgoing_cltv_value != h.cltv_expiry {
        return fail_with(
            ss,
            codes::FINAL_INCORRECT_CLTV_EXPIRY,
            &h.cltv_expiry.to_be_bytes(),
        );
    }
    if payload.amt_to_forward > h.amount.0 {
        return fail_with(
            ss,
            codes::FINAL_INCORRECT_HTLC_AMOUNT,
            &h.amount.0.to_be_bytes(),
        );
    }
    if let Some(inv) = ctx.pay.invoices.get(&h.payment_hash).cloned() {
        // BOLT 4: the payment secret of the invoice is required, and "the amount paid"
        // is the payer's `total_msat`, which parts of a multi-part payment share.
        let Some(total) = payload
            .payment_data
            .filter(|(secret, _)| *secret == inv.payment_secret)
            .map(|(_, total)| total)
        else {
            tracing::info!(
                hash = %hex::encode(h.payment_hash.0),
                "refusing a payment for one of our invoices: no or wrong payment secret"
            );
            return unknown_details(ss, h, height);
        };
        if inv.status == "paid" {
            // Paid already, and this HTLC was not one of the parts that paid it: refused,
            // as LND and LDK refuse a payment to a settled invoice (the preimage goes to
            // the parts of the set that paid, and to nothing else).
            return unknown_details(ss, h, height);
        }
        let amount_ok = total >= payload.amt_to_forward
            && inv
                .amount_msat
                .is_none_or(|a| total >= a && total <= a.saturating_mul(2));
        let cltv_ok = h.cltv_expiry >= height + inv.min_final_cltv_expiry_delta;
        let now = unix_now();
        let fresh = now < inv.expires_at;
        if !(amount_ok && cltv_ok && fresh) {
            tracing::info!(
                hash = %hex::encode(h.payment_hash.0),
                amount_ok, cltv_ok, fresh,
                "refusing a payment for one of our invoices"
            );
            return unknown_details(ss, h, height);
        }
        let decision = ctx.pay.htlc_sets.add(
            h.payment_hash,
            (channel_id, h.id.0),
            payload.amt_to_forward,
            h.amount.0,
            total,
            std::time::Instant::now(),
        );
        return match decision {
            SetDecision::Wait => Decision::Wait,
            SetDecision::Fail { code, channels } => {
                out.follow
                    .extend(channels.into_iter().map(FollowUp::Advance));
                if code == codes::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS {
                    unknown_details(ss, h, height)
                } else {
                    fail_with(ss, code, &[])
                }
            }
            SetDecision::Complete {
                received_msat,
                parts,
            } => {
                let mut inv = inv;
                inv.status = "paid".into();
                inv.amount_received_msat = Some(received_msat);
                inv.paid_at = Some(now);
                let mut channels: Vec<ChannelId> = parts.iter().map(|k| k.0).collect();
                channels.sort();
                channels.dedup();
                inv.paid_parts = parts;
                crate::metrics::invoice_paid();
                ctx.pay.events.emit(
                    Event::new("invoice.paid", &inv.owner, invoice_event(&inv)),
                    out,
                );
                let preimage = inv.preimage;
                ctx.pay.put_invoice(inv, &mut out.writes);
                // The other parts (on this channel too) are fulfilled when their
                // channels are looked at again, now that the invoice is paid.
                out.follow
                    .extend(channels.into_iter().map(FollowUp::Advance));
                Decision::Fulfill(preimage)
            }
        };
    }
    match ctx.pay.preimages.get(&h.payment_hash) {
        // A preimage the operator registered (no invoice): settle as asked.
        Some(p) if h.cltv_expiry > height => Decision::Fulfill(*p),
        _ => unknown_details(ss, h, height),
    }
}

fn decide_forward(
    e: &ChannelEntry,
    ctx: &mut Ctx<'_>,
    h: &Htlc,
    payload: HopPayload,
    next: OnionPacket,
    ss: [u8; 32],
    out: &mut Outcome,
) -> Decision {
    let height = ctx.pay.tip_height;
    let Some(scid) = payload.short_channel_id else {
        return fail_with(&ss, codes::INVALID_ONION_PAYLOAD, &[]);
    };
    if !ctx.forwards_allowed {
        return fail_with(&ss, codes::UNKNOWN_NEXT_PEER, &[]);
    }
    let Some(out_channel) = ctx.pay.scids.get(&scid).copied() else {
        return fail_with(&ss, codes::UNKNOWN_NEXT_PEER, &[]);
    };
    let policy = ctx.policy;
    let Some(fee) = policy.fee_msat(payload.amt_to_forward) else {
        return fail_with(&ss, codes::FEE_INSUFFICIENT, &[]);
    };
    let update = 0u16.to_be_bytes();
    if payload
        .amt_to_forward
        .checked_add(fee)
        .is_none_or(|need| h.amount.0 < need)
    {
        let mut data = h.amount.0.to_be_bytes().to_vec();
        data.extend_from_slice(&update);
        return fail_with(&ss, codes::FEE_INSUFFICIENT, &data);
    }
    if u64::from(payload.outgoing_cltv_value) + u64::from(policy.cltv_expiry_delta)
        > u64::from(h.cltv_expiry)
    {
        let mut data = h.cltv_expiry.to_be_bytes().to_vec();
        data.extend_from_slice(&update);
        return fail_with(&ss, codes::INCORRECT_CLTV_EXPIRY, &data);
    }
    // The outgoing HTLC needs time to be resolved on chain if the next peer stalls.
    if payload.outgoing_cltv_value <= height + super::onchain::FULFILL_SAFETY + 2 {
        return fail_with(&ss, codes::EXPIRY_TOO_SOON, &update);
    }
    // An HTLC that would lock our outgoing liquidity for months is refused (BOLT 4).
    if h.cltv_expiry > height.saturating_add(MAX_CLTV_EXPIRY_BLOCKS) {
        return fail_with(&ss, codes::EXPIRY_TOO_FAR, &[]);
    }
    let owner = ctx.pay.events.owner_of_peer_channel(&out_channel);
    let f = ForwardRecord {
        in_channel: e.channel.channel_id(),
        in_htlc: h.id.0,
        in_amount_msat: h.amount.0,
        in_cltv: h.cltv_expiry,
        out_channel,
        out_htlc: None,
        out_amount_msat: payload.amt_to_forward,
        out_cltv: payload.outgoing_cltv_value,
        payment_hash: h.payment_hash,
        next_onion: Some(next),
        shared_secret: ss,
        status: "pending".into(),
        failure: None,
        failure_reason: None,
        preimage: None,
        owner,
        created_at: unix_now(),
        resolved_at: None,
        received_at_ms: now_ms(),
    };
    let key = (f.in_channel, f.in_htlc);
    ctx.pay.put_forward(f, out);
    out.follow.push(FollowUp::Forward(key.0, key.1));
    Decision::Wait
}

/// Builds the onion and amounts for paying `amount_msat` to `payee` through `route`
/// (each hop: the node to go through, the channel it forwards over and its policy).
pub(super) struct Route {
    /// Amount of the first HTLC.
    pub first_amount_msat: u64,
    /// Expiry of the first HTLC.
    pub first_cltv: u32,
    /// Total fees.
    pub fee_msat: u64,
    /// The onion.
    pub onion: OnionPacket,
    /// Shared secrets per hop.
    pub shared_secrets: Vec<[u8; 32]>,
}

/// One intermediate hop.
pub(super) struct Hop {
    pub node: PublicKey,
    pub scid: u64,
    pub policy: ForwardingPolicy,
}

/// Builds a route through `hops` to `payee`.
pub(super) fn build_route(
    session_key: &SecretKey,
    hops: &[Hop],
    payee: PublicKey,
    amount_msat: u64,
    final_cltv: u32,
    payment_secret: Option<[u8; 32]>,
    payment_hash: &PaymentHash,
) -> Result<Route, String> {
    // Walk back from the payee: each hop is told what to forward, and is given that plus
    // its fee, with its CLTV delta added.
    let mut payloads = vec![(
        payee,
        HopPayload {
            amt_to_forward: amount_msat,
            outgoing_cltv_value: final_cltv,
            short_channel_id: None,
            payment_data: payment_secret.map(|s| (s, amount_msat)),
        },
    )];
    let mut amount = amount_msat;
    let mut cltv = final_cltv;
    let mut fee_total = 0u64;
    for hop in hops.iter().rev() {
        let payload = HopPayload {
            amt_to_forward: amount,
            outgoing_cltv_value: cltv,
            short_channel_id: Some(hop.scid),
            payment_data: None,
        };
        payloads.push((hop.node, payload));
        let fee = hop.policy.fee_msat(amount).ok_or("fee overflow")?;
        fee_total = fee_total.checked_add(fee).ok_or("fee overflow")?;
        amount = amount.checked_add(fee).ok_or("amount overflow")?;
        cltv = cltv
            .checked_add(u32::from(hop.policy.cltv_expiry_delta))
            .ok_or("cltv overflow")?;
    }
    payloads.reverse();
    let (onion, shared_secrets) = onion::create_onion(session_key, &payloads, &payment_hash.0)
        .map_err(|e| format!("onion: {e}"))?;
    Ok(Route {
        first_amount_msat: amount,
        first_cltv: cltv,
        fee_msat: fee_total,
        onion,
        shared_secrets,
    })
}

/// The expiry to give the final HTLC.
pub(super) fn final_cltv(tip: u32, min_final: u32) -> u32 {
    tip + min_final + FINAL_CLTV_MARGIN
}

/// Whether a channel can carry a new payment now.
pub(super) fn usable(e: &ChannelEntry) -> bool {
    e.status == ChannelStatus::Normal && !e.monitor.funding_spent() && e.reestablished
}

#[allow(dead_code)]
fn _assert_htlc_id(_: HtlcId) {}

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
