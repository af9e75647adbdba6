//! Storage on a real SQLite file and, when `HUB_TEST_POSTGRES_URL` names a server (CI sets
//! it), on a throw-away PostgreSQL database.

use hub::store::{GroupCommit, MonitorHtlc, Store, StoredChannel, Write};

fn channel(i: u8, status: &str, state: &[u8]) -> StoredChannel {
    StoredChannel {
        channel_id: [i; 32],
        peer_id: vec![2; 33],
        channel_index: u64::from(i),
        status: status.into(),
        state: state.to_vec(),
        updated_at: 1_700_000_000,
    }
}

fn htlc(offered: bool, id: u64) -> MonitorHtlc {
    MonitorHtlc {
        offered,
        id,
        payment_hash: [id as u8 + 0x40; 32],
        amount_msat: 1_000_000 + id,
        cltv_expiry: 500 + id as u32,
    }
}

async fn exercise(url: &str) {
    let store = Store::open(url).await.expect("open");
    store
        .write(&[
            Write::Channel(channel(1, "open", b"state-1")),
            Write::RevokedHtlcs {
                channel_id: [1; 32],
                commitment_number: 7,
                htlcs: vec![htlc(false, 0), htlc(true, 0)],
            },
            Write::Meta {
                key: "next_channel_index".into(),
                value: vec![2],
            },
        ])
        .await
        .unwrap();
    // Upsert replaces the state.
    store
        .write(&[Write::Channel(channel(1, "closing", b"state-2"))])
        .await
        .unwrap();
    assert_eq!(
        store.channel(&[1; 32]).await.unwrap().unwrap().state,
        b"state-2"
    );
    // The monitor's HTLCs: each once, with the range of commitments it was in.
    for n in 8..=12 {
        let mut htlcs = vec![htlc(true, 0)];
        if n >= 10 {
            htlcs.push(htlc(false, 1));
        }
        store
            .write(&[Write::RevokedHtlcs {
                channel_id: [1; 32],
                commitment_number: n,
                htlcs,
            }])
            .await
            .unwrap();
    }
    let at = |n| {
        let store = store.clone();
        async move { store.monitor_htlcs(&[1; 32], n).await.unwrap() }
    };
    assert_eq!(at(6).await, vec![]);
    assert_eq!(at(7).await, vec![htlc(false, 0), htlc(true, 0)]);
    assert_eq!(at(9).await, vec![htlc(true, 0)]);
    assert_eq!(at(12).await, vec![htlc(false, 1), htlc(true, 0)]);
    assert_eq!(at(13).await, vec![]);
    assert_eq!(store.monitor_htlcs(&[2; 32], 7).await.unwrap(), vec![]);
    assert_eq!(
        store.monitor_footprint(&[1; 32]).await.unwrap().0,
        3,
        "three HTLCs, three rows"
    );

    // A batch with one bad row (a peer id that is not a 33-byte key) is refused whole.
    let batch = [
        Write::Channel(channel(3, "open", b"state-3")),
        Write::Channel(StoredChannel {
            peer_id: vec![1, 2, 3],
            ..channel(4, "open", b"x")
        }),
    ];
    assert!(store.write(&batch).await.is_err());
    assert_eq!(
        store.channel(&[3; 32]).await.unwrap(),
        None,
        "all or nothing"
    );

    // Group commit: 200 concurrent writers share far fewer transactions, and all land.
    let group = GroupCommit::start(store.clone());
    let before = group.transactions();
    let mut tasks = Vec::new();
    for i in 10..210u16 {
        let g = group.clone();
        tasks.push(tokio::spawn(async move {
            let id = [(i % 256) as u8; 32];
            let mut c = channel(0, "open", &i.to_be_bytes());
            c.channel_id = id;
            c.channel_index = u64::from(i);
            g.commit(vec![Write::Channel(c)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("durable");
    }
    let used = group.transactions() - before;
    assert!(
        used < 200,
        "group commit batched 200 writes into {used} transactions"
    );
    store.close().await;

    // Everything is there after reopening.
    let store = Store::open(url).await.unwrap();
    let all = store.channels().await.unwrap();
    assert!(all.len() >= 201, "{} channels", all.len());
    assert_eq!(
        store.meta("next_channel_index").await.unwrap(),
        Some(vec![2])
    );
    store.close().await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    exercise(&format!("sqlite://{}", dir.path().join("hub.db").display())).await;
}

#[tokio::test]
async fn postgres_store() {
    let Some(db) = scenarios::postgres_db("store").await else {
        eprintln!("HUB_TEST_POSTGRES_URL not set: PostgreSQL store test skipped");
        return;
    };
    exercise(&db.url).await;
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    assert!(matches!(
        Store::open("mysql://x").await,
        Err(hub::store::StoreError::UnsupportedUrl)
    ));
}

/// The SQLite file (preimages, payment secrets, webhook secrets) is readable by its owner
/// only: created 0600, and an existing file with a looser mode is brought to 0600.
#[cfg(unix)]
#[tokio::test]
async fn sqlite_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.db");
    Store::open(&format!("sqlite://{}", fresh.display()))
        .await
        .expect("open");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o600);
    let wal = dir.path().join("fresh.db-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    let old = dir.path().join("old.db");
    std::fs::write(&old, b"").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
    Store::open(&format!("sqlite://{}", old.display()))
        .await
        .expect("open");
    assert_eq!(mode(&old), 0o600);
}
