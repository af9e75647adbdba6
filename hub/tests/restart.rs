//! Real `hub` processes on 127.0.0.1: Bob is killed with SIGKILL in the middle of a stream
//! of payments, several times, and restarted from his data directory. After each restart
//! the channel is reestablished and both sides agree, with no satoshi lost or duplicated.

use bitcoin::Network;
use chain::rpc::client::{RpcClient, RpcCredentials};
use chain::ChainControl;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Hub {
    child: Child,
    lines: mpsc::Receiver<String>,
    api: String,
    peer_addr: String,
    node_id: String,
    devnet: Option<(String, String)>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| {
        line[i + marker.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("")
    })
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(|s| s.as_str()).collect()
}

fn spawn(args: &[&str]) -> Hub {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hub"))
        .args(args)
        .env("RUST_LOG", "info,hub=debug")
        .stdout(Stdio::piped())
        .stderr(match std::env::var("HUB_TEST_LOG_DIR") {
            Ok(dir) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(format!(
                        "{dir}/hub-{}.log",
                        args.contains(&"--bitcoind-url")
                    ))
                    .unwrap(),
            ),
            Err(_) => Stdio::null(),
        })
        .spawn()
        .expect("hub starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut hub = Hub {
        child,
        lines,
        api: String::new(),
        peer_addr: String::new(),
        node_id: String::new(),
        devnet: None,
    };
    let mut devnet_url = None;
    while hub.api.is_empty() {
        let line = hub
            .lines
            .recv_timeout(Duration::from_secs(60))
            .expect("hub prints its addresses");
        if let Some(url) = after(&line, "JSON-RPC on ") {
            devnet_url = Some(url.to_string());
        }
        if let Some(path) = after(&line, "password in ") {
            let pw = std::fs::read_to_string(path.trim_end_matches(')'))
                .unwrap()
                .trim()
                .to_string();
            hub.devnet = Some((devnet_url.clone().unwrap(), pw));
        }
        if let Some(id) = after(&line, "node id ") {
            hub.node_id = id.to_string();
            hub.peer_addr = after(&line, "peers on ").unwrap().to_string();
        }
        if let Some(api) = after(&line, "REST API on ") {
            hub.api = api.to_string();
        }
    }
    hub
}

struct Api {
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        hub_api: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{hub_api}{path}");
        let req = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url),
        }
        .header("authorization", "Bearer test-key")
        .timeout(Duration::from_secs(15));
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        let r = req.send().await.map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    }
}

