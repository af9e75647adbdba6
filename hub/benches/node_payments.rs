//! Payments between two nodes over real sockets on 127.0.0.1, every state durable in
//! SQLite (WAL, synchronous=FULL) before any message leaves: one channel at a time, then
//! four channels at once (where group commit shares fsyncs). Prints payments/s and
//! database transactions per payment.

#[path = "../tests/common/mod.rs"]
mod common;

use bitcoin::Amount;
use common::*;
use std::sync::Arc;
use std::time::Instant;

async fn run() {
    let devnet = Arc::new(chain::Devnet::in_memory());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&devnet, d1.path(), None).await;
    let b = start(&devnet, d2.path(), None).await;
    let addr = a.new_address().await.unwrap();
    devnet.generate_to_script(4, &addr.script_pubkey()).unwrap();
    devnet
        .generate_to_script(100, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("funded", || async {
        a.wallet_balance().await == Amount::from_sat(20_000_000_000)
    })
    .await;
    a.connect_peer(b.node_id(), b.listen_addr()).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            a.open_channel(b.node_id(), 10_000_000, channel::Msat(0))
                .await
                .unwrap(),
        );
    }
    devnet
        .generate_to_script(3, &elsewhere().script_pubkey())
        .unwrap();
    for id in &ids {
        wait_until("normal", || async {
            b.channel(id)
                .await
                .map(|c| c.status == hub::node::ChannelStatus::Normal)
                .unwrap_or(false)
        })
        .await;
    }

    let pay = |a: Arc<hub::node::Node>,
               b: Arc<hub::node::Node>,
               id: channel::ChannelId,
               n: u64,
               tag: u8| async move {
        let mut p = [tag; 32];
        p[..8].copy_from_slice(&n.to_be_bytes());
        let preimage = channel::PaymentPreimage(p);
        let hash = b.add_preimage(preimage).await.unwrap();
        a.pay(&id, channel::Msat(1_000_000), hash, 500)
            .await
            .unwrap();
    };

    let count = 300u64;
    let tx0 = a.db_transactions() + b.db_transactions();
    let t = Instant::now();
    for n in 0..count {
        pay(a.clone(), b.clone(), ids[0], n, 1).await;
    }
    let secs = t.elapsed().as_secs_f64();
    let txs = a.db_transactions() + b.db_transactions() - tx0;
    println!(
        "one channel, sequential: {:.0} payments/s ({:.2} ms each), {:.1} database transactions per payment (both nodes)",
        count as f64 / secs,
        secs * 1000.0 / count as f64,
        txs as f64 / count as f64
    );

    let per = 150u64;
    let tx0 = a.db_transactions() + b.db_transactions();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (a, b, id) = (a.clone(), b.clone(), *id);
        tasks.push(tokio::spawn(async move {
            for n in 0..per {
                pay(a.clone(), b.clone(), id, n, 10 + i as u8).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    let total = per * ids.len() as u64;
    let txs = a.db_transactions() + b.db_transactions() - tx0;
    println!(
        "four channels at once: {:.0} payments/s, {:.1} database transactions per payment (group commit)",
        total as f64 / secs,
        txs as f64 / total as f64
    );
}

fn main() {
    // `cargo test --benches` runs this too; keep that quick.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
