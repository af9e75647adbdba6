//! The product path end to end, with real `hub` processes on 127.0.0.1 and the devnet:
//! the operator creates a merchant; the merchant asks the hub for an inbound channel; a
//! user opens a channel to the hub; the merchant issues an invoice; the user pays it
//! through the hub; the merchant's webhook receiver gets invoice.paid with a valid HMAC;
//! every balance is exact to the msat, the hub's fee included. Then the refusals: auth,
//! other tenants, bad input, failures on the route, each leaving every balance unchanged.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use hmac::{Hmac, Mac};
use scenarios::*;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Received = Arc<Mutex<Vec<(HeaderMap, String)>>>;

/// A webhook receiver on 127.0.0.1:0 that records what it gets.
async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(got): State<Received>, headers: HeaderMap, body: String| async move {
                    got.lock().unwrap().push((headers, body));
                    "ok"
                },
            ),
        )
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Checks `Hub-Signature: t=..,v1=..` against the secret.
fn signature_valid(headers: &HeaderMap, body: &str, secret_hex: &str) -> bool {
    let Some(sig) = headers.get("hub-signature").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if t.parse::<u64>()
        .map(|t| now.abs_diff(t) > 300)
        .unwrap_or(true)
    {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(secret_hex).unwrap()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap_or_default())
        .is_ok()
}

fn channel_of<'a>(list: &'a Value, peer: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|c| c["peer_id"] == peer && c["status"] != "closed")
        .unwrap_or_else(|| panic!("a channel with {peer} in {list}"))
}

