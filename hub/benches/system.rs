//! The system benchmark, one command for every figure:
//!
//! 1. secp256k1 on this machine: microseconds per ECDSA signature and verification;
//! 2. payments user → hub → merchant over real loopback connections, every node on
//!    durable SQLite (WAL, synchronous=FULL): payments/s, p50/p99 latency, the hub's CPU
//!    time per payment (the hub is a real `hub` process, read from /proc), and the ECDSA
//!    operations each payment costs, next to what they cost at the measured speed, so the
//!    distance to the crypto bound is printed;
//! 3. the watchtower: one block of 4,000 transactions scanned against 1 M stored
//!    appointments.
//!
//! `cargo bench -p hub --bench system` (env `BENCH_PAYMENTS`, `BENCH_CONCURRENCY`,
//! `BENCH_TOWER_STORED`).

use hub::node::{Node, NodeConfig, Role};
use scenarios::*;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    ticks / hz
}

async fn light(
    dir: &std::path::Path,
    hub_id: bitcoin::secp256k1::PublicKey,
    chain: Arc<dyn chain::ChainSource>,
) -> Arc<Node> {
    let mut c = NodeConfig::new(
        Role::Light { hub: Some(hub_id) },
        dir.to_path_buf(),
        chain,
        bitcoin::Network::Regtest,
    );
    c.chain_poll = Duration::from_millis(100);
    Node::start(c).await.unwrap()
}

/// Microseconds per ECDSA sign and per verify with the secp256k1 library, one thread.
fn secp_microbench() -> (f64, f64) {
    use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
    let secp = Secp256k1::new();
    let n = 20_000u32;
    let keys: Vec<SecretKey> = (1..=64u8)
        .map(|i| SecretKey::from_slice(&[i; 32]).unwrap())
        .collect();
    let msgs: Vec<Message> = (0..n)
        .map(|i| {
            let mut d = [7u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            Message::from_digest(d)
        })
        .collect();
    let start = Instant::now();
    let sigs: Vec<_> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| secp.sign_ecdsa(m, &keys[i % keys.len()]))
        .collect();
    let sign = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let pubs: Vec<PublicKey> = keys.iter().map(|k| k.public_key(&secp)).collect();
    let start = Instant::now();
    let ok = msgs
        .iter()
        .zip(&sigs)
        .enumerate()
        .filter(|(i, (m, s))| secp.verify_ecdsa(m, s, &pubs[i % pubs.len()]).is_ok())
        .count();
    let verify = start.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    assert_eq!(ok, n as usize);
    (sign, verify)
}

