//! The deadline of a forward's timeout claim. Mallory pays through the hub to Dave (two
//! scripted peers on their own links): the incoming HTLC on her channel expires at
//! `out + 40` (the hub's CLTV delta), the outgoing one on Dave's anchor channel at `out`.
//! Dave takes it and goes silent. At `out` the hub goes to chain; its HTLC-timeout,
//! funded by the wallet, waits in the mempool when fees start to rise: every block from
//! then on is full of other users' transactions at 50× the calm rate, and the miner
//! takes nothing paying less.
//!
//! The rise shows at once in the estimates for the next few dozen blocks, not yet in the
//! estimate for a day: the devnet estimates a target of `n` blocks from the last `2n`,
//! and a block 80 blocks before `out` was full of transactions at the calm rate. (The
//! devnet's own fee spike, `set_competing_fee_rate`, raises every target up to a day
//! alike, and an own payment's deadline, a day after `out`, is within a day of every
//! block after `out`: it would not tell the two deadlines apart. So the test mines the
//! blocks of the rise itself.) The timeout claim of a forward must be `ANTI_REORG_DEPTH`
//! deep before the incoming HTLC is failed back, `FULFILL_SAFETY` blocks before its
//! expiry: its deadline is `out + 40 - 12`, and the hub funds it again at the rise's
//! rate after the first block of the rise. It confirms in the next block, and six blocks
//! later the hub fails Mallory's HTLC back off chain, long before it expires: her
//! channel stays open. With an own payment's deadline the hub would wait for the day's
//! estimate to rise, which happens only as the incoming HTLC expires. Every satoshi of
//! the hub's wallet is accounted for, and the fees are printed against the HTLC.

mod common;

use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Amount, FeeRate, OutPoint, Transaction, TxOut, Txid};
use chain::wallet::Wallet;
use chain::{ChainPoller, ChainSource, Devnet};
use channel::keys::{secp, ChannelSecrets};
use channel::msgs::Message;
use channel::onion::{create_onion, decode_failure, HopPayload};
use channel::*;
use common::mallory::*;
use common::*;
use common::{fee_on_devnet as fee_of, mine_on as mine};
use hub::node::ChannelStatus;
use std::collections::HashSet;
use std::sync::Arc;

/// The calm rate: what every transaction paid until the rise (2 sat/vB).
const CALM: FeeRate = FeeRate::from_sat_per_kwu(500);
/// The rise: every block is full of other users' transactions at 50× the calm rate; the
/// miner takes nothing paying less.
const RISE: FeeRate = FeeRate::from_sat_per_kwu(50 * 500);
/// What those transactions pay, a little more (as the devnet's estimate counts them,
/// rounded down over their virtual size, they pay at least `RISE`).
const RISE_PAID: FeeRate = FeeRate::from_sat_per_kwu(50 * 500 * 101 / 100);
/// Transactions at the calm rate in the block 80 blocks before the outgoing expiry.
const CALM_TXS: usize = 120;
/// Other users' transactions at the risen rate in each block of the rise.
const RISE_TXS: usize = 3;
/// What Dave is to be paid (the HTLC the hub offers him), msat.
const AMOUNT_MSAT: u64 = 150_000_000;
/// The hub's forwarding policy (the default): 1,000 msat + 100 ppm, 40 blocks.
const HUB_FEE_MSAT: u64 = 1_000 + AMOUNT_MSAT / 10_000;
const HUB_DELTA: u32 = 40;
/// hub/src/node/sweeps.rs: the depth at which an on-chain resolution is final.
const ANTI_REORG_DEPTH: u32 = 6;
/// A forward's timeout claim is due this many blocks before the incoming HTLC's expiry:
/// `ANTI_REORG_DEPTH` + `FULFILL_SAFETY` (hub/src/node/onchain.rs).
const FORWARD_MARGIN: u32 = 12;

