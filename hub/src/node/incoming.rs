//! What becomes of an incoming HTLC once it is committed: settled with a preimage (an
//! invoice of ours or a registered payment), forwarded on, or failed back with the BOLT 4
//! error its onion, amount or expiry calls for. Decided under the lock of the channel it
//! arrived on; the records it changes go out in that channel's database transaction.

use super::channels::{ChannelEntry, Outcome};
use super::events::Event;
use super::mpp::{PartFate, SetDecision};
use super::pay::{
    codes, invoice_event, now_ms, Ctx, FollowUp, ForwardRecord, MAX_CLTV_EXPIRY_BLOCKS,
};
use crate::store::unix_now;
use bitcoin::hashes::{sha256, Hash};
use channel::msgs::{Message, OnionPacket};
use channel::onion::{self, HopPayload};
use channel::state::{Htlc, HtlcStatus};
use channel::{ChannelId, PaymentPreimage, Side};

/// What to do with an incoming HTLC.
enum Decision {
    Wait,
    Fulfill(PaymentPreimage),
    Fail(Vec<u8>),
    Malformed([u8; 32], u16),
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
