//! Replays the recorded Bitcoin Core v31.1 regtest JSON-RPC transcript
//! (`tests/vectors/bitcoind-rpc-regtest.json`) against the devnet server and checks the
//! same HTTP statuses, error codes and messages, result shapes (same keys, same JSON
//! types) and, for everything that does not depend on the clock, the same values: block
//! hashes are mapped from the recording to ours, and since the devnet starts from the real
//! regtest genesis and mines Core's coinbase, txids, Merkle roots, sizes, scripts and
//! descriptors match byte for byte.

mod common;

use std::net::SocketAddr;

use anyhow::{bail, Context};
use chain::devnet::Devnet;
use chain::rpc::server::{serve, RpcAuth};
use serde_json::{json, Value};

const USER: &str = "user";
const PASSWORD: &str = "pass";

/// Keys whose values depend on the wall clock (and hence on the nonce found).
const CLOCK_KEYS: &[&str] = &[
    "time",
    "mediantime",
    "nonce",
    "blocktime",
    "verificationprogress",
    "size_on_disk",
];
/// Calls whose whole result is a serialization containing time and nonce.
const CLOCK_RESULTS: &[&str] = &["getblockheader hex", "getblock verbosity 0"];

async fn start() -> anyhow::Result<(chain::rpc::server::ServerHandle, String)> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let server = serve(
        Devnet::in_memory(),
        addr,
        RpcAuth {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    )
    .await?;
    let url = format!("http://{}/", server.addr);
    Ok((server, url))
}

fn compare(expected: &Value, actual: &Value, path: &str, exact: bool, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let mut ek: Vec<&String> = e.keys().collect();
            let mut ak: Vec<&String> = a.keys().collect();
            ek.sort();
            ak.sort();
            if ek != ak {
                out.push(format!("{path}: keys {ek:?} != {ak:?}"));
                return;
            }
            for (k, ev) in e {
                let exact_child = exact && !CLOCK_KEYS.contains(&k.as_str());
                compare(ev, &a[k], &format!("{path}.{k}"), exact_child, out);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                out.push(format!("{path}: array length {} != {}", e.len(), a.len()));
                return;
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                compare(ev, av, &format!("{path}[{i}]"), exact, out);
            }
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => {
            if exact && expected != actual {
                out.push(format!("{path}: {expected} != {actual}"));
            }
        }
        (Value::Null, Value::Null) => {}
        _ => out.push(format!("{path}: type differs: {expected} vs {actual}")),
    }
}

fn substitute(text: &str, map: &[(String, String)]) -> String {
    map.iter()
        .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

#[tokio::test]
async fn devnet_server_answers_the_bitcoind_transcript_like_bitcoind() -> anyhow::Result<()> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/vectors/bitcoind-rpc-regtest.json"
    );
    let transcript: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let calls = transcript["calls"].as_array().context("calls")?;
    let (server, url) = start().await?;
    let http = reqwest::Client::new();
    let mut map: Vec<(String, String)> = Vec::new();
    let mut problems = Vec::new();

    for call in calls {
        let note = call["note"].as_str().unwrap_or_default();
        let body = match &call["request"] {
            Value::String(raw) => raw.clone(),
            Value::Null => {
                json!({"jsonrpc": "1.0", "id": "t", "method": "getblockcount", "params": []})
                    .to_string()
            }
            req => substitute(&req.to_string(), &map),
        };
        let password = if note == "bad auth" {
            "wrong"
        } else {
            PASSWORD
        };
        let resp = http
            .post(&url)
            .basic_auth(USER, Some(password))
            .body(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if Some(u64::from(status)) != call["http_status"].as_u64() {
            problems.push(format!(
                "{note}: HTTP {status}, expected {}",
                call["http_status"]
            ));
        }
        let expected = &call["response"];
        if expected == "" {
            if !text.is_empty() {
                problems.push(format!("{note}: expected an empty body, got {text}"));
            }
            continue;
        }
        let actual: Value =
            serde_json::from_str(&text).with_context(|| format!("{note}: body {text}"))?;
        if note == "generatetoaddress" {
            let (theirs, ours) = (
                expected["result"].as_array().context("result")?,
                actual["result"].as_array().context("ours")?,
            );
            if theirs.len() != ours.len() {
                bail!("generatetoaddress returned {} hashes", ours.len());
            }
            for (t, o) in theirs.iter().zip(ours) {
                map.push((
                    t.as_str().unwrap_or_default().to_string(),
                    o.as_str().unwrap_or_default().to_string(),
                ));
            }
            continue;
        }
        let expected: Value = serde_json::from_str(&substitute(&expected.to_string(), &map))?;
        let exact = !CLOCK_RESULTS.contains(&note);
        if !exact {
            let (e, a) = (
                expected["result"].as_str().unwrap_or_default(),
                actual["result"].as_str().unwrap_or_default(),
            );
            if e.len() != a.len() {
                problems.push(format!(
                    "{note}: serialization length {} != {}",
                    a.len(),
                    e.len()
                ));
            }
        }
        let mut out = Vec::new();
        compare(&expected, &actual, note, exact, &mut out);
        problems.extend(out);
    }
    server.shutdown().await?;
    assert!(
        problems.is_empty(),
        "differences from bitcoind:\n{}",
        problems.join("\n")
    );
    Ok(())
}

