//! Shared by the tower scenarios: an in-process devnet served over Bitcoin Core JSON-RPC
//! on 127.0.0.1:0, real `watchtower` processes talking to it, and hand-signed P2WPKH
//! transactions standing in for a breach and its justice transaction.
#![allow(dead_code)]

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use chain::rpc::server::{serve, RpcAuth, ServerHandle};
use chain::Devnet;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const RPC_PASSWORD: &str = "tower-test-password";

pub fn key(n: u8) -> SecretKey {
    SecretKey::from_slice(&[n; 32]).unwrap()
}

pub fn p2wpkh(k: &SecretKey) -> ScriptBuf {
    let pk = CompressedPublicKey(PublicKey::from_secret_key(&Secp256k1::new(), k));
    ScriptBuf::new_p2wpkh(&pk.wpubkey_hash())
}

/// Spends a P2WPKH output of `k` (worth `value`) to `to`, keeping `fee`.
pub fn spend(
    prev: OutPoint,
    value: Amount,
    k: &SecretKey,
    to: ScriptBuf,
    fee: Amount,
) -> Transaction {
    let secp = Secp256k1::new();
    let pk = PublicKey::from_secret_key(&secp, k);
    let mut tx = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: prev,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: value - fee,
            script_pubkey: to,
        }],
    };
    let sighash = SighashCache::new(&tx)
        .p2wpkh_signature_hash(0, &p2wpkh(k), value, EcdsaSighashType::All)
        .unwrap();
    let sig = secp.sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), k);
    tx.input[0].witness = Witness::p2wpkh(&bitcoin::ecdsa::Signature::sighash_all(sig), &pk);
    tx
}

/// A breach and the justice transaction that sweeps its output.
pub struct Breach {
    pub breach: Transaction,
    pub justice: Transaction,
}

pub struct Chain {
    pub devnet: Devnet,
    pub rpc_url: String,
    _server: ServerHandle,
    coinbases: std::sync::Mutex<Vec<Transaction>>,
}

/// A devnet with `coins` mature 50 BTC coinbases spendable by `key(1)`, served over RPC.
pub async fn chain(coins: u32) -> Chain {
    let devnet = Devnet::in_memory();
    let hashes = devnet.generate_to_script(coins, &p2wpkh(&key(1))).unwrap();
    devnet
        .generate_to_script(100, &ScriptBuf::new_op_return([0u8; 1]))
        .unwrap();
    let coinbases = hashes
        .iter()
        .map(|h| devnet.block(h).unwrap().txdata[0].clone())
        .collect();
    let server = serve(
        devnet.clone(),
        "127.0.0.1:0".parse().unwrap(),
        RpcAuth {
            user: "devnet".into(),
            password: RPC_PASSWORD.into(),
        },
    )
    .await
    .unwrap();
    Chain {
        rpc_url: format!("http://{}", server.addr),
        devnet,
        _server: server,
        coinbases: std::sync::Mutex::new(coinbases),
    }
}

impl Chain {
    /// A fresh breach (spending one of the coinbases, paying `fee`) and its justice tx.
    pub fn breach_with_fee(&self, fee: u64) -> (Breach, Transaction) {
        let coinbase = self
            .coinbases
            .lock()
            .unwrap()
            .pop()
            .expect("a coinbase left");
        let prev = OutPoint::new(coinbase.compute_txid(), 0);
        let value = coinbase.output[0].value;
        let breach = spend(prev, value, &key(1), p2wpkh(&key(2)), Amount::from_sat(fee));
        let justice = spend(
            OutPoint::new(breach.compute_txid(), 0),
            breach.output[0].value,
            &key(2),
            p2wpkh(&key(3)),
            Amount::from_sat(2_000),
        );
        // A transaction spending the same coin: what replaces the breach in a reorg test.
        let conflict = spend(
            prev,
            value,
            &key(1),
            p2wpkh(&key(4)),
            Amount::from_sat(fee * 10),
        );
        (Breach { breach, justice }, conflict)
    }

    pub fn breach(&self) -> Breach {
        self.breach_with_fee(1_000).0
    }

    pub fn mine(&self, n: u32) -> Vec<bitcoin::BlockHash> {
        self.devnet
            .generate_to_script(n, &ScriptBuf::new_op_return([9u8; 1]))
            .unwrap()
    }

    pub fn broadcast(&self, tx: &Transaction) {
        self.devnet.send_raw_transaction(tx.clone(), None).unwrap();
    }

    pub async fn confirmations(&self, tx: &Transaction) -> u32 {
        chain::ChainSource::confirmations(&self.devnet, &tx.compute_txid())
            .await
            .unwrap()
    }

    pub fn in_mempool(&self, tx: &Transaction) -> bool {
        let txid = tx.compute_txid();
        self.devnet.read(|s| s.mempool().get(&txid).is_some())
    }
}

pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    // A bound so that a broken tower fails the test instead of hanging it.
    for _ in 0..1200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A `watchtower` process.
pub struct TowerProc {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Drop for TowerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TowerProc {
    /// SIGKILL.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `watchtower` on 127.0.0.1:0 against `rpc_url`, keeping its data (and its log)
/// in `data_dir`; returns once it printed its address.
pub fn spawn_tower(rpc_url: &str, data_dir: &Path, extra: &[&str]) -> TowerProc {
    let log = data_dir.join("tower.log");
    std::fs::create_dir_all(data_dir).unwrap();
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchtower"))
        .args(["--data-dir", data_dir.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--bitcoind-url", rpc_url])
        .args(["--bitcoind-user", "devnet"])
        .args(if extra.contains(&"--bitcoind-password-file") {
            vec![]
        } else {
            vec!["--bitcoind-password", RPC_PASSWORD]
        })
        .args(["--poll-ms", "50"])
        .args(extra)
        .env("RUST_LOG", "info,watchtower=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .expect("watchtower starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let url = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "tower prints its address; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        if let Some(i) = line.find("listening on ") {
            break line[i + "listening on ".len()..].trim().to_string();
        }
    };
    TowerProc { child, url, log }
}
