//! A watchtower protects an offline merchant, with real processes on 127.0.0.1: the
//! merchant's node sends an appointment for every commitment the hub revokes; the
//! merchant's node stops; the hub broadcasts a revoked commitment; the tower's penalty
//! confirms long before the CSV delay and pays the merchant's address the whole channel.
//! Then a reorg drops the breach and the penalty; the breach comes back, and so does the
//! penalty.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::Transaction;
use chain::{ChainControl, ChainSource};
use scenarios::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_punishes_a_breach_while_the_merchant_is_offline() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let d = |i: usize, n: &str| dirs[i].path().join(n).to_str().unwrap().to_string();
    let hub = spawn(&devnet_args(&d(0, "hub"), "op-hub"));
    let devnet = hub.devnet.clone().unwrap();
    let tower = spawn_tower(
        &dirs[1].path().join("tower"),
        (&devnet.0, "devnet", &devnet.1),
        &["--confirmations", "3"],
    );
    let mut margs = light_args(&d(2, "merchant"), "op-m", &devnet, &hub.node_id);
    margs.extend(["--tower-url".into(), tower.url.clone()]);
    // The merchant has no coins: it takes the hub's anchor channel only without the
    // on-chain reserve anchors otherwise call for (the tower's penalty is then tested on
    // an anchor commitment, the to_remote behind its 1-block CSV).
    margs.extend(["--anchor-reserve-sat".into(), "0".into()]);
    let merchant = spawn(&margs);
    let api = Api::default();
    let rpc = rpc(&devnet);
    fund(&api, &hub.api, "op-hub", &rpc).await;
    api.connect(&merchant.api, "op-m", &hub).await;
    const CAP: u64 = 400_000;
    let id = api
        .ok(
            &hub.api,
            "op-hub",
            "POST",
            "/v1/channels",
            Some(json!({"peer_id": merchant.node_id, "capacity_sat": CAP})),
        )
        .await["channel_id"]
        .as_str()
        .unwrap()
        .to_string();
    mine(&rpc, 3).await;
    wait_for(
        "merchant's channel usable with the hub's policy",
        async || {
            api.call(
                &merchant.api,
                "op-m",
                "GET",
                &format!("/v1/channels/{id}"),
                None,
            )
            .await
            .map(|c| c["status"] == "normal" && c["peer_policy"].is_object())
            .unwrap_or(false)
        },
    )
    .await;

    // Payments to the merchant: the hub keeps the commitment of the first state.
    let pay = async |amount: u64| {
        let inv = api
            .ok(
                &merchant.api,
                "op-m",
                "POST",
                "/v1/invoices",
                Some(json!({"amount_msat": amount})),
            )
            .await;
        let p = api
            .ok(
                &hub.api,
                "op-hub",
                "POST",
                "/v1/payments",
                Some(json!({"invoice": inv["bolt11"]})),
            )
            .await;
        assert_eq!(p["status"], "succeeded", "{p}");
    };
    pay(50_000_000).await;
    let quiet = async || {
        api.call(
            &hub.api,
            "op-hub",
            "GET",
            &format!("/v1/channels/{id}"),
            None,
        )
        .await
        .map(|c| c["htlcs"] == 0)
        .unwrap_or(false)
    };
    wait_for("settled", quiet).await;
    let old: Transaction = deserialize_hex(
        api.ok(
            &hub.api,
            "op-hub",
            "GET",
            &format!("/v1/channels/{id}/commitment"),
            None,
        )
        .await["hex"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    for _ in 0..3 {
        pay(60_000_000).await;
    }
    wait_for("settled", quiet).await;
    // Every revoked commitment reached the tower before the merchant goes offline.
    let tower_info = async || -> u64 {
        reqwest::get(format!("{}/v1/info", tower.url))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["appointments"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for("appointments at the tower", async || {
        tower_info().await >= 8
    })
    .await;
    let merchant_wallet_before = api.ok(&merchant.api, "op-m", "GET", "/v1/info", None).await
        ["onchain_balance_sat"]
        .as_u64()
        .unwrap();
    assert_eq!(merchant_wallet_before, 0);
    drop(merchant); // SIGKILL: the merchant is offline from here on.

    // The hub cheats.
    let old_txid = old.compute_txid();
    // An anchor channel: the two 330 sat anchors are nobody's to punish (anyone's
    // after 16 blocks); every other output is the penalty's.
    let anchor = |o: &bitcoin::TxOut| o.value.to_sat() == channel::commitment::ANCHOR_OUTPUT_SAT;
    assert_eq!(old.output.iter().filter(|o| anchor(o)).count(), 2);
    let punished: Vec<u32> = (0..old.output.len() as u32)
        .filter(|v| !anchor(&old.output[*v as usize]))
        .collect();
    let old_total: u64 = punished
        .iter()
        .map(|v| old.output[*v as usize].value.to_sat())
        .sum();
    rpc.broadcast(&old)
        .await
        .expect("a revoked commitment is a valid transaction");
    let breach_block = rpc
        .generate_to_address(1, &burn_address().parse().unwrap())
        .await
        .unwrap()[0];
    // The tower sees it and broadcasts the penalty.
    let penalty_of = async || {
        rpc.find_spend(&bitcoin::OutPoint::new(old_txid, punished[0]), 0)
            .await
            .unwrap()
            .map(|s| s.tx)
    };
    wait_for("penalty in the mempool", async || {
        penalty_of().await.is_some()
    })
    .await;
    mine(&rpc, 1).await;
    let penalty = penalty_of().await.unwrap();
    assert_eq!(rpc.confirmations(&penalty.compute_txid()).await.unwrap(), 1);
    // One transaction takes every output of the revoked commitment, the hub's and the
    // merchant's own, to one address of the merchant.
    assert_eq!(penalty.input.len(), punished.len());
    for &vout in &punished {
        let s = rpc
            .find_spend(&bitcoin::OutPoint::new(old_txid, vout), 0)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.tx.compute_txid(), penalty.compute_txid());
    }
    assert_eq!(penalty.output.len(), 1);
    let fee = old_total - penalty.output[0].value.to_sat();
    assert!(fee < 2_000, "a small fee: {fee}");
    assert!(
        penalty.output[0].value.to_sat() > CAP - 10_000,
        "the whole channel less fees"
    );

    // Reorg: the blocks with the breach and the penalty are dropped...
    rpc.invalidate_block(&breach_block).await.unwrap();
    wait_for("penalty unconfirmed", async || {
        rpc.confirmations(&penalty.compute_txid()).await.unwrap() == 0
    })
    .await;
    // ... and the breach comes back: the penalty confirms again.
    let _ = rpc.broadcast(&old).await;
    // The first block back holds the breach alone (the penalty's input from the
    // merchant's to_remote waits one block under anchors): mined to another address, it
    // is not the invalidated block again.
    let elsewhere = bitcoin::Address::p2wsh(
        &bitcoin::ScriptBuf::from_bytes(vec![0x52]),
        bitcoin::Network::Regtest,
    )
    .to_string();
    rpc.generate_to_address(1, &elsewhere.parse().unwrap())
        .await
        .unwrap();
    for _ in 0..20 {
        mine(&rpc, 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if rpc.confirmations(&penalty.compute_txid()).await.unwrap() >= 1 {
            break;
        }
    }
    assert!(
        rpc.confirmations(&old_txid).await.unwrap() >= 1,
        "breach back on chain"
    );
    assert!(
        rpc.confirmations(&penalty.compute_txid()).await.unwrap() >= 1,
        "the penalty confirmed again"
    );
    mine(&rpc, 3).await;

    // Only now does the merchant come back: its wallet holds the whole channel, less the
    // penalty's fee, in satoshis.
    let mut margs2 = margs.clone();
    let i = margs2.iter().position(|a| a == "--tower-url").unwrap();
    margs2.drain(i..i + 2);
    let merchant = spawn(&margs2);
    let expected = penalty.output[0].value.to_sat();
    wait_for("merchant's wallet has the penalty", async || {
        api.call(&merchant.api, "op-m", "GET", "/v1/info", None)
            .await
            .map(|v| v["onchain_balance_sat"].as_u64() == Some(expected))
            .unwrap_or(false)
    })
    .await;
    assert_eq!(expected, old_total - fee);
    let _ = (hub, tower);
}
