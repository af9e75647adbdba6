//! Sweeps without a deadline batched across channels: two anchor channels between the
//! same two nodes, both force-closed by Alice in one block. Bob's to_remote outputs (a
//! 1-block CSV) and, 144 blocks later, Alice's to_local outputs are each swept by one
//! transaction of two inputs, which pays less than the two single sweeps of the same
//! outputs in an identical run with batching off. Bob restarts, his mempool emptied,
//! while his batch waits: the stored batch goes out again unchanged. Every wallet is
//! checked to the satoshi.

mod common;

use bitcoin::{Amount, OutPoint, Transaction};
use chain::{ChainSource, Devnet};
use common::*;
use hub::node::{ChannelStatus, Node};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What one run swept, per side: the distinct transactions that took the outputs and
/// what they paid in fees.
struct Swept {
    alice: Vec<Transaction>,
    alice_fee: u64,
    bob: Vec<Transaction>,
    bob_fee: u64,
}

async fn start_node(devnet: &Arc<Devnet>, dir: &std::path::Path, max_inputs: usize) -> Arc<Node> {
    start_configured(devnet, dir, None, |c| {
        c.sweep_batch_max_inputs = max_inputs;
        c.anchor_reserve_sat = 0;
    })
    .await
}

/// The distinct transactions spending `outpoints` (in the mempool or confirmed), once
/// every one of them is spent.
async fn spenders(devnet: &Devnet, outpoints: &[OutPoint]) -> Option<Vec<Transaction>> {
    let mut found: BTreeMap<bitcoin::Txid, Transaction> = BTreeMap::new();
    for o in outpoints {
        let spend = devnet.find_spend(o, 0).await.unwrap()?;
        found.insert(spend.tx.compute_txid(), spend.tx);
    }
    Some(found.into_values().collect())
}

async fn wait_spent(devnet: &Devnet, outpoints: &[OutPoint], what: &str) -> Vec<Transaction> {
    wait_until(what, || async {
        spenders(devnet, outpoints).await.is_some()
    })
    .await;
    spenders(devnet, outpoints).await.unwrap()
}

/// Waits until every channel of `ids` on every node of `nodes` is as `pred` wants.
async fn wait_all(
    nodes: &[&Arc<Node>],
    ids: &[channel::ChannelId],
    what: &str,
    pred: impl Fn(&hub::node::ChannelSummary) -> bool,
) {
    for n in nodes {
        for id in ids {
            wait_until(what, || async {
                n.channel(id).await.is_ok_and(|c| pred(&c))
            })
            .await;
        }
    }
}

async fn fees(devnet: &Devnet, txs: &[Transaction]) -> u64 {
    let mut total = 0;
    for tx in txs {
        total += fee_on_devnet(devnet, tx).await;
    }
    total
}

/// Two nodes with two anchor channels (Alice funds both, pushing 200,000 and 300,000 sat
/// to Bob), both force-closed by Alice and confirmed in one block; batches of at most
/// `max_inputs` inputs.
struct Net {
    devnet: Arc<Devnet>,
    a: Arc<Node>,
    b: Arc<Node>,
    ids: Vec<channel::ChannelId>,
    /// The height of the commitments' block.
    height: u32,
    to_remote: Vec<OutPoint>,
    to_remote_value: u64,
    to_local: Vec<OutPoint>,
    to_local_value: u64,
    dirs: (tempfile::TempDir, tempfile::TempDir),
    max_inputs: usize,
}

