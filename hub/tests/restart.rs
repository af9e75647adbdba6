//! Real `hub` processes on 127.0.0.1: Bob is killed with SIGKILL in the middle of a stream
//! of payments, several times, and restarted from his data directory. After each restart
//! the channel is reestablished and both sides agree, with no satoshi lost or duplicated.

use scenarios::*;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "test-key";

async fn restart_cycles(bob_db: Option<String>) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a_dir = dir_a.path().to_str().unwrap().to_string();
    let b_dir = dir_b.path().to_str().unwrap().to_string();
    let alice = spawn(&devnet_args(&a_dir, KEY));
    let devnet = alice.devnet.clone().expect("alice runs the devnet");
    let mut bob_args = client_args(&b_dir, KEY, &devnet);
    if let Some(db) = &bob_db {
        bob_args.extend(["--database-url".to_string(), db.clone()]);
    }
    let mut bob = spawn(&bob_args);
    // Bob comes back on the same peer port.
    let port_index = bob_args.iter().position(|a| a == "--listen").unwrap() + 1;
    bob_args[port_index] = bob.peer_addr.clone();

    let api = Api::default();
    let rpc = rpc(&devnet);
    fund(&api, &alice.api, KEY, &rpc).await;
    api.connect(&alice.api, KEY, &bob).await;
    let id = api
        .open_channel(
            &alice.api,
            KEY,
            json!({"peer_id": bob.node_id, "capacity_sat": 1_000_000u64}),
        )
        .await;
    mine(&rpc, 3).await;
    let path = format!("/v1/channels/{id}");
    for hub in [&alice.api, &bob.api] {
        api.wait_usable(hub, KEY, &id, false).await;
    }

    const AMOUNT: u64 = 1_000_000;
    let (mut attempted, mut succeeded) = (0u64, 0u64);
    let settled = Arc::new(AtomicU64::new(0));
    for cycle in 0..8u64 {
        // A burst of payments, with Bob killed part-way through.
        let payments = {
            let (alice_api, bob_api, path) = (
                alice.api.clone(),
                bob.api.clone(),
                format!("/v1/channels/{id}/pay"),
            );
            let api = api.clone();
            let settled = settled.clone();
            tokio::spawn(async move {
                let mut ok = 0u64;
                for n in 0..20u64 {
                    let mut p = [0u8; 32];
                    p[..8].copy_from_slice(&(cycle * 100 + n).to_be_bytes());
                    p[31] = 9;
                    let preimage = hex::encode(p);
                    let Ok(v) = api
                        .call(
                            &bob_api,
                            KEY,
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
                            KEY,
                            "POST",
                            &path,
                            Some(json!({"amount_msat": AMOUNT, "payment_hash": hash})),
                        )
                        .await
                    {
                        Ok(v) => {
                            assert_eq!(v["payment_preimage"].as_str(), Some(preimage.as_str()));
                            ok += 1;
                            settled.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => return (n + 1, ok),
                    }
                }
                (20, ok)
            })
        };
        tokio::time::sleep(Duration::from_millis(10 + 13 * cycle)).await;
        // On a slow machine no payment may settle within those delays: from the middle
        // cycle on, Bob is killed only after one has (so the test is never vacuous).
        if cycle >= 4 && settled.load(Ordering::SeqCst) == 0 {
            let start = std::time::Instant::now();
            while settled.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(60) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        bob.child.kill().unwrap(); // SIGKILL
        let _ = bob.child.wait();
        drop(bob);
        bob = spawn(&bob_args);
        let (tried, ok) = payments.await.unwrap();
        attempted += tried;
        succeeded += ok;
        // Reestablished: both sides agree, nothing pending.
        wait_for("reestablished and settled", async || {
            if std::env::var("HUB_TEST_LOG_DIR").is_ok() {
                eprintln!(
                    "{:?}\n{:?}",
                    api.call(&alice.api, KEY, "GET", &path, None).await,
                    api.call(&bob.api, KEY, "GET", &path, None).await
                );
            }
            let (Ok(a), Ok(b)) = (
                api.call(&alice.api, KEY, "GET", &path, None).await,
                api.call(&bob.api, KEY, "GET", &path, None).await,
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
        let a = api.call(&alice.api, KEY, "GET", &path, None).await.unwrap();
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
