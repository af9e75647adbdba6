//! Mallory closes with her current commitment, lets the hub see it confirmed, then mines
//! a longer branch from the block before in which her *revoked* commitment (the one from
//! before she paid the hub 100,000 sat) spends the funding output instead. The hub undoes
//! what it did about the close that left the chain, watches the funding output again,
//! and punishes the revoked commitment: every satoshi of the channel the chain did not
//! take in fees ends in the hub's wallet.

mod common;

use bitcoin::Transaction;
use chain::ChainSource;
use channel::*;
use common::mallory::*;
use common::*;
use hub::node::ChannelStatus;
use std::time::Duration;

fn total_out(tx: &Transaction) -> u64 {
    tx.output.iter().map(|o| o.value.to_sat()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_reorganised_out_for_a_revoked_commitment_is_punished() {
    // Mallory funds 500,000 sat and gives the hub 200,000 of them.
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x74, 200_000_000).await;
    let id = ch.channel_id();
    let (revoked, _) = ch.signed_local_commitment().unwrap();

    // She pays a 100,000 sat invoice of the hub's: her first commitment is revoked.
    m.pay_hub(&mut ch, &hub, 100_000_000).await;
    assert_eq!(hub.channel(&id).await.unwrap().local, Msat(300_000_000));
    assert_eq!(hub.wallet_balance().await, bitcoin::Amount::ZERO);

    // Her current commitment confirms, and the hub takes note.
    let (current, _) = ch.signed_local_commitment().unwrap();
    let parent = devnet.tip().0;
    devnet.broadcast(&current).await.unwrap();
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("the hub sees the close", || async {
        hub.channel(&id).await.unwrap().status != ChannelStatus::Normal
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A longer branch from the block before: her revoked commitment instead.
    let a1 = devnet
        .mine_block_on(&parent, vec![revoked.clone()], elsewhere().script_pubkey())
        .unwrap();
    devnet
        .mine_block_on(&a1, vec![], elsewhere().script_pubkey())
        .unwrap();
    let revoked_txid = revoked.compute_txid();
    assert!(devnet.confirmations(&revoked_txid).await.unwrap() >= 1);
    assert_eq!(
        devnet.confirmations(&current.compute_txid()).await.unwrap(),
        0,
        "her current commitment left the chain"
    );

    // The hub takes both outputs of the revoked commitment.
    mine_until_closed(&devnet, &hub, &id, 100).await;
    let mut hub_txs: Vec<Transaction> = Vec::new();
    for vout in 0..revoked.output.len() as u32 {
        let spend = devnet
            .find_spend(&bitcoin::OutPoint::new(revoked_txid, vout), 0)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("output {vout} left to the cheater"));
        assert!(spend.block.is_some(), "confirmed");
        if !hub_txs.contains(&spend.tx) {
            hub_txs.push(spend.tx);
        }
    }
    let received: u64 = hub_txs.iter().map(total_out).sum();
    let commitment_fee = FUNDING_SAT - total_out(&revoked);
    let hub_fees = total_out(&revoked) - received;
    println!(
        "revoked commitment mined on a longer branch: fee {commitment_fee} sat; the hub's {} \
         transactions took {received} sat for {hub_fees} sat of fees",
        hub_txs.len()
    );
    assert!(hub_fees < 3_000, "{hub_fees}");
    assert_eq!(received, FUNDING_SAT - commitment_fee - hub_fees);
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == received
    })
    .await;
}
