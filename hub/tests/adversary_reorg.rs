//! Mallory closes with her current commitment, lets the hub see it confirmed, then mines
//! a longer branch from the block before in which her *revoked* commitment (the one from
//! before she paid the hub 100,000 sat) spends the funding output instead. The hub undoes
//! what it did about the close that left the chain, watches the funding output again,
//! and punishes the revoked commitment: every satoshi of the channel the chain did not
//! take in fees ends in the hub's wallet.

mod common;

use bitcoin::{FeeRate, OutPoint, Transaction};
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

/// Mallory mines her revoked commitment; the hub's justice goes out, and is replaced at a
/// higher fee when a 50× fee spike starts. A miner who had not seen the replacement mines
/// the first version: the hub's claim is settled by it, but kept. That block is then
/// reorganised out and the first version forgotten by the mempool: the replacement goes
/// out again and confirms, and to_local does not stay open for her to take after her CSV
/// delay. The hub ends with the channel less the fees, to the satoshi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn justice_mined_in_an_earlier_version_then_reorganised_out_goes_out_again() {
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x79, 200_000_000).await;
    let id = ch.channel_id();
    let (revoked, _) = ch.signed_local_commitment().unwrap();
    m.pay_hub(&mut ch, &hub, 100_000_000).await;
    assert_eq!(hub.channel(&id).await.unwrap().local, Msat(300_000_000));
    let before = devnet
        .estimate_fee_rate(6)
        .await
        .unwrap()
        .expect("an estimate");

    devnet
        .mine_block_on(
            &devnet.tip().0,
            vec![revoked.clone()],
            elsewhere().script_pubkey(),
        )
        .unwrap();
    let revoked_txid = revoked.compute_txid();
    let to_local = OutPoint::new(
        revoked_txid,
        revoked
            .output
            .iter()
            .position(|o| o.value.to_sat() > 290_000)
            .expect("her to_local") as u32,
    );
    wait_until("the hub's justice in the mempool", || async {
        devnet.find_spend(&to_local, 0).await.unwrap().is_some()
    })
    .await;
    let first = devnet.find_spend(&to_local, 0).await.unwrap().unwrap().tx;
    devnet.set_competing_fee_rate(Some(FeeRate::from_sat_per_kwu(
        before.to_sat_per_kwu() * 50,
    )));
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("the hub's justice replaced", || async {
        devnet
            .find_spend(&to_local, 0)
            .await
            .unwrap()
            .is_some_and(|s| s.tx != first)
    })
    .await;
    let replacement = devnet.find_spend(&to_local, 0).await.unwrap().unwrap().tx;
    assert_eq!(
        replacement.output[0].script_pubkey, first.output[0].script_pubkey,
        "to the same place"
    );

    // A miner who had not seen the replacement mines the first version.
    let parent = devnet.tip().0;
    let stale = devnet
        .mine_block_on(&parent, vec![first.clone()], elsewhere().script_pubkey())
        .unwrap();
    wait_until("the hub at the tip", || async {
        hub.synced_blocks() >= u64::from(devnet.tip().1)
    })
    .await;
    // Reorganised out, and the first version gone from the mempool.
    devnet.invalidate_block(&stale).unwrap();
    devnet.clear_mempool();
    let b1 = devnet
        .mine_block_on(&parent, vec![], elsewhere().script_pubkey())
        .unwrap();
    devnet
        .mine_block_on(&b1, vec![], elsewhere().script_pubkey())
        .unwrap();
    assert_eq!(
        devnet.confirmations(&first.compute_txid()).await.unwrap(),
        0
    );

    // The hub's claim goes out again, long before her delay (144 blocks) ends.
    let mut claimed = None;
    for _ in 0..20 {
        wait_until("the hub at the tip", || async {
            hub.synced_blocks() >= u64::from(devnet.tip().1)
        })
        .await;
        devnet
            .generate_to_script(1, &elsewhere().script_pubkey())
            .unwrap();
        if let Some((tx, _)) = confirmed_spend(&devnet, to_local).await {
            claimed = Some(tx);
            break;
        }
    }
    let claim = claimed.expect("to_local claimed again after the reorganisation");
    assert_eq!(claim.output[0].script_pubkey, first.output[0].script_pubkey);

    // Her to_remote output is the hub's too; the wallet holds both, less the fees.
    devnet.set_competing_fee_rate(None);
    mine_until_closed(&devnet, &hub, &id, 60).await;
    let to_remote = OutPoint::new(revoked_txid, 1 - to_local.vout);
    let (sweep, _) = confirmed_spend(&devnet, to_remote)
        .await
        .expect("to_remote swept");
    let received = total_out(&claim) + total_out(&sweep);
    let fees = total_out(&revoked) - received;
    println!("justice mined in its first version, reorganised out, out again: the hub received {received} sat for {fees} sat of fees");
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == received
    })
    .await;
}
