//! A hand-driven peer ("Mallory", built from the channel crate and the wallet, not from the
//! node) opens a real channel with a node over BOLT 8, then sends an invalid commitment
//! signature, a wrong revocation secret and messages out of order. Each time the node warns
//! and disconnects with its channel state unchanged; after reestablishment the channel
//! still settles a payment correctly.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Amount, Network, OutPoint, ScriptBuf};
use chain::{ChainSource, Devnet};
use channel::keys::{secp, ChannelSecrets};
use channel::msgs::*;
use channel::state::open::{check_accept_channel, setup_from_messages, OpenPolicy};
use channel::state::Channel;
use channel::*;
use common::*;
use hub::peer::{connect, PeerReader, PeerWriter};
use std::sync::Arc;
use std::time::Duration;

fn chain_hash() -> [u8; 32] {
    bitcoin::constants::ChainHash::using_genesis_block(Network::Regtest).to_bytes()
}

async fn next(r: &mut PeerReader) -> Option<Message> {
    match tokio::time::timeout(Duration::from_millis(700), r.recv()).await {
        Ok(Ok(m)) => Some(m),
        _ => None,
    }
}

/// Handles what the node sends, as an honest peer would, until it goes quiet.
async fn pump(ch: &mut Channel, w: &mut PeerWriter, r: &mut PeerReader) -> Vec<Message> {
    let mut seen = Vec::new();
    while let Some(m) = next(r).await {
        match &m {
            Message::RevokeAndAck(x) => {
                ch.receive_revoke(x).unwrap();
            }
            Message::CommitmentSigned(x) => {
                let raa = ch.receive_commitment(x).unwrap();
                w.send(&Message::RevokeAndAck(raa)).await.unwrap();
            }
            Message::UpdateFulfillHtlc(x) => {
                ch.receive_fulfill(x).unwrap();
            }
            Message::ChannelReestablish(x) => {
                for again in ch.handle_reestablish(x).unwrap() {
                    w.send(&again).await.unwrap();
                }
            }
            _ => {
                seen.push(m);
                continue;
            }
        }
        if ch.has_changes_to_sign() && !ch.awaiting_revoke() {
            let cs = ch.send_commitment().unwrap();
            w.send(&Message::CommitmentSigned(cs)).await.unwrap();
        }
        seen.push(m);
    }
    seen
}

async fn reconnect(
    ch: &mut Channel,
    key: SecretKey,
    node: &hub::node::Node,
) -> (PeerWriter, PeerReader) {
    ch.on_disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut w, r) = connect(node.listen_addr(), key, node.node_id(), chain_hash())
        .await
        .unwrap();
    w.send(&Message::ChannelReestablish(ch.reestablish_message()))
        .await
        .unwrap();
    (w, r)
}

