//! Transactions the node needs confirmed go out again when the mempool forgets them (a
//! restart of Core without its mempool file, an expiry, an eviction): the funding of a
//! channel it opened, and an agreed closing transaction. Each test empties the devnet's
//! mempool after the broadcast; the next block, the node sends the transaction again,
//! and the channel opens (or closes) with every satoshi where it belongs.

mod common;

use bitcoin::Amount;
use chain::ChainSource;
use common::*;
use hub::node::ChannelStatus;

async fn in_mempool(p: &Pair, txid: &bitcoin::Txid) -> bool {
    p.devnet.mempool_txids().await.unwrap().contains(txid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_funding_the_mempool_forgot_goes_out_again() {
    // `open_pair` mines the funding at once; a second channel, opened here, is the one
    // whose funding the mempool forgets.
    let p = open_pair(None, None).await;
    let before = p.a.wallet_balance().await;
    let id =
        p.a.open_channel(p.b.node_id(), CAPACITY, channel::Msat(0))
            .await
            .expect("open");
    let funding = p.a.channel(&id).await.unwrap().funding_outpoint.txid;
    assert!(in_mempool(&p, &funding).await);
    p.devnet.clear_mempool();
    assert!(!in_mempool(&p, &funding).await);
    // The next block: not in it, and the hub sends it again.
    mine(&p, 1).await;
    assert_eq!(p.devnet.confirmations(&funding).await.unwrap(), 0);
    wait_until("the funding sent again", || async {
        in_mempool(&p, &funding).await
    })
    .await;
    mine(&p, 3).await;
    wait_both(&p, &id, ChannelStatus::Normal).await;
    let (tx, _) = p.devnet.transaction(&funding).await.unwrap().unwrap();
    let fee = fee_on_devnet(&p.devnet, &tx).await;
    assert_eq!(
        p.a.wallet_balance().await,
        before - Amount::from_sat(CAPACITY + fee)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_transaction_the_mempool_forgot_goes_out_again() {
    let p = open_pair(None, None).await;
    pay(&p, false, 200_000_000, 1).await;
    quiescent(&p).await;
    p.a.close_channel(&p.id).await.unwrap();
    for n in [&p.a, &p.b] {
        wait_until("closing tx agreed", || async {
            n.channel(&p.id).await.unwrap().closing_tx.is_some()
        })
        .await;
    }
    let closing = p.a.channel(&p.id).await.unwrap().closing_tx.unwrap();
    let txid = closing.compute_txid();
    wait_until("closing tx in the mempool", || async {
        in_mempool(&p, &txid).await
    })
    .await;
    p.devnet.clear_mempool();
    mine(&p, 1).await;
    assert_eq!(p.devnet.confirmations(&txid).await.unwrap(), 0);
    wait_until("the closing tx sent again", || async {
        in_mempool(&p, &txid).await
    })
    .await;
    mine(&p, 1).await;
    wait_both(&p, &p.id, ChannelStatus::Closed).await;
    let fee = CAPACITY - closing.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
    wait_until("bob's wallet", || async {
        p.b.wallet_balance().await == Amount::from_sat(200_000)
    })
    .await;
    let alice = p.wallet_after_funding + Amount::from_sat(CAPACITY - 200_000 - fee);
    wait_until("alice's wallet", || async {
        p.a.wallet_balance().await == alice
    })
    .await;
}

/// A restart while our funding waits in the mempool: its coins stay reserved (the wallet
/// learns of spends only from blocks). The next channel's funding takes another coin,
/// where it would otherwise take the same one (largest first, ties by outpoint) and be
/// refused as a double spend of our own funding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_the_coins_of_a_funding_still_waiting() {
    use std::sync::Arc;
    let devnet = Arc::new(chain::Devnet::in_memory());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = start(&devnet, dir_a.path(), None).await;
    let peer = start(&devnet, dir_b.path(), None).await;
    fund_with_coinbases(&devnet, &hub, 2).await;
    hub.connect_peer(peer.node_id(), peer.listen_addr())
        .await
        .unwrap();
    let first = hub
        .open_channel(peer.node_id(), CAPACITY, channel::Msat(0))
        .await
        .expect("open");
    let first_funding = hub.channel(&first).await.unwrap().funding_outpoint.txid;
    hub.shutdown().await;
    drop(hub);

    let hub = start(&devnet, dir_a.path(), None).await;
    hub.connect_peer(peer.node_id(), peer.listen_addr())
        .await
        .unwrap();
    wait_until("the hub caught up", || async {
        hub.synced_blocks() >= u64::from(devnet.tip().1)
    })
    .await;
    let second = hub
        .open_channel(peer.node_id(), CAPACITY, channel::Msat(0))
        .await
        .expect("a second open");
    let second_funding = hub.channel(&second).await.unwrap().funding_outpoint.txid;
    let pool = devnet.mempool_txids().await.unwrap();
    assert!(
        pool.contains(&first_funding) && pool.contains(&second_funding),
        "both fundings wait in the mempool"
    );
    mine_on(&devnet, 3);
    let mut fees = 0;
    for (id, txid) in [(first, first_funding), (second, second_funding)] {
        for n in [&hub, &peer] {
            wait_until("channel normal", || async {
                n.channel(&id)
                    .await
                    .is_ok_and(|c| c.status == ChannelStatus::Normal)
            })
            .await;
        }
        let (tx, _) = devnet.transaction(&txid).await.unwrap().unwrap();
        fees += fee_on_devnet(&devnet, &tx).await;
    }
    wait_until("the hub's wallet settled", || async {
        hub.wallet_balance().await == Amount::from_sat(10_000_000_000 - 2 * CAPACITY - fees)
    })
    .await;
}
