//! A scripted malicious peer ("Mallory", built on the channel crate's pure builders over a
//! raw BOLT 8 link, on the devnet) opens channels to the hub with funding that is not what
//! it claims: a confirmed transaction that does not pay the 2-of-2, a real 2-of-2 output
//! one satoshi short, and the funding outpoint of a channel that already exists. The hub
//! must never make such a channel usable, must not let it replace the real one, and its
//! wallet must not move by a satoshi.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, OutPoint, ScriptBuf, Txid};
use chain::Devnet;
use channel::keys::ChannelSecrets;
use channel::msgs::*;
use channel::*;
use common::mallory::*;
use common::*;
use hub::node::{ChannelStatus, Node};
use hub::peer::connect;
use std::sync::Arc;

/// Mines and gives the hub time to look at its channels; the hub must not have sent
/// channel_ready, and must have refused the channel with an error when the output exists.
async fn assert_never_ready(
    devnet: &Arc<Devnet>,
    hub: &Node,
    m: &mut Mallory,
    id: ChannelId,
    output_exists: bool,
) {
    devnet
        .generate_to_script(6, &elsewhere().script_pubkey())
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        while let Some(msg) = next(&mut m.r).await {
            seen.push(msg);
        }
    }
    assert!(
        !seen.iter().any(|x| matches!(x, Message::ChannelReady(_))),
        "the hub sent channel_ready for a fake funding: {seen:?}"
    );
    let status = hub.channel(&id).await.unwrap().status;
    if output_exists {
        assert!(
            seen.iter()
                .any(|x| matches!(x, Message::ErrorMessage(e) if e.channel_id == id)),
            "an error for the channel: {seen:?}"
        );
        assert_eq!(status, ChannelStatus::Closed);
    } else {
        assert_eq!(status, ChannelStatus::AwaitingLock);
    }
}

