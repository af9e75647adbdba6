//! A real `watchtower` process killed with SIGKILL while it holds appointments, while a
//! breach is mined without it, and while a penalty is in flight; after each restart it
//! still has every appointment and completes the penalty. On SQLite, and on PostgreSQL
//! when `HUB_TEST_POSTGRES_URL` is set.

mod common;

use bitcoin::hashes::Hash;
use common::*;
use watchtower::client::{Appointment, TowerClient};

async fn restarts(db: Option<String>) {
    let chain = chain(3).await;
    let dir = tempfile::tempdir().unwrap();
    // The password as the hub's devnet keeps it: in a file.
    let pw_file = dir.path().join("rpcpassword");
    std::fs::write(&pw_file, format!("{RPC_PASSWORD}\n")).unwrap();
    let mut args = vec![
        "--confirmations".to_string(),
        "3".to_string(),
        "--bitcoind-password-file".to_string(),
        pw_file.display().to_string(),
    ];
    if let Some(db) = &db {
        args.extend(["--database-url".to_string(), db.clone()]);
    }
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let mut tower = spawn_tower(&chain.rpc_url, dir.path(), &args);
    let client = TowerClient::new(&tower.url, key(70));
    client.register().await.unwrap();

    // 18 appointments for commitments that never appear, and two real breaches.
    let mut appointments = Vec::new();
    let b1 = chain.breach();
    let b2 = chain.breach();
    for n in 0..18u8 {
        let txid = bitcoin::Txid::from_byte_array([n + 1; 32]);
        appointments.push(Appointment::new(txid, &b1.justice, 144));
    }
    appointments.push(Appointment::new(b1.breach.compute_txid(), &b1.justice, 144));
    appointments.push(Appointment::new(b2.breach.compute_txid(), &b2.justice, 144));
    for a in &appointments {
        client.add_appointment(a).await.unwrap();
    }

    tower.kill9();
    tower = spawn_tower(&chain.rpc_url, dir.path(), &args);
    let client = TowerClient::new(&tower.url, key(70));
    for a in &appointments {
        let s = client.appointment_status(a.locator).await.unwrap();
        assert_eq!(s.status, "watching");
    }
    assert_eq!(client.info().await.unwrap().appointments, 20);

    // A breach mined while the tower is down is found when it comes back.
    tower.kill9();
    chain.broadcast(&b1.breach);
    chain.mine(1);
    tower = spawn_tower(&chain.rpc_url, dir.path(), &args);
    let client = TowerClient::new(&tower.url, key(70));
    wait_until("penalty 1 broadcast after restart", || async {
        chain.in_mempool(&b1.justice)
    })
    .await;
    let l1 = appointments[18].locator;
    assert_eq!(
        client.appointment_status(l1).await.unwrap().status,
        "responding"
    );

    // Killed with the penalty in flight; it confirms while the tower is down and after.
    tower.kill9();
    chain.mine(1);
    tower = spawn_tower(&chain.rpc_url, dir.path(), &args);
    let client = TowerClient::new(&tower.url, key(70));
    chain.mine(2);
    wait_until("penalty 1 confirmed", || async {
        client
            .appointment_status(l1)
            .await
            .map(|s| s.status == "confirmed" && s.confirmations == 3)
            .unwrap_or(false)
    })
    .await;

    // Killed right as the second breach is mined.
    chain.broadcast(&b2.breach);
    chain.mine(1);
    tower.kill9();
    tower = spawn_tower(&chain.rpc_url, dir.path(), &args);
    let client = TowerClient::new(&tower.url, key(70));
    wait_until("penalty 2 broadcast", || async {
        chain.in_mempool(&b2.justice)
    })
    .await;
    chain.mine(3);
    let l2 = appointments[19].locator;
    wait_until("penalty 2 confirmed", || async {
        client
            .appointment_status(l2)
            .await
            .map(|s| s.status == "confirmed")
            .unwrap_or(false)
    })
    .await;
    assert_eq!(chain.confirmations(&b1.justice).await, 7);
    assert_eq!(chain.confirmations(&b2.justice).await, 3);
    // Nothing lost along the way.
    assert_eq!(client.info().await.unwrap().appointments, 20);
    for a in &appointments[..18] {
        assert_eq!(
            client.appointment_status(a.locator).await.unwrap().status,
            "watching"
        );
    }
    drop(tower);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_lose_nothing_sqlite() {
    restarts(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restarts_lose_nothing_postgres() {
    let Some(db) = scenarios::postgres_db("tower_restart").await else {
        eprintln!("HUB_TEST_POSTGRES_URL not set: PostgreSQL restart test skipped");
        return;
    };
    restarts(Some(db.url.clone())).await;
}
