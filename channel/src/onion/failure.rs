//! Failures travelling back along a route (BOLT 4 "Returning Errors"): the erring hop
//! authenticates its message with its `um` key, and it and every hop before it obfuscate
//! the packet with their `ammag` stream, so only the origin, which knows every shared
//! secret, can read it and tell which hop sent it.

use super::crypto::{apply_stream, derive_key, hmac_eq, hmac_sha256, AMMAG, UM};
use super::OnionError;

/// Flag: the onion could not be parsed by the hop it was sent to.
pub const BADONION: u16 = 0x8000;
/// Flag: retrying will not help.
pub const PERM: u16 = 0x4000;
/// Flag: the failure is the node's, not one channel's.
pub const NODE: u16 = 0x2000;
/// Flag: a `channel_update` is enclosed.
pub const UPDATE: u16 = 0x1000;

/// The `realm` byte was not understood.
pub const INVALID_REALM: u16 = PERM | 1;
/// A transient failure of the whole node.
pub const TEMPORARY_NODE_FAILURE: u16 = NODE | 2;
/// A permanent failure of the whole node.
pub const PERMANENT_NODE_FAILURE: u16 = PERM | NODE | 2;
/// The node requires a feature the onion lacks.
pub const REQUIRED_NODE_FEATURE_MISSING: u16 = PERM | NODE | 3;
/// Unknown onion version; data: `sha256_of_onion`.
pub const INVALID_ONION_VERSION: u16 = BADONION | PERM | 4;
/// Bad onion HMAC; data: `sha256_of_onion`.
pub const INVALID_ONION_HMAC: u16 = BADONION | PERM | 5;
/// Unparsable ephemeral key; data: `sha256_of_onion`.
pub const INVALID_ONION_KEY: u16 = BADONION | PERM | 6;
/// The outgoing channel cannot take this HTLC now; data: `u16` len + `channel_update`
/// (which may be empty).
pub const TEMPORARY_CHANNEL_FAILURE: u16 = UPDATE | 7;
/// The outgoing channel cannot take any HTLC.
pub const PERMANENT_CHANNEL_FAILURE: u16 = PERM | 8;
/// The channel requires a feature the onion lacks.
pub const REQUIRED_CHANNEL_FEATURE_MISSING: u16 = PERM | 9;
/// The onion names a channel this node does not have.
pub const UNKNOWN_NEXT_PEER: u16 = PERM | 10;
/// Below `htlc_minimum_msat`; data: `htlc_msat` u64 + len + `channel_update`.
pub const AMOUNT_BELOW_MINIMUM: u16 = UPDATE | 11;
/// Fee too low; data: `htlc_msat` u64 + len + `channel_update`.
pub const FEE_INSUFFICIENT: u16 = UPDATE | 12;
/// CLTV delta not respected; data: `cltv_expiry` u32 + len + `channel_update`.
pub const INCORRECT_CLTV_EXPIRY: u16 = UPDATE | 13;
/// Expiry too close; data: len + `channel_update`.
pub const EXPIRY_TOO_SOON: u16 = UPDATE | 14;
/// Unknown payment, wrong secret or amount; data: `htlc_msat` u64 + `height` u32.
pub const INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS: u16 = PERM | 15;
/// Final HTLC expiry below the onion's; data: `cltv_expiry` u32.
pub const FINAL_INCORRECT_CLTV_EXPIRY: u16 = 18;
/// Final HTLC amount below the onion's; data: `incoming_htlc_amt` u64.
pub const FINAL_INCORRECT_HTLC_AMOUNT: u16 = 19;
/// Channel disabled; data: `disabled_flags` u16 + len + `channel_update`.
pub const CHANNEL_DISABLED: u16 = UPDATE | 20;
/// Expiry too far in the future.
pub const EXPIRY_TOO_FAR: u16 = 21;
/// Hop payload not understood; data: `type` BigSize + `offset` u16.
pub const INVALID_ONION_PAYLOAD: u16 = PERM | 22;
/// Multi-part payment not completed in time.
pub const MPP_TIMEOUT: u16 = 23;

