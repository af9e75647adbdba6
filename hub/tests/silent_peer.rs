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

/// Connections from one IP address are capped (`--max-inbound-per-ip`): beyond the cap a
/// new one is closed before its handshake, the ones in place keep working, and once one
/// of them ends there is room again. Connections that never finish their handshake hold
/// their place too, so a peer cannot flood the hub with half-open ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_from_one_address_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = devnet_args(dir.path().join("hub").to_str().unwrap(), "op");
    args.extend(["--max-inbound-per-ip".into(), "3".into()]);
    let hub = spawn(&args);
    let chain =
        bitcoin::constants::ChainHash::using_genesis_block(bitcoin::Network::Regtest).to_bytes();
    let addr: std::net::SocketAddr = hub.peer_addr.parse().unwrap();
    let id: bitcoin::secp256k1::PublicKey = hub.node_id.parse().unwrap();
    let dial = |n: u8| async move {
        let key = SecretKey::from_slice(&[n; 32]).unwrap();
        hub::peer::connect(addr, key, id, chain).await
    };
    // Two full peers and one that only opens a socket.
    let (mut w1, mut r1) = dial(0x61).await.expect("first");
    let second = dial(0x62).await.expect("second");
    let half_open = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(dial(0x63).await.is_err(), "a fourth connection is refused");
    // The first still works.
    w1.send(&Message::Ping(Ping {
        num_pong_bytes: 4,
        ignored: vec![],
    }))
    .await
    .unwrap();
    let pong = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Message::Pong(p) = r1.recv().await.unwrap() {
                return p;
            }
        }
    })
    .await
    .expect("pong");
    assert_eq!(pong.ignored.len(), 4);
    // One ends: there is room again.
    drop(half_open);
    drop(second);
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = dial(0x64).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "room after connections ended");
}