/// A block on the tip from the mempool as a miner whose blocks are full at `rate` builds
/// it: each transaction (in arrival order) with its unconfirmed ancestors not yet taken,
/// when together they pay at least `rate`; nothing else.
fn mine_paying_at_least(devnet: &Devnet, rate: FeeRate) {
    let txs = devnet.read(|s| {
        let pool = s.mempool();
        let mut taken: HashSet<Txid> = HashSet::new();
        let mut block = Vec::new();
        for e in pool.iter_ordered() {
            if taken.contains(&e.txid) {
                continue;
            }
            let mut package = vec![e];
            let mut i = 0;
            while i < package.len() {
                for input in &package[i].tx.input {
                    let parent = input.previous_output.txid;
                    if let Some(p) = pool.get(&parent) {
                        if !taken.contains(&parent) && !package.iter().any(|q| q.txid == parent) {
                            package.push(p);
                        }
                    }
                }
                i += 1;
            }
            let fee: u64 = package.iter().map(|p| p.fee.to_sat()).sum();
            let weight: u64 = package.iter().map(|p| p.weight.to_wu()).sum();
            if u128::from(fee) * 1000 < u128::from(rate.to_sat_per_kwu()) * u128::from(weight) {
                continue;
            }
            package.sort_by_key(|p| p.seq);
            for p in package {
                taken.insert(p.txid);
                block.push(p.tx.clone());
            }
        }
        block
    });
    devnet
        .mine_block_on(&devnet.tip().0, txs, elsewhere().script_pubkey())
        .unwrap();
}

/// Other users: a wallet with many coins, each paying for one transaction.
struct Others {
    wallet: Wallet,
    poller: ChainPoller<dyn ChainSource>,
}

impl Others {
    /// A funded wallet whose coinbase is split into `coins` coins (confirmed).
    async fn new(devnet: &Arc<Devnet>, coins: usize) -> Others {
        let (wallet, poller) = funded_wallet(devnet, &[0x0f; 32]).await;
        let mut others = Others { wallet, poller };
        let addr = others.wallet.new_address().unwrap();
        let outputs = vec![
            TxOut {
                value: Amount::from_sat(50_000),
                script_pubkey: addr.script_pubkey(),
            };
            coins
        ];
        let (tx, _) = others.wallet.build_and_sign(outputs, CALM).unwrap();
        devnet.send_raw_transaction(tx, None).unwrap();
        mine(devnet, 1);
        others.sync().await;
        others
    }

    async fn sync(&mut self) {
        for e in self.poller.poll().await.unwrap() {
            self.wallet.apply(&e).unwrap();
        }
    }

    /// `n` transactions paying `rate` into the mempool.
    async fn send(&mut self, devnet: &Devnet, n: usize, rate: FeeRate) {
        self.sync().await;
        for _ in 0..n {
            let (tx, _) = self
                .wallet
                .build_and_sign(
                    vec![TxOut {
                        value: Amount::from_sat(10_000),
                        script_pubkey: elsewhere().script_pubkey(),
                    }],
                    rate,
                )
                .unwrap();
            devnet.send_raw_transaction(tx, None).unwrap();
        }
    }
}

/// A second scripted peer (Mallory's code under another key and wallet), connected.
async fn peer_with_key(devnet: &Arc<Devnet>, hub: &hub::node::Node, key: u8) -> Mallory {
    let (wallet, poller) = funded_wallet(devnet, &[key; 32]).await;
    let (w, r) = hub::peer::connect(
        hub.listen_addr(),
        SecretKey::from_slice(&[key; 32]).unwrap(),
        hub.node_id(),
        chain_hash(),
    )
    .await
    .unwrap();
    Mallory {
        wallet,
        poller,
        w,
        r,
        source: devnet.clone(),
        failures: Vec::new(),
    }
}

