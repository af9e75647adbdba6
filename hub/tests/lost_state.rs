//! option_data_loss_protect with real `hub` processes: Bob restores an old copy of his data
//! directory (a backup taken two payments ago). On reconnection Alice's
//! channel_reestablish proves Bob is behind. Bob must never broadcast his outdated (revoked)
//! commitment: he marks the channel, asks Alice to close, and takes his money from Alice's
//! commitment. Every satoshi of Bob's latest balance comes back, less his sweep's fee.

use scenarios::*;
use serde_json::{json, Value};
use std::path::Path;

const KEY: &str = "test-key";

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn pay(api: &Api, alice: &Proc, bob: &Proc, id: &str, amount_msat: u64, n: u8) {
    let preimage = hex::encode([n; 32]);
    let v = api
        .ok(
            &bob.api,
            KEY,
            "POST",
            "/v1/preimages",
            Some(json!({"preimage": preimage})),
        )
        .await;
    let paid = api
        .ok(
            &alice.api,
            KEY,
            "POST",
            &format!("/v1/channels/{id}/pay"),
            Some(json!({"amount_msat": amount_msat, "payment_hash": v["payment_hash"]})),
        )
        .await;
    assert_eq!(paid["payment_preimage"], preimage);
}

/// The first transaction in the devnet's mempool that `pick` accepts, decoded.
async fn in_mempool(
    rpc: &chain::rpc::client::RpcClient,
    pick: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let pool = rpc.call("getrawmempool", json!([])).await.ok()?;
    for t in pool.as_array()? {
        let tx = rpc.call("getrawtransaction", json!([t, true])).await.ok()?;
        if pick(&tx) {
            return Some(tx);
        }
    }
    None
}

fn sat(v: &Value) -> u64 {
    (v.as_f64().expect("amount") * 1e8).round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restored_from_an_old_backup_never_broadcasts_and_recovers_its_balance() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let backup = tempfile::tempdir().unwrap();
    let a_dir = dir_a.path().join("alice");
    let b_dir = dir_b.path().join("bob");
    let alice = spawn(&devnet_args(a_dir.to_str().unwrap(), KEY));
    let devnet = alice.devnet.clone().expect("alice runs the devnet");
    let mut bob_args = client_args(b_dir.to_str().unwrap(), KEY, &devnet);
    // Bob has no coins: without the anchor reserve he still takes Alice's anchor channel
    // (his recovery then sweeps a to_remote behind its 1-block CSV).
    bob_args.extend(["--anchor-reserve-sat".into(), "0".into()]);
    let mut bob = spawn(&bob_args);
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
    for node in [&alice.api, &bob.api] {
        api.wait_usable(node, KEY, &id, false).await;
    }
    pay(&api, &alice, &bob, &id, 100_000_000, 1).await;

    // Bob's backup, taken while he is stopped.
    drop(bob);
    copy_dir(&b_dir, backup.path());
    bob = spawn(&bob_args);
    api.wait_usable(&bob.api, KEY, &id, false).await;
    pay(&api, &alice, &bob, &id, 100_000_000, 2).await;
    pay(&api, &alice, &bob, &id, 100_000_000, 3).await;
    let path = format!("/v1/channels/{id}");
    wait_for("settled", async || {
        api.call(&bob.api, KEY, "GET", &path, None)
            .await
            .is_ok_and(|c| c["htlcs"] == 0 && c["local_balance_msat"] == 300_000_000)
    })
    .await;

    // Bob loses his disk and comes back from the backup: he believes he has 100,000 sat.
    drop(bob);
    std::fs::remove_dir_all(&b_dir).unwrap();
    copy_dir(backup.path(), &b_dir);
    bob = spawn(&bob_args);
    wait_for("bob learns he is behind", async || {
        api.call(&bob.api, KEY, "GET", &path, None)
            .await
            .is_ok_and(|c| c["status"] == "awaiting_remote_close")
    })
    .await;
    // His (possibly revoked) commitment is not to be had, nor broadcast on request.
    let refused = api
        .raw(
            &bob.api,
            Some(KEY),
            "POST",
            &format!("{path}/close"),
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!(refused.0, 409, "{refused:?}");
    let refused = api
        .raw(
            &bob.api,
            Some(KEY),
            "GET",
            &format!("{path}/commitment"),
            None,
        )
        .await;
    assert_eq!(refused.0, 409, "{refused:?}");

    // Alice fails the channel with her latest commitment: it pays Bob his 300,000 sat.
    let funding_txid = api.ok(&alice.api, KEY, "GET", &path, None).await["funding_txid"]
        .as_str()
        .unwrap()
        .to_string();
    let mut commitment = Value::Null;
    wait_for(
        "alice's commitment in the mempool",
        async || match in_mempool(&rpc, |tx| tx["vin"][0]["txid"] == funding_txid.as_str()).await {
            Some(tx) => {
                commitment = tx;
                true
            }
            None => false,
        },
    )
    .await;
    let alice_commitment = api
        .ok(&alice.api, KEY, "GET", &format!("{path}/commitment"), None)
        .await;
    assert_eq!(
        commitment["txid"], alice_commitment["txid"],
        "the funding is spent by Alice's commitment, not Bob's"
    );
    // An anchor channel: two 330 sat anchors, and Bob's to_remote behind a 1-block CSV
    // (P2WSH), swept once the commitment has a confirmation.
    let outputs = commitment["vout"].as_array().unwrap();
    assert_eq!(
        outputs.iter().filter(|o| sat(&o["value"]) == 330).count(),
        2
    );
    let to_bob = outputs
        .iter()
        .find(|o| sat(&o["value"]) == 300_000)
        .expect("Bob's to_remote")
        .clone();
    assert_eq!(to_bob["scriptPubKey"]["type"], "witness_v0_scripthash");
    let before = api.ok(&bob.api, KEY, "GET", "/v1/info", None).await["onchain_balance_sat"]
        .as_u64()
        .unwrap();
    mine(&rpc, 1).await;
    // Bob sweeps it to his wallet: exactly 300,000 sat less the sweep's fee.
    let mut sweep = Value::Null;
    wait_for("bob's sweep in the mempool", async || {
        match in_mempool(&rpc, |tx| {
            tx["vin"][0]["txid"] == commitment["txid"] && tx["vin"][0]["vout"] == to_bob["n"]
        })
        .await
        {
            Some(tx) => {
                sweep = tx;
                true
            }
            None => false,
        }
    })
    .await;
    let swept: u64 = sweep["vout"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| sat(&o["value"]))
        .sum();
    // At the chain's estimate for a sweep nobody else can take (1,008 blocks).
    let fee = 300_000 - swept;
    let weight = sweep["weight"].as_u64().unwrap();
    let estimate = chain::ChainSource::estimate_fee_rate(&rpc, 1008)
        .await
        .unwrap()
        .expect("an estimate")
        .to_sat_per_kwu();
    // (The builder counts the signature at its largest size, 73 bytes: up to 2 weight
    // units more than the one made; the estimate read now may have moved by up to a
    // tenth since the sweep was built.)
    assert!(
        fee > 0 && fee <= estimate.max(253) * (weight + 2) * 11 / 10_000 + 1,
        "fee {fee} over {weight} wu vs estimate {estimate} sat/kwu"
    );
    mine(&rpc, 1).await;
    wait_for("bob's wallet", async || {
        api.call(&bob.api, KEY, "GET", "/v1/info", None)
            .await
            .is_ok_and(|v| v["onchain_balance_sat"].as_u64() == Some(before + swept))
    })
    .await;
}