fn refused(seen: &[Message]) -> bool {
    seen.iter().any(|m| matches!(m, Message::Warning(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refuses_bad_signatures_secrets_and_order() {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let bob = start(&devnet, dir.path(), None).await;

    // Mallory's own wallet, funded with one coinbase.
    let (mut wallet, _poller) = funded_wallet(&devnet, &[9; 32]).await;
    let source: Arc<dyn ChainSource> = devnet.clone();

    // Open a channel by hand.
    let key = SecretKey::from_slice(&[0x4d; 32]).unwrap();
    let secrets = ChannelSecrets::from_seed(&[0x4e; 32]);
    let b = secrets.basepoints();
    let (mut w, mut r) = connect(bob.listen_addr(), key, bob.node_id(), chain_hash())
        .await
        .unwrap();
    let open = OpenChannel {
        chain_hash: chain_hash(),
        temporary_channel_id: ChannelId([0x4f; 32]),
        funding_satoshis: 500_000,
        push_msat: 0,
        dust_limit_satoshis: 546,
        max_htlc_value_in_flight_msat: 500_000_000,
        channel_reserve_satoshis: 5_000,
        htlc_minimum_msat: 1,
        feerate_per_kw: 2500,
        to_self_delay: 144,
        max_accepted_htlcs: 30,
        funding_pubkey: b.funding_pubkey,
        revocation_basepoint: b.revocation_basepoint,
        payment_basepoint: b.payment_basepoint,
        delayed_payment_basepoint: b.delayed_payment_basepoint,
        htlc_basepoint: b.htlc_basepoint,
        first_per_commitment_point: secrets.per_commitment_point(CommitmentNumber(0)),
        channel_flags: 0,
        upfront_shutdown_script: None,
        channel_type: Some(channel::channel_type::ChannelType::StaticRemoteKey.to_bytes()),
    };
    w.send(&Message::OpenChannel(open.clone())).await.unwrap();
    let Some(Message::AcceptChannel(accept)) = next(&mut r).await else {
        panic!("accept_channel")
    };
    check_accept_channel(&open, &accept, &OpenPolicy::default()).unwrap();
    let script = channel::script::funding_script(&open.funding_pubkey, &accept.funding_pubkey);
    let funding = wallet
        .build_funding_tx(
            ScriptBuf::new_p2wsh(&script.wscript_hash()),
            Amount::from_sat(500_000),
            bitcoin::FeeRate::from_sat_per_vb_u32(2),
        )
        .unwrap();
    let outpoint = OutPoint::new(funding.tx.compute_txid(), funding.funding_output_index);
    let mut ch = Channel::new(setup_from_messages(&open, &accept, outpoint, true), secrets);
    w.send(&Message::FundingCreated(FundingCreated {
        temporary_channel_id: open.temporary_channel_id,
        funding_txid: outpoint.txid.to_byte_array(),
        funding_output_index: outpoint.vout as u16,
        signature: ch.sign_initial_remote_commitment().unwrap(),
    }))
    .await
    .unwrap();
    let Some(Message::FundingSigned(signed)) = next(&mut r).await else {
        panic!("funding_signed")
    };
    ch.receive_initial_signature(signed.signature).unwrap();
    source.broadcast(&funding.tx).await.unwrap();
    devnet
        .generate_to_script(3, &elsewhere().script_pubkey())
        .unwrap();
    let Some(Message::ChannelReady(ready)) = next(&mut r).await else {
        panic!("channel_ready")
    };
    ch.receive_channel_ready(&ready).unwrap();
    w.send(&Message::ChannelReady(ch.channel_ready()))
        .await
        .unwrap();
    let id = ch.channel_id();
    wait_until("bob's channel normal", || async {
        bob.channel(&id)
            .await
            .map(|c| c.status == hub::node::ChannelStatus::Normal)
            .unwrap_or(false)
    })
    .await;
    let before = bob.channel(&id).await.unwrap();

    let preimage = PaymentPreimage([0x50; 32]);
    bob.add_preimage(preimage).await.unwrap();
    // A one-hop BOLT 4 onion telling Bob he is the payee.
    let (onion, _) = channel::onion::create_onion(
        &SecretKey::from_slice(&[0x51; 32]).unwrap(),
        &[(
            bob.node_id(),
            channel::onion::HopPayload {
                amt_to_forward: 20_000_000,
                outgoing_cltv_value: 600,
                short_channel_id: None,
                payment_data: None,
            },
        )],
        &preimage.payment_hash().0,
    )
    .unwrap();
    let add = |ch: &mut Channel| {
        ch.send_add_htlc(
            Msat(20_000_000),
            preimage.payment_hash(),
            600,
            onion.clone(),
        )
        .unwrap()
    };

    // 1. An invalid commitment signature.
    let m = add(&mut ch);
    w.send(&Message::UpdateAddHtlc(m)).await.unwrap();
    let mut bad = ch.clone().send_commitment().unwrap();
    bad.signature = bitcoin::secp256k1::ecdsa::Signature::from_compact(&[3; 64]).unwrap();
    w.send(&Message::CommitmentSigned(bad)).await.unwrap();
    let seen = pump(&mut ch, &mut w, &mut r).await;
    assert!(refused(&seen), "warned: {seen:?}");
    assert!(r.recv().await.is_err(), "disconnected");
    // Once the node has handled the disconnect (it forgets uncommitted updates), its
    // channel is exactly as before the bad message.
    wait_until("state unchanged", || async {
        same_state(bob.channel(&id).await.unwrap(), &before)
    })
    .await;

    // 2. After reestablishing, the add again with a good signature, then a wrong secret.
    let (mut w, mut r) = reconnect(&mut ch, key, &bob).await;
    pump(&mut ch, &mut w, &mut r).await;
    let m = add(&mut ch);
    w.send(&Message::UpdateAddHtlc(m)).await.unwrap();
    let cs = ch.send_commitment().unwrap();
    w.send(&Message::CommitmentSigned(cs)).await.unwrap();
    // Bob answers revoke_and_ack and his own commitment_signed.
    let Some(Message::RevokeAndAck(raa)) = next(&mut r).await else {
        panic!("revoke_and_ack")
    };
    ch.receive_revoke(&raa).unwrap();
    let Some(Message::CommitmentSigned(theirs)) = next(&mut r).await else {
        panic!("commitment_signed")
    };
    let mut honest = ch.clone();
    let mut raa = honest.receive_commitment(&theirs).unwrap();
    let before = bob.channel(&id).await.unwrap();
    raa.per_commitment_secret = [0x33; 32];
    w.send(&Message::RevokeAndAck(raa)).await.unwrap();
    let seen = pump(&mut ch, &mut w, &mut r).await;
    assert!(refused(&seen), "warned: {seen:?}");
    // Once the node has handled the disconnect (it forgets uncommitted updates), its
    // channel is exactly as before the bad message.
    wait_until("state unchanged", || async {
        same_state(bob.channel(&id).await.unwrap(), &before)
    })
    .await;

    // 3. Reestablish (Bob retransmits his commitment_signed), then a message out of
    // order: a revoke_and_ack nobody asked for.
    let (mut w, mut r) = reconnect(&mut ch, key, &bob).await;
    pump(&mut ch, &mut w, &mut r).await;
    let before = bob.channel(&id).await.unwrap();
    let stray = RevokeAndAck {
        channel_id: id,
        per_commitment_secret: [0x34; 32],
        next_per_commitment_point: PublicKey::from_secret_key(secp(), &key),
    };
    w.send(&Message::RevokeAndAck(stray)).await.unwrap();
    let seen = pump(&mut ch, &mut w, &mut r).await;
    assert!(refused(&seen), "warned: {seen:?}");
    // Once the node has handled the disconnect (it forgets uncommitted updates), its
    // channel is exactly as before the bad message.
    wait_until("state unchanged", || async {
        same_state(bob.channel(&id).await.unwrap(), &before)
    })
    .await;

    // 4. Behaving again: the HTLC is settled and Bob has exactly 20,000 sat.
    let (mut w, mut r) = reconnect(&mut ch, key, &bob).await;
    pump(&mut ch, &mut w, &mut r).await;
    pump(&mut ch, &mut w, &mut r).await;
    wait_until("settled", || async {
        bob.channel(&id).await.unwrap().quiescent
    })
    .await;
    let c = bob.channel(&id).await.unwrap();
    assert_eq!((c.local.0, c.htlcs), (20_000_000, 0));
    let v = ch.view(channel::state::ViewOf::CurrentLocal);
    assert_eq!((v.local.0, v.remote.0), (480_000_000, 20_000_000));

    // 5. A channel_reestablish for a channel Bob does not know gets an error for that
    // channel id, and nothing else: the connection and the real channel carry on.
    let (mut w, mut r) = reconnect(&mut ch, key, &bob).await;
    pump(&mut ch, &mut w, &mut r).await;
    let mut stranger = ch.reestablish_message();
    stranger.channel_id = ChannelId([0x77; 32]);
    w.send(&Message::ChannelReestablish(stranger))
        .await
        .unwrap();
    match next(&mut r).await {
        Some(Message::ErrorMessage(e)) => assert_eq!(e.channel_id, ChannelId([0x77; 32])),
        other => panic!("expected an error for the unknown channel, got {other:?}"),
    }
    w.send(&Message::Ping(Ping {
        num_pong_bytes: 3,
        ignored: vec![],
    }))
    .await
    .unwrap();
    assert!(
        matches!(next(&mut r).await, Some(Message::Pong(_))),
        "still connected"
    );
    assert_eq!(
        bob.channel(&id).await.unwrap().status,
        hub::node::ChannelStatus::Normal
    );

    // 6. Mallory comes back having forgotten the channel and sends LDK's "bogus"
    // reestablish (both numbers 0): Bob cannot resume, so he sends an error and fails the
    // channel on chain with his latest commitment, which lets Mallory recover her funds.
    drop((w, r));
    ch.on_disconnect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut w, mut r) = connect(bob.listen_addr(), key, bob.node_id(), chain_hash())
        .await
        .unwrap();
    let commitment = bob.signed_commitment(&id).await.unwrap();
    w.send(&Message::ChannelReestablish(ChannelReestablish {
        channel_id: id,
        next_commitment_number: 0,
        next_revocation_number: 0,
        your_last_per_commitment_secret: [0; 32],
        my_current_per_commitment_point: PublicKey::from_secret_key(secp(), &key),
    }))
    .await
    .unwrap();
    let seen = pump(&mut ch, &mut w, &mut r).await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, Message::ErrorMessage(e) if e.channel_id == id)),
        "an error for the channel: {seen:?}"
    );
    wait_until("Bob's commitment in the mempool", || async {
        matches!(
            source.tx_status(&commitment.compute_txid()).await,
            Ok(chain::TxStatus::InMempool | chain::TxStatus::Confirmed { .. })
        )
    })
    .await;
    assert_eq!(
        bob.channel(&id).await.unwrap().status,
        hub::node::ChannelStatus::ForceClosed
    );
}

/// The channel as before, whether or not the peer is connected at this moment.
fn same_state(now: hub::node::ChannelSummary, before: &hub::node::ChannelSummary) -> bool {
    hub::node::ChannelSummary {
        active: before.active,
        ..now
    } == *before
}