async fn post(url: &str, body: &str) -> anyhow::Result<(u16, Value)> {
    let resp = reqwest::Client::new()
        .post(url)
        .basic_auth(USER, Some(PASSWORD))
        .body(body.to_string())
        .send()
        .await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).with_context(|| text.clone())?,
    ))
}

#[tokio::test]
async fn bad_requests_get_core_errors_never_a_crash() -> anyhow::Result<()> {
    let (server, url) = start().await?;
    let cases: &[(&str, u16, i64, &str)] = &[
        (
            r#"{"jsonrpc":"1.0","id":1,"method":5}"#,
            400,
            -32600,
            "Method must be a string",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"params":[]}"#,
            400,
            -32600,
            "Missing method",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getblock","params":["abc"]}"#,
            500,
            -8,
            "blockhash must be of length 64 (not 3, for 'abc')",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getblockhash","params":[]}"#,
            500,
            -1,
            "",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getblockhash","params":[1,2]}"#,
            500,
            -1,
            "",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getblockhash","params":[-1]}"#,
            500,
            -8,
            "Block height out of range",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"sendrawtransaction","params":["zz"]}"#,
            500,
            -22,
            "TX decode failed. Make sure the tx has at least one input.",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"sendrawtransaction","params":[5]}"#,
            500,
            -3,
            "",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"generatetoaddress","params":[1,"notanaddress"]}"#,
            500,
            -5,
            "Error: Invalid address",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"estimatesmartfee","params":[0]}"#,
            500,
            -8,
            "Invalid conf_target, must be between 1 and 1008",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"invalidateblock","params":["0000000000000000000000000000000000000000000000000000000000000000"]}"#,
            500,
            -5,
            "Block not found",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getblockhash","params":{"nope":1}}"#,
            500,
            -8,
            "Unknown named parameter nope",
        ),
        (r#"[1]"#, 200, 0, ""),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getblockhash","params":"x"}"#,
            400,
            -32600,
            "Params must be an array or object",
        ),
        (
            r#""just a string""#,
            500,
            -32700,
            "Top-level object parse error",
        ),
        (
            r#"{"jsonrpc":"1.0","id":1,"method":"getrawtransaction","params":["4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"]}"#,
            500,
            -5,
            "The genesis block coinbase is not considered an ordinary transaction and cannot be retrieved",
        ),
    ];
    for (body, status, code, message) in cases {
        let (got_status, reply) = post(&url, body).await?;
        assert_eq!(got_status, *status, "{body}: {reply}");
        if *code != 0 {
            assert_eq!(reply["error"]["code"], json!(code), "{body}: {reply}");
            assert!(reply["result"].is_null());
        }
        if !message.is_empty() {
            assert_eq!(reply["error"]["message"], json!(message), "{body}");
        }
    }

    // An OP_RETURN output with value is refused unless maxburnamount allows it.
    let burn = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn::default()],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(1),
            script_pubkey: bitcoin::ScriptBuf::new_op_return([1u8; 4]),
        }],
    };
    let body = json!({"jsonrpc": "1.0", "id": 1, "method": "sendrawtransaction", "params": [bitcoin::consensus::encode::serialize_hex(&burn)]});
    let (status, reply) = post(&url, &body.to_string()).await?;
    assert_eq!(status, 500);
    assert_eq!(reply["error"]["code"], json!(-25));
    assert_eq!(
        reply["error"]["message"],
        json!("Unspendable output exceeds maximum configured by user (maxburnamount)")
    );

    // Named parameters and batches work like in Core.
    let (status, reply) = post(
        &url,
        r#"{"jsonrpc":"1.0","id":1,"method":"getblockhash","params":{"height":0}}"#,
    )
    .await?;
    assert_eq!(
        (status, reply["result"].clone()),
        (
            200,
            json!("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206")
        )
    );
    let (status, reply) = post(&url, r#"[{"jsonrpc":"1.0","id":1,"method":"getblockcount"},{"jsonrpc":"1.0","id":2,"method":"nosuch"}]"#).await?;
    assert_eq!(status, 200);
    assert_eq!(reply[0]["result"], json!(0));
    assert_eq!(reply[1]["error"]["code"], json!(-32601));
    // JSON-RPC 2.0: errors come with HTTP 200 and no "result" member.
    let (status, reply) = post(&url, r#"{"jsonrpc":"2.0","id":3,"method":"nosuch"}"#).await?;
    assert_eq!(status, 200);
    assert_eq!(reply["error"]["code"], json!(-32601));
    assert!(reply.get("result").is_none());

    // Missing credentials and a GET are refused at the HTTP level.
    let resp = reqwest::Client::new().post(&url).body("{}").send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    let resp = reqwest::Client::new()
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 405);

    // The server still answers after all that.
    let (status, reply) = post(
        &url,
        r#"{"jsonrpc":"1.0","id":1,"method":"getblockcount","params":[]}"#,
    )
    .await?;
    assert_eq!((status, reply["result"].clone()), (200, json!(0)));
    server.shutdown().await?;
    Ok(())
}

