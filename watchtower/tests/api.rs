//! The REST API against a real `watchtower` process: bad signatures, unknown users,
//! quotas, oversized or malformed blobs are refused with stable codes; undecryptable
//! blobs and blobs that do not spend the breach are ignored with a logged reason; the
//! tower keeps running and keeps every good appointment; delete by tag and by locator;
//! subscription expiry prunes appointments.

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::transaction::Version;
use bitcoin::{Amount, Transaction, TxOut};
use common::*;
use serde_json::{json, Value};
use watchtower::appointment;
use watchtower::client::{Appointment, ClientError, TowerClient};
use watchtower::sig;

fn refused_code(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Refused { status, code, .. }) => (status, code),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn post(url: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The tower's id, as `/v1/info` gives it.
async fn tower_id(url: &str) -> [u8; 32] {
    let info: Value = reqwest::get(format!("{url}/v1/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    hex::decode(info["tower_id"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

/// A fresh request counter: the clock in milliseconds, never the same twice here.
static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn counter() -> u64 {
    LAST.fetch_max(now_ms(), std::sync::atomic::Ordering::SeqCst);
    LAST.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
}

/// Waits until the clock has passed every counter [`counter`] handed out (they run
/// ahead of it when many are taken in one millisecond), so a client reading the clock
/// is above them.
async fn clock_past_counters() {
    while now_ms() <= LAST.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// An add-appointment request for `a` by `user`, signed by `signer` for tower `tower`
/// with counter `n`.
fn signed_request(
    tower: &[u8; 32],
    n: u64,
    a: &Appointment,
    user: &bitcoin::secp256k1::PublicKey,
    signer: &bitcoin::secp256k1::SecretKey,
) -> Value {
    json!({
        "user_id": user.to_string(),
        "appointment": {
            "locator": a.locator.to_string(),
            "encrypted_blob": hex::encode(&a.encrypted_blob),
            "to_self_delay": a.to_self_delay,
        },
        "counter": n,
        "signature": sig::sign(&appointment::request_message(tower, n, &a.message()), signer),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_nothing_is_lost() {
    let chain = chain(4).await;
    let dir = tempfile::tempdir().unwrap();
    let tower = spawn_tower(
        &chain.rpc_url,
        dir.path(),
        &[
            "--confirmations",
            "1",
            "--max-appointments",
            "3",
            "--max-blob-size",
            "1000",
            "--subscription-blocks",
            "30",
        ],
    );
    let url = &tower.url;
    assert_eq!(
        reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "ok"
    );
    let openapi: Value = reqwest::get(format!("{url}/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(openapi["paths"]["/v1/appointments"].is_object());

    let client = TowerClient::new(url, key(60));
    let b1 = chain.breach();
    let good = Appointment::new(b1.breach.compute_txid(), &b1.justice, 144);

    // Unknown user.
    assert_eq!(
        refused_code(client.add_appointment(&good).await),
        (401, "unknown_user".into())
    );
    // Registration must be signed: with no signature, or another key's, it is refused.
    let tid = tower_id(url).await;
    let me = client.user_id();
    let (s, v) = post(
        &format!("{url}/v1/register"),
        json!({"user_id": me.to_string()}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_body")),
        "{v}"
    );
    let n = counter();
    let (s, v) = post(
        &format!("{url}/v1/register"),
        json!({"user_id": me.to_string(), "counter": n,
               "signature": sig::sign(&appointment::request_message(&tid, n, &appointment::register_message()), &key(61))}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    client.register().await.unwrap();

    // Signed by someone else, malformed, or over different bytes.
    let (s, v) = post(
        &format!("{url}/v1/appointments"),
        signed_request(&tid, counter(), &good, &me, &key(61)),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let mut req = signed_request(&tid, counter(), &good, &me, &key(60));
    req["signature"] = json!("not-a-signature");
    let (s, v) = post(&format!("{url}/v1/appointments"), req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let mut req = signed_request(&tid, counter(), &good, &me, &key(60));
    req["appointment"]["to_self_delay"] = json!(145);
    let (s, v) = post(&format!("{url}/v1/appointments"), req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );

    // Malformed fields and bodies.
    let mut req = signed_request(&tid, counter(), &good, &me, &key(60));
    req["appointment"]["locator"] = json!("abcd");
    let (s, v) = post(&format!("{url}/v1/appointments"), req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_locator"))
    );
    let mut req = signed_request(&tid, counter(), &good, &me, &key(60));
    req["appointment"]["encrypted_blob"] = json!("zz");
    let (s, v) = post(&format!("{url}/v1/appointments"), req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_blob"))
    );
    let mut req = signed_request(&tid, counter(), &good, &me, &key(60));
    req["user_id"] = json!("02abcd");
    let (s, v) = post(&format!("{url}/v1/appointments"), req).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("invalid_user_id"))
    );
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/appointments"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_body");

    // Oversized blob (both a too-long field and a too-large body).
    let mut big = good.clone();
    big.encrypted_blob = vec![7u8; 1001];
    assert_eq!(
        refused_code(client.add_appointment(&big).await),
        (413, "blob_too_large".into())
    );
    big.encrypted_blob = vec![7u8; 20_000];
    assert_eq!(refused_code(client.add_appointment(&big).await).0, 413);

    // Three slots: the good one, an undecryptable one, one that does not spend its breach.
    client.add_appointment(&good).await.unwrap();
    let b2 = chain.breach();
    let mut garbage = Appointment::new(b2.breach.compute_txid(), &b2.justice, 144);
    garbage.encrypted_blob = vec![0x5a; 200];
    client.add_appointment(&garbage).await.unwrap();
    let b3 = chain.breach();
    let unrelated = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: b1.justice.input.clone(),
        output: vec![TxOut {
            value: Amount::from_sat(1_000),
            script_pubkey: p2wpkh(&key(8)),
        }],
    };
    let wrong = Appointment {
        locator: watchtower::Locator::from_txid(&b3.breach.compute_txid()),
        encrypted_blob: appointment::encrypt(&unrelated, &b3.breach.compute_txid()),
        to_self_delay: 144,
        tag: None,
    };
    client.add_appointment(&wrong).await.unwrap();
    let b4 = chain.breach();
    let fourth = Appointment::new(b4.breach.compute_txid(), &b4.justice, 144);
    assert_eq!(
        refused_code(client.add_appointment(&fourth).await),
        (403, "quota_exceeded".into())
    );
    // Re-sending a locator updates it and takes no slot.
    let receipt = client.add_appointment(&good).await.unwrap();
    assert!(receipt.updated);
    assert_eq!(receipt.available_slots, 0);

    // Someone else cannot read it.
    let other = TowerClient::new(url, key(62));
    other.register().await.unwrap();
    assert_eq!(
        refused_code(other.appointment_status(good.locator).await),
        (404, "appointment_not_found".into())
    );
    // A status request signed by the wrong key.
    let q = [
        ("user_id", me.to_string()),
        (
            "signature",
            sig::sign(&appointment::status_message(&good.locator), &key(62)),
        ),
    ];
    let r = reqwest::Client::new()
        .get(format!("{url}/v1/appointments/{}", good.locator))
        .query(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);

    // All three breaches are mined together.
    for b in [&b1, &b2, &b3] {
        chain.broadcast(&b.breach);
    }
    chain.mine(1);
    wait_until("good penalty broadcast", || async {
        chain.in_mempool(&b1.justice)
    })
    .await;
    chain.mine(1);
    wait_until("good penalty confirmed", || async {
        client
            .appointment_status(good.locator)
            .await
            .map(|s| s.status == "confirmed")
            .unwrap_or(false)
    })
    .await;
    let s = client.appointment_status(garbage.locator).await.unwrap();
    assert_eq!(s.status, "invalid");
    assert!(s.reason.unwrap().contains("does not decrypt"));
    let s = client.appointment_status(wrong.locator).await.unwrap();
    assert_eq!(s.status, "invalid");
    assert!(s
        .reason
        .unwrap()
        .contains("does not spend the breaching transaction"));
    let log = tower.log_text();
    assert!(log.contains("no valid penalty; ignored"), "{log}");
    assert_eq!(client.info().await.unwrap().appointments, 3);

    // Delete by locator frees a slot; a tagged appointment is deleted by its tag.
    let d = client.delete_locators(&[garbage.locator]).await.unwrap();
    assert_eq!((d.deleted, d.available_slots), (1, 1));
    let tagged = fourth.clone().with_tag([7u8; 16]);
    client.add_appointment(&tagged).await.unwrap();
    assert_eq!(client.delete_by_tag(&[8u8; 16]).await.unwrap().deleted, 0);
    let d = client.delete_by_tag(&[7u8; 16]).await.unwrap();
    assert_eq!((d.deleted, d.available_slots), (1, 1));
    assert_eq!(
        refused_code(client.appointment_status(tagged.locator).await),
        (404, "appointment_not_found".into())
    );
    // A delete signed by someone else is refused.
    let n = counter();
    let (s, v) = post(
        &format!("{url}/v1/appointments/delete"),
        json!({"user_id": me.to_string(), "tag": hex::encode([7u8; 16]), "counter": n,
               "signature": sig::sign(&appointment::request_message(&tid, n, &appointment::delete_tag_message(&[7u8; 16])), &key(62))}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );

    // The subscription ends: appointments are pruned, new ones refused until renewal.
    let waiting = Appointment::new(b4.breach.compute_txid(), &b4.justice, 144);
    other.add_appointment(&waiting).await.unwrap();
    chain.mine(30);
    wait_until("expired appointments pruned", || async {
        matches!(
            other.appointment_status(waiting.locator).await,
            Err(ClientError::Refused { status: 404, .. })
        )
    })
    .await;
    assert_eq!(
        refused_code(other.add_appointment(&waiting).await),
        (403, "subscription_expired".into())
    );
    let renewed = other.register().await.unwrap();
    assert_eq!(renewed.available_slots, 3);
    other.add_appointment(&waiting).await.unwrap();
    assert!(reqwest::get(format!("{url}/healthz"))
        .await
        .unwrap()
        .status()
        .is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tower_takes_no_more_users_than_it_is_set_to() {
    let chain = chain(1).await;
    let dir = tempfile::tempdir().unwrap();
    let tower = spawn_tower(&chain.rpc_url, dir.path(), &["--max-users", "2"]);
    let a = TowerClient::new(&tower.url, key(80));
    let b = TowerClient::new(&tower.url, key(81));
    let c = TowerClient::new(&tower.url, key(82));
    a.register().await.unwrap();
    b.register().await.unwrap();
    assert_eq!(refused_code(c.register().await), (503, "tower_full".into()));
    // A user already registered renews as before.
    a.register().await.unwrap();
    // The refused one holds nothing.
    let b1 = chain.breach();
    let appointment = Appointment::new(b1.breach.compute_txid(), &b1.justice, 144);
    assert_eq!(
        refused_code(c.add_appointment(&appointment).await),
        (401, "unknown_user".into())
    );
}

/// Every request that changes something names the tower and a counter that must grow:
/// a captured request is refused when replayed, at another tower, or once it is old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_or_misdirected_requests_are_refused() {
    let chain = chain(2).await;
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let tower = spawn_tower(&chain.rpc_url, dirs[0].path(), &[]);
    let other_tower = spawn_tower(&chain.rpc_url, dirs[1].path(), &[]);
    let url = &tower.url;
    let client = TowerClient::new(url, key(90));
    client.register().await.unwrap();
    TowerClient::new(&other_tower.url, key(90))
        .register()
        .await
        .unwrap();
    let me = client.user_id();
    let tid = tower_id(url).await;
    assert_ne!(
        tid,
        tower_id(&other_tower.url).await,
        "each tower has its own id"
    );
    let b = chain.breach();
    let a = Appointment::new(b.breach.compute_txid(), &b.justice, 144);

    // The same signed request twice: taken once.
    let req = signed_request(&tid, counter(), &a, &me, &key(90));
    let (s, v) = post(&format!("{url}/v1/appointments"), req.clone()).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&format!("{url}/v1/appointments"), req.clone()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("replayed_request"))
    );
    // An older one, captured before, after a newer one went through: refused too (it
    // would roll the appointment back).
    let older = signed_request(&tid, counter(), &a, &me, &key(90));
    let newer = signed_request(&tid, counter(), &a, &me, &key(90));
    assert_eq!(post(&format!("{url}/v1/appointments"), newer).await.0, 200);
    let (s, v) = post(&format!("{url}/v1/appointments"), older).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("replayed_request"))
    );
    // Sent to another tower, where the same key is registered: the signature names the
    // first tower, so it is not valid there.
    let (s, v) = post(
        &format!("{}/v1/appointments", other_tower.url),
        signed_request(&tid, counter(), &a, &me, &key(90)),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    // A counter eleven minutes old (or ahead) is refused whatever came before.
    for skew in [-11i64, 11] {
        let n = (counter() as i64 + skew * 60_000) as u64;
        let (s, v) = post(
            &format!("{url}/v1/appointments"),
            signed_request(&tid, n, &a, &me, &key(90)),
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("invalid_counter")),
            "{skew}"
        );
    }
    // The client library keeps working after all this, also when another sender with
    // its key has just used a counter as high as its next one (it tries once more above).
    clock_past_counters().await;
    let (s, _) = post(
        &format!("{url}/v1/appointments"),
        signed_request(&tid, counter() + 1, &a, &me, &key(90)),
    )
    .await;
    assert_eq!(s, 200);
    assert!(client.add_appointment(&a).await.unwrap().updated);
}
