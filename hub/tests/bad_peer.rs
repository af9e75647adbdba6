//! Peers that misbehave are warned or disconnected; the node and its channels carry on.

mod common;

use bitcoin::secp256k1::SecretKey;
use bitcoin::Network;
use channel::msgs::*;
use channel::ChannelId;
use common::*;
use hub::node::ChannelStatus;

fn chain_hash() -> [u8; 32] {
    bitcoin::constants::ChainHash::using_genesis_block(Network::Regtest).to_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_peers_do_not_hurt_the_node() {
    let p = open_pair(None, None).await;
    pay(&p, false, 100_000_000, 0).await;
    quiescent(&p).await;
    let before = p.b.channel(&p.id).await.unwrap();
    let evil = SecretKey::from_slice(&[0xee; 32]).unwrap();

    // Messages for a channel that is not the sender's: warned, nothing changes.
    let (mut w, mut r) = hub::peer::connect(p.b.listen_addr(), evil, p.b.node_id(), chain_hash())
        .await
        .unwrap();
    w.send(&Message::UpdateFee(UpdateFee {
        channel_id: p.id,
        feerate_per_kw: 1,
    }))
    .await
    .unwrap();
    match r.recv().await.unwrap() {
        Message::Warning(m) => assert_eq!(m.channel_id, p.id),
        other => panic!("expected a warning, got {other:?}"),
    }
    w.send(&Message::CommitmentSigned(CommitmentSigned {
        channel_id: p.id,
        signature: bitcoin::secp256k1::ecdsa::Signature::from_compact(&[7; 64]).unwrap(),
        htlc_signatures: vec![],
    }))
    .await
    .unwrap();
    assert!(matches!(r.recv().await.unwrap(), Message::Warning(_)));
    assert_eq!(p.b.channel(&p.id).await.unwrap(), before);

    // An unknown even message type: BOLT 1 says close the connection.
    w.send(&Message::Unknown {
        msg_type: 100,
        payload: vec![1, 2, 3],
    })
    .await
    .unwrap();
    assert!(r.recv().await.is_err(), "connection closed");

    // Funding messages nobody asked for are refused.
    let (mut w, mut r) = hub::peer::connect(p.b.listen_addr(), evil, p.b.node_id(), chain_hash())
        .await
        .unwrap();
    w.send(&Message::FundingSigned(FundingSigned {
        channel_id: ChannelId([5; 32]),
        signature: bitcoin::secp256k1::ecdsa::Signature::from_compact(&[7; 64]).unwrap(),
    }))
    .await
    .unwrap();
    assert!(matches!(r.recv().await, Ok(Message::Warning(_)) | Err(_)));

    // Garbage bytes instead of a handshake.
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(p.b.listen_addr())
            .await
            .unwrap();
        s.write_all(&[0xff; 200]).await.unwrap();
    }

    // The real channel still works both ways.
    pay(&p, false, 10_000_000, 1).await;
    pay(&p, true, 5_000_000, 2).await;
    quiescent(&p).await;
    let after = p.b.channel(&p.id).await.unwrap();
    assert_eq!(after.local.0, before.local.0 + 5_000_000);
    assert_eq!(after.status, ChannelStatus::Normal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_node_talks_only_to_its_hub() {
    use std::sync::Arc;
    let devnet = Arc::new(chain::Devnet::in_memory());
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub_node = start(&devnet, d1.path(), None).await;
    let light = light(&devnet, d2.path(), &hub_node).await;
    // A stranger completes the handshake but is dropped.
    let stranger = SecretKey::from_slice(&[0xab; 32]).unwrap();
    let (_w, mut r) =
        hub::peer::connect(light.listen_addr(), stranger, light.node_id(), chain_hash())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(r.recv().await.is_err(), "stranger disconnected");
    // Its hub is welcome.
    hub_node
        .connect_peer(light.node_id(), light.listen_addr())
        .await
        .unwrap();
}

/// Shutdowns for channels that do not exist, or repeated for the peer's own channel,
/// take no wallet address: 50 of them leave the wallet's next address where it was (an
/// index pushed past the gap limit would hide later sweeps after a restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_shutdowns_take_no_wallet_address() {
    let p = open_pair(None, None).await;
    let seed = chain::wallet::load_or_create_seed(&p._dirs.1.path().join("seed")).unwrap();
    let mut fresh = chain::wallet::Wallet::from_seed(&seed, Network::Regtest).unwrap();
    let derived: Vec<_> = (0..100).map(|_| fresh.new_address().unwrap()).collect();
    let before = p.b.new_address().await.unwrap();
    let i = derived
        .iter()
        .position(|a| *a == before)
        .expect("a wallet address");

    let evil = SecretKey::from_slice(&[0xef; 32]).unwrap();
    let (mut w, mut r) = hub::peer::connect(p.b.listen_addr(), evil, p.b.node_id(), chain_hash())
        .await
        .unwrap();
    for n in 0..50u8 {
        w.send(&Message::Shutdown(Shutdown {
            channel_id: ChannelId([n; 32]),
            scriptpubkey: before.script_pubkey().to_bytes(),
        }))
        .await
        .unwrap();
        assert!(matches!(r.recv().await.unwrap(), Message::Warning(_)));
    }
    let after = p.b.new_address().await.unwrap();
    assert_eq!(after, derived[i + 1], "the next address, no gap");
}
