//! Mallory (a scripted malicious peer, `common::mallory`) cheats with a revoked commitment
//! and races the justice: in the same block as the revoked commitment she confirms her
//! pre-signed HTLC-success (for an HTLC the hub offered her, whose preimage she knows) and
//! her HTLC-timeout (for an HTLC she offered the hub, past its expiry). A single justice
//! transaction spending every output would be invalidated by either; the hub takes each
//! output on its own and then the outputs of her second-stage transactions with the
//! revocation key. Every satoshi of the channel that the chain did not pay in fees ends
//! in the hub's wallet.

mod common;

use bitcoin::{OutPoint, Transaction};
use chain::ChainSource;
use channel::state::Channel;
use channel::*;
use common::mallory::*;
use common::*;

fn total_out(tx: &Transaction) -> u64 {
    tx.output.iter().map(|o| o.value.to_sat()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_commitment_raced_by_htlc_success_and_timeout_still_loses_everything() {
    // Mallory funds 500,000 sat and gives the hub 200,000 of them.
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x71, 200_000_000).await;
    let id = ch.channel_id();
    let mut kept = Vec::new();
    let tip = devnet.tip().1;

    // A: the hub pays Mallory 60,000 sat; she knows the preimage and holds the HTLC.
    let preimage_a = PaymentPreimage([0xa1; 32]);
    let paying = {
        let hub = hub.clone();
        tokio::spawn(async move {
            hub.pay(&id, Msat(60_000_000), preimage_a.payment_hash(), tip + 60)
                .await
        })
    };
    m.serve_until(&mut ch, &[preimage_a], &mut kept, settled_with(1))
        .await;

    // B: Mallory offers the hub 40,000 sat with an onion it cannot read; the hub commits
    // to it, then fails it. The commitment with A and B is the one she will broadcast.
    let expiry_b = tip + 20;
    let add = ch
        .send_add_htlc(
            Msat(40_000_000),
            PaymentHash([0xb2; 32]),
            expiry_b,
            Default::default(),
        )
        .unwrap();
    m.w.send(&channel::msgs::Message::UpdateAddHtlc(add))
        .await
        .unwrap();
    m.sign_if_needed(&mut ch).await;
    let with_two = |ch: &Channel| ch.local_commitment_number().0 > 0 && settled_with(1)(ch);
    m.serve_until(&mut ch, &[preimage_a], &mut kept, |c| {
        with_two(c) && c.log().committed_htlcs.len() == 1
    })
    .await;
    let old = kept
        .iter()
        .find(|k| k.htlcs == 2)
        .expect("Mallory was given a commitment with both HTLCs")
        .clone();
    assert_eq!(old.htlc_txs.len(), 2, "her HTLC-success and HTLC-timeout");

    // Mallory is paid off chain: A fulfilled, which revokes everything before.
    m.fulfill_held(&mut ch, preimage_a, &mut kept).await;
    assert_eq!(paying.await.unwrap().unwrap(), preimage_a);
    assert!(
        old.number.0 + 1 < ch.local_commitment_number().0,
        "the kept commitment is revoked"
    );
    let hub_balance = hub.channel(&id).await.unwrap().local;
    assert_eq!(hub_balance, Msat(140_000_000));
    assert_eq!(hub.wallet_balance().await, bitcoin::Amount::ZERO);

    // Past B's expiry, the revoked commitment and both second-stage transactions are
    // confirmed in one block.
    while devnet.tip().1 < expiry_b {
        devnet
            .generate_to_script(1, &elsewhere().script_pubkey())
            .unwrap();
    }
    devnet
        .broadcast(&old.commitment)
        .await
        .expect("a valid, if revoked, commitment");
    for tx in &old.htlc_txs {
        devnet
            .broadcast(tx)
            .await
            .expect("her second-stage transaction");
    }
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    let old_txid = old.commitment.compute_txid();
    for tx in &old.htlc_txs {
        assert!(devnet.confirmations(&tx.compute_txid()).await.unwrap() >= 1);
    }

    // The hub takes to_local, its to_remote, and both second-stage outputs.
    mine_until_closed(&devnet, &hub, &id, 100).await;

    let htlc_vouts: Vec<u32> = old
        .htlc_txs
        .iter()
        .map(|t| t.input[0].previous_output.vout)
        .collect();
    let mut theirs = Vec::new(); // (outpoint, value) the hub must have taken
    for (vout, o) in old.commitment.output.iter().enumerate() {
        if !htlc_vouts.contains(&(vout as u32)) {
            theirs.push((OutPoint::new(old_txid, vout as u32), o.value.to_sat()));
        }
    }
    assert_eq!(theirs.len(), 2, "to_local and to_remote");
    for tx in &old.htlc_txs {
        theirs.push((
            OutPoint::new(tx.compute_txid(), 0),
            tx.output[0].value.to_sat(),
        ));
    }
    let mut hub_txs: Vec<Transaction> = Vec::new();
    for (outpoint, _) in &theirs {
        let spend = devnet
            .find_spend(outpoint, 0)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{outpoint} left to the cheater"));
        assert!(spend.block.is_some(), "confirmed");
        if !hub_txs.contains(&spend.tx) {
            hub_txs.push(spend.tx);
        }
    }
    let taken: u64 = theirs.iter().map(|(_, v)| v).sum();
    let received: u64 = hub_txs.iter().map(total_out).sum();
    let hub_fees = taken - received;
    let commitment_fee = FUNDING_SAT - total_out(&old.commitment);
    let cheater_fees: u64 = old
        .htlc_txs
        .iter()
        .map(|t| {
            let input = &old.commitment.output[t.input[0].previous_output.vout as usize];
            input.value.to_sat() - total_out(t)
        })
        .sum();
    println!(
        "revoked commitment fee {commitment_fee} sat, cheater's HTLC transactions {cheater_fees} sat, \
         hub's {} justice transactions {hub_fees} sat",
        hub_txs.len()
    );
    assert!(hub_fees < 5_000, "hub fees {hub_fees}");
    // Everything the chain did not take in fees is the hub's.
    assert_eq!(
        received,
        FUNDING_SAT - commitment_fee - cheater_fees - hub_fees
    );
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == received
    })
    .await;
}
