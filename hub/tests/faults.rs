//! Fault injection: the hub is killed with SIGKILL at random points of a stream of
//! payments user → hub → merchant, 50 times (`FAULT_KILLS`), and restarted from its data
//! directory. After each restart: every channel reestablishes, balances on both sides of
//! each channel agree and sum to its capacity, no payment is both failed (for the user)
//! and settled (for the merchant), and no commitment ever reaches the chain (no honest node
//! broadcast anything, let alone a revoked state). SQLite and PostgreSQL.

use bitcoin::secp256k1::rand::{thread_rng, Rng};
use chain::ChainSource;
use scenarios::*;
use serde_json::{json, Value};
use std::time::Duration;

const CAP_SAT: u64 = 1_000_000;
const AMOUNT: u64 = 100_000;

async fn settled_and_consistent(
    api: &Api,
    nodes: &[(&str, &str)],
    channels: &[String],
) -> Result<(), String> {
    for id in channels {
        let mut seen = Vec::new();
        for (base, key) in nodes {
            if let Ok(c) = api
                .call(base, key, "GET", &format!("/v1/channels/{id}"), None)
                .await
            {
                seen.push(c);
            }
        }
        if seen.len() != 2 {
            return Err(format!("{id}: {} sides answer", seen.len()));
        }
        for c in &seen {
            if c["status"] != "normal" || c["htlcs"] != 0 {
                return Err(format!("{id} not settled: {c}"));
            }
            let sum = c["local_balance_msat"].as_u64().unwrap()
                + c["remote_balance_msat"].as_u64().unwrap();
            if sum != CAP_SAT * 1000 {
                return Err(format!("{id}: balances sum to {sum}"));
            }
        }
        if seen[0]["local_balance_msat"] != seen[1]["remote_balance_msat"] {
            return Err(format!("{id}: sides disagree: {} / {}", seen[0], seen[1]));
        }
    }
    Ok(())
}

