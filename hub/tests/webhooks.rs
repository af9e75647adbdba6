//! Webhook deliveries are signed, retried with backoff while the receiver fails, and
//! survive a SIGKILL of the node: the pending delivery is sent after the restart.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use scenarios::*;
use serde_json::{json, Value};
use sha2::Sha256;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    attempts: Mutex<Vec<(HeaderMap, String)>>,
    delivered: Mutex<Vec<(HeaderMap, String)>>,
}

async fn receiver() -> (String, Arc<Receiver>) {
    let r: Arc<Receiver> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/hook",
            post(
                |State(r): State<Arc<Receiver>>, headers: HeaderMap, body: String| async move {
                    r.attempts
                        .lock()
                        .unwrap()
                        .push((headers.clone(), body.clone()));
                    if r.up.load(Ordering::SeqCst) {
                        r.delivered.lock().unwrap().push((headers, body));
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                },
            ),
        )
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

fn verify(headers: &HeaderMap, body: &str, secret: &str) -> bool {
    let sig = headers["hub-signature"].to_str().unwrap();
    let (t, v1) = sig.split_once(',').unwrap();
    let t = t.strip_prefix("t=").unwrap();
    let v1 = v1.strip_prefix("v1=").unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&hex::decode(secret).unwrap()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    mac.verify_slice(&hex::decode(v1).unwrap()).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_retried_and_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node").to_str().unwrap().to_string();
    let mut args = devnet_args(&data, "op");
    args.extend(["--webhook-retry-secs".into(), "1".into()]);
    let node = spawn(&args);
    let api = Api::default();
    let (url, r) = receiver().await;

    // Bad registrations change nothing.
    for body in [
        json!({"url": "not a url"}),
        json!({"url": "ftp://127.0.0.1/x"}),
        json!({"url": url, "events": ["invoice.paid", "no.such.event"]}),
    ] {
        let (status, v) = api
            .raw(
                &node.api,
                Some("op"),
                "POST",
                "/v1/webhooks",
                Some(body.clone()),
            )
            .await;
        assert_eq!(status, 400, "{body}: {v}");
    }
    assert_eq!(
        api.ok(&node.api, "op", "GET", "/v1/webhooks", None).await,
        json!([])
    );

    let hook = api
        .ok(
            &node.api,
            "op",
            "POST",
            "/v1/webhooks",
            Some(json!({"url": url})),
        )
        .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let id = hook["id"].as_str().unwrap().to_string();
    let listed = api.ok(&node.api, "op", "GET", "/v1/webhooks", None).await;
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once: {listed}"
    );
    let delivery = api
        .ok(
            &node.api,
            "op",
            "POST",
            &format!("/v1/webhooks/{id}/test"),
            None,
        )
        .await["delivery_id"]
        .as_str()
        .unwrap()
        .to_string();

    // The receiver is down: attempts are made and backed off.
    wait_for("two failed attempts", async || {
        r.attempts.lock().unwrap().len() >= 2
    })
    .await;
    let d: Value = api
        .ok(&node.api, "op", "GET", "/v1/webhooks/deliveries", None)
        .await;
    let d = d
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == delivery.as_str())
        .unwrap()
        .clone();
    assert_eq!(d["status"], "pending", "{d}");
    assert!(d["attempts"].as_u64().unwrap() >= 2, "{d}");
    assert_eq!(d["last_error"], "HTTP 503 Service Unavailable");
    // Each retry waits at least twice as long as the one before (1 s, 2 s, 4 s, ...).
    let first_two: Vec<u64> = r
        .attempts
        .lock()
        .unwrap()
        .iter()
        .take(2)
        .map(|(h, _)| {
            h["hub-signature"]
                .to_str()
                .unwrap()
                .split(',')
                .next()
                .unwrap()[2..]
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        first_two[1] > first_two[0],
        "backoff between attempts: {first_two:?}"
    );

    // SIGKILL while the delivery is pending; the restarted node still has it.
    drop(node);
    r.up.store(true, Ordering::SeqCst);
    let node = spawn(&args);
    wait_for("delivered after the restart", async || {
        !r.delivered.lock().unwrap().is_empty()
    })
    .await;
    let (headers, body) = r.delivered.lock().unwrap()[0].clone();
    assert_eq!(
        headers["hub-delivery"].to_str().unwrap(),
        delivery,
        "the same delivery"
    );
    assert_eq!(headers["hub-event"].to_str().unwrap(), "webhook.test");
    assert!(verify(&headers, &body, &secret));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["type"], "webhook.test");
    wait_for("recorded as delivered", async || {
        api.ok(&node.api, "op", "GET", "/v1/webhooks/deliveries", None)
            .await[0]["status"]
            == "delivered"
    })
    .await;
    // Every attempt carried the same body.
    assert!(r.attempts.lock().unwrap().iter().all(|(_, b)| *b == body));

    // Deleting the webhook: gone from the list, 404 the second time.
    let path = format!("/v1/webhooks/{id}");
    assert_eq!(
        api.raw(&node.api, Some("op"), "DELETE", &path, None)
            .await
            .0,
        204
    );
    assert_eq!(
        api.raw(&node.api, Some("op"), "DELETE", &path, None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.ok(&node.api, "op", "GET", "/v1/webhooks", None).await,
        json!([])
    );
}

