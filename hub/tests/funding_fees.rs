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

/// A hub with 50 BTC (its funding budget `budget_percent` of a channel's capacity) that
/// opened a channel of `CAPACITY` to a peer; its funding waits in the mempool at the calm
/// rate when a 50× spike starts, and the next block does not take it.
struct Stuck {
    devnet: Arc<Devnet>,
    hub: Arc<hub::node::Node>,
    peer: Arc<hub::node::Node>,
    id: channel::ChannelId,
    funding: bitcoin::Transaction,
    funding_fee: u64,
    /// The funding's change output, which a child spends.
    change: OutPoint,
    calm: FeeRate,
    spike: FeeRate,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn stuck_funding(budget_percent: u64) -> Stuck {
    let devnet = Arc::new(Devnet::in_memory());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hub = start_configured(&devnet, dir_a.path(), None, |c| {
        c.funding_fee_budget_percent = budget_percent
    })
    .await;
    let peer = start(&devnet, dir_b.path(), None).await;
    fund_with_coinbases(&devnet, &hub, 1).await;
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
    let spike = FeeRate::from_sat_per_kwu(calm.to_sat_per_kwu() * 50);
    devnet.set_competing_fee_rate(Some(spike));
    mine(&devnet, 1);
    assert_eq!(
        devnet.confirmations(&outpoint.txid).await.unwrap(),
        0,
        "the funding at the calm rate is not mined in the spike"
    );
    Stuck {
        change: OutPoint::new(outpoint.txid, 1 - outpoint.vout),
        devnet,
        hub,
        peer,
        id,
        funding,
        funding_fee,
        calm,
        spike,
        _dirs: (dir_a, dir_b),
    }
}

/// The child the hub broadcast on the funding's change, its fee and the package's rate.
async fn child_of(s: &Stuck) -> (bitcoin::Transaction, u64, u64) {
    wait_until("a child of the funding's change", || async {
        s.devnet.find_spend(&s.change, 0).await.unwrap().is_some()
    })
    .await;
    let child = s.devnet.find_spend(&s.change, 0).await.unwrap().unwrap().tx;
    let child_fee = fee_of(&s.devnet, &child).await;
    let package =
        (s.funding_fee + child_fee) * 1000 / (s.funding.weight() + child.weight()).to_wu();
    (child, child_fee, package)
}

/// The channel is usable on both sides and the hub's wallet holds 50 BTC less the
/// capacity and `fees`.
async fn opened_and_exact(s: &Stuck, fees: u64) {
    for n in [&s.hub, &s.peer] {
        wait_until("channel normal", || async {
            n.channel(&s.id)
                .await
                .is_ok_and(|c| c.status == ChannelStatus::Normal)
        })
        .await;
    }
    wait_until("the hub's wallet settled", || async {
        s.hub.wallet_balance().await == Amount::from_sat(5_000_000_000 - CAPACITY - fees)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fee_spike_the_funding_confirms_through_a_child_of_its_change() {
    let s = stuck_funding(hub::node::DEFAULT_FUNDING_FEE_BUDGET_PERCENT).await;
    let (devnet, funding_fee, spike, calm) = (&s.devnet, s.funding_fee, s.spike, s.calm);
    let outpoint = OutPoint::new(s.funding.compute_txid(), 1 - s.change.vout);
    let own_rate = funding_fee * 1000 / s.funding.weight().to_wu();

    let (child, child_fee, package) = child_of(&s).await;
    assert!(
        package >= spike.to_sat_per_kwu(),
        "the two pay the spiked estimate: {package} sat/kwu"
    );
    // Within the budget: 5% of the capacity (the default), less the funding's own fee.
    assert!(funding_fee + child_fee <= CAPACITY * 5 / 100);

    // The next block takes both; the channel opens.
    mine(devnet, 1);
    assert_eq!(devnet.confirmations(&outpoint.txid).await.unwrap(), 1);
    assert_eq!(
        devnet.confirmations(&child.compute_txid()).await.unwrap(),
        1,
        "the child confirms with its parent"
    );
    mine(devnet, 2);
    opened_and_exact(&s, funding_fee + child_fee).await;
    println!(
        "fees rose {} -> {} sat/kwu: the funding paid {funding_fee} sat ({own_rate} sat/kwu) \
         and was not mined; its child paid {child_fee} sat, the two together {package} sat/kwu, \
         and both confirmed in the next block",
        calm.to_sat_per_kwu(),
        spike.to_sat_per_kwu()
    );
    // Nothing more is bumped once the funding is deep.
    mine(devnet, 3);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        s.hub.wallet_balance().await,
        Amount::from_sat(5_000_000_000 - CAPACITY - funding_fee - child_fee)
    );
}

/// With a funding budget of 1% of the capacity, the child pays what the budget buys and
/// no more: the package stays under the spike and is not mined while it lasts; when the
/// spike ends, the next block takes both. With a budget of 0 no child is sent at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funding_child_stays_within_its_budget() {
    let s = stuck_funding(1).await;
    let (child, child_fee, package) = child_of(&s).await;
    let budget = CAPACITY / 100 - s.funding_fee;
    assert!(child_fee <= budget, "{child_fee} > {budget}");
    assert!(
        child_fee > budget * 9 / 10,
        "the budget is used: {child_fee} of {budget}"
    );
    assert!(package < s.spike.to_sat_per_kwu(), "{package}");
    mine(&s.devnet, 2);
    assert_eq!(
        s.devnet.confirmations(&child.compute_txid()).await.unwrap(),
        0
    );
    assert_eq!(
        s.devnet
            .find_spend(&s.change, 0)
            .await
            .unwrap()
            .map(|sp| sp.tx),
        Some(child.clone()),
        "no replacement beyond the budget"
    );
    s.devnet.set_competing_fee_rate(None);
    mine(&s.devnet, 1);
    assert_eq!(
        s.devnet.confirmations(&child.compute_txid()).await.unwrap(),
        1
    );
    mine(&s.devnet, 2);
    opened_and_exact(&s, s.funding_fee + child_fee).await;
    println!(
        "a 1% budget ({budget} sat) bought a child of {child_fee} sat: {package} sat/kwu \
         for the two, under the spike's {}",
        s.spike.to_sat_per_kwu()
    );

    let s = stuck_funding(0).await;
    mine(&s.devnet, 2);
    assert!(
        s.devnet.find_spend(&s.change, 0).await.unwrap().is_none(),
        "no child"
    );
    s.devnet.set_competing_fee_rate(None);
    mine(&s.devnet, 3);
    opened_and_exact(&s, s.funding_fee).await;
}