async fn two_channels_force_closed(max_inputs: usize) -> Net {
    let devnet = Arc::new(Devnet::in_memory());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_node(&devnet, dir_a.path(), max_inputs).await;
    let b = start_node(&devnet, dir_b.path(), max_inputs).await;
    fund_with_coinbases(&devnet, &a, 2).await;
    a.connect_peer(b.node_id(), b.listen_addr()).await.unwrap();
    let mut ids = Vec::new();
    for push in [200_000_000, 300_000_000] {
        ids.push(
            a.open_channel(b.node_id(), CAPACITY, channel::Msat(push))
                .await
                .expect("open"),
        );
    }
    mine_on(&devnet, 3);
    wait_all(&[&a, &b], &ids, "channel normal", |c| {
        c.status == ChannelStatus::Normal
    })
    .await;

    let mut commitments = Vec::new();
    for id in &ids {
        commitments.push(a.force_close(id).await.unwrap());
    }
    wait_until("both commitments in the mempool", || async {
        let pool = devnet.mempool_txids().await.unwrap();
        commitments.iter().all(|t| pool.contains(t))
    })
    .await;
    mine_on(&devnet, 1);
    let height = devnet.tip().1;
    let mut to_remote = Vec::new();
    let mut to_local = Vec::new();
    let mut to_remote_value = 0;
    let mut to_local_value = 0;
    for (txid, push) in commitments.iter().zip([200_000, 300_000]) {
        let (tx, status) = devnet.transaction(txid).await.unwrap().unwrap();
        assert_eq!(status.confirmations(), 1, "both commitments in one block");
        for (vout, o) in tx.output.iter().enumerate() {
            let outpoint = OutPoint::new(*txid, vout as u32);
            if o.value.to_sat() == push {
                to_remote.push(outpoint);
                to_remote_value += push;
            } else if o.value.to_sat() > 330 {
                to_local.push(outpoint);
                to_local_value += o.value.to_sat();
            }
        }
    }
    assert_eq!((to_remote.len(), to_local.len()), (2, 2));
    Net {
        devnet,
        a,
        b,
        ids,
        height,
        to_remote,
        to_remote_value,
        to_local,
        to_local_value,
        dirs: (dir_a, dir_b),
        max_inputs,
    }
}