#[test]
fn the_comparison_catches_differences() {
    let mut out = Vec::new();
    compare(
        &json!({"a": 1, "time": 5}),
        &json!({"a": 1, "time": 6}),
        "x",
        true,
        &mut out,
    );
    assert!(out.is_empty(), "clock keys are ignored: {out:?}");
    compare(&json!({"a": 1}), &json!({"a": 2}), "x", true, &mut out);
    compare(&json!({"a": 1}), &json!({"b": 1}), "x", true, &mut out);
    compare(&json!([1, 2]), &json!([1]), "x", false, &mut out);
    compare(&json!({"a": "s"}), &json!({"a": 1}), "x", false, &mut out);
    assert_eq!(out.len(), 4, "{out:?}");
}

#[tokio::test]
async fn verbose_block_and_transaction_carry_fee_and_prevouts() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = common::Key::new(60);
    let mined = devnet.generate_to_script(101, &key.p2wpkh())?;
    let first = devnet.block(&mined[0]).context("block")?;
    let coin = bitcoin::OutPoint {
        txid: first.txdata[0].compute_txid(),
        vout: 0,
    };
    let value = first.txdata[0].output[0].value;
    let tx = common::p2wpkh_spend(
        &key,
        coin,
        value,
        key.p2wpkh(),
        bitcoin::Amount::from_sat(1_000),
    );
    let txid = devnet.send_raw_transaction(tx, None)?;
    let block = devnet.generate_to_script(1, &key.p2wpkh())?[0];
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let server = serve(
        devnet,
        addr,
        RpcAuth {
            user: USER.into(),
            password: PASSWORD.into(),
        },
    )
    .await?;
    let url = format!("http://{}/", server.addr);

    let body =
        json!({"jsonrpc": "1.0", "id": 1, "method": "getblock", "params": [block.to_string(), 3]});
    let (_, reply) = post(&url, &body.to_string()).await?;
    let spend = &reply["result"]["tx"][1];
    assert_eq!(spend["txid"], json!(txid.to_string()));
    assert_eq!(spend["fee"], json!(0.00001));
    let prevout = &spend["vin"][0]["prevout"];
    assert_eq!(
        (
            prevout["generated"].clone(),
            prevout["height"].clone(),
            prevout["value"].clone()
        ),
        (json!(true), json!(1), json!(50.0))
    );
    assert_eq!(prevout["scriptPubKey"]["type"], json!("witness_v0_keyhash"));
    // Verbosity 2: fee, no prevouts.
    let body =
        json!({"jsonrpc": "1.0", "id": 1, "method": "getblock", "params": [block.to_string(), 2]});
    let (_, reply) = post(&url, &body.to_string()).await?;
    assert!(reply["result"]["tx"][1]["vin"][0].get("prevout").is_none());
    assert_eq!(reply["result"]["tx"][1]["fee"], json!(0.00001));

    let body = json!({"jsonrpc": "1.0", "id": 1, "method": "getrawtransaction", "params": [txid.to_string(), 2]});
    let (_, reply) = post(&url, &body.to_string()).await?;
    assert_eq!(reply["result"]["fee"], json!(0.00001));
    assert_eq!(reply["result"]["vin"][0]["prevout"]["value"], json!(50.0));
    assert_eq!(reply["result"]["confirmations"], json!(1));
    server.shutdown().await?;
    Ok(())
}

/// The devnet's own `devnetsetfeespike` (not Core's): a spike raises `estimatesmartfee`
/// for short targets to its rate, 0 ends it, and a negative rate is refused.
#[tokio::test]
async fn the_devnet_fee_spike_method_moves_the_estimate() -> anyhow::Result<()> {
    let (_server, url) = start().await?;
    let call = |method: &str, params: &str| {
        format!(r#"{{"jsonrpc":"1.0","id":1,"method":"{method}","params":{params}}}"#)
    };
    let (_, before) = post(&url, &call("estimatesmartfee", "[6]")).await?;
    assert!(before["result"]["feerate"].is_null(), "{before}");
    let (status, set) = post(&url, &call("devnetsetfeespike", "[100000]")).await?;
    assert_eq!((status, &set["result"]), (200, &Value::Null), "{set}");
    let (_, during) = post(&url, &call("estimatesmartfee", "[6]")).await?;
    assert_eq!(
        during["result"]["feerate"],
        serde_json::json!(0.001),
        "{during}"
    );
    let (_, long) = post(&url, &call("estimatesmartfee", "[1008]")).await?;
    assert!(
        long["result"]["feerate"].is_null(),
        "a day's horizon and beyond: {long}"
    );
    post(&url, &call("devnetsetfeespike", "[0]")).await?;
    let (_, after) = post(&url, &call("estimatesmartfee", "[6]")).await?;
    assert!(after["result"]["feerate"].is_null(), "{after}");
    let (status, bad) = post(&url, &call("devnetsetfeespike", "[-1]")).await?;
    assert_eq!(
        (status, bad["error"]["code"].as_i64()),
        (500, Some(-8)),
        "{bad}"
    );
    Ok(())
}
