//! Seed corpora from the repository's conformance vectors, compiled into the binary so a
//! run needs no files, plus messages encoded from valid structs.

use serde_json::Value;

const BOLT8: &str = include_str!("../../channel/tests/vectors/bolt8-transport.json");
const BOLT4_ONION: &str = include_str!("../../channel/tests/vectors/bolt4-onion-test.json");
const BOLT4_ERROR: &str = include_str!("../../channel/tests/vectors/bolt4-onion-error-test.json");
const BOLT11: &str = include_str!("../../channel/tests/vectors/bolt11-invoices.json");
const BITCOIND: &str = include_str!("../../chain/tests/vectors/bitcoind-rpc-regtest.json");

fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("vector files in the repository are JSON")
}

/// Hex string at a JSON pointer of a vector file.
pub(crate) fn hex_at(text: &str, pointer: &str) -> Vec<u8> {
    let v = json(text);
    let s = v
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("vector field {pointer}"));
    hex::decode(s).expect("vector fields are hex")
}

/// BOLT 8 vectors: the handshake keys and the encrypted frames of the message test.
pub(crate) fn bolt8_vectors() -> Value {
    json(BOLT8)
}

/// BOLT 8 ciphertext frames from the spec's message test.
pub fn bolt8_frames() -> Vec<Vec<u8>> {
    let v = json(BOLT8);
    let mut out: Vec<Vec<u8>> = v["message_test"]["outputs"]
        .as_object()
        .map(|o| {
            o.values()
                .filter_map(Value::as_str)
                .filter_map(|s| hex::decode(s).ok())
                .collect()
        })
        .unwrap_or_default();
    out.push(hex::decode("68656c6c6f").expect("hex"));
    out
}

/// BOLT 4 vectors: the spec's onion packet and its hops' private keys.
pub(crate) fn bolt4_onion() -> Value {
    json(BOLT4_ONION)
}

/// BOLT 4 failure vectors: the error packet and the route's shared secrets.
pub(crate) fn bolt4_error() -> Value {
    json(BOLT4_ERROR)
}

/// The onion packet and each hop's payload from the BOLT 4 vectors.
pub fn onion_packets() -> Vec<Vec<u8>> {
    let v = bolt4_onion();
    let mut out = vec![hex_at(BOLT4_ONION, "/onion")];
    if let Some(hops) = v["generate"]["hops"].as_array() {
        out.extend(
            hops.iter()
                .filter_map(|h| h["payload"].as_str())
                .filter_map(|p| hex::decode(p).ok()),
        );
    }
    out.push(hex_at(BOLT4_ERROR, "/errorpacket"));
    out
}

/// Every invoice string, valid and invalid, from the BOLT 11 vectors.
pub fn invoices() -> Vec<Vec<u8>> {
    let v = json(BOLT11);
    ["valid", "invalid"]
        .iter()
        .filter_map(|k| v[*k].as_array())
        .flatten()
        .filter_map(|c| c["invoice"].as_str())
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

/// Bitcoin Core's replies from the recorded regtest transcript, plus the shapes the
/// transcript lacks (a fee estimate, a verbose transaction in a block).
pub fn rpc_replies() -> Vec<Vec<u8>> {
    let v = json(BITCOIND);
    let mut out: Vec<Vec<u8>> = v["calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .filter_map(|c| serde_json::to_vec(&c["response"]).ok())
                .collect()
        })
        .unwrap_or_default();
    out.push(br#"{"result":{"feerate":0.00012345,"blocks":2},"error":null,"id":"t"}"#.to_vec());
    out.push(br#"{"result":null,"error":{"code":-5,"message":"Block not found"},"id":1}"#.to_vec());
    out
}

/// One valid body per REST route, and the shapes clients get wrong.
pub fn rest_bodies() -> Vec<Vec<u8>> {
    let key = "02eec7245d6b7d2ccb30380bfbe2a3648cd7a942653f5aa340edcea1f283686619";
    let h = "42".repeat(32);
    [
        format!(r#"{{"node_id":"{key}","address":"127.0.0.1:9735"}}"#),
        format!(r#"{{"node_id":"{key}","address":"[::1]:9735"}}"#),
        format!(r#"{{"peer_id":"{key}","capacity_sat":1000000,"push_msat":5000}}"#),
        format!(r#"{{"peer_id":"{key}","capacity_sat":18446744073709551615}}"#),
        r#"{"force":true}"#.to_string(),
        r#"{}"#.to_string(),
        format!(r#"{{"preimage":"{h}"}}"#),
        format!(r#"{{"amount_msat":1000,"payment_hash":"{h}","cltv_expiry":500}}"#),
        format!(r#"{{"amount_msat":1000,"payment_hash":"{h}"}}"#),
        h,
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}
