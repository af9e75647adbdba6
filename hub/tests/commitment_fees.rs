//! The funder follows the chain's fee estimate. Alice funds a static_remotekey
//! channel to Bob (his wallet lacks the reserve for an anchor channel); the estimate
//! jumps to 50 sat/vB (about 12,500 sat/kw: a block containing only such a
//! transaction); Alice sends update_fee at the estimate, Bob (our other half, whose bounds
//! are the estimate's half to ten times) takes it, and both commitments carry the new
//! rate. A small rise (under a fifth) changes nothing; when the estimate (the larger of
//! the 6-block and the day's) falls below half the rate, Alice lowers it to the estimate,
//! and a payment goes through at that rate.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, FeeRate};
use chain::ChainSource;
use common::*;

async fn feerates(p: &Pair) -> (u32, u32) {
    (
        p.a.channel(&p.id).await.unwrap().feerate_per_kw,
        p.b.channel(&p.id).await.unwrap().feerate_per_kw,
    )
}

/// Mines 12 empty blocks (the estimate's window), then one with a single transaction
/// paying `sat_per_vb`: the 6-block estimate becomes that rate.
async fn set_estimate(
    p: &Pair,
    wallet: &mut chain::wallet::Wallet,
    poller: &mut chain::ChainPoller<dyn ChainSource>,
    sat_per_vb: u64,
) {
    p.devnet
        .generate_to_script(12, &elsewhere().script_pubkey())
        .unwrap();
    for e in poller.poll().await.unwrap() {
        wallet.apply(&e).unwrap();
    }
    let tx = wallet
        .build_funding_tx(
            bitcoin::ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([7; 32])),
            Amount::from_sat(100_000),
            FeeRate::from_sat_per_vb(sat_per_vb).unwrap(),
        )
        .unwrap();
    p.devnet.broadcast(&tx.tx).await.unwrap();
    p.devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    for e in poller.poll().await.unwrap() {
        wallet.apply(&e).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_funder_raises_the_commitment_fee_rate_with_the_estimate() {
    let p = open_pair_with(None, None, 1_000_000_000_000).await;
    let c = p.a.channel(&p.id).await.unwrap();
    assert_eq!(
        c.channel_type,
        channel::channel_type::ChannelType::StaticRemoteKey
    );
    let (mut wallet, mut poller) = funded_wallet(&p.devnet, &[0x2f; 32]).await;

    // The channel opened at 2,500 sat/kw. The estimate is brought to 10 sat/vB (about
    // 2,500 sat/kw) first: whatever the calm chain's estimate did to the rate since the
    // open (one below half of it lowers the rate), both commitments end up at 2,500 or
    // at the rate followed.
    set_estimate(&p, &mut wallet, &mut poller, 10).await;
    let start = followed(&p).await;
    wait_until("both commitments at the starting rate", || async {
        let rates = feerates(&p).await;
        rates == (2_500, 2_500) || rates == (start, start)
    })
    .await;
    let base = feerates(&p).await;

    // 11 sat/vB = 2,750 sat/kw: within a fifth, nothing changes.
    set_estimate(&p, &mut wallet, &mut poller, 11).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(feerates(&p).await, base);

    // 50 sat/vB = 12,500 sat/kw: Alice raises the rate, Bob takes it.
    set_estimate(&p, &mut wallet, &mut poller, 50).await;
    let estimate = p.devnet.estimate_fee_rate(6).await.unwrap().unwrap();
    let target = estimate.to_sat_per_kwu() as u32;
    assert!((12_000..=12_500).contains(&target), "{target}");
    wait_until("both commitments at the estimate", || async {
        feerates(&p).await == (target, target)
    })
    .await;
    // A payment still goes through at the new rate.
    pay(&p, false, 10_000_000, 1).await;

    // The 6-block estimate falls to 8 sat/vB (about 2,000 sat/kw): the rate followed,
    // the larger of it and the day's estimate, is under half of 12,500, so Alice lowers
    // the rate to it, Bob takes it, and payments go on.
    set_estimate(&p, &mut wallet, &mut poller, 8).await;
    let six = p.devnet.estimate_fee_rate(6).await.unwrap().unwrap();
    assert!((1_900..=2_000).contains(&six.to_sat_per_kwu()), "{six:?}");
    let lower = followed(&p).await;
    assert!(lower * 2 < target, "{lower} vs {target}");
    wait_until("both commitments at the lower rate", || async {
        feerates(&p).await == (lower, lower)
    })
    .await;
    pay(&p, false, 10_000_000, 1).await;

    // A small fall (7 sat/vB) changes nothing.
    set_estimate(&p, &mut wallet, &mut poller, 7).await;
    let now = followed(&p).await;
    assert!(
        now * 2 >= lower && now * 100 <= lower * 120,
        "{now} vs {lower}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(feerates(&p).await, (lower, lower));
}

/// The rate the funder follows: the larger of the 6-block and the 144-block estimates.
async fn followed(p: &Pair) -> u32 {
    let six = p.devnet.estimate_fee_rate(6).await.unwrap().unwrap();
    let day = p.devnet.estimate_fee_rate(144).await.unwrap().unwrap();
    six.max(day).to_sat_per_kwu() as u32
}
