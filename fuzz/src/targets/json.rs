//! JSON from outside: Bitcoin Core's RPC replies and the REST API's request bodies.

use bitcoin::BlockHash;
use chain::rpc::response;
use hub::api::{check_body, check_channel_id, RequestBody};
use serde_json::Value;

use super::tag;

/// Runs a reply body through the envelope parser and, when it carries a result, every
/// result parser the client uses (any of them may be handed any result by a hostile or
/// confused node).
pub fn rpc_response(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    let v = match response::reply("200 OK", &text) {
        Ok(v) => v,
        Err(e) => return tag(&e),
    };
    let mut label = 1u64;
    let mut note = |r: u64| label = label.rotate_left(5) ^ r;
    note(tag(&response::tip(&v)));
    note(tag(&response::block_hash(&v)));
    // The header parser checks the fields against the hash asked for; use the hash the
    // reply claims, as a node answering honestly would match it.
    let hash: BlockHash = v
        .get("hash")
        .and_then(Value::as_str)
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| BlockHash::from_raw_hash(bitcoin::hashes::Hash::all_zeros()));
    note(tag(&response::header(&v, &hash)));
    note(tag(&response::block(&v)));
    note(tag(&response::txid(&v)));
    note(tag(&response::tx_out(&v)));
    note(tag(&response::raw_transaction(&v)));
    note(tag(&response::txids(&v)));
    note(tag(&response::block_hashes(&v)));
    note(tag(&response::fee_rate(&v)));
    label
}

/// Decodes the input as each REST request body and runs the handlers' checks; also reads
/// it as a channel id path segment and as generic JSON.
pub fn rest_body(data: &[u8]) -> u64 {
    let mut label = 0u64;
    for kind in RequestBody::ALL {
        label = label.rotate_left(3) ^ tag(&check_body(kind, data));
    }
    label ^= tag(&check_channel_id(&String::from_utf8_lossy(data))) << 1;
    label ^ tag(&serde_json::from_slice::<Value>(data)) << 2
}

/// Tokens worth splicing into JSON.
pub const DICTIONARY: &[&[u8]] = &[
    b"null",
    b"true",
    b"-1",
    b"1e400",
    b"18446744073709551616",
    b"0.00000001",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"result\":",
    b"\"error\":",
    b"\"feerate\":",
    b"\"hex\":\"00\"",
    b"\"amount_msat\":0",
    b",",
    b"\"",
];
