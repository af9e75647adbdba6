//! The operator REST API over HTTP on 127.0.0.1: auth, bad input, and a channel opened
//! through it.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::Network;
use chain::Devnet;
use hub::api::{router, App};
use hub::node::{Node, NodeConfig};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

async fn serve(node: Arc<Node>, key: &str) -> String {
    let app = Arc::new(App::new(
        node,
        sha256::Hash::hash(key.as_bytes()).to_byte_array(),
        Default::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(app)).await });
    format!("http://{addr}")
}

async fn node(devnet: &Arc<Devnet>, dir: &std::path::Path) -> Arc<Node> {
    let mut config = NodeConfig::new(
        hub::node::Role::Hub,
        dir.to_path_buf(),
        devnet.clone(),
        Network::Regtest,
    );
    config.minimum_depth = 1;
    config.chain_poll = Duration::from_millis(50);
    Node::start(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_bad_input_and_open_through_rest() {
    let devnet = Arc::new(Devnet::in_memory());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = node(&devnet, d1.path()).await;
    let b = node(&devnet, d2.path()).await;
    let base = serve(a.clone(), "secret-key").await;
    let http = reqwest::Client::new();
    let auth = "Bearer secret-key";

    // No key, wrong key.
    let r = http.get(format!("{base}/v1/info")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/v1/info"))
        .header("authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    // /metrics shows balances: the operator's key only.
    let r = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(format!("{base}/metrics"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("hub_"));
    // Malformed JSON, wrong types, bad ids, unknown channel.
    let r = http
        .post(format!("{base}/v1/channels"))
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{base}/v1/channels"))
        .header("authorization", auth)
        .json(&json!({"peer_id": b.node_id().to_string(), "capacity_sat": -5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "negative amount");
    let r = http.post(format!("{base}/v1/channels")).header("authorization", auth).json(&json!({"peer_id": b.node_id().to_string(), "capacity_sat": 1000u64, "push_msat": u64::MAX})).send().await.unwrap();
    assert_eq!(r.status(), 400, "push above capacity");
    let r = http
        .get(format!("{base}/v1/channels/xyz"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{base}/v1/channels/{}", "00".repeat(32)))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unknown_channel");
    // Not connected yet.
    let r = http
        .post(format!("{base}/v1/channels"))
        .header("authorization", auth)
        .json(&json!({"peer_id": b.node_id().to_string(), "capacity_sat": 500_000u64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert!(
        a.list_channels().await.is_empty(),
        "refused requests change nothing"
    );

    // Fund, connect and open through the API.
    let addr: Value = http
        .post(format!("{base}/v1/address"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let address: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
        addr["address"].as_str().unwrap().parse().unwrap();
    devnet.generate_to_address(1, &address).unwrap();
    devnet
        .generate_to_script(100, &bitcoin::ScriptBuf::new_op_return([1u8; 4]))
        .unwrap();
    for _ in 0..200 {
        if a.wallet_balance().await.to_sat() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = http
        .post(format!("{base}/v1/peers"))
        .header("authorization", auth)
        .json(&json!({"node_id": b.node_id().to_string(), "address": b.listen_addr().to_string()}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{base}/v1/channels"))
        .header("authorization", auth)
        .json(&json!({"peer_id": b.node_id().to_string(), "capacity_sat": 500_000u64}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["channel_id"].as_str().unwrap().to_string();
    let r: Value = http
        .get(format!("{base}/v1/channels/{id}"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["capacity_sat"], 500_000);
    assert_eq!(r["local_balance_msat"], 500_000_000u64);
    let list: Value = http
        .get(format!("{base}/v1/channels"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// Every path and method of the served OpenAPI document is a route of the router (an
/// unknown route would answer 404 or 405 without the JSON error body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_router() {
    let devnet = Arc::new(Devnet::in_memory());
    let d = tempfile::tempdir().unwrap();
    let base = serve(node(&devnet, d.path()).await, "k").await;
    let http = reqwest::Client::new();
    let doc: Value = http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    for (path, ops) in paths {
        let concrete = path
            .replace("{id}", &"00".repeat(32))
            .replace("{hash}", &"00".repeat(32));
        for method in ops.as_object().unwrap().keys() {
            let req = match method.as_str() {
                "get" => http.get(format!("{base}{concrete}")),
                "post" => http.post(format!("{base}{concrete}")),
                "delete" => http.delete(format!("{base}{concrete}")),
                other => panic!("unexpected method {other}"),
            };
            // Without a key: documented routes answer (401 for protected ones, 2xx for
            // the open ones), never "no such route".
            let status = req.send().await.unwrap().status().as_u16();
            assert!(
                status == 401 || (200..300).contains(&status),
                "{method} {path}: {status}"
            );
        }
    }
}