async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn restart_cycles(bob_db: Option<String>) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_dir = dir_a.path().to_str().unwrap().to_string();
    let b_dir = dir_b.path().to_str().unwrap().to_string();
    let alice = spawn(&[
        "--data-dir",
        &a_dir,
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--devnet-rpc",
        "127.0.0.1:0",
        "--api-key",
        "test-key",
    ]);
    let (devnet_url, pw) = alice.devnet.clone().expect("alice runs the devnet");
    let mut bob_args: Vec<String> = [
        "--data-dir",
        &b_dir,
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--bitcoind-url",
        &devnet_url,
        "--bitcoind-user",
        "devnet",
        "--bitcoind-password",
        &pw,
        "--network",
        "regtest",
        "--api-key",
        "test-key",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(db) = &bob_db {
        bob_args.extend(["--database-url".to_string(), db.clone()]);
    }
    let mut bob = spawn(&args(&bob_args));
    // Bob comes back on the same peer port.
    let port_index = bob_args.iter().position(|a| a == "--listen").unwrap() + 1;
    bob_args[port_index] = bob.peer_addr.clone();

    let api = Api {
        http: reqwest::Client::new(),
    };
    let rpc = RpcClient::new(
        devnet_url.clone(),
        RpcCredentials::UserPass("devnet".into(), pw.clone()),
    )
    .unwrap();
    let addr = api
        .call(&alice.api, "POST", "/v1/address", None)
        .await
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    rpc.generate_to_address(1, &addr.parse().unwrap())
        .await
        .unwrap();
    let burn = bitcoin::Address::p2wsh(
        &bitcoin::ScriptBuf::from_bytes(vec![0x51]),
        Network::Regtest,
    )
    .to_string();
    rpc.generate_to_address(100, &burn.parse().unwrap())
        .await
        .unwrap();
    wait_for("alice funded", async || {
        api.call(&alice.api, "GET", "/v1/info", None)
            .await
            .map(|v| v["onchain_balance_sat"].as_u64() > Some(0))
            .unwrap_or(false)
    })
    .await;

    api.call(
        &alice.api,
        "POST",
        "/v1/peers",
        Some(json!({"node_id": bob.node_id, "address": bob.peer_addr})),
    )
    .await
    .unwrap();
    let id = api
        .call(
            &alice.api,
            "POST",
            "/v1/channels",
            Some(json!({"peer_id": bob.node_id, "capacity_sat": 1_000_000u64})),
        )
        .await
        .unwrap()["channel_id"]
        .as_str()
        .unwrap()
        .to_string();
    rpc.generate_to_address(3, &burn.parse().unwrap())
        .await
        .unwrap();
    let path = format!("/v1/channels/{id}");
    for hub in [&alice.api, &bob.api] {
        wait_for("channel normal", async || {
            api.call(hub, "GET", &path, None)
                .await
                .map(|v| v["status"] == "normal")
                .unwrap_or(false)
        })
        .await;
    }

    const AMOUNT: u64 = 1_000_000;
    let (mut attempted, mut succeeded) = (0u64, 0u64);
    for cycle in 0..8u64 {
        // A burst of payments, with Bob killed part-way through.
        let payments = {
            let (alice_api, bob_api, path) = (
                alice.api.clone(),
                bob.api.clone(),
                format!("/v1/channels/{id}/pay"),
            );
            let http = reqwest::Client::new();
            tokio::spawn(async move {
                let api = Api { http };
                let mut ok = 0u64;
                for n in 0..20u64 {
                    let mut p = [0u8; 32];
                    p[..8].copy_from_slice(&(cycle * 100 + n).to_be_bytes());
                    p[31] = 9;
                    let preimage = hex::encode(p);
                    let Ok(v) = api
                        .call(
                            &bob_api,
                            "POST",
                            "/v1/preimages",
                            Some(json!({"preimage": preimage})),
                        )
                        .await
                    else {
                        return (n, ok);
                    };
                    let hash = v["payment_hash"].as_str().unwrap().to_string();
                    match api
                        .call(
                            &alice_api,
                            "POST",
                            &path,
                            Some(json!({"amount_msat": AMOUNT, "payment_hash": hash})),
                        )
                        .await
                    {
                        Ok(v) => {
                            assert_eq!(v["payment_preimage"].as_str(), Some(preimage.as_str()));
                            ok += 1;
                        }
                        Err(_) => return (n + 1, ok),
                    }
                }
                (20, ok)
            })
        };
        tokio::time::sleep(Duration::from_millis(10 + 13 * cycle)).await;
        bob.child.kill().unwrap(); // SIGKILL
        let _ = bob.child.wait();
        drop(bob);
        bob = spawn(&args(&bob_args));
        let (tried, ok) = payments.await.unwrap();
        attempted += tried;
        succeeded += ok;
        // Reestablished: both sides agree, nothing pending.
        wait_for("reestablished and settled", async || {
            if std::env::var("HUB_TEST_LOG_DIR").is_ok() {
                eprintln!(
                    "{:?}\n{:?}",
                    api.call(&alice.api, "GET", &path, None).await,
                    api.call(&bob.api, "GET", &path, None).await
                );
            }
            let (Ok(a), Ok(b)) = (
                api.call(&alice.api, "GET", &path, None).await,
                api.call(&bob.api, "GET", &path, None).await,
            ) else {
                return false;
            };
            a["htlcs"] == 0
                && b["htlcs"] == 0
                && a["local_balance_msat"] == b["remote_balance_msat"]
                && a["remote_balance_msat"] == b["local_balance_msat"]
                && a["status"] == "normal"
                && b["status"] == "normal"
        })
        .await;
        let a = api.call(&alice.api, "GET", &path, None).await.unwrap();
        let bob_msat = a["remote_balance_msat"].as_u64().unwrap();
        assert_eq!(
            a["local_balance_msat"].as_u64().unwrap() + bob_msat,
            1_000_000_000,
            "nothing lost"
        );
        assert_eq!(bob_msat % AMOUNT, 0, "only whole payments moved");
        assert!(
            bob_msat >= succeeded * AMOUNT,
            "every payment Alice saw succeed reached Bob"
        );
        assert!(bob_msat <= attempted * AMOUNT, "nothing paid twice");
        eprintln!("cycle {cycle}: {attempted} payments attempted, {succeeded} seen settled by Alice, Bob has {bob_msat} msat");
    }
    assert!(succeeded > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_bob_mid_payments_sqlite() {
    restart_cycles(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_bob_mid_payments_postgres() {
    let Some(db) = scenarios::postgres_db("restart").await else {
        eprintln!("HUB_TEST_POSTGRES_URL not set: PostgreSQL restart test skipped");
        return;
    };
    restart_cycles(Some(db.url.clone())).await;
}
