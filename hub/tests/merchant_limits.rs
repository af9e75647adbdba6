//! What one merchant key may do to a hub, with real `hub` processes on 127.0.0.1 and the
//! hub's limits set by its flags: its channels from the hub (count and capacity), its
//! webhooks, its request rate, no force close; and the operator's control of its key
//! (rotated: the old one stops at once; revoked: nothing answers to it). Each refusal is
//! checked to change nothing.

use scenarios::*;
use serde_json::{json, Value};
use std::time::Duration;

const OP: &str = "op-hub";

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_is_held_to_its_quotas_and_its_key_is_the_operators_to_rotate_or_revoke() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let d = |i: usize| dirs[i].path().to_str().unwrap().to_string();
    let mut args = devnet_args(&format!("{}/hub", d(0)), OP);
    args.extend(
        [
            "--merchant-max-channels",
            "2",
            "--merchant-max-capacity-sat",
            "300000",
            "--merchant-max-webhooks",
            "2",
            "--merchant-rate-per-sec",
            "5",
            "--merchant-rate-burst",
            "20",
        ]
        .map(String::from),
    );
    let hub = spawn(&args);
    let devnet = hub.devnet.clone().unwrap();
    let merchant = spawn(&light_args(
        &format!("{}/merchant", d(1)),
        "op-merchant",
        &devnet,
        &hub.node_id,
    ));
    let api = Api::default();
    fund_all(
        &api,
        &[(&hub.api, OP), (&merchant.api, "op-merchant")],
        &rpc(&devnet),
    )
    .await;
    api.connect(&merchant.api, "op-merchant", &hub).await;
    // A channel the merchant's node funds itself costs the hub nothing: it counts
    // against no quota below.
    let own = api
        .ok(
            &merchant.api,
            "op-merchant",
            "POST",
            "/v1/channels",
            Some(json!({"peer_id": hub.node_id, "capacity_sat": 250_000})),
        )
        .await;
    assert!(own["channel_id"].is_string(), "{own}");
    let m = api
        .ok(
            &hub.api,
            OP,
            "POST",
            "/v1/merchants",
            Some(json!({"name": "Bakery", "node_id": merchant.node_id})),
        )
        .await;
    let id = m["id"].as_str().unwrap().to_string();
    let first_key = m["api_key"].as_str().unwrap().to_string();
    assert_eq!(m["key_active"], true);

    // Rotation: the old key stops at once, the new one works.
    let rotated = api
        .ok(
            &hub.api,
            OP,
            "POST",
            &format!("/v1/merchants/{id}/key"),
            None,
        )
        .await;
    let key = rotated["api_key"].as_str().unwrap().to_string();
    assert_ne!(key, first_key);
    let (status, v) = api
        .raw(&hub.api, Some(&first_key), "GET", "/v1/channels", None)
        .await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    api.ok(&hub.api, &key, "GET", "/v1/channels", None).await;
    // Only the operator manages keys.
    let (status, _) = api
        .raw(
            &hub.api,
            Some(&key),
            "POST",
            &format!("/v1/merchants/{id}/key"),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = api
        .raw(&hub.api, Some(OP), "POST", "/v1/merchants/00aa/key", None)
        .await;
    assert_eq!(status, 404, "an unknown merchant");

    // Channels from the hub: at most 2, holding at most 300,000 sat together (the
    // merchant's own channel of 250,000 sat is not among them).
    let open = |cap: u64| {
        let api = api.clone();
        let base = hub.api.clone();
        let key = key.clone();
        async move {
            api.raw(
                &base,
                Some(&key),
                "POST",
                "/v1/channels",
                Some(json!({"capacity_sat": cap})),
            )
            .await
        }
    };
    let channels = |api: Api, base: String| async move {
        api.ok(&base, OP, "GET", "/v1/channels", None)
            .await
            .as_array()
            .unwrap()
            .len()
    };
    let (status, v) = open(100_000).await;
    assert_eq!(status, 201, "{v}");
    let first = v["channel_id"].as_str().unwrap().to_string();
    let onchain = || {
        let (api, base) = (api.clone(), hub.api.clone());
        async move { api.ok(&base, OP, "GET", "/v1/info", None).await["onchain_balance_sat"].clone() }
    };
    let before = onchain().await;
    let (status, v) = open(250_000).await;
    assert_eq!((status, code(&v)), (429, "quota_exceeded"), "{v}");
    assert_eq!(channels(api.clone(), hub.api.clone()).await, 2);
    assert_eq!(onchain().await, before, "a refused open spends nothing");
    // The hub's one coin is in the first funding, its change not yet confirmed: an open
    // within the quotas is refused at once for want of coins, nothing changed.
    let (status, v) = open(200_000).await;
    assert_eq!((status, code(&v)), (422, "insufficient_capacity"), "{v}");
    assert_eq!(channels(api.clone(), hub.api.clone()).await, 2);
    mine(&rpc(&devnet), 1).await;
    wait_for("the change confirmed", async || {
        onchain().await.as_u64() > Some(0)
    })
    .await;
    let (status, v) = open(200_000).await;
    assert_eq!(status, 201, "{v}: 300,000 in all is allowed");
    let (status, v) = open(20_000).await;
    assert_eq!((status, code(&v)), (429, "quota_exceeded"), "{v}");
    assert_eq!(channels(api.clone(), hub.api.clone()).await, 3);

    // No force close from a merchant key (the hub would pay and wait out the delay).
    let (status, v) = api
        .raw(
            &hub.api,
            Some(&key),
            "POST",
            &format!("/v1/channels/{first}/close"),
            Some(json!({"force": true})),
        )
        .await;
    assert_eq!((status, code(&v)), (403, "forbidden"), "{v}");
    let c = api
        .ok(&hub.api, OP, "GET", &format!("/v1/channels/{first}"), None)
        .await;
    assert!(
        c["status"] != "force_closed" && c["closing_txid"].is_null(),
        "{c}"
    );

    // Webhooks: at most 2 for the merchant; the operator is not limited.
    let hook = |k: &str| {
        let (api, base, k) = (api.clone(), hub.api.clone(), k.to_string());
        async move {
            api.raw(
                &base,
                Some(&k),
                "POST",
                "/v1/webhooks",
                Some(json!({"url": "https://hooks.example.com/x"})),
            )
            .await
        }
    };
    let (s1, w1) = hook(&key).await;
    let (s2, _) = hook(&key).await;
    assert_eq!((s1, s2), (201, 201));
    let (status, v) = hook(&key).await;
    assert_eq!((status, code(&v)), (429, "quota_exceeded"), "{v}");
    let mine = api.ok(&hub.api, &key, "GET", "/v1/webhooks", None).await;
    assert_eq!(
        mine.as_array().unwrap().len(),
        2,
        "the refused one was not stored"
    );
    for _ in 0..3 {
        assert_eq!(hook(OP).await.0, 201);
    }
    let (status, _) = api
        .raw(
            &hub.api,
            Some(&key),
            "DELETE",
            &format!("/v1/webhooks/{}", w1["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(hook(&key).await.0, 201, "room again after a delete");

    // Invoices on the hub are the operator's: a merchant's key gets 403 and nothing is
    // stored (a merchant's invoices are its own node's).
    let (status, v) = api
        .raw(
            &hub.api,
            Some(&key),
            "POST",
            "/v1/invoices",
            Some(json!({"amount_msat": 1000, "description": "x"})),
        )
        .await;
    assert_eq!((status, code(&v)), (403, "forbidden"), "{v}");
    let listed = api.ok(&hub.api, OP, "GET", "/v1/invoices", None).await;
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");

    // Rate: a burst of 20, then 5 a second; the operator is not limited.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let (status, v) = api
            .raw(&hub.api, Some(&key), "GET", "/v1/channels", None)
            .await;
        if status == 429 {
            assert_eq!(code(&v), "rate_limited", "{v}");
        }
        statuses.push(status);
        assert_eq!(
            api.raw(&hub.api, Some(OP), "GET", "/v1/channels", None)
                .await
                .0,
            200
        );
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert!(
        (20..60).contains(&ok) && statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.ok(&hub.api, &key, "GET", "/v1/channels", None).await;

    // Revocation: nothing answers to the key; the merchant's channels stay.
    let (status, _) = api
        .raw(
            &hub.api,
            Some(OP),
            "DELETE",
            &format!("/v1/merchants/{id}/key"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, v) = api
        .raw(&hub.api, Some(&key), "GET", "/v1/channels", None)
        .await;
    assert_eq!((status, code(&v)), (401, "unauthorized"));
    let listed = api.ok(&hub.api, OP, "GET", "/v1/merchants", None).await;
    assert_eq!(listed[0]["key_active"], false, "{listed}");
    assert_eq!(channels(api.clone(), hub.api.clone()).await, 3);
    // A new key after a revocation works.
    let key = api
        .ok(
            &hub.api,
            OP,
            "POST",
            &format!("/v1/merchants/{id}/key"),
            None,
        )
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    api.ok(&hub.api, &key, "GET", "/v1/channels", None).await;
}
