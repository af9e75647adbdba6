//! Routes for the payments this node sends: the onion, amounts and expiries through
//! the hops of a route (BOLT 4), and the final HTLC's expiry.

use super::pay::{ForwardingPolicy, FINAL_CLTV_MARGIN};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::msgs::OnionPacket;
use channel::onion::{self, HopPayload};
use channel::PaymentHash;

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