/// [`two_channels_force_closed`] carried to the end: both sides' sweeps confirmed, both
/// wallets exact, every channel closed. Bob is restarted, his mempool emptied, while his
/// sweep waits when `restart_bob`.
async fn sweep_both_sides(max_inputs: usize, restart_bob: bool) -> Swept {
    let Net {
        devnet,
        a,
        mut b,
        ids,
        height,
        to_remote,
        to_remote_value,
        to_local,
        to_local_value,
        dirs,
        max_inputs,
    } = two_channels_force_closed(max_inputs).await;
    // Bob's to_remote outputs, spendable from the next block.
    let first = wait_spent(&devnet, &to_remote, "bob's sweeps in the mempool").await;
    if restart_bob {
        // Forgotten by the mempool and by Bob's process: his stored batch goes out
        // again as it was (a batch formed anew would pay a new address).
        b.shutdown().await;
        drop(b);
        devnet.clear_mempool();
        b = start_node(&devnet, dirs.1.path(), max_inputs).await;
        wait_until("bob caught up", || async {
            b.synced_blocks() >= u64::from(devnet.tip().1)
        })
        .await;
        // (It goes out with the next block the node handles, also the one it
        // catches up on at start.)
        if spenders(&devnet, &to_remote).await.is_none() {
            mine_on(&devnet, 1);
        }
        let again = wait_spent(&devnet, &to_remote, "bob's sweeps again").await;
        assert_eq!(again, first, "the stored batch, unchanged");
    }
    mine_on(&devnet, 1);
    let bob = wait_spent(&devnet, &to_remote, "bob's sweeps").await;
    for tx in &bob {
        assert!(
            devnet.confirmations(&tx.compute_txid()).await.unwrap() >= 1,
            "bob's sweeps confirmed"
        );
    }
    let bob_fee = fees(&devnet, &bob).await;
    wait_until("bob's wallet", || async {
        b.wallet_balance().await == Amount::from_sat(to_remote_value - bob_fee)
    })
    .await;

    // Alice's to_local outputs: the CSV of 144 blocks Bob set.
    let alice_before = a.wallet_balance().await;
    let mature = height + 143;
    mine_on(&devnet, mature - devnet.tip().1);
    let alice = wait_spent(&devnet, &to_local, "alice's sweeps in the mempool").await;
    mine_on(&devnet, 1);
    let alice_fee = fees(&devnet, &alice).await;
    for tx in &alice {
        assert_eq!(devnet.confirmations(&tx.compute_txid()).await.unwrap(), 1);
    }
    wait_until("alice's wallet", || async {
        a.wallet_balance().await == alice_before + Amount::from_sat(to_local_value - alice_fee)
    })
    .await;
    mine_on(&devnet, 6);
    wait_all(&[&a, &b], &ids, "channel closed", |c| {
        c.status == ChannelStatus::Closed && c.pending_sweeps.is_empty()
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    Swept {
        alice,
        alice_fee,
        bob,
        bob_fee,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeps_without_a_deadline_from_two_channels_share_one_transaction() {
    let batched = sweep_both_sides(hub::node::DEFAULT_SWEEP_BATCH_MAX_INPUTS, true).await;
    let alone = sweep_both_sides(1, false).await;
    for (who, txs) in [("alice", &batched.alice), ("bob", &batched.bob)] {
        assert_eq!(txs.len(), 1, "{who}: one transaction");
        assert_eq!((txs[0].input.len(), txs[0].output.len()), (2, 1), "{who}");
    }
    for (who, txs) in [("alice", &alone.alice), ("bob", &alone.bob)] {
        assert_eq!(txs.len(), 2, "{who}: one transaction per output");
    }
    // Alice's inputs wait out the 144-block CSV.
    assert!(batched.alice[0]
        .input
        .iter()
        .all(|i| i.sequence == bitcoin::Sequence::from_height(144)));
    println!(
        "to_local sweeps: batched {} sat ({} wu), alone {} sat ({} wu)",
        batched.alice_fee,
        batched.alice[0].weight().to_wu(),
        alone.alice_fee,
        alone.alice.iter().map(|t| t.weight().to_wu()).sum::<u64>()
    );
    println!(
        "to_remote sweeps: batched {} sat ({} wu), alone {} sat ({} wu)",
        batched.bob_fee,
        batched.bob[0].weight().to_wu(),
        alone.bob_fee,
        alone.bob.iter().map(|t| t.weight().to_wu()).sum::<u64>()
    );
    assert!(batched.alice_fee < alone.alice_fee);
    assert!(batched.bob_fee < alone.bob_fee);
}

/// A batch one of whose inputs another transaction took (here Bob's own single sweep of
/// that output, mined after his mempool forgot the batch) can never confirm: it is
/// forgotten, and the other output goes out alone. Bob gets both outputs less the two
/// single sweeps' fees, to the satoshi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_lost_an_input_gives_way_to_single_sweeps() {
    let net = two_channels_force_closed(hub::node::DEFAULT_SWEEP_BATCH_MAX_INPUTS).await;
    let (devnet, b) = (&net.devnet, &net.b);
    let batch = wait_spent(devnet, &net.to_remote, "bob's batch in the mempool").await;
    assert_eq!((batch.len(), batch[0].input.len()), (1, 2));
    // Bob's single sweep of the first output, in a block instead of the batch.
    let single = b.channel(&net.ids[0]).await.unwrap().pending_sweeps;
    let single = single
        .iter()
        .find(|t| t.input[0].previous_output == net.to_remote[0])
        .expect("the single sweep is kept")
        .clone();
    devnet.clear_mempool();
    devnet.broadcast(&single).await.unwrap();
    mine_on(devnet, 1);
    assert_eq!(
        devnet.confirmations(&single.compute_txid()).await.unwrap(),
        1
    );
    // The other output goes out alone.
    let other = wait_spent(devnet, &net.to_remote[1..], "the other output swept alone").await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].input.len(), 1, "alone: {other:?}");
    assert_ne!(other[0], batch[0]);
    mine_on(devnet, 1);
    let fee = fee_on_devnet(devnet, &single).await + fee_on_devnet(devnet, &other[0]).await;
    wait_until("bob's wallet", || async {
        b.wallet_balance().await == Amount::from_sat(net.to_remote_value - fee)
    })
    .await;
    mine_on(devnet, 6);
    wait_all(&[b], &net.ids, "bob's channel closed", |c| {
        c.status == ChannelStatus::Closed && c.pending_sweeps.is_empty()
    })
    .await;
    net.a.shutdown().await;
    net.b.shutdown().await;
}

/// A batch waits out a 50× fee spike (its outputs are nobody else's) until its earliest
/// member is within 144 blocks of its nominal deadline (1,008 blocks after it became
/// spendable), then is replaced (RBF, the same inputs) at the estimate for the blocks
/// left, within the fee budget, and confirms in the next block. Bob's wallet is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waits_out_a_spike_until_near_its_deadline() {
    spike_until_near_the_deadline(hub::node::DEFAULT_SWEEP_BATCH_MAX_INPUTS).await;
}

