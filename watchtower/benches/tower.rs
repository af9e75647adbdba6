//! The tower benchmark: how fast a tower accepts appointments (durably, through the HTTP API), how
//! many bytes each costs in the database, and how long scanning one block takes against
//! a large number of stored appointments.
//!
//!     cargo bench -p watchtower --bench tower -- [--http N] [--stored N] [--block-txs N]

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use chain::{ChainSource, Devnet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use watchtower::client::{Appointment, TowerClient};
use watchtower::store::{NewAppointment, Store};
use watchtower::{Locator, Tower, TowerConfig};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Deterministic pseudo-random bytes (splitmix64), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        b
    }
}

/// A justice transaction the size of a real one sweeping a revoked to_local output
/// (witness: signature, 0x01, the BOLT 3 to_local script).
fn justice_like(rng: &mut Rng) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array(rng.bytes32()), 0),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![0x30; 72], vec![1], vec![0x63; 79]]),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(990_000),
            script_pubkey: ScriptBuf::from_bytes([[0u8, 20].as_slice(), &[7u8; 20]].concat()),
        }],
    }
}

/// An ordinary block transaction: one input, two outputs.
fn block_tx(rng: &mut Rng) -> Transaction {
    let mut tx = justice_like(rng);
    tx.input[0].witness = Witness::from_slice(&[vec![0x30; 72], vec![2; 33]]);
    tx.output.push(tx.output[0].clone());
    tx
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let http_count = arg("--http", 2_000);
    let stored = arg("--stored", 1_000_000);
    let block_txs = arg("--block-txs", 4_000);
    let dir = tempfile::tempdir()?;
    let mut rng = Rng(7);
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
                let justice = justice_like(&mut rng);
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

    // 2. A tower holding `stored` appointments: bytes per appointment in the database.
    let url = format!("sqlite://{}", dir.path().join("big.sqlite").display());
    let store = Store::open(&url).await?;
    let user = bitcoin::secp256k1::PublicKey::from_secret_key(
        watchtower::sig::secp(),
        &SecretKey::from_slice(&[0x42; 32])?,
    );
    store.upsert_user(&user, u32::MAX, 0).await?;
    let signature = "y".repeat(104);
    // Ten transactions of the scanned block are breaches of stored appointments.
    let breaches: Vec<Transaction> = (0..10).map(|_| block_tx(&mut rng)).collect();
    let start = Instant::now();
    let batch_size = 10_000;
    let mut done = 0;
    while done < stored {
        let n = batch_size.min(stored - done);
        let batch: Vec<NewAppointment> = (0..n)
            .map(|i| {
                let txid = match breaches.get(done + i) {
                    Some(tx) => tx.compute_txid(),
                    None => Txid::from_byte_array(rng.bytes32()),
                };
                NewAppointment {
                    user_id: user,
                    locator: Locator::from_txid(&txid),
                    encrypted_blob: watchtower::appointment::encrypt(
                        &justice_like(&mut rng),
                        &txid,
                    ),
                    to_self_delay: 144,
                    tag: None,
                    user_signature: signature.clone(),
                    start_height: 0,
                }
            })
            .collect();
        store.insert_many(&batch).await?;
        done += n;
    }
    let fill = start.elapsed();
    store.close().await;
    let size: u64 = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("big.sqlite"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "Store: {stored} appointments written in batches of {batch_size} in {:.1} s; database {:.1} MB = {:.0} bytes per appointment ({blob_len}-byte blob)",
        fill.as_secs_f64(),
        size as f64 / 1e6,
        size as f64 / stored.max(1) as f64
    );

    // 3. Scanning one block against them: load the index from the database as a restart
    //    does, then time the watcher's lookup over a block of `block_txs` transactions.
    let store = Store::open(&url).await?;
    let start = Instant::now();
    let tower = Tower::open(store, chain, config).await?;
    println!(
        "Start-up: {} appointments loaded into the locator index in {:.2} s",
        tower.watching(),
        start.elapsed().as_secs_f64()
    );
    let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
    let mut txdata: Vec<Transaction> = (0..block_txs.saturating_sub(breaches.len()))
        .map(|_| block_tx(&mut rng))
        .collect();
    for (k, b) in breaches.iter().enumerate() {
        txdata.insert((k * 397) % (txdata.len() + 1), b.clone());
    }
    let block = Block {
        header: genesis.header,
        txdata,
    };
    let runs = 20;
    let mut times: Vec<Duration> = Vec::new();
    let mut found = 0;
    for _ in 0..runs {
        // Txids are computed on every scan (a Transaction caches nothing).
        let start = Instant::now();
        found = tower.scan(&block).len();
        times.push(start.elapsed());
    }
    times.sort();
    let median = times[runs / 2];
    println!(
        "Scan: one block of {} transactions against {} stored appointments: median {:.2} ms, worst {:.2} ms over {runs} runs ({found} matches; target < 50 ms)",
        block.txdata.len(),
        tower.watching(),
        median.as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3,
    );
    Ok(())
}
