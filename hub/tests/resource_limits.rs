//! Peers that try to exhaust a hub process's memory, each over a raw BOLT 8 link to the
//! `hub` binary on 127.0.0.1: one sends 10,000 `open_channel`s it never funds, one sends
//! 100,000 `channel_update`s (validly signed by it) for short channel ids that do not
//! exist, one asks for 65,531-byte pongs and never reads. Each flood is cut off at its
//! limit (4 openings answered, the rest refused with an `error`; the non-reader
//! disconnected), the hub's resident memory (VmRSS, printed) stays within 64 MiB of where
//! it started, and a user with a channel to the hub keeps paying throughout.

mod common;

use bitcoin::secp256k1::{Message as SecpMessage, PublicKey, SecretKey};
use channel::keys::{secp, ChannelSecrets};
use channel::msgs::*;
use channel::ChannelId;
use common::mallory::{chain_hash, Mallory};
use hub::peer::connect;
use scenarios::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

const OP: &str = "op-hub";

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// The user pays a fresh hub invoice of 1,000 sat.
async fn user_pays(api: &Api, hub: &Proc, user: &Proc) {
    let inv = api
        .ok(
            &hub.api,
            OP,
            "POST",
            "/v1/invoices",
            Some(json!({"amount_msat": 1_000_000, "description": "still paying"})),
        )
        .await;
    let paid = api
        .ok(
            &user.api,
            "op-user",
            "POST",
            "/v1/payments",
            Some(json!({"invoice": inv["bolt11"]})),
        )
        .await;
    assert_eq!(paid["status"], "succeeded", "{paid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_from_peers_leave_memory_bounded_and_others_paying() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let d = |i: usize| dirs[i].path().to_str().unwrap().to_string();
    let hub = spawn(&devnet_args(&format!("{}/hub", d(0)), OP));
    let devnet = hub.devnet.clone().unwrap();
    let user = spawn(&client_args(&format!("{}/user", d(1)), "op-user", &devnet));
    let api = Api::default();
    fund_all(&api, &[(&user.api, "op-user")], &rpc(&devnet)).await;
    api.connect(&user.api, "op-user", &hub).await;
    let chan = api
        .open_channel(
            &user.api,
            "op-user",
            json!({"peer_id": hub.node_id, "capacity_sat": 1_000_000}),
        )
        .await;
    mine(&rpc(&devnet), 6).await;
    api.wait_usable(&user.api, "op-user", &chan, false).await;
    api.wait_usable(&hub.api, OP, &chan, false).await;
    user_pays(&api, &hub, &user).await;

    let pid = hub.child.id();
    let addr: SocketAddr = hub.peer_addr.parse().unwrap();
    let hub_id: PublicKey = hub.node_id.parse().unwrap();
    let start_rss = rss_kib(pid);
    println!("hub RSS at the start: {start_rss} KiB");

    // 1. 10,000 open_channels, never funded.
    let key = SecretKey::from_slice(&[0x31; 32]).unwrap();
    let (mut w, mut r) = connect(addr, key, hub_id, chain_hash()).await.unwrap();
    let reader = tokio::spawn(async move {
        let (mut accepts, mut errors) = (0u32, 0u32);
        while accepts + errors < 10_000 {
            match tokio::time::timeout(Duration::from_secs(30), r.recv()).await {
                Ok(Ok(Message::AcceptChannel(_))) => accepts += 1,
                Ok(Ok(Message::ErrorMessage(_))) => errors += 1,
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        (accepts, errors)
    });
    let secrets = ChannelSecrets::from_seed(&[0x32; 32]);
    for i in 0..10_000u32 {
        let mut open = Mallory::open_msg(&secrets, 0);
        let mut temp = [0u8; 32];
        temp[..4].copy_from_slice(&i.to_be_bytes());
        temp[4] = 0x33;
        open.temporary_channel_id = ChannelId(temp);
        w.send(&Message::OpenChannel(open)).await.unwrap();
    }
    let (accepts, errors) = reader.await.unwrap();
    println!(
        "open flood: {accepts} accepted, {errors} refused; hub RSS {} KiB",
        rss_kib(pid)
    );
    assert_eq!((accepts, errors), (4, 9_996));
    drop(w);
    user_pays(&api, &hub, &user).await;

    // 2. 100,000 channel_updates for channels that do not exist, signed by the sender.
    let key = SecretKey::from_slice(&[0x34; 32]).unwrap();
    let (mut w, mut r) = connect(addr, key, hub_id, chain_hash()).await.unwrap();
    let pong = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(Duration::from_secs(120), r.recv()).await {
                Ok(Ok(Message::Pong(_))) => return true,
                Ok(Ok(_)) => {}
                _ => return false,
            }
        }
    });
    for i in 0..100_000u64 {
        let mut u = ChannelUpdate {
            signature: bitcoin::secp256k1::ecdsa::Signature::from_compact(&[1; 64]).unwrap(),
            chain_hash: chain_hash(),
            short_channel_id: (500_000 + i) << 40 | (i & 0xffff),
            timestamp: 1_700_000_000,
            message_flags: 1,
            channel_flags: 0,
            cltv_expiry_delta: 40,
            htlc_minimum_msat: 1,
            fee_base_msat: 1000,
            fee_proportional_millionths: 100,
            htlc_maximum_msat: 1_000_000,
        };
        u.signature = secp().sign_ecdsa(&SecpMessage::from_digest(u.signing_hash()), &key);
        w.send(&Message::ChannelUpdate(u)).await.unwrap();
    }
    // A ping answered means every update before it was read and handled, and the
    // connection is still up: gossip is never a reason to disconnect.
    w.send(&Message::Ping(Ping {
        num_pong_bytes: 4,
        ignored: vec![],
    }))
    .await
    .unwrap();
    assert!(
        pong.await.unwrap(),
        "the pong after 100,000 channel_updates"
    );
    println!("channel_update flood: hub RSS {} KiB", rss_kib(pid));
    drop(w);
    user_pays(&api, &hub, &user).await;

    // 3. Large pongs asked for and never read.
    let key = SecretKey::from_slice(&[0x35; 32]).unwrap();
    let (mut w, mut r) = connect(addr, key, hub_id, chain_hash()).await.unwrap();
    let mut sent = 0;
    for _ in 0..2_000 {
        let ping = Message::Ping(Ping {
            num_pong_bytes: 65_531,
            ignored: vec![],
        });
        match tokio::time::timeout(Duration::from_secs(5), w.send(&ping)).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    user_pays(&api, &hub, &user).await;
    println!(
        "non-reader: {sent} pings sent; hub RSS {} KiB",
        rss_kib(pid)
    );
    // The hub gave up on it: what it had sent can be read, then the connection ends.
    let mut pongs = 0;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), r.recv()).await {
            Ok(Ok(_)) => pongs += 1,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
    };
    assert!(
        closed,
        "the non-reader was disconnected ({pongs} pongs read)"
    );
    assert!(pongs < 2_000, "{pongs} pongs");

    let end_rss = rss_kib(pid);
    println!(
        "hub RSS at the end: {end_rss} KiB ({:+} KiB)",
        end_rss as i64 - start_rss as i64
    );
    assert!(
        end_rss < start_rss + 64 * 1024,
        "RSS grew from {start_rss} to {end_rss} KiB"
    );
    user_pays(&api, &hub, &user).await;
}