/// The hub's ECDSA counters from its /metrics: (signatures, verifications).
async fn hub_ecdsa(api: &str) -> (u64, u64) {
    let text = reqwest::Client::new()
        .get(format!("{api}/metrics"))
        .bearer_auth("op")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let get = |op: &str| {
        let prefix = format!("hub_ecdsa_operations_total{{op=\"{op}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str())?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (get("sign"), get("verify"))
}

async fn run() {
    let payments = env_or("BENCH_PAYMENTS", 1000);
    let concurrency = env_or("BENCH_CONCURRENCY", 16);
    let tower_stored = env_or("BENCH_TOWER_STORED", 1_000_000);
    // 10,000 sat: above the dust limit, so every HTLC is an output with its own signatures.
    let amount_msat = env_or("BENCH_AMOUNT_MSAT", 10_000_000) as u64;

    let (sign_us, verify_us) = secp_microbench();
    println!("secp256k1 on this machine, one thread:");
    println!("  ECDSA sign {sign_us:.1} µs, verify {verify_us:.1} µs");

    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = spawn(&devnet_args(
        dirs[0].path().join("hub").to_str().unwrap(),
        "op",
    ));
    let devnet = hub.devnet.clone().unwrap();
    let rpc_client = rpc(&devnet);
    let chain: Arc<dyn chain::ChainSource> = Arc::new(rpc(&devnet));
    let hub_id: bitcoin::secp256k1::PublicKey = hub.node_id.parse().unwrap();
    let hub_addr: std::net::SocketAddr = hub.peer_addr.parse().unwrap();
    let user = light(dirs[1].path(), hub_id, chain.clone()).await;
    let merchant = light(dirs[2].path(), hub_id, chain.clone()).await;
    let api = Api::default();

    fund(&api, &hub.api, "op", &rpc_client).await;
    let addr = user.new_address().await.unwrap();
    {
        use chain::ChainControl;
        rpc_client
            .generate_to_address(1, &addr.to_string().parse().unwrap())
            .await
            .unwrap();
    }
    mine(&rpc_client, 100).await;
    wait_for("user funded", async || {
        user.wallet_balance().await.to_sat() > 0
    })
    .await;
    user.connect_peer(hub_id, hub_addr).await.unwrap();
    merchant.connect_peer(hub_id, hub_addr).await.unwrap();
    let merchant_id = merchant.node_id().to_string();
    wait_for("merchant connected", async || {
        api.call(
            &hub.api,
            "op",
            "POST",
            "/v1/channels",
            Some(json!({"peer_id": merchant_id, "capacity_sat": 16_000_000u64})),
        )
        .await
        .is_ok()
    })
    .await;
    let uchan = user
        .open_channel(hub_id, 16_000_000, channel::Msat(0))
        .await
        .unwrap();
    mine(&rpc_client, 3).await;
    wait_for("channels usable with the hub's policy", async || {
        let u = user
            .channel(&uchan)
            .await
            .map(|c| c.status == hub::node::ChannelStatus::Normal)
            .unwrap_or(false);
        let m = merchant
            .list_channels()
            .await
            .iter()
            .any(|c| c.status == hub::node::ChannelStatus::Normal && c.peer_policy.is_some());
        u && m
    })
    .await;

    // Invoices first: the timed part is paying them.
    let mut invoices = Vec::with_capacity(payments + 50);
    for _ in 0..payments + 50 {
        invoices.push(
            merchant
                .create_invoice(Some(amount_msat), "bench", 3600, "")
                .await
                .unwrap()
                .bolt11,
        );
    }
    let (warm, timed) = invoices.split_at(50);
    for inv in warm {
        let p = user
            .pay_invoice(inv, None, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(p.status, "succeeded", "{p:?}");
    }

    let queue = Arc::new(std::sync::Mutex::new(timed.to_vec()));
    let hub_ops0 = hub_ecdsa(&hub.api).await;
    let db0 = user.db_transactions() + merchant.db_transactions();
    let light_ops0 = channel::sign::ecdsa_op_counts();
    let cpu0 = cpu_secs(hub.child.id());
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (queue, user) = (queue.clone(), user.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0usize;
            loop {
                let Some(inv) = queue.lock().unwrap().pop() else {
                    break;
                };
                let t = Instant::now();
                match user.pay_invoice(&inv, None, Duration::from_secs(60)).await {
                    Ok(p) if p.status == "succeeded" => lat.push(t.elapsed()),
                    _ => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let mut lat = Vec::new();
    let mut failed = 0;
    for w in workers {
        let (l, f) = w.await.unwrap();
        lat.extend(l);
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs(hub.child.id()) - cpu0;
    let hub_ops1 = hub_ecdsa(&hub.api).await;
    let db1 = user.db_transactions() + merchant.db_transactions();
    let light_ops1 = channel::sign::ecdsa_op_counts();
    lat.sort();
    assert!(!lat.is_empty(), "every payment failed");
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "user -> hub -> merchant, {} payments of {} sat, {concurrency} in flight, durable SQLite on all three nodes:",
        lat.len(),
        amount_msat / 1000
    );
    println!(
        "  {:.0} payments/s, latency p50 {:.1} ms, p99 {:.1} ms, {failed} failed",
        lat.len() as f64 / secs,
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  hub process CPU: {:.2} ms per payment ({:.0}% of one core)",
        cpu * 1000.0 / lat.len() as f64,
        cpu / secs * 100.0
    );
    println!(
        "  light nodes' database transactions per payment (user and merchant together): {:.1}",
        (db1 - db0) as f64 / lat.len() as f64
    );
    let n = lat.len().max(1) as f64;
    let per = |a: u64, b: u64| (b - a) as f64 / n;
    let (hs, hv) = (per(hub_ops0.0, hub_ops1.0), per(hub_ops0.1, hub_ops1.1));
    let (ls, lv) = (
        per(light_ops0.0, light_ops1.0),
        per(light_ops0.1, light_ops1.1),
    );
    let hub_crypto_ms = (hs * sign_us + hv * verify_us) / 1000.0;
    let all_crypto_ms = ((hs + ls) * sign_us + (hv + lv) * verify_us) / 1000.0;
    println!("  ECDSA per payment: hub {hs:.1} signs + {hv:.1} verifies; user and merchant together {ls:.1} signs + {lv:.1} verifies");
    println!(
        "  the hub's ECDSA costs {hub_crypto_ms:.2} ms per payment at the speed measured above: {:.1}% of its {:.2} ms of CPU",
        hub_crypto_ms / (cpu * 1000.0 / n) * 100.0,
        cpu * 1000.0 / n
    );
    println!(
        "  crypto bound: {:.0} payments/s if the hub did nothing but ECDSA on one core; {:.0}/s for all three nodes' ECDSA on this machine's 2 cores; measured {:.0}/s = {:.1}% of the latter",
        1000.0 / hub_crypto_ms,
        2000.0 / all_crypto_ms,
        n / secs,
        (n / secs) / (2000.0 / all_crypto_ms) * 100.0
    );
    drop(hub);

    let dir = tempfile::tempdir().unwrap();
    let r = watchtower::bench::scan_benchmark(
        dir.path(),
        Arc::new(chain::Devnet::in_memory()),
        tower_stored,
        4_000,
    )
    .await
    .unwrap();
    println!("watchtower:");
    println!("  {}", r.scan_line());
    println!(
        "  ({:.0} bytes stored per appointment; {:.1} s to write them, {:.2} s to load the index)",
        r.db_bytes as f64 / r.stored.max(1) as f64,
        r.fill.as_secs_f64(),
        r.load.as_secs_f64()
    );
}

fn main() {
    // `cargo test --benches` runs this with --bench absent; only measure when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
