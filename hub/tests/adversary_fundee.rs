//! Mallory as the fundee of the hub's channel: she accepts, takes the hub's
//! funding_created, and never signs; she sends an `error` instead. The hub's funding is
//! never broadcast, its open fails, and the wallet's coins that funding would have spent
//! are spendable again at once (before, they stayed reserved until a restart, so a
//! merchant node could freeze the hub's liquidity one open at a time).

mod common;

use bitcoin::hashes::Hash;
use channel::keys::ChannelSecrets;
use channel::msgs::*;
use channel::*;
use common::mallory::*;
use common::*;
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fundee_that_never_signs_leaves_no_coins_reserved() {
    let devnet = Arc::new(chain::Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    // No anchor reserve needed: the channel type is not the point here.
    let hub = start_with_reserve(&devnet, dir.path(), None, 0).await;
    let addr = hub.new_address().await.unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    let mut m = Mallory::new(&devnet, &hub).await; // mines 101 blocks: the coin matures
    wait_until("the hub's coin spendable", || async {
        hub.wallet_balance().await.to_sat() == 5_000_000_000
    })
    .await;
    let mallory_id = bitcoin::secp256k1::PublicKey::from_secret_key(
        channel::keys::secp(),
        &bitcoin::secp256k1::SecretKey::from_slice(&[0x4d; 32]).unwrap(),
    );
    let (opener, open) = hub_opens_to(&hub, &mut m, mallory_id).await;
    let secrets = ChannelSecrets::from_seed(&[0x4e; 32]);
    m.w.send(&Message::AcceptChannel(accept_for(&open, &secrets)))
        .await
        .unwrap();
    match answer(&mut m.r).await {
        Some(Message::FundingCreated(_)) => {}
        other => panic!("funding_created expected, got {other:?}"),
    }
    // The funding is built and its coin reserved.
    assert_eq!(hub.wallet_balance().await.to_sat(), 0);
    m.w.send(&Message::ErrorMessage(ErrorMessage {
        channel_id: open.temporary_channel_id,
        data: b"no".to_vec(),
    }))
    .await
    .unwrap();
    assert_refused(opener.await.unwrap());
    assert_eq!(
        hub.wallet_balance().await.to_sat(),
        5_000_000_000,
        "the coin is spendable again"
    );
    assert!(hub.list_channels().await.is_empty());
    // No funding was broadcast: a block later the coin is still whole.
    let synced = hub.synced_blocks();
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("the hub saw the block", || async {
        hub.synced_blocks() > synced
    })
    .await;
    assert_eq!(hub.wallet_balance().await.to_sat(), 5_000_000_000);

    // Again, her error naming the final channel id this time: the caller hears it (not a
    // timeout a minute later) and the coin is free again.
    let (opener, open) = hub_opens_to(&hub, &mut m, mallory_id).await;
    m.w.send(&Message::AcceptChannel(accept_for(&open, &secrets)))
        .await
        .unwrap();
    let created = match answer(&mut m.r).await {
        Some(Message::FundingCreated(c)) => c,
        other => panic!("funding_created expected, got {other:?}"),
    };
    let final_id = ChannelId::from_funding_outpoint(
        &bitcoin::Txid::from_byte_array(created.funding_txid),
        created.funding_output_index,
    );
    m.w.send(&Message::ErrorMessage(ErrorMessage {
        channel_id: final_id,
        data: b"no".to_vec(),
    }))
    .await
    .unwrap();
    assert_refused(opener.await.unwrap());
    assert_eq!(hub.wallet_balance().await.to_sat(), 5_000_000_000);
}

type Opened = Result<ChannelId, hub::node::NodeError>;

/// The hub opens a 500,000 sat channel to Mallory (in a task: it waits for the end of
/// the open); its open_channel as Mallory reads it.
async fn hub_opens_to(
    hub: &Arc<hub::node::Node>,
    m: &mut Mallory,
    mallory_id: bitcoin::secp256k1::PublicKey,
) -> (tokio::task::JoinHandle<Opened>, OpenChannel) {
    let opener = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.open_channel(mallory_id, 500_000, Msat(0)).await })
    };
    match answer(&mut m.r).await {
        Some(Message::OpenChannel(o)) => (opener, o),
        other => panic!("open_channel expected, got {other:?}"),
    }
}

/// The open failed with Mallory's refusal, not a timeout.
fn assert_refused(result: Opened) {
    assert!(
        result
            .as_ref()
            .is_err_and(|e| e.to_string().contains("peer refused the channel: no")),
        "{result:?}"
    );
}

/// Mallory's accept_channel for the hub's `open`.
fn accept_for(open: &OpenChannel, secrets: &ChannelSecrets) -> AcceptChannel {
    let b = secrets.basepoints();
    AcceptChannel {
        temporary_channel_id: open.temporary_channel_id,
        dust_limit_satoshis: 546,
        max_htlc_value_in_flight_msat: open.funding_satoshis * 1000,
        channel_reserve_satoshis: 5_000,
        htlc_minimum_msat: 1,
        minimum_depth: 3,
        to_self_delay: 144,
        max_accepted_htlcs: 30,
        funding_pubkey: b.funding_pubkey,
        revocation_basepoint: b.revocation_basepoint,
        payment_basepoint: b.payment_basepoint,
        delayed_payment_basepoint: b.delayed_payment_basepoint,
        htlc_basepoint: b.htlc_basepoint,
        first_per_commitment_point: secrets.per_commitment_point(CommitmentNumber(0)),
        upfront_shutdown_script: None,
        channel_type: open.channel_type.clone(),
    }
}
