//! A fee spike while the funding transaction of a channel the hub opened waits in the
//! mempool. Its txid cannot change (both commitments are signed on it), so the hub pays
//! for it through its change output (CPFP): the devnet's fee estimate jumps 50× (other
//! users' transactions fill every block at that rate, so the miner takes nothing paying
//! less), the next block does not take the funding, the hub broadcasts a child, and the
//! next block takes both. The channel opens; the hub's wallet is exact to the satoshi.

mod common;

use bitcoin::{Amount, FeeRate, OutPoint};
use chain::{ChainSource, Devnet};
use common::*;
use common::{fee_on_devnet as fee_of, mine_on as mine};
use hub::node::ChannelStatus;
use std::sync::Arc;

const CAPACITY: u64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fee_spike_the_funding_confirms_through_a_child_of_its_change() {
    let devnet = Arc::new(Devnet::in_memory());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = start(&devnet, dir_a.path(), None).await;
    let peer = start(&devnet, dir_b.path(), None).await;
    let addr = hub.new_address().await.unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    mine(&devnet, 100);
    wait_until("the hub's coinbase matured", || async {
        hub.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;
    hub.connect_peer(peer.node_id(), peer.listen_addr())
        .await
        .unwrap();
    let id = hub
        .open_channel(peer.node_id(), CAPACITY, channel::Msat(0))
        .await
        .expect("open");
    let outpoint = hub.channel(&id).await.unwrap().funding_outpoint;
    let (funding, _) = devnet
        .transaction(&outpoint.txid)
        .await
        .unwrap()
        .expect("the funding is in the mempool");
    let funding_fee = fee_of(&devnet, &funding).await;
    // No fee history yet: the wallet's fallback rate, as Core's wallet does.
    let calm = devnet
        .estimate_fee_rate(6)
        .await
        .unwrap()
        .unwrap_or(chain::wallet::FALLBACK_FEE_RATE);
    let own_rate = funding_fee * 1000 / funding.weight().to_wu();
    assert!(
        own_rate >= calm.to_sat_per_kwu(),
        "built at the 6-block estimate: {own_rate} sat/kwu"
    );
    let change = OutPoint::new(outpoint.txid, 1 - outpoint.vout);

    // The spike: the next block does not take the funding.
    let spike = FeeRate::from_sat_per_kwu(calm.to_sat_per_kwu() * 50);
    devnet.set_competing_fee_rate(Some(spike));
    mine(&devnet, 1);
    assert_eq!(
        devnet.confirmations(&outpoint.txid).await.unwrap(),
        0,
        "the funding at the calm rate is not mined in the spike"
    );
    wait_until("a child of the funding's change", || async {
        devnet.find_spend(&change, 0).await.unwrap().is_some()
    })
    .await;
    let child = devnet.find_spend(&change, 0).await.unwrap().unwrap().tx;
    let child_fee = fee_of(&devnet, &child).await;
    let package = (funding_fee + child_fee) * 1000 / (funding.weight() + child.weight()).to_wu();
    assert!(
        package >= spike.to_sat_per_kwu(),
        "the two pay the spiked estimate: {package} sat/kwu"
    );
    // Within the budget: half the capacity (the default), far above what it takes.
    assert!(funding_fee + child_fee <= CAPACITY / 2);

    // The next block takes both; the channel opens.
    mine(&devnet, 1);
    assert_eq!(devnet.confirmations(&outpoint.txid).await.unwrap(), 1);
    assert_eq!(
        devnet.confirmations(&child.compute_txid()).await.unwrap(),
        1,
        "the child confirms with its parent"
    );
    mine(&devnet, 2);
    for n in [&hub, &peer] {
        wait_until("channel normal", || async {
            n.channel(&id)
                .await
                .is_ok_and(|c| c.status == ChannelStatus::Normal)
        })
        .await;
    }
    wait_until("the hub's wallet settled", || async {
        hub.wallet_balance().await
            == Amount::from_sat(5_000_000_000 - CAPACITY - funding_fee - child_fee)
    })
    .await;
    println!(
        "fees rose {} -> {} sat/kwu: the funding paid {funding_fee} sat ({own_rate} sat/kwu) \
         and was not mined; its child paid {child_fee} sat, the two together {package} sat/kwu, \
         and both confirmed in the next block",
        calm.to_sat_per_kwu(),
        spike.to_sat_per_kwu()
    );
    // Nothing more is bumped once the funding is deep.
    mine(&devnet, 3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        hub.wallet_balance().await,
        Amount::from_sat(5_000_000_000 - CAPACITY - funding_fee - child_fee)
    );
}
