//! Synthetic appointments and blocks, and the block-scan measurement, for benchmarks:
//! the tower's own (`cargo bench -p watchtower`) and the workspace's system benchmark
//! (`cargo bench -p hub --bench system`) run the same code.

use crate::store::{NewAppointment, Store};
use crate::{Locator, Tower, TowerConfig};
use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use chain::ChainSource;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deterministic pseudo-random bytes (splitmix64), so runs are comparable.
pub struct Rng(pub u64);
impl Rng {
    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
    /// 32 pseudo-random bytes.
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for c in b.chunks_mut(8) {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        b
    }
}

/// A justice transaction the size of a real one sweeping a revoked to_local output
/// (witness: signature, 0x01, the BOLT 3 to_local script).
pub fn justice_like(rng: &mut Rng) -> Transaction {
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
pub fn block_tx(rng: &mut Rng) -> Transaction {
    let mut tx = justice_like(rng);
    tx.input[0].witness = Witness::from_slice(&[vec![0x30; 72], vec![2; 33]]);
    tx.output.push(tx.output[0].clone());
    tx
}

/// What scanning a block against many stored appointments cost.
pub struct ScanReport {
    /// Appointments stored (and loaded into the locator index).
    pub stored: usize,
    /// Time to write them, in batches of 10,000.
    pub fill: Duration,
    /// Size of the SQLite database holding them.
    pub db_bytes: u64,
    /// Size of one encrypted blob.
    pub blob_len: usize,
    /// Time to load the index at start-up.
    pub load: Duration,
    /// Transactions in the scanned block.
    pub block_txs: usize,
    /// Median and worst scan time over the runs.
    pub median: Duration,
    /// Worst scan time.
    pub worst: Duration,
    /// Runs timed.
    pub runs: usize,
    /// Breaches found in the block (10 are planted).
    pub matches: usize,
}

impl ScanReport {
    /// The scan figure, as the benchmarks print it.
    pub fn scan_line(&self) -> String {
        format!(
            "one block of {} transactions against {} stored appointments: median {:.2} ms, worst {:.2} ms over {} runs ({} breaches found; target < 50 ms)",
            self.block_txs,
            self.stored,
            self.median.as_secs_f64() * 1e3,
            self.worst.as_secs_f64() * 1e3,
            self.runs,
            self.matches
        )
    }
}

/// Stores `stored` appointments in an SQLite database under `dir`, restarts a tower on
/// it, and times the watcher's lookup of one block of `block_txs` transactions, ten of
/// which are breaches of stored appointments.
pub async fn scan_benchmark(
    dir: &Path,
    chain: Arc<dyn ChainSource>,
    stored: usize,
    block_txs: usize,
) -> anyhow::Result<ScanReport> {
    let mut rng = Rng(11);
    let config = TowerConfig {
        max_appointments: u32::MAX,
        ..TowerConfig::default()
    };
    let url = format!("sqlite://{}", dir.join("big.sqlite").display());
    let store = Store::open(&url).await?;
    let user = bitcoin::secp256k1::PublicKey::from_secret_key(
        crate::sig::secp(),
        &SecretKey::from_slice(&[0x42; 32])?,
    );
    store.upsert_user(&user, u32::MAX, 0).await?;
    let signature = "y".repeat(104);
    let breaches: Vec<Transaction> = (0..10).map(|_| block_tx(&mut rng)).collect();
    let mut blob_len = 0;
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
                let encrypted_blob = crate::appointment::encrypt(&justice_like(&mut rng), &txid);
                blob_len = encrypted_blob.len();
                NewAppointment {
                    user_id: user,
                    locator: Locator::from_txid(&txid),
                    encrypted_blob,
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
    let db_bytes: u64 = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("big.sqlite"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    let store = Store::open(&url).await?;
    let start = Instant::now();
    let tower = Tower::open(store, chain, config).await?;
    let load = start.elapsed();
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
    let mut matches = 0;
    for _ in 0..runs {
        // Txids are computed on every scan (a Transaction caches nothing).
        let start = Instant::now();
        matches = tower.scan(&block).len();
        times.push(start.elapsed());
    }
    times.sort();
    Ok(ScanReport {
        stored: tower.watching(),
        fill,
        db_bytes,
        blob_len,
        load,
        block_txs: block.txdata.len(),
        median: times[runs / 2],
        worst: times[runs - 1],
        runs,
        matches,
    })
}