fn msat(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_gets_paid_through_the_hub() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let d = |i: usize| dirs[i].path().to_str().unwrap().to_string();
    let hub = spawn(&devnet_args(&format!("{}/hub", d(0)), "op-hub"));
    let devnet = hub.devnet.clone().unwrap();
    let light = |dir: String, key: &str| spawn(&light_args(&dir, key, &devnet, &hub.node_id));
    let merchant = light(format!("{}/merchant", d(1)), "op-merchant");
    let user = light(format!("{}/user", d(2)), "op-user");
    let api = Api::default();
    let rpc = rpc(&devnet);

    fund_all(&api, &[(&hub.api, "op-hub"), (&user.api, "op-user")], &rpc).await;
    for (node, key) in [(&merchant, "op-merchant"), (&user, "op-user")] {
        api.connect(&node.api, key, &hub).await;
    }

    // The operator creates the merchant; the merchant's key is shown once.
    let m = api
        .ok(
            &hub.api,
            "op-hub",
            "POST",
            "/v1/merchants",
            Some(json!({"name": "Coffee shop", "node_id": merchant.node_id})),
        )
        .await;
    let mkey = m["api_key"].as_str().unwrap().to_string();
    // A second merchant, to check tenants are kept apart.
    let other_node = bitcoin::secp256k1::PublicKey::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::new(),
        &bitcoin::secp256k1::SecretKey::from_slice(&[7; 32]).unwrap(),
    );
    let other_key = api
        .ok(
            &hub.api,
            "op-hub",
            "POST",
            "/v1/merchants",
            Some(json!({"name": "Other", "node_id": other_node.to_string()})),
        )
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(api
        .ok(&hub.api, "op-hub", "GET", "/v1/merchants", None)
        .await
        .to_string()
        .contains("Coffee shop"));
    assert!(
        !api.ok(&hub.api, "op-hub", "GET", "/v1/merchants", None)
            .await
            .to_string()
            .contains(&mkey),
        "keys are not stored"
    );

    // Webhooks: the merchant's own node (invoice.paid) and the hub (its channel events).
    let (hook_url, received) = receiver().await;
    let hook = api
        .ok(
            &merchant.api,
            "op-merchant",
            "POST",
            "/v1/webhooks",
            Some(json!({"url": hook_url, "events": ["invoice.paid", "channel.opened"]})),
        )
        .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let hub_hook = api
        .ok(
            &hub.api,
            &mkey,
            "POST",
            "/v1/webhooks",
            Some(json!({"url": hook_url, "events": ["channel.opened"]})),
        )
        .await;

    // Inbound liquidity for the merchant, asked with the merchant's key.
    const MERCHANT_CAP: u64 = 500_000;
    const USER_CAP: u64 = 800_000;
    let mchan = api
        .ok(
            &hub.api,
            &mkey,
            "POST",
            "/v1/channels",
            Some(json!({"capacity_sat": MERCHANT_CAP})),
        )
        .await["channel_id"]
        .as_str()
        .unwrap()
        .to_string();
    let uchan = api
        .ok(
            &user.api,
            "op-user",
            "POST",
            "/v1/channels",
            Some(json!({"peer_id": hub.node_id, "capacity_sat": USER_CAP})),
        )
        .await["channel_id"]
        .as_str()
        .unwrap()
        .to_string();
    mine(&rpc, 3).await;
    for (node, key, id) in [
        (&hub, "op-hub", &mchan),
        (&hub, "op-hub", &uchan),
        (&merchant, "op-merchant", &mchan),
        (&user, "op-user", &uchan),
    ] {
        wait_for("channels usable, hub policy known", async || {
            api.call(&node.api, key, "GET", &format!("/v1/channels/{id}"), None)
                .await
                .map(|c| {
                    c["status"] == "normal"
                        && (node.node_id == hub.node_id || c["peer_policy"].is_object())
                })
                .unwrap_or(false)
        })
        .await;
    }
    // Merchants see only their own channels.
    let mine_list = api.ok(&hub.api, &mkey, "GET", "/v1/channels", None).await;
    assert_eq!(mine_list.as_array().unwrap().len(), 1);
    assert_eq!(mine_list[0]["channel_id"], mchan.as_str());

    let snapshot = async || {
        (
            api.ok(&user.api, "op-user", "GET", "/v1/channels", None)
                .await,
            api.ok(&hub.api, "op-hub", "GET", "/v1/channels", None)
                .await,
            api.ok(&merchant.api, "op-merchant", "GET", "/v1/channels", None)
                .await,
        )
    };
    let before = snapshot().await;

    // The merchant issues an invoice; the user pays it.
    const AMOUNT: u64 = 150_000_000;
    let invoice = api
        .ok(
            &merchant.api,
            "op-merchant",
            "POST",
            "/v1/invoices",
            Some(
                json!({"amount_msat": AMOUNT, "description": "2 flat whites", "expiry_secs": 600}),
            ),
        )
        .await;
    let bolt11 = invoice["bolt11"].as_str().unwrap().to_string();
    assert!(bolt11.starts_with("lnbcrt1500u1"), "{bolt11}");
    // option_scid_alias: the route hint names the hub's alias for the channel (a block
    // height no chain has), not the short channel id of its funding transaction.
    let decoded: channel::invoice::Invoice = bolt11.parse().unwrap();
    let hint = decoded.route_hints()[0][0].short_channel_id;
    let real = api
        .ok(
            &hub.api,
            "op-hub",
            "GET",
            &format!("/v1/channels/{mchan}"),
            None,
        )
        .await["short_channel_id"]
        .as_str()
        .unwrap()
        .to_string();
    let hint_text = format!(
        "{}x{}x{}",
        hint >> 40,
        (hint >> 16) & 0xff_ffff,
        hint & 0xffff
    );
    assert_ne!(hint_text, real, "the invoice does not reveal the funding");
    assert!(hint >> 40 >= 16_000_000, "an alias: {hint_text}");
    let hash = invoice["payment_hash"].as_str().unwrap().to_string();
    let paid = api
        .ok(
            &user.api,
            "op-user",
            "POST",
            "/v1/payments",
            Some(json!({"invoice": bolt11})),
        )
        .await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
    // Default policy: 1000 msat + 100 ppm.
    let fee = 1000 + AMOUNT * 100 / 1_000_000;
    assert_eq!(msat(&paid, "fee_msat"), fee);
    assert_eq!(msat(&paid, "amount_msat"), AMOUNT);
    let preimage = hex::decode(paid["preimage"].as_str().unwrap()).unwrap();
    assert_eq!(
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&preimage)),
        hash,
        "the preimage is the proof of payment"
    );
    wait_for("invoice paid", async || {
        api.call(
            &merchant.api,
            "op-merchant",
            "GET",
            &format!("/v1/invoices/{hash}"),
            None,
        )
        .await
        .map(|i| i["status"] == "paid")
        .unwrap_or(false)
    })
    .await;
    // Paying again pays once.
    let again = api
        .ok(
            &user.api,
            "op-user",
            "POST",
            "/v1/payments",
            Some(json!({"invoice": bolt11})),
        )
        .await;
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["preimage"], paid["preimage"]);

    // Exact balances on all three nodes once everything settled.
    let settled = async || {
        let (u, h, m) = snapshot().await;
        [&u, &h, &m]
            .iter()
            .all(|l| l.as_array().unwrap().iter().all(|c| c["htlcs"] == 0))
    };
    wait_for("settled everywhere", settled).await;
    let (u, h, m) = snapshot().await;
    let (u0, h0, m0) = &before;
    let user_c = channel_of(&u, &hub.node_id);
    assert_eq!(
        msat(user_c, "local_balance_msat"),
        msat(channel_of(u0, &hub.node_id), "local_balance_msat") - AMOUNT - fee
    );
    let hub_in = channel_of(&h, &user.node_id);
    let hub_out = channel_of(&h, &merchant.node_id);
    assert_eq!(
        msat(hub_in, "local_balance_msat"),
        msat(channel_of(h0, &user.node_id), "local_balance_msat") + AMOUNT + fee
    );
    assert_eq!(
        msat(hub_out, "local_balance_msat"),
        msat(channel_of(h0, &merchant.node_id), "local_balance_msat") - AMOUNT
    );
    assert_eq!(
        msat(hub_out, "local_balance_msat"),
        MERCHANT_CAP * 1000 - AMOUNT
    );
    let merch_c = channel_of(&m, &hub.node_id);
    assert_eq!(
        msat(merch_c, "local_balance_msat"),
        msat(channel_of(m0, &hub.node_id), "local_balance_msat") + AMOUNT
    );
    assert_eq!(msat(merch_c, "local_balance_msat"), AMOUNT);
    // Both sides of each channel agree.
    assert_eq!(
        msat(user_c, "local_balance_msat"),
        msat(hub_in, "remote_balance_msat")
    );
    assert_eq!(
        msat(merch_c, "local_balance_msat"),
        msat(hub_out, "remote_balance_msat")
    );
    // The hub earned exactly its fee.
    let hub_total = msat(hub_in, "local_balance_msat") + msat(hub_out, "local_balance_msat");
    let hub_total0 = msat(channel_of(h0, &user.node_id), "local_balance_msat")
        + msat(channel_of(h0, &merchant.node_id), "local_balance_msat");
    assert_eq!(hub_total, hub_total0 + fee);
    // The hub's books: one settled forward, seen by the merchant, not by the other one.
    let fwd = api
        .ok(
            &hub.api,
            &mkey,
            "GET",
            &format!("/v1/payments/{hash}"),
            None,
        )
        .await;
    assert_eq!(fwd["status"], "settled");
    assert_eq!(msat(&fwd, "fee_msat"), fee);
    assert_eq!(msat(&fwd, "out_amount_msat"), AMOUNT);
    // The incoming channel is the user's (its id, the user's funding outpoint): not the
    // merchant's to see, in any of its views; the operator sees it.
    let user_channel = hub_in["channel_id"].as_str().unwrap().to_string();
    for path in [
        format!("/v1/payments/{hash}"),
        "/v1/payments".into(),
        "/v1/forwards".into(),
    ] {
        let v = api.ok(&hub.api, &mkey, "GET", &path, None).await;
        assert!(!v.to_string().contains(&user_channel), "{path}: {v}");
        assert!(!v.to_string().contains("in_channel_id"), "{path}: {v}");
    }
    let ops = api
        .ok(&hub.api, "op-hub", "GET", "/v1/forwards", None)
        .await;
    assert!(ops.to_string().contains(&user_channel), "{ops}");
    assert_eq!(
        api.raw(
            &hub.api,
            Some(&other_key),
            "GET",
            &format!("/v1/payments/{hash}"),
            None
        )
        .await
        .0,
        404
    );

    // invoice.paid reached the merchant's receiver, signed.
    wait_for("webhook delivered", async || {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|(_, b)| b.contains("invoice.paid"))
    })
    .await;
    let (headers, body) = received
        .lock()
        .unwrap()
        .iter()
        .find(|(_, b)| b.contains("invoice.paid"))
        .cloned()
        .unwrap();
    assert!(signature_valid(&headers, &body, &secret), "HMAC checks out");
    assert!(
        !signature_valid(&headers, &body.replace("2 flat", "3 flat"), &secret),
        "a changed body does not"
    );
    let event: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["type"], "invoice.paid");
    assert_eq!(event["data"]["payment_hash"], hash.as_str());
    assert_eq!(msat(&event["data"], "amount_received_msat"), AMOUNT);
    // The hub told the merchant its channel opened (the merchant's hub webhook).
    let hub_secret = hub_hook["secret"].as_str().unwrap().to_string();
    wait_for("channel.opened from the hub", async || {
        received.lock().unwrap().iter().any(|(h, b)| {
            b.contains("channel.opened") && b.contains(&mchan) && signature_valid(h, b, &hub_secret)
        })
    })
    .await;

    // ---- refusals: each changes nothing ---------------------------------------------
    let stable = snapshot().await;
    let path = format!("/v1/channels/{mchan}");
    // Auth.
    assert_eq!(
        api.raw(&hub.api, None, "GET", "/v1/channels", None).await.0,
        401
    );
    assert_eq!(
        api.raw(&hub.api, Some("wrong"), "GET", "/v1/channels", None)
            .await
            .0,
        401
    );
    let (status, body) = api
        .raw(&hub.api, Some(&other_key), "GET", &path, None)
        .await;
    assert_eq!(
        status, 404,
        "another merchant's channel is not found: {body}"
    );
    assert_eq!(body["error"]["code"], "unknown_channel");
    assert_eq!(
        api.raw(
            &hub.api,
            Some(&other_key),
            "POST",
            &format!("{path}/close"),
            Some(json!({"force": true}))
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api.ok(&hub.api, &other_key, "GET", "/v1/channels", None)
            .await,
        json!([])
    );
    assert_eq!(
        api.raw(
            &hub.api,
            Some(&mkey),
            "POST",
            "/v1/merchants",
            Some(json!({"name": "x", "node_id": user.node_id}))
        )
        .await
        .0,
        403
    );
    assert_eq!(
        api.raw(&hub.api, Some(&mkey), "POST", "/v1/address", None)
            .await
            .0,
        403
    );
    let (status, _) = api
        .raw(
            &hub.api,
            Some(&other_key),
            "DELETE",
            &format!("/v1/webhooks/{}", hub_hook["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 404, "another merchant's webhook");
    // Bad input.
    let bad = |s: &str| {
        let s = s.to_string();
        let http = api.http.clone();
        let base = user.api.clone();
        async move {
            let r = http
                .post(format!("{base}/v1/payments"))
                .header("authorization", "Bearer op-user")
                .header("content-type", "application/json")
                .body(s)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap_or(Value::Null);
            (status, v)
        }
    };
    for body in [
        "{not json",
        "{\"invoice\": 5}",
        "[]",
        "{\"invoice\": \"lnbcrt1\", \"amount_msat\": -5}",
        "{\"invoice\": \"x\", \"amount_msat\": 100000000000000000000000}",
    ] {
        let (status, v) = bad(body).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert!(v["error"]["code"].is_string(), "{body}: {v}");
    }
    // The user pays an invoice; the merchant issues one.
    let pay = async |invoice: Value| {
        api.raw(
            &user.api,
            Some("op-user"),
            "POST",
            "/v1/payments",
            Some(json!({"invoice": invoice})),
        )
        .await
    };
    let new_invoice = async |body: Value| {
        api.ok(
            &merchant.api,
            "op-merchant",
            "POST",
            "/v1/invoices",
            Some(body),
        )
        .await["bolt11"]
            .clone()
    };
    let (status, v) = pay(json!("lnbcrt1garbage")).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    // A tampered invoice (one character of the signature changed) fails its checksum or
    // its signature.
    let mut tampered = bolt11.clone().into_bytes();
    let i = tampered.len() - 10;
    tampered[i] = if tampered[i] == b'q' { b'p' } else { b'q' };
    let (status, _) = pay(json!(String::from_utf8(tampered).unwrap())).await;
    assert_eq!(status, 400);
    for (body, code) in [
        (json!({"amount_msat": 0}), "invalid_request"),
        (json!({"amount_msat": u64::MAX}), "invalid_request"),
        (
            json!({"amount_msat": 1000, "expiry_secs": 0}),
            "invalid_request",
        ),
    ] {
        let (status, v) = api
            .raw(
                &merchant.api,
                Some("op-merchant"),
                "POST",
                "/v1/invoices",
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    let (status, _) = api
        .raw(
            &hub.api,
            Some(&mkey),
            "POST",
            "/v1/channels",
            Some(json!({"capacity_sat": 1u64 << 60})),
        )
        .await;
    assert_eq!(status, 400, "channel above the maximum");
    // Expired invoice.
    let short = new_invoice(json!({"amount_msat": 1000, "expiry_secs": 1})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, v) = pay(short).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("invoice_expired")),
        "{v}"
    );
    // More than the user's channel holds: refused before anything is sent.
    let huge = new_invoice(json!({"amount_msat": 2_000_000_000u64})).await;
    let (status, v) = pay(huge).await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (422, Some("insufficient_capacity")),
        "{v}"
    );
    // More than the hub's channel to the merchant holds: the hub fails it back.
    let too_big = new_invoice(json!({"amount_msat": 400_000_000u64})).await;
    let (status, v) = pay(too_big).await;
    assert_eq!(status, 422, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(
        v["failure_code"], 0x1007,
        "temporary_channel_failure from the hub: {v}"
    );
    assert!(v["failure"].as_str().unwrap().contains("hop 1"), "{v}");
    wait_for("failed HTLC removed", settled).await;
    assert_eq!(snapshot().await, stable, "no balance moved");
    // The other merchant's hub webhook saw nothing of this merchant.
    assert!(received
        .lock()
        .unwrap()
        .iter()
        .all(|(h, b)| !(b.contains(&mchan)
            && !signature_valid(h, b, &hub_secret)
            && !signature_valid(h, b, &secret))));
    let _ = (hub, merchant, user);
}
