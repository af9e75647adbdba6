//! The tower benchmark: how fast a tower accepts appointments (durably, through the HTTP API), how
//! many bytes each costs in the database, and how long scanning one block takes against
//! a large number of stored appointments.
//!
//!     cargo bench -p watchtower --bench tower -- [--http N] [--stored N] [--block-txs N]

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::Txid;
use chain::{ChainSource, Devnet};
use std::sync::Arc;
use std::time::Instant;
use watchtower::client::{Appointment, TowerClient};
use watchtower::store::Store;
use watchtower::{Tower, TowerConfig};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let http_count = arg("--http", 2_000);
    let stored = arg("--stored", 1_000_000);
    let block_txs = arg("--block-txs", 4_000);
    let dir = tempfile::tempdir()?;
    let mut rng = watchtower::bench::Rng(7);
    let chain: Arc<dyn ChainSource> = Arc::new(Devnet::in_memory());
    let config = TowerConfig {
        max_appointments: u32::MAX,
        ..TowerConfig::default()
    };

    // 1. Appointments accepted per second through the HTTP API, each durable (SQLite,
    //    synchronous=FULL) before its reply; 16 clients at once, signatures included.
    let url = format!("sqlite://{}", dir.path().join("http.sqlite").display());
    let store = Store::open(&url).await?;
    let tower = Tower::open(store.clone(), chain.clone(), config.clone()).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = watchtower::api::router(tower.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let clients = 16;
    let mut work = Vec::new();
    for c in 0..clients {
        let client = TowerClient::new(&base, SecretKey::from_slice(&[c as u8 + 1; 32])?);
        client.register().await?;
        let appointments: Vec<Appointment> = (0..http_count / clients)
            .map(|_| {
                let justice = watchtower::bench::justice_like(&mut rng);
                Appointment::new(Txid::from_byte_array(rng.bytes32()), &justice, 144)
            })
            .collect();
        work.push((client, appointments));
    }
    let blob_len = work[0].1[0].encrypted_blob.len();
    let start = Instant::now();
    let tasks: Vec<_> = work
        .into_iter()
        .map(|(client, appointments)| {
            tokio::spawn(async move {
                for a in &appointments {
                    client.add_appointment(a).await?;
                }
                Ok::<usize, watchtower::client::ClientError>(appointments.len())
            })
        })
        .collect();
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "HTTP API: {accepted} appointments ({blob_len}-byte blobs, {clients} clients) in {secs:.2} s = {:.0} appointments/s, each durable before its reply",
        accepted as f64 / secs
    );
    store.close().await;

    // 2 and 3. A tower holding `stored` appointments: bytes per appointment, and the
    //    watcher's lookup of one block against them after a restart.
    let r = watchtower::bench::scan_benchmark(dir.path(), chain, stored, block_txs).await?;
    println!(
        "Store: {} appointments written in batches of 10000 in {:.1} s; database {:.1} MB = {:.0} bytes per appointment ({}-byte blob)",
        r.stored,
        r.fill.as_secs_f64(),
        r.db_bytes as f64 / 1e6,
        r.db_bytes as f64 / r.stored.max(1) as f64,
        r.blob_len
    );
    println!(
        "Start-up: {} appointments loaded into the locator index in {:.2} s",
        r.stored,
        r.load.as_secs_f64()
    );
    println!("Scan: {}", r.scan_line());
    Ok(())
}