/// A hub with one coinbase of 50 BTC (mature once 100 more blocks are mined).
async fn hub_with_a_coinbase(devnet: &Arc<Devnet>, dir: &std::path::Path) -> Arc<Node> {
    let hub = start(devnet, dir, None).await;
    let hub_addr = hub.new_address().await.unwrap();
    devnet
        .generate_to_script(1, &hub_addr.script_pubkey())
        .unwrap();
    hub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_funding_never_makes_a_usable_channel() {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_a_coinbase(&devnet, dir.path()).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    wait_until("hub funded", || async {
        hub.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;
    let hub_wallet = hub.wallet_balance().await;

    // 1. A confirmed output of the right value that pays another script.
    let s1 = ChannelSecrets::from_seed(&[0x41; 32]);
    let open1 = Mallory::open_msg(&s1, 0x51);
    let accept1 = m.open(&open1).await;
    let anyone = ScriptBuf::new_p2wsh(&ScriptBuf::from_bytes(vec![0x51]).wscript_hash());
    let elsewhere_out = m.pay_to(&devnet, anyone, FUNDING_SAT).await;
    let (ch1, answer) = m.fund(&open1, &accept1, s1, elsewhere_out).await;
    assert!(
        matches!(answer, Some(Message::FundingSigned(_))),
        "{answer:?}"
    );
    assert_never_ready(&devnet, &hub, &mut m, ch1.channel_id(), true).await;

    // 2. A real 2-of-2 output, one satoshi short of funding_satoshis.
    let s2 = ChannelSecrets::from_seed(&[0x42; 32]);
    let open2 = Mallory::open_msg(&s2, 0x52);
    let accept2 = m.open(&open2).await;
    let short = m
        .pay_to(&devnet, funding_spk(&open2, &accept2), FUNDING_SAT - 1)
        .await;
    let (ch2, answer) = m.fund(&open2, &accept2, s2, short).await;
    assert!(
        matches!(answer, Some(Message::FundingSigned(_))),
        "{answer:?}"
    );
    assert_never_ready(&devnet, &hub, &mut m, ch2.channel_id(), true).await;

    // 3. A txid that exists on no chain at all.
    let s3 = ChannelSecrets::from_seed(&[0x43; 32]);
    let open3 = Mallory::open_msg(&s3, 0x53);
    let accept3 = m.open(&open3).await;
    let nowhere = OutPoint::new(Txid::from_byte_array([0x99; 32]), 0);
    let (ch3, _) = m.fund(&open3, &accept3, s3, nowhere).await;
    assert_never_ready(&devnet, &hub, &mut m, ch3.channel_id(), false).await;
    // BOLT 2: after 2016 blocks without its funding the hub forgets it, with an error.
    devnet
        .generate_to_script(2016, &elsewhere().script_pubkey())
        .unwrap();
    let id3 = ch3.channel_id();
    wait_until("the unfunded channel forgotten", || async {
        hub.channel(&id3).await.unwrap().status == ChannelStatus::Closed
    })
    .await;
    let mut seen = Vec::new();
    while let Some(msg) = next(&mut m.r).await {
        seen.push(msg);
    }
    assert!(
        seen.iter()
            .any(|x| matches!(x, Message::ErrorMessage(e) if e.channel_id == id3)),
        "an error for the forgotten channel: {seen:?}"
    );

    // 4. An honest channel, then a second open naming its funding outpoint: refused with
    // an error on the temporary id; the real channel's state is untouched.
    let s4 = ChannelSecrets::from_seed(&[0x44; 32]);
    let open4 = Mallory::open_msg(&s4, 0x54);
    let accept4 = m.open(&open4).await;
    let real = m
        .pay_to(&devnet, funding_spk(&open4, &accept4), FUNDING_SAT)
        .await;
    let (ch4, answer) = m.fund(&open4, &accept4, s4, real).await;
    assert!(
        matches!(answer, Some(Message::FundingSigned(_))),
        "{answer:?}"
    );
    // The chain follower may give it its short channel id meanwhile; nothing else of it
    // may change.
    let unchanged = |mut c: hub::node::ChannelSummary| {
        c.short_channel_id = None;
        c
    };
    let before = unchanged(hub.channel(&ch4.channel_id()).await.unwrap());
    let s5 = ChannelSecrets::from_seed(&[0x45; 32]);
    let open5 = Mallory::open_msg(&s5, 0x55);
    let accept5 = m.open(&open5).await;
    let (_, answer) = m.fund(&open5, &accept5, s5, real).await;
    match answer {
        Some(Message::ErrorMessage(e)) => assert_eq!(e.channel_id, ChannelId([0x55; 32])),
        other => panic!("expected an error on the temporary id, got {other:?}"),
    }
    assert_eq!(
        unchanged(hub.channel(&ch4.channel_id()).await.unwrap()),
        before
    );

    // Nothing the hub holds moved.
    assert_eq!(hub.wallet_balance().await, hub_wallet);
}

/// A peer that opens channel after channel and never funds them: four at a time get an
/// accept_channel, every other one an `error` on its temporary id (no channel index, no
/// database write), the connection stays, and another peer can still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unfunded_opens_is_bounded() {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start(&devnet, dir.path(), None).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let secrets = ChannelSecrets::from_seed(&[0x61; 32]);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..1000u32 {
        let mut open = Mallory::open_msg(&secrets, 0);
        open.temporary_channel_id.0[..4].copy_from_slice(&i.to_be_bytes());
        m.w.send(&Message::OpenChannel(open)).await.unwrap();
    }
    while accepted + refused < 1000 {
        match next_within(&mut m.r, ANSWER).await {
            Some(Message::AcceptChannel(_)) => accepted += 1,
            Some(Message::ErrorMessage(_)) => refused += 1,
            other => panic!("unexpected {other:?} after {accepted} accepts, {refused} errors"),
        }
    }
    assert_eq!((accepted, refused), (4, 996));
    assert!(next(&mut m.r).await.is_none(), "nothing more");
    // Still connected.
    m.w.send(&Message::Ping(Ping {
        num_pong_bytes: 1,
        ignored: vec![],
    }))
    .await
    .unwrap();
    assert!(matches!(
        next_within(&mut m.r, ANSWER).await,
        Some(Message::Pong(_))
    ));
    // Another peer is not held back by Mallory's openings.
    let key = SecretKey::from_slice(&[0x62; 32]).unwrap();
    let (mut w, mut r) = connect(hub.listen_addr(), key, hub.node_id(), chain_hash())
        .await
        .unwrap();
    let open = Mallory::open_msg(&ChannelSecrets::from_seed(&[0x63; 32]), 0x64);
    w.send(&Message::OpenChannel(open)).await.unwrap();
    assert!(matches!(
        next_within(&mut r, ANSWER).await,
        Some(Message::AcceptChannel(_))
    ));
}

/// Mallory opens a channel to the hub and, once the hub has accepted, answers with an
/// accept_channel of her own on the same temporary id, as if the hub had opened it: the
/// hub would fund a 2-of-2 of her two keys from its wallet. Then, on a second opening,
/// she sends an `error`, which for an anchor channel the hub itself proposed would make
/// it propose static_remotekey again: for her opening it must only forget it. The hub
/// funds nothing, proposes nothing, and its wallet does not move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_channel_for_her_own_opening_funds_nothing() {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = hub_with_a_coinbase(&devnet, dir.path()).await;
    devnet
        .generate_to_script(100, &elsewhere().script_pubkey())
        .unwrap();
    let mut m = Mallory::new(&devnet, &hub).await;
    wait_until("hub funded", || async {
        hub.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;
    let hub_wallet = hub.wallet_balance().await;

    let secrets = ChannelSecrets::from_seed(&[0x71; 32]);
    let mut open = Mallory::open_msg(&secrets, 0x71);
    open.channel_type = Some(channel::channel_type::ChannelType::AnchorsZeroFeeHtlcTx.to_bytes());
    let accept = m.open(&open).await;
    let other = ChannelSecrets::from_seed(&[0x72; 32]).basepoints();
    let forged = AcceptChannel {
        funding_pubkey: other.funding_pubkey,
        revocation_basepoint: other.revocation_basepoint,
        payment_basepoint: other.payment_basepoint,
        delayed_payment_basepoint: other.delayed_payment_basepoint,
        htlc_basepoint: other.htlc_basepoint,
        ..accept
    };
    m.w.send(&Message::AcceptChannel(forged)).await.unwrap();
    let mut seen = Vec::new();
    while let Some(msg) = next(&mut m.r).await {
        seen.push(msg);
    }
    assert!(
        !seen
            .iter()
            .any(|x| matches!(x, Message::FundingCreated(_) | Message::OpenChannel(_))),
        "the hub funded her opening: {seen:?}"
    );

    let mut m = Mallory::new(&devnet, &hub).await;
    let mut open = Mallory::open_msg(&secrets, 0x73);
    open.channel_type = Some(channel::channel_type::ChannelType::AnchorsZeroFeeHtlcTx.to_bytes());
    m.open(&open).await;
    m.w.send(&Message::ErrorMessage(ErrorMessage {
        channel_id: ChannelId([0x73; 32]),
        data: b"no".to_vec(),
    }))
    .await
    .unwrap();
    let mut seen = Vec::new();
    while let Some(msg) = next(&mut m.r).await {
        seen.push(msg);
    }
    assert!(
        !seen.iter().any(|x| matches!(x, Message::OpenChannel(_))),
        "the hub proposed her opening back to her: {seen:?}"
    );

    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        hub.wallet_balance().await,
        hub_wallet,
        "the wallet did not move"
    );
    assert!(hub.list_channels().await.is_empty(), "no channel");
}