/// What `failure_len + pad_len` should add up to, so that every failure has one size.
pub const PADDED_LEN: usize = 256;

/// Data of `incorrect_or_unknown_payment_details`.
pub fn payment_details_data(htlc_msat: u64, height: u32) -> Vec<u8> {
    let mut v = htlc_msat.to_be_bytes().to_vec();
    v.extend_from_slice(&height.to_be_bytes());
    v
}

/// A `channel_update` as failure data: u16 length then the message (empty is allowed,
/// e.g. for `temporary_channel_failure` when there is nothing to tell).
pub fn channel_update_data(channel_update: &[u8]) -> Vec<u8> {
    let mut v = (channel_update.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(channel_update);
    v
}

/// The failure a hop returns: `failure_code` and its data, padded to 256 bytes,
/// authenticated with `um` and obfuscated once with `ammag`, ready for
/// `update_fail_htlc`'s `reason`.
pub fn build_failure(shared_secret: &[u8; 32], failure_code: u16, data: &[u8]) -> Vec<u8> {
    let mut msg = failure_code.to_be_bytes().to_vec();
    msg.extend_from_slice(data);
    build_failure_padded(shared_secret, &msg, PADDED_LEN)
}

/// [`build_failure`] for an already encoded `failuremsg` (code, data and any TLV
/// extension), padded so `failure_len + pad_len` is at least `padded_len`.
pub fn build_failure_padded(
    shared_secret: &[u8; 32],
    failure_msg: &[u8],
    padded_len: usize,
) -> Vec<u8> {
    let pad_len = padded_len.saturating_sub(failure_msg.len());
    let mut body = Vec::with_capacity(4 + failure_msg.len() + pad_len);
    body.extend_from_slice(&(failure_msg.len() as u16).to_be_bytes());
    body.extend_from_slice(failure_msg);
    body.extend_from_slice(&(pad_len as u16).to_be_bytes());
    body.resize(body.len() + pad_len, 0);
    let mut packet = hmac_sha256(&derive_key(UM, shared_secret), &[&body]).to_vec();
    packet.extend_from_slice(&body);
    wrap_failure(shared_secret, &packet)
}

/// What an intermediate hop does to a failure coming back from downstream before
/// passing it upstream: XOR with its `ammag` stream.
pub fn wrap_failure(shared_secret: &[u8; 32], packet: &[u8]) -> Vec<u8> {
    let mut out = packet.to_vec();
    apply_stream(&derive_key(AMMAG, shared_secret), &mut out);
    out
}

/// A failure read by the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFailure {
    /// Which hop of the route sent it (0 = the first hop).
    pub hop_index: usize,
    /// `failure_code`, flags included.
    pub code: u16,
    /// The bytes after the code (including any TLV extension).
    pub data: Vec<u8>,
}

/// The origin's side: peel each hop's `ammag` layer in route order until one hop's `um`
/// HMAC matches, which identifies the hop that built the failure.
pub fn decode_failure(
    shared_secrets: &[[u8; 32]],
    packet: &[u8],
) -> Result<DecodedFailure, OnionError> {
    if packet.len() < 32 + 4 {
        return Err(OnionError::MalformedFailure);
    }
    let mut buf = packet.to_vec();
    for (hop_index, ss) in shared_secrets.iter().enumerate() {
        apply_stream(&derive_key(AMMAG, ss), &mut buf);
        let expected = hmac_sha256(&derive_key(UM, ss), &[&buf[32..]]);
        if !hmac_eq(&expected, &buf[..32]) {
            continue;
        }
        let body = &buf[32..];
        let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        if len < 2 || 2 + len + 2 > body.len() {
            return Err(OnionError::MalformedFailure);
        }
        let msg = &body[2..2 + len];
        return Ok(DecodedFailure {
            hop_index,
            code: u16::from_be_bytes([msg[0], msg[1]]),
            data: msg[2..].to_vec(),
        });
    }
    Err(OnionError::UnknownFailureSource)
}

/// True if `code` carries the flag `flag`.
pub fn has_flag(code: u16, flag: u16) -> bool {
    code & flag == flag
}