/// The same with batching off: each single sweep waits, then is replaced alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sweep_waits_out_a_spike_until_near_its_deadline() {
    spike_until_near_the_deadline(1).await;
}

async fn spike_until_near_the_deadline(max_inputs: usize) {
    let net = two_channels_force_closed(max_inputs).await;
    let (devnet, b) = (&net.devnet, &net.b);
    let first = wait_spent(devnet, &net.to_remote, "bob's sweeps in the mempool").await;
    let per_tx = if max_inputs >= 2 { 2 } else { 1 };
    assert_eq!(first.len(), 2 / per_tx);
    assert!(first.iter().all(|t| t.input.len() == per_tx));
    let first_fee = fees(devnet, &first).await;
    let spike = bitcoin::FeeRate::from_sat_per_kwu(25_000);
    devnet.set_competing_fee_rate(Some(spike));
    // Spendable from the block after the commitments (a 1-block CSV): nominal deadline
    // 1,008 blocks later; bumped from 144 blocks before it.
    let deadline = net.height + 1 + 1008;
    let patience_starts = deadline - 144;
    mine_on(devnet, patience_starts - 1 - devnet.tip().1);
    wait_until("bob caught up", || async {
        b.synced_blocks() >= u64::from(devnet.tip().1)
    })
    .await;
    assert_eq!(
        spenders(devnet, &net.to_remote).await.unwrap(),
        first,
        "waiting, at its rate, through the spike"
    );
    for tx in &first {
        assert_eq!(devnet.confirmations(&tx.compute_txid()).await.unwrap(), 0);
    }
    mine_on(devnet, 1);
    wait_until("every sweep replaced", || async {
        spenders(devnet, &net.to_remote)
            .await
            .is_some_and(|s| s.iter().all(|t| !first.contains(t)))
    })
    .await;
    let bumped = spenders(devnet, &net.to_remote).await.unwrap();
    assert_eq!(bumped.len(), first.len());
    let mut inputs: Vec<OutPoint> = bumped
        .iter()
        .flat_map(|t| t.input.iter().map(|i| i.previous_output))
        .collect();
    inputs.sort();
    let mut expected = net.to_remote.clone();
    expected.sort();
    assert_eq!(inputs, expected, "the same inputs");
    mine_on(devnet, 1);
    for tx in &bumped {
        assert_eq!(
            devnet.confirmations(&tx.compute_txid()).await.unwrap(),
            1,
            "confirmed in the spike"
        );
        let fee = fee_on_devnet(devnet, tx).await;
        assert!(fee * 1000 >= spike.to_sat_per_kwu() * tx.weight().to_wu());
    }
    let fee = fees(devnet, &bumped).await;
    let weight: u64 = bumped.iter().map(|t| t.weight().to_wu()).sum();
    println!(
        "{} sweep(s) of 2 to_remote outputs ({} sat): {first_fee} sat before the spike, {fee} \
         sat ({} sat/kwu) when bumped {} blocks before the deadline",
        bumped.len(),
        net.to_remote_value,
        fee * 1000 / weight,
        deadline - (devnet.tip().1 - 1)
    );
    assert!(fee <= net.to_remote_value * hub::node::DEFAULT_FEE_BUDGET_PERCENT / 100);
    wait_until("bob's wallet", || async {
        b.wallet_balance().await == Amount::from_sat(net.to_remote_value - fee)
    })
    .await;
    devnet.set_competing_fee_rate(None);
    net.a.shutdown().await;
    net.b.shutdown().await;
}