async fn synced(hub: &hub::node::Node, devnet: &Devnet) {
    let height = u64::from(devnet.tip().1);
    wait_until("the hub synced", || async { hub.synced_blocks() >= height }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwards_timeout_claim_is_bumped_for_the_incoming_expiry_not_a_day_later() {
    // The hub, with coins for its anchor fees; Dave (Mallory's code, key 0x4d) opens an
    // anchor channel to it giving it 400,000 sat.
    let (devnet, _dir, hub, mut dave, mut dch) =
        hub_with_coins_and_anchor_channel(0x91, 400_000_000).await;
    assert!(dch.anchors());
    let did = dch.channel_id();
    let dave_id = PublicKey::from_secret_key(secp(), &SecretKey::from_slice(&[0x4d; 32]).unwrap());
    // Mallory (key 0x55) opens a channel to the hub and keeps all of it.
    let mut mallory = peer_with_key(&devnet, &hub, 0x55).await;
    let mut mch = mallory
        .open_usable(
            &devnet,
            &hub,
            ChannelSecrets::from_seed(&[0x92; 32]),
            0x92,
            0,
        )
        .await;
    let mid = mch.channel_id();
    wait_until("Dave's channel has its short id", || async {
        hub.channel(&did).await.unwrap().short_channel_id.is_some()
    })
    .await;
    let scid = hub.channel(&did).await.unwrap().short_channel_id.unwrap();

    // Other users' transactions at the calm rate fill a block.
    let mut others = Others::new(&devnet, 300).await;
    others.send(&devnet, CALM_TXS, CALM).await;
    mine(&devnet, 1);
    assert_eq!(
        devnet.block(&devnet.tip().0).unwrap().txdata.len(),
        1 + CALM_TXS
    );
    synced(&hub, &devnet).await;
    let wallet_before = hub.wallet_balance().await.to_sat();
    assert_eq!(wallet_before, 5_000_000_000);
    let mallory_before = hub.channel(&mid).await.unwrap();

    // Mallory pays Dave through the hub: the outgoing HTLC expires 80 blocks out (the
    // calm block then out of the estimates for the next few dozen blocks, not out of the
    // day's), the incoming one the hub's delta later.
    let out_cltv = devnet.tip().1 + 80;
    let in_cltv = out_cltv + HUB_DELTA;
    let deadline = in_cltv - FORWARD_MARGIN;
    let preimage = PaymentPreimage([0x93; 32]);
    let hash = preimage.payment_hash();
    let hop = |short_channel_id, payment_data| HopPayload {
        amt_to_forward: AMOUNT_MSAT,
        outgoing_cltv_value: out_cltv,
        short_channel_id,
        payment_data,
    };
    let (onion, onion_secrets) = create_onion(
        &SecretKey::from_slice(&[0x94; 32]).unwrap(),
        &[
            (hub.node_id(), hop(Some(scid), None)),
            (dave_id, hop(None, Some(([0x95; 32], AMOUNT_MSAT)))),
        ],
        &hash.0,
    )
    .unwrap();
    let add = mch
        .send_add_htlc(Msat(AMOUNT_MSAT + HUB_FEE_MSAT), hash, in_cltv, onion)
        .unwrap();
    mallory.w.send(&Message::UpdateAddHtlc(add)).await.unwrap();
    mallory.sign_if_needed(&mut mch).await;
    let mut mkept = Vec::new();
    mallory
        .serve_until(&mut mch, &[], &mut mkept, settled_with(1))
        .await;
    // Dave takes the HTLC and goes silent.
    let mut dkept = Vec::new();
    dave.serve_until(&mut dch, &[], &mut dkept, settled_with(1))
        .await;
    let forward = hub.forwards(None).pop().expect("the forward");
    assert_eq!(
        (
            forward.status.as_str(),
            forward.in_cltv,
            forward.out_cltv,
            forward.out_channel
        ),
        ("pending", in_cltv, out_cltv, did)
    );

    // At the outgoing HTLC's expiry the hub goes to chain; its commitment (and any child
    // on its anchor) confirms in the next block, in calm times.
    mine(&devnet, out_cltv - 1 - devnet.tip().1);
    synced(&hub, &devnet).await;
    assert_eq!(
        hub.channel(&did).await.unwrap().status,
        ChannelStatus::Normal
    );
    mine(&devnet, 1);
    let funding = dch.setup().funding_outpoint;
    wait_until("the hub's commitment in the mempool", || async {
        devnet.find_spend(&funding, 0).await.unwrap().is_some()
    })
    .await;
    synced(&hub, &devnet).await; // and a child on its anchor, if any
    mine(&devnet, 1);
    let (commitment, commitment_height) = confirmed_spend(&devnet, funding)
        .await
        .expect("the commitment confirmed");
    assert_eq!(commitment_height, out_cltv + 1);
    let commitment_txid = commitment.compute_txid();
    let htlc_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == AMOUNT_MSAT / 1000)
        .expect("the HTLC output") as u32;
    let htlc_out = OutPoint::new(commitment_txid, htlc_vout);

    // The HTLC-timeout goes out at the calm estimate.
    wait_until("the HTLC-timeout in the mempool", || async {
        devnet.find_spend(&htlc_out, 0).await.unwrap().is_some()
    })
    .await;
    let first = devnet.find_spend(&htlc_out, 0).await.unwrap().unwrap().tx;
    assert!(first.input.len() >= 2, "funded by the wallet");
    let first_fee = fee_of(&devnet, &first).await;
    let first_rate = first_fee * 1000 / first.weight().to_wu();
    assert!(first_rate < RISE.to_sat_per_kwu(), "{first_rate}");

    // The rise: from now on every block is full of other users' transactions at 50×.
    // Block by block, until the hub fails Mallory's HTLC back or it reaches its expiry.
    let mut replaced_at = None;
    let mut confirmed = None;
    let mut failed_at = None;
    while devnet.tip().1 + 1 < in_cltv {
        others.send(&devnet, RISE_TXS, RISE_PAID).await;
        mine_paying_at_least(&devnet, RISE);
        synced(&hub, &devnet).await;
        let tip = devnet.tip().1;
        if tip == out_cltv + 2 {
            // The estimates: for the blocks left before the forward's deadline, the
            // rise; for a day, still the calm.
            let soon = devnet.estimate_fee_rate((deadline - tip) as u16).await;
            let day = devnet
                .estimate_fee_rate((out_cltv + 144 - tip) as u16)
                .await;
            let (soon, day) = (soon.unwrap().unwrap(), day.unwrap().unwrap());
            assert!(soon >= RISE && day < RISE, "{soon:?} {day:?}");
        }
        match devnet.find_spend(&htlc_out, 0).await.unwrap() {
            Some(s) if s.block.is_some() && confirmed.is_none() => {
                confirmed = Some((s.tx, s.block.unwrap().height))
            }
            Some(s) if s.tx != first && replaced_at.is_none() => replaced_at = Some(tip),
            _ => {}
        }
        if hub.forwards(None).pop().unwrap().status != "pending" {
            failed_at = Some(tip);
            break;
        }
    }
    let failed_at = failed_at.unwrap_or_else(|| {
        panic!(
            "Mallory's HTLC reached its expiry {in_cltv} without being failed back: the \
             HTLC-timeout (first at {first_rate} sat/kwu) was replaced at {replaced_at:?} \
             and confirmed at {:?}",
            confirmed.as_ref().map(|(_, h)| h)
        )
    });
    assert_eq!(
        replaced_at,
        Some(out_cltv + 2),
        "funded again after the first block of the rise"
    );
    let (timeout, timeout_height) = confirmed.expect("the HTLC-timeout confirmed");
    assert_eq!(timeout_height, out_cltv + 3, "in the block after");
    assert_ne!(timeout, first, "the replacement confirmed");
    assert!(timeout.input[0].witness.iter().all(|w| w != preimage.0));
    assert!(timeout_height < deadline, "{timeout_height} vs {deadline}");
    let timeout_fee = fee_of(&devnet, &timeout).await;
    let timeout_rate = timeout_fee * 1000 / timeout.weight().to_wu();
    assert!(timeout_rate >= RISE.to_sat_per_kwu(), "{timeout_rate}");
    assert!(timeout_fee <= AMOUNT_MSAT / 1000 / 2, "within the budget");
    // Failed back once the HTLC-timeout is ANTI_REORG_DEPTH deep, not before, and long
    // before the incoming HTLC expires.
    assert_eq!(failed_at, timeout_height + ANTI_REORG_DEPTH - 1);
    assert!(failed_at + FORWARD_MARGIN < in_cltv);
    let f = hub.forwards(None).pop().unwrap();
    assert_eq!(f.status, "failed", "{f:?}");

    // Off chain: Mallory's HTLC is failed back (permanent_channel_failure from the hub),
    // and her channel is open and back where it was.
    mallory
        .serve_until(&mut mch, &[], &mut mkept, settled_with(0))
        .await;
    let (failed_id, reason) = mallory.failures.first().expect("update_fail_htlc").clone();
    assert_eq!(failed_id, 0);
    let failure = decode_failure(&onion_secrets, &reason).unwrap();
    assert_eq!(failure.code, hub::node::codes::PERMANENT_CHANNEL_FAILURE);
    wait_until("the hub's side of Mallory's channel settled", || async {
        let c = hub.channel(&mid).await.unwrap();
        c.htlcs == 0 && c.quiescent
    })
    .await;
    let mallory_after = hub.channel(&mid).await.unwrap();
    assert_eq!(mallory_after.status, ChannelStatus::Normal);
    assert_eq!(
        (mallory_after.local, mallory_after.remote),
        (mallory_before.local, mallory_before.remote)
    );
    assert!(devnet
        .find_spend(&mch.setup().funding_outpoint, 0)
        .await
        .unwrap()
        .is_none());

    // The rise ends; after the CSV delay to_local and the HTLC-timeout's output come home.
    mine(&devnet, 145);
    mine_until_closed(&devnet, &hub, &did, 30).await;
    let to_local_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 250_000)
        .expect("the hub's to_local: 400,000 sat less the HTLC (Dave pays the fee)")
        as u32;
    let sweep_fees = fees_of_sweeps(
        &devnet,
        commitment_txid,
        to_local_vout,
        timeout.compute_txid(),
    )
    .await;
    // Children on the anchors (each with its wallet change): what they took is the
    // anchors' 330 sat less their fee.
    let mut children: Vec<Transaction> = Vec::new();
    for v in 0..commitment.output.len() as u32 {
        if commitment.output[v as usize].value.to_sat() != 330 {
            continue;
        }
        if let Some((child, _)) = confirmed_spend(&devnet, OutPoint::new(commitment_txid, v)).await
        {
            if !children.contains(&child) {
                children.push(child);
            }
        }
    }
    let mut anchors_in = 0;
    let mut child_fees = 0;
    for c in &children {
        anchors_in += 330
            * c.input
                .iter()
                .filter(|i| i.previous_output.txid == commitment_txid)
                .count() as u64;
        child_fees += fee_of(&devnet, c).await;
    }

    // Every satoshi: the wallet got to_local and the HTLC back (and the anchors its
    // children spent), less the fees of the children, the HTLC-timeout and the sweeps.
    let fees = child_fees + timeout_fee + sweep_fees;
    let recovered = 250_000 + AMOUNT_MSAT / 1000;
    wait_until("the hub's wallet holds the swept coins", || async {
        hub.wallet_balance().await.to_sat() == wallet_before + recovered + anchors_in - fees
    })
    .await;
    println!(
        "forward through the hub, {} sat out expiring at {out_cltv} (+{HUB_DELTA} in); fees rose \
         {}→{} sat/kwu: the HTLC-timeout went out at {first_rate} sat/kwu ({first_fee} sat), was \
         funded again for the forward's deadline ({} blocks left) at {timeout_rate} sat/kwu \
         ({timeout_fee} sat) and confirmed at out+{}; Mallory's HTLC failed back at out+{} \
         ({} blocks before its expiry), her channel open; anchor children {child_fees} sat, \
         sweeps {sweep_fees} sat; fees paid {fees} sat of the {} sat HTLC ({recovered} sat \
         recovered)",
        AMOUNT_MSAT / 1000,
        CALM.to_sat_per_kwu(),
        RISE.to_sat_per_kwu(),
        deadline - (out_cltv + 2),
        timeout_height - out_cltv,
        failed_at - out_cltv,
        in_cltv - failed_at,
        AMOUNT_MSAT / 1000,
    );
}
