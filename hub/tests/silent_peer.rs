//! A peer that sends pings asking for the largest pongs and never reads: the hub's queue
//! for it is bounded, so the hub disconnects it instead of growing without end, and keeps
//! serving. The hub process's resident memory is reported before and after.

use bitcoin::secp256k1::SecretKey;
use channel::msgs::{Message, Ping};
use scenarios::*;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_disconnected_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let hub = spawn(&devnet_args(dir.path().join("hub").to_str().unwrap(), "op"));
    let pid = hub.child.id();
    let before = rss_kib(pid);
    let chain =
        bitcoin::constants::ChainHash::using_genesis_block(bitcoin::Network::Regtest).to_bytes();
    let key = SecretKey::from_slice(&[0x5a; 32]).unwrap();
    let (mut w, mut r) = hub::peer::connect(
        hub.peer_addr.parse().unwrap(),
        key,
        hub.node_id.parse().unwrap(),
        chain,
    )
    .await
    .unwrap();
    // 20,000 pongs of 65,531 bytes would be 1.3 GB queued for a peer that never reads.
    let mut sent = 0;
    for _ in 0..20_000 {
        let ping = Message::Ping(Ping {
            num_pong_bytes: 65_531,
            ignored: vec![],
        });
        match tokio::time::timeout(std::time::Duration::from_secs(5), w.send(&ping)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    // Let the hub take in what was sent, then look at its memory.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = rss_kib(pid);
    // Now read: a few hundred pongs at most (its bounded queue and the sockets' buffers),
    // then the end of the connection the hub closed; not 20,000.
    let mut pongs = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), r.recv()).await {
            Ok(Ok(Message::Pong(_))) => pongs += 1,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => break,
            Err(_) => panic!("the hub neither answered nor closed the link"),
        }
    }
    eprintln!(
        "silent peer: {sent} pings sent, {pongs} pongs before the hub closed the link; hub RSS {before} KiB before, {after} KiB after"
    );
    assert!(
        pongs < 2_000,
        "the hub answered {pongs} pings of a peer that did not read"
    );
    assert!(
        after < before + 100 * 1024,
        "the hub's memory grew by {} KiB",
        after - before
    );
    // The hub still serves.
    let api = Api::default();
    api.ok(&hub.api, "op", "GET", "/v1/info", None).await;
}
