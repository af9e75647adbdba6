//! BOLT 5: a preimage learnt after the upstream channel went to chain is used there.
//! Alice pays Mallory's invoice through the hub; Mallory (a scripted peer) holds the
//! HTLC; Alice force-closes her channel with the hub, so the incoming HTLC sits on her
//! commitment on chain, which the hub cannot claim without the preimage. Then Mallory
//! settles off chain: the hub has paid her, and must take the HTLC output of Alice's
//! commitment with the preimage before Alice can take it back after its expiry.

mod common;

use bitcoin::OutPoint;
use chain::{ChainSource, Devnet};
use channel::invoice::{Description, InvoiceBuilder, RouteHintHop};
use channel::keys::ChannelSecrets;
use channel::*;
use common::mallory::*;
use common::*;
use hub::node::ChannelStatus;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preimage_learnt_after_the_upstream_close_is_claimed_on_chain() {
    let devnet = Arc::new(Devnet::in_memory());
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = start(&devnet, dirs[0].path(), None).await;
    let alice = light(&devnet, dirs[1].path(), &hub).await;
    let addr = alice.new_address().await.unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    let mut m = Mallory::new(&devnet, &hub).await; // mines 101 blocks
    wait_until("alice funded", || async {
        alice.wallet_balance().await.to_sat() == 5_000_000_000
    })
    .await;
    alice
        .connect_peer(hub.node_id(), hub.listen_addr())
        .await
        .unwrap();
    let achan = alice
        .open_channel(hub.node_id(), 500_000, Msat(0))
        .await
        .unwrap();
    // Mallory's channel gives the hub 200,000 sat to pay her with.
    let mut mch = m
        .open_usable(
            &devnet,
            &hub,
            ChannelSecrets::from_seed(&[0x72; 32]),
            0x72,
            200_000_000,
        )
        .await;
    let mchan = mch.channel_id();
    wait_until(
        "both channels usable, mallory's with its short id",
        || async {
            hub.channel(&mchan)
                .await
                .unwrap()
                .short_channel_id
                .is_some()
                && alice.channel(&achan).await.unwrap().status == ChannelStatus::Normal
                && hub.channel(&achan).await.unwrap().status == ChannelStatus::Normal
        },
    )
    .await;
    let scid = hub.channel(&mchan).await.unwrap().short_channel_id;

    // Mallory's invoice, reached through the hub.
    let preimage = PaymentPreimage([0x5e; 32]);
    let mallory_key = bitcoin::secp256k1::SecretKey::from_slice(&[0x4d; 32]).unwrap();
    let invoice = InvoiceBuilder::new(
        bitcoin::Network::Regtest,
        preimage.payment_hash(),
        [0x5f; 32],
        Description::Direct("held".into()),
        hub::store::unix_now(),
    )
    .amount_msat(50_000_000)
    .route_hint(vec![RouteHintHop {
        src_node_id: hub.node_id(),
        short_channel_id: scid.unwrap(),
        fee_base_msat: 1_000,
        fee_proportional_millionths: 100,
        cltv_expiry_delta: 40,
    }])
    .build_signed(&mallory_key)
    .unwrap();
    let paying = {
        let alice = alice.clone();
        let bolt11 = invoice.to_string();
        tokio::spawn(async move {
            alice
                .pay_invoice(&bolt11, None, Duration::from_secs(600))
                .await
        })
    };
    // She holds the HTLC.
    let mut kept = Vec::new();
    m.serve_until(&mut mch, &[], &mut kept, settled_with(1))
        .await;

    // Alice force-closes: the incoming HTLC is on her commitment, on chain.
    let commitment_txid = alice.force_close(&achan).await.unwrap();
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("the hub sees the close", || async {
        hub.channel(&achan)
            .await
            .is_ok_and(|c| c.status != ChannelStatus::Normal)
    })
    .await;
    let (commitment, _) = devnet.transaction(&commitment_txid).await.unwrap().unwrap();
    let htlc_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 50_006)
        .expect("the HTLC output: 50,000 sat plus the hub's fee of 1,000 msat + 100 ppm")
        as u32;
    let htlc_out = OutPoint::new(commitment_txid, htlc_vout);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        devnet.find_spend(&htlc_out, 0).await.unwrap().is_none(),
        "no claim without the preimage"
    );

    // Mallory settles off chain: the hub has paid her 50,000 sat.
    m.fulfill_held(&mut mch, preimage, &mut kept).await;
    assert_eq!(hub.channel(&mchan).await.unwrap().local, Msat(150_000_000));

    // The hub claims the HTLC output of Alice's commitment with the preimage at once.
    wait_until("the hub's claim", || async {
        devnet.find_spend(&htlc_out, 0).await.unwrap().is_some()
    })
    .await;
    let claim = devnet.find_spend(&htlc_out, 0).await.unwrap().unwrap().tx;
    assert!(
        claim.input[0].witness.iter().any(|w| w == preimage.0),
        "claimed with the preimage"
    );
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    let got: u64 = claim.output.iter().map(|o| o.value.to_sat()).sum();
    let fee = 50_006 - got;
    assert!(fee < 1_000, "claim fee {fee}");
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == got
    })
    .await;
    wait_until("the hub's channel resolved", || async {
        hub.channel(&achan).await.unwrap().status == ChannelStatus::Closed
    })
    .await;
    // Alice learns the preimage from the chain: her payment succeeded.
    let paid = paying.await.unwrap().unwrap();
    assert_eq!(paid.status, "succeeded", "{paid:?}");
    assert_eq!(paid.preimage, Some(preimage));
}
