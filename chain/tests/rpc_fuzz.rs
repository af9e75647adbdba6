//! Random and malformed request bodies never crash the devnet server: every reply is a
//! JSON-RPC error or result with one of Bitcoin Core's HTTP statuses, and the server keeps
//! answering afterwards.

use std::net::SocketAddr;

use chain::devnet::Devnet;
use chain::rpc::server::{serve, RpcAuth};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};

fn body() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        Just("getblock".to_string()),
        Just("getblockhash".to_string()),
        Just("getrawtransaction".to_string()),
        Just("sendrawtransaction".to_string()),
        Just("testmempoolaccept".to_string()),
        Just("gettxout".to_string()),
        Just("generatetoaddress".to_string()),
        Just("estimatesmartfee".to_string()),
        Just("invalidateblock".to_string()),
        Just("submitblock".to_string()),
        "[a-z]{0,12}",
    ];
    let param = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[0-9a-f]{0,80}".prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({"a": 1})),
    ];
    prop_oneof![
        (method, proptest::collection::vec(param, 0..4)).prop_map(|(m, p)| {
            json!({"jsonrpc": "1.0", "id": 1, "method": m, "params": p}).to_string()
        }),
        ".{0,64}",
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

#[test]
fn garbage_gets_json_rpc_errors_and_the_server_survives() -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    let (server, url) = rt.block_on(async {
        let addr: SocketAddr = "127.0.0.1:0".parse()?;
        let server = serve(
            Devnet::in_memory(),
            addr,
            RpcAuth {
                user: "u".into(),
                password: "p".into(),
            },
        )
        .await?;
        let url = format!("http://{}/", server.addr);
        anyhow::Ok((server, url))
    })?;
    let http = reqwest::Client::new();
    let mut runner = TestRunner::new(Config {
        cases: 200,
        ..Config::default()
    });
    runner
        .run(&body(), |b| {
            rt.block_on(async {
                let resp = http
                    .post(&url)
                    .basic_auth("u", Some("p"))
                    .body(b.clone())
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let status = resp.status().as_u16();
                prop_assert!(
                    [200, 400, 404, 500].contains(&status),
                    "status {} for {:?}",
                    status,
                    b
                );
                let text = resp
                    .text()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let reply: Value = serde_json::from_str(&text)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {text}")))?;
                if status != 200 {
                    prop_assert!(reply["error"]["code"].is_i64(), "{}", text);
                }
                Ok(())
            })
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let alive = rt.block_on(async {
        let resp = http
            .post(&url)
            .basic_auth("u", Some("p"))
            .body(r#"{"jsonrpc":"1.0","id":1,"method":"getblockcount","params":[]}"#)
            .send()
            .await?;
        anyhow::Ok(resp.json::<Value>().await?)
    })?;
    assert!(alive["result"].is_u64());
    rt.block_on(server.shutdown())?;
    Ok(())
}
