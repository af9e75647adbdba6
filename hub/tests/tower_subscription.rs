//! A watchtower drops a user's appointments when the subscription it granted ends. With
//! real processes on 127.0.0.1 and a tower granting 40 blocks: the merchant's node renews
//! its subscription before the end, so its appointments outlive the first subscription;
//! then the node is offline past the end of the second, the tower drops everything, and
//! on restart the node registers again and uploads every revoked commitment once more.

use scenarios::*;
use serde_json::{json, Value};

const SUBSCRIPTION_BLOCKS: u32 = 40;

async fn get(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_subscription_is_renewed_and_lost_appointments_are_uploaded_again() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let d = |i: usize, n: &str| dirs[i].path().join(n).to_str().unwrap().to_string();
    let hub = spawn(&devnet_args(&d(0, "hub"), "op-hub"));
    let devnet = hub.devnet.clone().unwrap();
    let blocks = SUBSCRIPTION_BLOCKS.to_string();
    let tower = spawn_tower(
        &dirs[1].path().join("tower"),
        (&devnet.0, "devnet", &devnet.1),
        &["--subscription-blocks", &blocks],
    );
    let mut margs = light_args(&d(2, "merchant"), "op-m", &devnet, &hub.node_id);
    margs.extend(["--tower-url".into(), tower.url.clone()]);
    margs.extend(["--anchor-reserve-sat".into(), "0".into()]);
    let merchant = spawn(&margs);
    let api = Api::default();
    let rpc = rpc(&devnet);
    fund(&api, &hub.api, "op-hub", &rpc).await;
    api.connect(&merchant.api, "op-m", &hub).await;
    let id = api
        .open_channel(
            &hub.api,
            "op-hub",
            json!({"peer_id": merchant.node_id, "capacity_sat": 400_000}),
        )
        .await;
    mine(&rpc, 3).await;
    api.wait_usable(&merchant.api, "op-m", &id, true).await;

    // Three payments to the merchant: each revokes commitments of the merchant's peer.
    for _ in 0..3 {
        let inv = api
            .ok(
                &merchant.api,
                "op-m",
                "POST",
                "/v1/invoices",
                Some(json!({"amount_msat": 20_000_000})),
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
    }
    let merchant_tower = async || -> Value {
        api.ok(&merchant.api, "op-m", "GET", "/v1/info", None).await["towers"][0].clone()
    };
    let tower_info = async || get(format!("{}/v1/info", tower.url)).await;
    wait_for("every appointment at the tower", async || {
        merchant_tower().await["appointments_pending"] == 0
            && tower_info().await["appointments"].as_u64() >= Some(6)
    })
    .await;
    let uploaded = tower_info().await["appointments"].as_u64().unwrap();
    let first_expiry = merchant_tower().await["subscription_expiry"]
        .as_u64()
        .unwrap();
    let height = || async { tower_info().await["block_height"].as_u64().unwrap() };

    // Mined block by block past the first subscription's end: the node registers again
    // at three quarters, and the tower keeps every appointment.
    // (The node looks at its subscriptions every 2 s: a block every 500 ms leaves it
    // several looks within the last quarter.)
    while height().await < first_expiry + 5 {
        mine(&rpc, 1).await;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let renewed = merchant_tower().await["subscription_expiry"]
        .as_u64()
        .unwrap();
    assert!(
        renewed > first_expiry,
        "renewed: {renewed} after {first_expiry}"
    );
    wait_for("the tower past the first expiry", async || {
        height().await > first_expiry
    })
    .await;
    assert_eq!(
        tower_info().await["appointments"].as_u64(),
        Some(uploaded),
        "the tower kept every appointment past the first subscription's end"
    );

    // Offline past the end of the renewed subscription: the tower drops everything.
    drop(merchant);
    let past = (renewed + 2).saturating_sub(height().await) as u32;
    mine(&rpc, past + 1).await;
    wait_for("the tower dropped the lapsed appointments", async || {
        tower_info().await["appointments"] == 0
    })
    .await;

    // Back online: registered again, every revoked commitment uploaded again.
    let merchant = spawn(&margs);
    wait_for("every appointment back at the tower", async || {
        tower_info().await["appointments"].as_u64() == Some(uploaded)
            && merchant_tower_of(&api, &merchant.api).await["appointments_pending"] == 0
    })
    .await;
    let again = merchant_tower_of(&api, &merchant.api).await["subscription_expiry"]
        .as_u64()
        .unwrap();
    assert!(
        again > renewed,
        "a new subscription: {again} after {renewed}"
    );
}

async fn merchant_tower_of(api: &Api, base: &str) -> Value {
    api.ok(base, "op-m", "GET", "/v1/info", None).await["towers"][0].clone()
}
