//! Two nodes on 127.0.0.1 over the BOLT 8 link, on the embedded devnet chain, with SQLite
//! (and PostgreSQL) storage: open a channel, pay 100 times both ways, close cooperatively;
//! force close; breach. Every test checks the satoshis in both on-chain wallets.

mod common;

use bitcoin::Amount;
use chain::ChainSource;
use channel::channel_type::ChannelType;
use common::*;
use hub::node::ChannelStatus;
use std::time::Duration;

/// With `bob_reserve` 0 Bob accepts Alice's anchor channel; with the default reserve,
/// which he has not got (no coins), he refuses it with an `error` and Alice proposes
/// static_remotekey instead, as LDK does.
async fn pay_both_ways_and_close(db_a: Option<String>, db_b: Option<String>, bob_reserve: u64) {
    let p = open_pair_with(db_a, db_b, bob_reserve).await;
    let (a, b, id) = (&p.a, &p.b, p.id);
    let expected = if bob_reserve == 0 {
        ChannelType::AnchorsZeroFeeHtlcTx
    } else {
        ChannelType::StaticRemoteKey
    };
    for n in [a, b] {
        assert_eq!(n.channel(&id).await.unwrap().channel_type, expected);
    }
    // 100 payments, alternating: Alice 20,000 sat to Bob, Bob 5,000 sat back.
    let (mut to_bob, mut to_alice) = (0u64, 0u64);
    for i in 0..100u32 {
        if i % 2 == 0 {
            pay(&p, false, 20_000_000, i).await;
            to_bob += 20_000_000;
        } else {
            pay(&p, true, 5_000_000, i).await;
            to_alice += 5_000_000;
        }
    }
    quiescent(&p).await;
    let alice_msat = CAPACITY * 1000 - to_bob + to_alice;
    let bob_msat = to_bob - to_alice;
    let ca = a.channel(&id).await.unwrap();
    let cb = b.channel(&id).await.unwrap();
    assert_eq!(
        (ca.local.0, ca.remote.0, ca.htlcs),
        (alice_msat, bob_msat, 0)
    );
    assert_eq!(
        (cb.local.0, cb.remote.0, cb.htlcs),
        (bob_msat, alice_msat, 0)
    );

    // Cooperative close.
    a.close_channel(&id).await.unwrap();
    wait_until("closing tx", || async {
        a.channel(&id).await.unwrap().closing_tx.is_some()
    })
    .await;
    wait_until("closing tx on bob", || async {
        b.channel(&id).await.unwrap().closing_tx.is_some()
    })
    .await;
    let closing = a.channel(&id).await.unwrap().closing_tx.unwrap();
    assert_eq!(
        Some(closing.clone()),
        b.channel(&id).await.unwrap().closing_tx
    );
    mine(&p, 1).await;
    for n in [a, b] {
        wait_until("closed", || async {
            n.channel(&id).await.unwrap().status == ChannelStatus::Closed
        })
        .await;
    }
    let paid: u64 = closing.output.iter().map(|o| o.value.to_sat()).sum();
    let fee = CAPACITY - paid;
    assert!(fee > 0 && fee < 2_000, "closing fee {fee}");
    // Bob (not the funder) gets exactly his balance; Alice gets hers minus the fee.
    wait_until("bob's wallet", || async {
        b.wallet_balance().await == Amount::from_sat(bob_msat / 1000)
    })
    .await;
    let alice_expected = p.wallet_after_funding + Amount::from_sat(alice_msat / 1000 - fee);
    wait_until("alice's wallet", || async {
        a.wallet_balance().await == alice_expected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_pay_both_ways_and_close_cooperatively_sqlite() {
    pay_both_ways_and_close(None, None, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_pay_both_ways_and_close_cooperatively_postgres() {
    let (Some(a), Some(b)) = (
        scenarios::postgres_db("node_a").await,
        scenarios::postgres_db("node_b").await,
    ) else {
        eprintln!("HUB_TEST_POSTGRES_URL not set: PostgreSQL node test skipped");
        return;
    };
    pay_both_ways_and_close(
        Some(a.url.clone()),
        Some(b.url.clone()),
        hub::node::DEFAULT_ANCHOR_RESERVE_SAT,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_close_returns_both_balances_on_chain() {
    let p = open_pair(None, None).await;
    for i in 0..4 {
        pay(&p, false, 50_000_000, i).await;
    }
    quiescent(&p).await;
    let txid = p.a.force_close(&p.id).await.unwrap();
    mine(&p, 1).await;
    // Bob's to_remote pays his payment basepoint directly: he sweeps it at once.
    wait_until("bob's sweep", || async {
        !p.b.channel(&p.id).await.unwrap().pending_sweeps.is_empty()
    })
    .await;
    // The sweep is listed before it is broadcast: mine once it is in the mempool.
    let sweep_txid = p.b.channel(&p.id).await.unwrap().pending_sweeps[0].compute_txid();
    wait_until("bob's sweep in the mempool", || async {
        use chain::ChainSource;
        matches!(
            p.devnet.tx_status(&sweep_txid).await,
            Ok(chain::TxStatus::InMempool | chain::TxStatus::Confirmed { .. })
        )
    })
    .await;
    mine(&p, 1).await;
    let commitment = {
        use chain::ChainSource;
        p.devnet
            .transaction(&txid)
            .await
            .unwrap()
            .expect("commitment on chain")
            .0
    };
    // An anchor channel: two anchors of 330 sat, paid by Alice (the funder).
    assert_eq!(anchor_outputs(&commitment), 2);
    // Bob: 200,000 sat in the commitment's to_remote (behind a CSV of 1 block), minus
    // his sweep's fee.
    let to_remote = commitment
        .output
        .iter()
        .position(|o| o.value == Amount::from_sat(200_000))
        .unwrap();
    assert!(commitment.output[to_remote].script_pubkey.is_p2wsh());
    let sweep = spender(&p, bitcoin::OutPoint::new(txid, to_remote as u32)).await;
    assert_eq!(
        commitment.output[to_remote].value,
        Amount::from_sat(200_000)
    );
    let bob_fee = fee_of(&sweep, &[commitment.output[to_remote].clone()]);
    // At the chain's estimate for a sweep nobody else can take (the builder counts the
    // signature at its largest size: up to 2 weight units more), as read when it was
    // built: the estimate read now may have moved since, by up to a tenth here.
    let estimate = p.devnet.estimate_fee_rate(1008).await.unwrap().unwrap();
    let weight = sweep.weight().to_wu();
    assert!(
        bob_fee > 0
            && bob_fee <= estimate.to_sat_per_kwu().max(253) * (weight + 2) * 11 / 10_000 + 1,
        "fee {bob_fee} over {weight} wu at {estimate:?}"
    );
    wait_until("bob's wallet", || async {
        p.b.wallet_balance().await == Amount::from_sat(200_000 - bob_fee)
    })
    .await;

    // Alice's to_local is locked for 144 blocks (Bob's to_self_delay for her).
    let to_local = commitment
        .output
        .iter()
        .position(|o| ![200_000, ANCHOR_SAT].contains(&o.value.to_sat()))
        .unwrap();
    mine(&p, 140).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.a.wallet_balance().await,
        p.wallet_after_funding,
        "nothing before the CSV delay"
    );
    mine(&p, 5).await;
    wait_until("alice's sweep in the mempool", || async {
        use chain::ChainSource;
        !p.devnet.mempool_txids().await.unwrap().is_empty()
    })
    .await;
    mine(&p, 1).await;
    wait_until("alice closed", || async {
        p.a.channel(&p.id).await.unwrap().status == ChannelStatus::Closed
    })
    .await;
    let sweep = spender(&p, bitcoin::OutPoint::new(txid, to_local as u32)).await;
    let alice_fee = fee_of(&sweep, &[commitment.output[to_local].clone()]);
    let commitment_fee = CAPACITY
        - commitment
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .sum::<u64>();
    assert_eq!(
        commitment.output[to_local].value.to_sat(),
        800_000 - commitment_fee - 2 * ANCHOR_SAT
    );
    let expected =
        p.wallet_after_funding + commitment.output[to_local].value - Amount::from_sat(alice_fee);
    wait_until("alice's wallet", || async {
        p.a.wallet_balance().await == expected
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breach_is_punished_with_the_whole_channel() {
    let p = open_pair(None, None).await;
    pay(&p, false, 100_000_000, 0).await;
    quiescent(&p).await;
    // Alice keeps this commitment (she has 900,000 sat in it), then pays Bob more.
    let old = p.a.signed_commitment(&p.id).await.unwrap();
    for i in 1..4 {
        pay(&p, false, 100_000_000, i).await;
    }
    quiescent(&p).await;
    // Alice cheats: she broadcasts the revoked commitment.
    {
        use chain::ChainSource;
        p.devnet
            .broadcast(&old)
            .await
            .expect("old commitment is a valid transaction");
    }
    mine(&p, 1).await;
    wait_until("bob's justice", || async {
        p.b.channel(&p.id).await.unwrap().pending_sweeps.len() == 2
    })
    .await;
    wait_until("bob's justice in the mempool", || async {
        use chain::ChainSource;
        p.devnet.mempool_txids().await.unwrap().len() == 2
    })
    .await;
    mine(&p, 1).await;
    wait_until("bob closed", || async {
        p.b.channel(&p.id).await.unwrap().status == ChannelStatus::Closed
    })
    .await;

    // Every output of the revoked commitment went to Bob, but the two 330 sat anchors
    // (anyone's after 16 blocks; not worth their sweep's fee).
    assert_eq!(anchor_outputs(&old), 2);
    let old_txid = old.compute_txid();
    let mut fees = 0;
    let mut seen = Vec::new();
    for vout in (0..old.output.len()).filter(|v| old.output[*v].value.to_sat() != ANCHOR_SAT) {
        let tx = spender(&p, bitcoin::OutPoint::new(old_txid, vout as u32)).await;
        if !seen.contains(&tx.compute_txid()) {
            let spent: Vec<_> = tx
                .input
                .iter()
                .map(|i| old.output[i.previous_output.vout as usize].clone())
                .collect();
            fees += fee_of(&tx, &spent);
            seen.push(tx.compute_txid());
        }
    }
    let old_total: u64 = old.output.iter().map(|o| o.value.to_sat()).sum::<u64>() - 2 * ANCHOR_SAT;
    wait_until("bob's wallet", || async {
        p.b.wallet_balance().await == Amount::from_sat(old_total - fees)
    })
    .await;
    assert!(
        old_total - fees > CAPACITY - 20_000,
        "bob has the whole channel less fees"
    );
    assert_eq!(
        p.a.wallet_balance().await,
        p.wallet_after_funding,
        "the cheater gets nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_close_with_htlcs_in_flight() {
    use chain::ChainSource;
    let p = open_pair(None, None).await;
    pay(&p, false, 100_000_000, 0).await;
    quiescent(&p).await;
    // Bob holds two incoming payments: he knows the first preimage, not the second.
    let p1 = channel::PaymentPreimage([0x31; 32]);
    let h1 = p1.payment_hash();
    let h2 = channel::PaymentPreimage([0x32; 32]).payment_hash();
    p.b.hold(h1).await;
    p.b.hold(h2).await;
    p.b.add_preimage(p1).await.unwrap();
    let height = p.devnet.tip().1;
    let (a1, a2) = (p.a.clone(), p.a.clone());
    let id = p.id;
    tokio::spawn(async move {
        a1.pay(&id, channel::Msat(30_000_000), h1, height + 30)
            .await
    });
    tokio::spawn(async move {
        a2.pay(&id, channel::Msat(20_000_000), h2, height + 10)
            .await
    });
    htlcs_in_both(&p, 2).await;

    let txid = p.a.force_close(&p.id).await.unwrap();
    mine(&p, 1).await;
    let commitment = p
        .devnet
        .transaction(&txid)
        .await
        .unwrap()
        .expect("on chain")
        .0;
    let vout_of = |sat: u64| {
        commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == sat)
            .expect("output") as u32
    };
    let (v1, v2, v_remote) = (vout_of(30_000), vout_of(20_000), vout_of(100_000));
    assert_eq!(anchor_outputs(&commitment), 2);
    let v_local = (0..commitment.output.len() as u32)
        .find(|v| {
            ![v1, v2, v_remote].contains(v)
                && commitment.output[*v as usize].value.to_sat() != ANCHOR_SAT
        })
        .unwrap();

    // Bob takes his balance at once and the first HTLC with its preimage.
    wait_until("bob's claims", || async {
        p.b.channel(&p.id).await.unwrap().pending_sweeps.len() == 2
    })
    .await;
    mine(&p, 1).await;
    // Alice's second HTLC times out at height + 10; then every CSV delay passes.
    mine(&p, 12).await;
    wait_until("alice's HTLC-timeout in the mempool", || async {
        !p.devnet.mempool_txids().await.unwrap().is_empty()
    })
    .await;
    mine(&p, 1).await;
    mine(&p, 160).await;
    synced(&p).await;
    // Her to_local and her HTLC-timeout's output, both past their CSV delay and
    // nobody else's: out (alone or together, in a batch) by the time she has seen the tip.
    let timeout_out = bitcoin::OutPoint::new(
        spender(&p, bitcoin::OutPoint::new(txid, v2))
            .await
            .compute_txid(),
        0,
    );
    for o in [bitcoin::OutPoint::new(txid, v_local), timeout_out] {
        assert!(
            matches!(p.devnet.find_spend(&o, 0).await, Ok(Some(_))),
            "alice's sweep of {o} went out"
        );
    }
    mine(&p, 1).await;
    wait_both(&p, &p.id, ChannelStatus::Closed).await;

    let out = |vout: u32| bitcoin::OutPoint::new(txid, vout);
    let h1_claim = spender(&p, out(v1)).await;
    assert_eq!(
        h1_claim.input[0].witness.nth(1).map(|w| w.to_vec()),
        Some(p1.0.to_vec()),
        "bob claimed with the preimage"
    );
    let to_remote_sweep = spender(&p, out(v_remote)).await;
    let bob = h1_claim.output[0].value + to_remote_sweep.output[0].value;
    // Less two fees at the chain's estimate (about 2,500 sat/kw on this devnet).
    assert!(
        bob.to_sat() > 130_000 - 4_000 && bob.to_sat() < 130_000,
        "{bob}"
    );
    wait_until("bob's wallet", || async {
        p.b.wallet_balance().await == bob
    })
    .await;

    let timeout_tx = spender(&p, out(v2)).await;
    assert_eq!(
        timeout_tx.lock_time.to_consensus_u32(),
        height + 10,
        "HTLC-timeout at the expiry"
    );
    // Zero-fee under anchors: the HTLC's whole value goes on, the fee comes from a coin
    // of Alice's wallet (input 1), with its change (output 1).
    assert_eq!(timeout_tx.output[0].value, Amount::from_sat(20_000));
    assert_eq!((timeout_tx.input.len(), timeout_tx.output.len()), (2, 2));
    let wallet_coin = p
        .devnet
        .transaction(&timeout_tx.input[1].previous_output.txid)
        .await
        .unwrap()
        .expect("the wallet's coin")
        .0
        .output[timeout_tx.input[1].previous_output.vout as usize]
        .clone();
    let second_stage = spender(&p, bitcoin::OutPoint::new(timeout_tx.compute_txid(), 0)).await;
    let to_local_sweep = spender(&p, out(v_local)).await;
    let commitment_fee = CAPACITY
        - commitment
            .output
            .iter()
            .map(|o| o.value.to_sat())
            .sum::<u64>();
    assert_eq!(
        commitment.output[v_local as usize].value.to_sat(),
        850_000 - commitment_fee - 2 * ANCHOR_SAT
    );
    let batched = second_stage == to_local_sweep;
    if batched {
        assert_eq!(
            (to_local_sweep.input.len(), to_local_sweep.output.len()),
            (2, 1)
        );
    }
    let alice = p.wallet_after_funding - wallet_coin.value
        + timeout_tx.output[1].value
        + to_local_sweep.output[0].value
        + if batched {
            Amount::ZERO
        } else {
            second_stage.output[0].value
        };
    wait_until("alice's wallet", || async {
        p.a.wallet_balance().await == alice
    })
    .await;
    // Fees and anchors aside, the channel is split exactly: 850,000 + 20,000 to Alice,
    // 130,000 to Bob.
    let fees = fee_of(&h1_claim, &[commitment.output[v1 as usize].clone()])
        + fee_of(
            &to_remote_sweep,
            &[commitment.output[v_remote as usize].clone()],
        )
        + fee_of(
            &timeout_tx,
            &[commitment.output[v2 as usize].clone(), wallet_coin],
        )
        + if batched {
            fee_of(
                &to_local_sweep,
                &[
                    timeout_tx.output[0].clone(),
                    commitment.output[v_local as usize].clone(),
                ],
            )
        } else {
            fee_of(&second_stage, &[timeout_tx.output[0].clone()])
                + fee_of(
                    &to_local_sweep,
                    &[commitment.output[v_local as usize].clone()],
                )
        };
    assert_eq!(
        (alice + bob).to_sat() + fees + commitment_fee + 2 * ANCHOR_SAT,
        CAPACITY + p.wallet_after_funding.to_sat()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_htlc_past_its_expiry_forces_the_channel_on_chain() {
    let p = open_pair(None, None).await;
    pay(&p, false, 100_000_000, 0).await;
    quiescent(&p).await;
    // Bob sits on an HTLC without settling or failing it.
    let hash = channel::PaymentPreimage([0x41; 32]).payment_hash();
    p.b.hold(hash).await;
    let height = p.devnet.tip().1;
    let (a, id) = (p.a.clone(), p.id);
    let payment = tokio::spawn(async move {
        a.pay(&id, channel::Msat(30_000_000), hash, height + 5)
            .await
    });
    wait_until("HTLC committed", || async {
        p.b.channel(&p.id).await.unwrap().htlcs == 1
    })
    .await;
    mine(&p, 4).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        p.a.channel(&p.id).await.unwrap().status,
        ChannelStatus::Normal,
        "not before the expiry"
    );
    mine(&p, 1).await;
    wait_until("alice force-closes at the expiry", || async {
        p.a.channel(&p.id).await.unwrap().status == ChannelStatus::ForceClosed
    })
    .await;
    // The status changes before the broadcast: mine once the commitment is in the mempool.
    let commitment = p.a.signed_commitment(&p.id).await.unwrap().compute_txid();
    wait_until("alice's commitment in the mempool", || async {
        use chain::ChainSource;
        matches!(
            p.devnet.tx_status(&commitment).await,
            Ok(chain::TxStatus::InMempool)
        )
    })
    .await;
    mine(&p, 1).await;
    wait_until("bob sees the close", || async {
        p.b.channel(&p.id).await.unwrap().status != ChannelStatus::Normal
    })
    .await;
    payment.abort();
}

/// BOLT 3: the value of each anchor output.
const ANCHOR_SAT: u64 = channel::commitment::ANCHOR_OUTPUT_SAT;

/// The anchor outputs of a commitment.
fn anchor_outputs(tx: &bitcoin::Transaction) -> usize {
    tx.output
        .iter()
        .filter(|o| o.value.to_sat() == ANCHOR_SAT && o.script_pubkey.is_p2wsh())
        .count()
}

/// An anchor channel's HTLC-success pays no fee of its own: Bob, with no coins, cannot
/// send it when he force-closes. The claim waits (the channel stays force-closed, the
/// HTLC output unspent) and goes out in the first block after his wallet has a coin,
/// with that coin as its fee input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anchor_htlc_claim_waits_for_a_wallet_coin() {
    use chain::ChainSource;
    let p = open_pair(None, None).await;
    pay(&p, false, 100_000_000, 0).await;
    quiescent(&p).await;
    let preimage = channel::PaymentPreimage([0x51; 32]);
    let hash = preimage.payment_hash();
    p.b.hold(hash).await;
    p.b.add_preimage(preimage).await.unwrap();
    let height = p.devnet.tip().1;
    let (a, id) = (p.a.clone(), p.id);
    tokio::spawn(async move {
        a.pay(&id, channel::Msat(30_000_000), hash, height + 400)
            .await
    });
    htlcs_in_both(&p, 1).await;
    assert_eq!(p.b.wallet_balance().await, Amount::ZERO);

    let txid = p.b.force_close(&p.id).await.unwrap();
    mine(&p, 1).await;
    let commitment = p
        .devnet
        .transaction(&txid)
        .await
        .unwrap()
        .expect("on chain")
        .0;
    let htlc = bitcoin::OutPoint::new(
        txid,
        commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == 30_000)
            .expect("the HTLC output") as u32,
    );
    for _ in 0..5 {
        mine(&p, 1).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        p.devnet.tx_out(&htlc, true).await.unwrap().is_some(),
        "no HTLC-success without a coin to pay its fee"
    );
    assert_eq!(
        p.b.channel(&p.id).await.unwrap().status,
        ChannelStatus::ForceClosed
    );

    // A coin for Bob (a coinbase, mature after 100 blocks): the claim goes out.
    let addr = p.b.new_address().await.unwrap();
    p.devnet
        .generate_to_script(1, &addr.script_pubkey())
        .unwrap();
    mine(&p, 100).await;
    wait_until("bob's HTLC-success in the mempool", || async {
        p.devnet.tx_out(&htlc, true).await.unwrap().is_none()
    })
    .await;
    mine(&p, 1).await;
    let success = spender(&p, htlc).await;
    assert_eq!(
        success.input[0].witness.nth(3).map(|w| w.to_vec()),
        Some(preimage.0.to_vec()),
        "claimed with the preimage"
    );
    assert_eq!((success.input.len(), success.output.len()), (2, 2));
    assert_eq!(
        success.output[0].value,
        Amount::from_sat(30_000),
        "zero fee of its own"
    );
}

/// Waits until both commitments hold `n` HTLCs and neither side has anything pending.
async fn htlcs_in_both(p: &Pair, n: usize) {
    wait_until("the HTLCs in both commitments", || async {
        let (ca, cb) = (
            p.a.channel(&p.id).await.unwrap(),
            p.b.channel(&p.id).await.unwrap(),
        );
        ca.htlcs == n && cb.htlcs == n && ca.quiescent && cb.quiescent
    })
    .await;
}
