//! Helpers shared by the node tests: two nodes on the devnet with a funded channel.
#![allow(dead_code)]

use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Address, Amount, CompressedPublicKey, Network};
use chain::Devnet;
use hub::node::{ChannelStatus, Node, NodeConfig, Role};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// What `tx` pays in fees: its inputs' values (looked up on the devnet) minus its outputs.
pub async fn fee_on_devnet(devnet: &Devnet, tx: &bitcoin::Transaction) -> u64 {
    use chain::ChainSource;
    let mut input = 0;
    for i in &tx.input {
        let (parent, _) = devnet
            .transaction(&i.previous_output.txid)
            .await
            .unwrap()
            .expect("parent known");
        input += parent.output[i.previous_output.vout as usize]
            .value
            .to_sat();
    }
    input - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>()
}

/// The confirmed transaction spending `outpoint`, with its height.
pub async fn confirmed_spend(
    devnet: &Devnet,
    outpoint: bitcoin::OutPoint,
) -> Option<(bitcoin::Transaction, u32)> {
    use chain::ChainSource;
    let spend = devnet.find_spend(&outpoint, 0).await.unwrap()?;
    Some((spend.tx, spend.block?.height))
}

/// What our confirmed sweeps of output `to_local_vout` of our commitment
/// `commitment_txid` and of output 0 of our HTLC transaction `htlc_txid` paid in fees
/// (once when one transaction swept both).
pub async fn fees_of_sweeps(
    devnet: &Devnet,
    commitment_txid: bitcoin::Txid,
    to_local_vout: u32,
    htlc_txid: bitcoin::Txid,
) -> u64 {
    use bitcoin::OutPoint;
    let to_local = confirmed_spend(devnet, OutPoint::new(commitment_txid, to_local_vout))
        .await
        .expect("to_local swept")
        .0;
    let htlc = confirmed_spend(devnet, OutPoint::new(htlc_txid, 0))
        .await
        .expect("the HTLC transaction's output swept")
        .0;
    if to_local == htlc {
        // Both swept by one transaction (a batch: neither has a deadline).
        return fee_on_devnet(devnet, &to_local).await;
    }
    fee_on_devnet(devnet, &to_local).await + fee_on_devnet(devnet, &htlc).await
}

/// Gives `node` `coinbases` mined coinbases of 50 BTC, matured, and waits until its
/// wallet holds them.
pub async fn fund_with_coinbases(devnet: &Devnet, node: &Node, coinbases: u32) {
    for _ in 0..coinbases {
        let addr = node.new_address().await.unwrap();
        devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    }
    mine_on(devnet, 100);
    let total = Amount::from_sat(5_000_000_000 * u64::from(coinbases));
    wait_until("matured coinbases", || async {
        node.wallet_balance().await == total
    })
    .await;
}

/// `n` blocks on the devnet, paying someone else.
pub fn mine_on(devnet: &Devnet, n: u32) {
    devnet
        .generate_to_script(n, &elsewhere().script_pubkey())
        .unwrap();
}

pub async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Mines a block at a time (up to `max`), giving the node 300 ms after each, until its
/// channel `id` is closed; panics if it is not.
/// Waits until channel `id` has `status` on both nodes of the pair.
pub async fn wait_both(p: &Pair, id: &channel::ChannelId, status: ChannelStatus) {
    for n in [&p.a, &p.b] {
        wait_until(&format!("channel {}", status.as_str()), || async {
            n.channel(id).await.is_ok_and(|c| c.status == status)
        })
        .await;
    }
}

pub async fn mine_until_closed(devnet: &Devnet, node: &Node, id: &channel::ChannelId, max: u32) {
    for _ in 0..max {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if node.channel(id).await.unwrap().status == ChannelStatus::Closed {
            return;
        }
        devnet
            .generate_to_script(1, &elsewhere().script_pubkey())
            .unwrap();
    }
    assert_eq!(
        node.channel(id).await.unwrap().status,
        ChannelStatus::Closed
    );
}

pub fn elsewhere() -> Address {
    let key = SecretKey::from_slice(&[0x77; 32]).unwrap();
    let pk = CompressedPublicKey(PublicKey::from_secret_key(channel::keys::secp(), &key));
    Address::p2wpkh(&pk, Network::Regtest)
}

pub async fn start(devnet: &Arc<Devnet>, dir: &std::path::Path, db: Option<String>) -> Arc<Node> {
    start_with_reserve(devnet, dir, db, hub::node::DEFAULT_ANCHOR_RESERVE_SAT).await
}

/// [`start`] with its on-chain reserve for anchor channels (0: it accepts them with no
/// coins of its own).
pub async fn start_with_reserve(
    devnet: &Arc<Devnet>,
    dir: &std::path::Path,
    db: Option<String>,
    anchor_reserve_sat: u64,
) -> Arc<Node> {
    start_configured(devnet, dir, db, |c| {
        c.anchor_reserve_sat = anchor_reserve_sat
    })
    .await
}