async fn kill_the_hub(db: Option<String>) {
    let kills: usize = std::env::var("FAULT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let d = |i: usize, n: &str| dirs[i].path().join(n).to_str().unwrap().to_string();
    // The chain lives in its own process, so killing the hub does not stop it.
    let chain_proc = spawn(&devnet_args(&d(0, "chain"), "op-chain"));
    let devnet = chain_proc.devnet.clone().unwrap();
    let rpc = rpc(&devnet);
    let mut hub_args = client_args(&d(1, "hub"), "op-hub", &devnet);
    if let Some(db) = &db {
        hub_args.extend(["--database-url".into(), db.clone()]);
    }
    let mut hub = spawn(&hub_args);
    let i = hub_args.iter().position(|a| a == "--listen").unwrap() + 1;
    hub_args[i] = hub.peer_addr.clone(); // comes back on the same port
    let user = spawn(&light_args(&d(2, "user"), "op-user", &devnet, &hub.node_id));
    let merchant = spawn(&light_args(
        &d(3, "merchant"),
        "op-m",
        &devnet,
        &hub.node_id,
    ));
    let api = Api::default();
    fund_all(&api, &[(&hub.api, "op-hub"), (&user.api, "op-user")], &rpc).await;
    for (n, k) in [(&user, "op-user"), (&merchant, "op-m")] {
        api.connect(&n.api, k, &hub).await;
    }
    let mchan = api
        .open_channel(
            &hub.api,
            "op-hub",
            json!({"peer_id": merchant.node_id, "capacity_sat": CAP_SAT}),
        )
        .await;
    let uchan = api
        .open_channel(
            &user.api,
            "op-user",
            json!({"peer_id": hub.node_id, "capacity_sat": CAP_SAT}),
        )
        .await;
    mine(&rpc, 3).await;
    api.wait_usable(&merchant.api, "op-m", &mchan, true).await;
    api.wait_usable(&user.api, "op-user", &uchan, false).await;
    let fundings: Vec<bitcoin::OutPoint> = {
        let mut v = Vec::new();
        for id in [&mchan, &uchan] {
            let c = api
                .ok(&user.api, "op-user", "GET", "/v1/channels", None)
                .await;
            let c2 = api
                .ok(&merchant.api, "op-m", "GET", "/v1/channels", None)
                .await;
            for ch in c.as_array().unwrap().iter().chain(c2.as_array().unwrap()) {
                if ch["channel_id"] == id.as_str() {
                    v.push(bitcoin::OutPoint::new(
                        ch["funding_txid"].as_str().unwrap().parse().unwrap(),
                        ch["funding_output_index"].as_u64().unwrap() as u32,
                    ));
                }
            }
        }
        v
    };
    assert_eq!(fundings.len(), 2);

    let mut hashes: Vec<String> = Vec::new();
    for cycle in 0..kills {
        // A stream of payments, each from a fresh invoice, with the hub killed part-way.
        let stream = {
            let (api, user_api, m_api) = (api.clone(), user.api.clone(), merchant.api.clone());
            tokio::spawn(async move {
                let mut mine = Vec::new();
                for _ in 0..40 {
                    let Ok(inv) = api
                        .call(
                            &m_api,
                            "op-m",
                            "POST",
                            "/v1/invoices",
                            Some(json!({"amount_msat": AMOUNT})),
                        )
                        .await
                    else {
                        break;
                    };
                    mine.push(inv["payment_hash"].as_str().unwrap().to_string());
                    let (status, _) = api
                        .raw(
                            &user_api,
                            Some("op-user"),
                            "POST",
                            "/v1/payments",
                            Some(json!({"invoice": inv["bolt11"], "wait_secs": 3})),
                        )
                        .await;
                    if status != 200 {
                        break;
                    }
                }
                mine
            })
        };
        tokio::time::sleep(Duration::from_millis(thread_rng().gen_range(10..300))).await;
        hub.child.kill().unwrap(); // SIGKILL
        let _ = hub.child.wait();
        drop(hub);
        hub = spawn(&hub_args);
        hashes.extend(stream.await.unwrap());
        let nodes = [
            (user.api.as_str(), "op-user"),
            (hub.api.as_str(), "op-hub"),
            (merchant.api.as_str(), "op-m"),
        ];
        let mut last = String::new();
        for _ in 0..600 {
            match settled_and_consistent(&api, &nodes, &[mchan.clone(), uchan.clone()]).await {
                Ok(()) => {
                    last.clear();
                    break;
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            last.is_empty(),
            "cycle {cycle}: channels did not settle: {last}"
        );
        // Nothing on chain: the funding outputs are unspent (no commitment broadcast).
        for f in &fundings {
            assert!(
                rpc.tx_out(f, true).await.unwrap().is_some(),
                "cycle {cycle}: a commitment was broadcast"
            );
        }
        // No payment both failed and settled.
        let mut settled = 0u64;
        for h in &hashes {
            let p = api
                .raw(
                    &user.api,
                    Some("op-user"),
                    "GET",
                    &format!("/v1/payments/{h}"),
                    None,
                )
                .await
                .1;
            let inv = api
                .ok(
                    &merchant.api,
                    "op-m",
                    "GET",
                    &format!("/v1/invoices/{h}"),
                    None,
                )
                .await;
            let paid = inv["status"] == "paid";
            settled += u64::from(paid);
            match p["status"].as_str() {
                Some("failed") => assert!(
                    !paid,
                    "cycle {cycle}: {h} failed for the user but settled at the merchant"
                ),
                Some("succeeded") => assert!(
                    paid,
                    "cycle {cycle}: {h} succeeded for the user but not at the merchant"
                ),
                _ => {}
            }
        }
        // The merchant holds exactly the settled payments.
        let m: Value = api
            .ok(
                &merchant.api,
                "op-m",
                "GET",
                &format!("/v1/channels/{mchan}"),
                None,
            )
            .await;
        assert_eq!(
            m["local_balance_msat"].as_u64().unwrap(),
            settled * AMOUNT,
            "cycle {cycle}"
        );
        eprintln!(
            "kill {}: {} payments tried, {settled} settled",
            cycle + 1,
            hashes.len()
        );
    }
    assert!(hashes.len() > kills, "payments flowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_hub_50_times_sqlite() {
    kill_the_hub(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_hub_50_times_postgres() {
    let Some(db) = postgres_db("faults").await else {
        eprintln!("HUB_TEST_POSTGRES_URL not set: PostgreSQL fault test skipped");
        return;
    };
    kill_the_hub(Some(db.url.clone())).await;
}
