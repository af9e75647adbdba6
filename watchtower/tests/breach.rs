//! A real `watchtower` process watching an in-process devnet over JSON-RPC: a breach is
//! punished and the penalty confirmed; a reorg that removes the breach sends the tower
//! back to watching, and the breach coming back gets the penalty (rebroadcast by the
//! tower) confirmed again.

mod common;

use common::*;
use watchtower::client::{Appointment, TowerClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mined_breach_is_punished_and_the_penalty_confirmed() {
    let chain = chain(2).await;
    let dir = tempfile::tempdir().unwrap();
    let tower = spawn_tower(&chain.rpc_url, dir.path(), &["--confirmations", "3"]);
    let client = TowerClient::new(&tower.url, key(50));
    let reg = client.register().await.unwrap();
    assert_eq!(reg.user_id, client.user_id().to_string());

    let b = chain.breach();
    let appointment = Appointment::new(b.breach.compute_txid(), &b.justice, 144);
    let receipt = client.add_appointment(&appointment).await.unwrap();
    assert!(!receipt.updated);
    assert_eq!(receipt.available_slots, reg.available_slots - 1);
    let status = client
        .appointment_status(appointment.locator)
        .await
        .unwrap();
    assert_eq!(status.status, "watching");

    chain.broadcast(&b.breach);
    chain.mine(1);
    let penalty = b.justice.compute_txid();
    wait_until("penalty broadcast", || async {
        chain.in_mempool(&b.justice)
    })
    .await;
    let status = client
        .appointment_status(appointment.locator)
        .await
        .unwrap();
    assert_eq!(status.status, "responding");
    assert_eq!(
        status.breach_txid,
        Some(b.breach.compute_txid().to_string())
    );
    assert_eq!(status.penalty_txid, Some(penalty.to_string()));

    chain.mine(3);
    wait_until("penalty confirmed", || async {
        client
            .appointment_status(appointment.locator)
            .await
            .map(|s| s.status == "confirmed" && s.confirmations >= 3)
            .unwrap_or(false)
    })
    .await;
    assert_eq!(chain.confirmations(&b.justice).await, 3);
    let _ = penalty;

    let metrics = reqwest::get(format!("{}/metrics", tower.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "watchtower_appointments 1",
        "watchtower_breaches_seen_total 1",
        "watchtower_penalties_broadcast_total 1",
        "watchtower_penalties_confirmed_total 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }

    // An appointment that arrives after its breach was mined (a late retry) is acted on.
    let late = chain.breach();
    chain.broadcast(&late.breach);
    chain.mine(1);
    wait_until("tower saw the block", || async {
        client.info().await.map(|i| i.block_height) == Ok(chain.devnet.tip().1)
    })
    .await;
    let a = Appointment::new(late.breach.compute_txid(), &late.justice, 144);
    client.add_appointment(&a).await.unwrap();
    assert_eq!(
        client.appointment_status(a.locator).await.unwrap().status,
        "responding"
    );
    assert!(chain.in_mempool(&late.justice));

    // SIGTERM stops it gracefully.
    let mut tower = tower;
    let pid = tower.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(tower.child.wait().unwrap().success());
    assert!(tower.log_text().contains("shutting down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorg_that_removes_the_breach_sends_the_tower_back_to_watching() {
    let chain = chain(2).await;
    let dir = tempfile::tempdir().unwrap();
    let tower = spawn_tower(&chain.rpc_url, dir.path(), &["--confirmations", "3"]);
    let client = TowerClient::new(&tower.url, key(51));
    client.register().await.unwrap();
    let (b, conflict) = chain.breach_with_fee(1_000);
    let appointment = Appointment::new(b.breach.compute_txid(), &b.justice, 144);
    client.add_appointment(&appointment).await.unwrap();

    // The breach is mined in X, the tower's penalty in the next block.
    chain.broadcast(&b.breach);
    let x = chain.mine(1)[0];
    wait_until("penalty broadcast", || async {
        chain.in_mempool(&b.justice)
    })
    .await;
    chain.mine(1);
    wait_until("penalty has one confirmation", || async {
        client
            .appointment_status(appointment.locator)
            .await
            .map(|s| s.status == "responding" && s.confirmations == 1)
            .unwrap_or(false)
    })
    .await;

    // Reorg: X and the penalty's block leave the chain; a conflicting spend replaces the
    // breach in the mempool, so the penalty is gone too.
    chain.devnet.invalidate_block(&x).unwrap();
    chain.broadcast(&conflict);
    assert!(!chain.in_mempool(&b.breach) && !chain.in_mempool(&b.justice));
    wait_until("tower back to watching", || async {
        client
            .appointment_status(appointment.locator)
            .await
            .map(|s| s.status == "watching" && s.penalty_txid.is_none())
            .unwrap_or(false)
    })
    .await;

    // The breach comes back in a block of its own: only the tower can bring the penalty.
    let tip = chain.devnet.tip().0;
    chain
        .devnet
        .mine_block_on(&tip, vec![b.breach.clone()], p2wpkh(&key(9)))
        .unwrap();
    wait_until("penalty rebroadcast", || async {
        chain.in_mempool(&b.justice)
    })
    .await;
    chain.mine(3);
    wait_until("penalty confirmed again", || async {
        client
            .appointment_status(appointment.locator)
            .await
            .map(|s| s.status == "confirmed")
            .unwrap_or(false)
    })
    .await;
    assert_eq!(chain.confirmations(&b.justice).await, 3);
    assert!(tower
        .log_text()
        .contains("breach left the chain; watching again"));
}

/// A penalty that can never get in (here it pays no fee, below every relay minimum) is
/// broadcast again at each block only until the breach's CSV window (and a margin) has
/// passed; then the tower gives it up and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_penalty_that_never_confirms_is_given_up_after_the_csv_window() {
    let chain = chain(2).await;
    let dir = tempfile::tempdir().unwrap();
    let tower = spawn_tower(&chain.rpc_url, dir.path(), &["--confirmations", "1"]);
    let client = TowerClient::new(&tower.url, key(52));
    client.register().await.unwrap();

    let b = chain.breach();
    let no_fee = spend(
        bitcoin::OutPoint::new(b.breach.compute_txid(), 0),
        b.breach.output[0].value,
        &key(2),
        p2wpkh(&key(3)),
        bitcoin::Amount::ZERO,
    );
    const CSV: u32 = 10;
    let appointment = Appointment::new(b.breach.compute_txid(), &no_fee, CSV);
    client.add_appointment(&appointment).await.unwrap();
    // An appointment naming a delay beyond any node's maximum is refused.
    let too_long = Appointment::new(chain.breach().breach.compute_txid(), &no_fee, 2017);
    match client.add_appointment(&too_long).await {
        Err(watchtower::client::ClientError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (400, "invalid_to_self_delay"))
        }
        other => panic!("a to_self_delay of 2017 accepted: {other:?}"),
    }

    chain.broadcast(&b.breach);
    chain.mine(1);
    let status = || async {
        client
            .appointment_status(appointment.locator)
            .await
            .unwrap()
    };
    wait_until("the breach found", || async {
        status().await.status == "responding"
    })
    .await;
    let breach_height = status().await.breach_height.unwrap();
    // Within the window (and its margin of 6 blocks) it keeps trying.
    for _ in 0..CSV + 5 {
        chain.mine(1);
    }
    wait_until("the tower at the tip", || async {
        reqwest::get(format!("{}/v1/info", tower.url))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()["block_height"]
            .as_u64()
            == Some(u64::from(breach_height + CSV + 5))
    })
    .await;
    assert_eq!(status().await.status, "responding");
    assert!(!chain.in_mempool(&no_fee));
    // One more block: given up, with the reason.
    chain.mine(1);
    wait_until("given up", || async { status().await.status == "invalid" }).await;
    let s = status().await;
    assert!(
        s.reason.as_deref().unwrap_or("").contains("CSV window"),
        "{s:?}"
    );
}