/// A hub on `devnet` with the defaults (the chain polled every 50 ms), changed by `tweak`.
pub async fn start_configured(
    devnet: &Arc<Devnet>,
    dir: &std::path::Path,
    db: Option<String>,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Arc<Node> {
    let mut config = NodeConfig::new(
        Role::Hub,
        dir.to_path_buf(),
        devnet.clone(),
        Network::Regtest,
    );
    config.database_url = db;
    config.chain_poll = Duration::from_millis(50);
    tweak(&mut config);
    Node::start(config).await.expect("node starts")
}

pub struct Pair {
    pub devnet: Arc<Devnet>,
    pub a: Arc<Node>,
    pub b: Arc<Node>,
    pub id: channel::ChannelId,
    pub wallet_after_funding: Amount,
    pub _dirs: (tempfile::TempDir, tempfile::TempDir),
}

pub const CAPACITY: u64 = 1_000_000;

/// Two nodes with a confirmed, usable anchor channel of `CAPACITY` funded by Alice (Bob,
/// with no coins, keeps no reserve for it).
pub async fn open_pair(db_a: Option<String>, db_b: Option<String>) -> Pair {
    open_pair_with(db_a, db_b, 0).await
}

/// [`open_pair`] with Bob's on-chain reserve for anchor channels: with one he has not
/// got, he refuses an anchor channel and Alice opens a static_remotekey one.
pub async fn open_pair_with(db_a: Option<String>, db_b: Option<String>, bob_reserve: u64) -> Pair {
    trace_if_asked();
    let devnet = Arc::new(Devnet::in_memory());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&devnet, dir_a.path(), db_a).await;
    let b = start_with_reserve(&devnet, dir_b.path(), db_b, bob_reserve).await;
    // Fund Alice: one mature coinbase of 50 BTC.
    let addr = a.new_address().await.unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    devnet
        .generate_to_script(100, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("alice's coinbase", || async {
        a.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;

    a.connect_peer(b.node_id(), b.listen_addr()).await.unwrap();
    let id = a
        .open_channel(b.node_id(), CAPACITY, channel::Msat(0))
        .await
        .expect("open");
    devnet
        .generate_to_script(3, &elsewhere().script_pubkey())
        .unwrap();
    for n in [&a, &b] {
        wait_until("channel normal", || async {
            n.channel(&id)
                .await
                .map(|c| c.status == ChannelStatus::Normal)
                .unwrap_or(false)
        })
        .await;
    }
    let wallet_after_funding = a.wallet_balance().await;
    assert!(wallet_after_funding < Amount::from_sat(5_000_000_000 - CAPACITY));
    Pair {
        devnet,
        a,
        b,
        id,
        wallet_after_funding,
        _dirs: (dir_a, dir_b),
    }
}

/// One payment of `amount` msat from `payer` to `payee` over the pair's channel.
pub async fn pay(p: &Pair, from_bob: bool, amount: u64, n: u32) {
    let (payer, payee) = if from_bob { (&p.b, &p.a) } else { (&p.a, &p.b) };
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[31] = u8::from(from_bob) + 1;
    let preimage = channel::PaymentPreimage(bytes);
    let hash = payee.add_preimage(preimage).await.unwrap();
    let got = payer
        .pay(&p.id, channel::Msat(amount), hash, 500)
        .await
        .expect("payment");
    assert_eq!(got, preimage);
}

pub async fn quiescent(p: &Pair) {
    for n in [&p.a, &p.b] {
        wait_until("quiescent", || async {
            n.channel(&p.id).await.unwrap().quiescent
        })
        .await;
    }
}

pub async fn mine(p: &Pair, n: u32) {
    p.devnet
        .generate_to_script(n, &elsewhere().script_pubkey())
        .unwrap();
}

/// With `HUB_TEST_LOG` set (a `tracing` filter, `hub=debug` say), the nodes' logs go to
/// the test's output.
pub fn trace_if_asked() {
    if let Ok(filter) = std::env::var("HUB_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Waits until both nodes have processed every block up to the devnet's tip (mining does
/// not wait for them; a node catches up a block at a time).
pub async fn synced(p: &Pair) {
    let tip = u64::from(p.devnet.tip().1);
    wait_until("both nodes at the tip", || async {
        p.a.synced_blocks() >= tip && p.b.synced_blocks() >= tip
    })
    .await;
}

/// The transaction that spent `outpoint`, found on chain.
pub async fn spender(p: &Pair, outpoint: bitcoin::OutPoint) -> bitcoin::Transaction {
    use chain::ChainSource;
    p.devnet
        .find_spend(&outpoint, 0)
        .await
        .unwrap()
        .expect("spent")
        .tx
}

pub fn fee_of(tx: &bitcoin::Transaction, spent: &[bitcoin::TxOut]) -> u64 {
    spent.iter().map(|o| o.value.to_sat()).sum::<u64>()
        - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>()
}

/// A wallet of the test's own (a scripted peer's), funded with one mature coinbase on
/// `devnet`, and the poller that keeps it in step with the chain.
pub async fn funded_wallet(
    devnet: &Arc<Devnet>,
    seed: &[u8; 32],
) -> (
    chain::wallet::Wallet,
    chain::ChainPoller<dyn chain::ChainSource>,
) {
    use chain::ChainSource;
    let mut wallet = chain::wallet::Wallet::from_seed(seed, Network::Regtest).unwrap();
    let addr = wallet.new_address().unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    devnet
        .generate_to_script(100, &elsewhere().script_pubkey())
        .unwrap();
    let source: Arc<dyn ChainSource> = devnet.clone();
    let genesis = source.block_hash(0).await.unwrap().unwrap();
    let mut poller = chain::ChainPoller::from_block(
        source,
        chain::BlockRef {
            hash: genesis,
            height: 0,
        },
    );
    for e in poller.poll().await.unwrap() {
        wallet.apply(&e).unwrap();
    }
    (wallet, poller)
}

/// A light node (a merchant's or a user's) whose hub is `hub`, on `devnet`.
pub async fn light(devnet: &Arc<Devnet>, dir: &std::path::Path, hub: &Arc<Node>) -> Arc<Node> {
    let mut c = NodeConfig::new(
        Role::Light {
            hub: Some(hub.node_id()),
        },
        dir.to_path_buf(),
        devnet.clone(),
        bitcoin::Network::Regtest,
    );
    c.chain_poll = Duration::from_millis(50);
    Node::start(c).await.unwrap()
}

pub mod mallory;
