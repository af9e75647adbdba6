//! The store on an SQLite file (and PostgreSQL when `HUB_TEST_POSTGRES_URL` is set):
//! batched upserts (the group commit's unit), slots, triggered appointments, deletes,
//! pruning, and everything still there after reopening.

mod common;

use common::*;
use watchtower::store::{NewAppointment, Status, Store, Upsert};
use watchtower::Locator;

fn appointment(user: u8, locator: u8, tag: Option<u8>) -> NewAppointment {
    NewAppointment {
        user_id: bitcoin::secp256k1::PublicKey::from_secret_key(
            watchtower::sig::secp(),
            &key(user),
        ),
        locator: Locator([locator; 16]),
        encrypted_blob: vec![locator; 100],
        to_self_delay: 144,
        tag: tag.map(|t| vec![t; 16]),
        user_signature: "sig".into(),
        start_height: 7,
    }
}

async fn store_round_trip(url: &str) {
    let store = Store::open(url).await.unwrap();
    let a = appointment(1, 1, Some(9));
    store.upsert_user(&a.user_id, 100, 0).await.unwrap();
    let mut replaced = a.clone();
    replaced.encrypted_blob = vec![2; 120];
    let out = store
        .upsert_appointments(&[
            (a.clone(), true),
            (replaced.clone(), true),
            (appointment(1, 2, None), false),
            (appointment(1, 3, Some(9)), true),
        ])
        .await
        .unwrap();
    let (Upsert::Created(id), Upsert::Updated(same)) = (out[0], out[1]) else {
        panic!("{out:?}");
    };
    assert_eq!(id, same);
    assert_eq!(out[2], Upsert::NoSlot);
    assert!(matches!(out[3], Upsert::Created(_)));

    let breach = chain(1).await.breach();
    store
        .set_responding(id, &breach.breach.compute_txid(), 5, &breach.justice)
        .await
        .unwrap();
    assert_eq!(
        store.upsert_appointment(&a, true).await.unwrap(),
        Upsert::Triggered
    );
    // Penalties in flight survive deletes and pruning.
    assert_eq!(
        store
            .delete_by_tag(&a.user_id, &[9; 16])
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.prune_expired(1000).await.unwrap().is_empty());
    store.close().await;

    let store = Store::open(url).await.unwrap();
    let got = store.appointment(id).await.unwrap().unwrap();
    assert_eq!(got.status, Status::Responding);
    assert_eq!(got.appointment.encrypted_blob, replaced.encrypted_blob);
    assert_eq!(got.penalty_tx, Some(breach.justice.clone()));
    assert_eq!(store.responding().await.unwrap().len(), 1);
    assert!(store.watching().await.unwrap().is_empty());
    store.reset_to_watching(id).await.unwrap();
    assert_eq!(
        store.watching().await.unwrap(),
        vec![(id, Locator([1; 16]))]
    );
    assert_eq!(store.prune_expired(1000).await.unwrap().len(), 1);
    assert_eq!(store.count().await.unwrap(), 0);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    store_round_trip(&format!(
        "sqlite://{}",
        dir.path().join("t.sqlite").display()
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_on_postgres() {
    let Some(db) = scenarios::postgres_db("tower_store").await else {
        eprintln!("HUB_TEST_POSTGRES_URL not set: PostgreSQL store test skipped");
        return;
    };
    store_round_trip(&db.url).await;
}