/// A receiver that accepts connections and never answers; counts those it holds.
async fn tarpit() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = held.clone();
    tokio::spawn(async move {
        let mut sockets = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            sockets.push(s);
        }
    });
    (url, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_whose_receiver_hangs_holds_up_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node").to_str().unwrap().to_string();
    let mut args = devnet_args(&data, "op");
    args.extend(["--webhook-concurrency-per-merchant".into(), "2".into()]);
    let node = spawn(&args);
    let api = Api::default();

    // A merchant's webhook points at a receiver that never answers; it asks for 6 test
    // deliveries.
    let merchant = bitcoin::secp256k1::PublicKey::from_secret_key(
        &bitcoin::secp256k1::Secp256k1::new(),
        &bitcoin::secp256k1::SecretKey::from_slice(&[5; 32]).unwrap(),
    );
    let mkey = api
        .ok(
            &node.api,
            "op",
            "POST",
            "/v1/merchants",
            Some(json!({"name": "Slow", "node_id": merchant.to_string()})),
        )
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let (pit, held) = tarpit().await;
    let slow = api
        .ok(
            &node.api,
            &mkey,
            "POST",
            "/v1/webhooks",
            Some(json!({"url": pit})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for _ in 0..6 {
        api.ok(
            &node.api,
            &mkey,
            "POST",
            &format!("/v1/webhooks/{slow}/test"),
            None,
        )
        .await;
    }
    wait_for("the merchant's deliveries under way", async || {
        held.load(Ordering::SeqCst) >= 2
    })
    .await;

    // The operator's delivery goes out while the merchant's hang.
    let (url, r) = receiver().await;
    r.up.store(true, Ordering::SeqCst);
    let hook = api
        .ok(
            &node.api,
            "op",
            "POST",
            "/v1/webhooks",
            Some(json!({"url": url})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api.ok(
        &node.api,
        "op",
        "POST",
        &format!("/v1/webhooks/{hook}/test"),
        None,
    )
    .await;
    wait_for("the operator's delivery", async || {
        !r.delivered.lock().unwrap().is_empty()
    })
    .await;
    let mine = api
        .ok(&node.api, &mkey, "GET", "/v1/webhooks/deliveries", None)
        .await;
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|d| d["attempts"] == 0 && d["status"] == "pending"),
        "none of the merchant's hanging deliveries had ended: {mine}"
    );
    // At most 2 of the merchant's at once.
    assert_eq!(held.load(Ordering::SeqCst), 2);

    // Test deliveries pending for a merchant are capped (20): the 21st is refused.
    let test = |key: String| {
        let (api, base, slow) = (api.clone(), node.api.clone(), slow.clone());
        async move {
            api.raw(
                &base,
                Some(&key),
                "POST",
                &format!("/v1/webhooks/{slow}/test"),
                None,
            )
            .await
        }
    };
    for _ in 6..20 {
        assert_eq!(test(mkey.clone()).await.0, 202);
    }
    let (status, v) = test(mkey.clone()).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(v["error"]["code"], "quota_exceeded");
}
