//! A fee spike while an anchor channel with an HTLC goes to chain. Mallory (a scripted
//! peer) opens an anchor channel to the hub, takes an HTLC from it and goes silent; the
//! devnet's fee estimate jumps 50× (other users' transactions fill every block at that
//! rate, so the miner takes nothing paying less). At the HTLC's expiry the hub
//! broadcasts its commitment, whose own rate (2,500 sat/kw) no block takes: a child
//! spending its anchor pays for both, and the commitment confirms at once; the
//! HTLC-timeout, its fee brought by the wallet at the spiked estimate, confirms next.
//! Every satoshi of the hub's wallet is accounted for, and the fees paid are printed
//! against what was recovered.

mod common;

use bitcoin::{FeeRate, OutPoint, Transaction};
use chain::{ChainSource, Devnet};
use channel::*;
use common::mallory::*;
use common::*;
use common::{fee_on_devnet as fee_of, mine_on as mine};
use hub::node::ChannelStatus;

/// The hub's transaction spending `outpoint` is waiting in the mempool at the calm rate
/// (`before`): a 50× spike starts, the next block does not take it, and the hub replaces
/// it. Returns the first version, its fee, and the spike's rate.
async fn spike_until_replaced(
    devnet: &Devnet,
    outpoint: OutPoint,
    before: FeeRate,
    what: &str,
) -> (Transaction, u64, FeeRate) {
    wait_until(&format!("{what} in the mempool"), || async {
        devnet.find_spend(&outpoint, 0).await.unwrap().is_some()
    })
    .await;
    let first = devnet.find_spend(&outpoint, 0).await.unwrap().unwrap().tx;
    let first_fee = fee_of(devnet, &first).await;
    let spike = FeeRate::from_sat_per_kwu(before.to_sat_per_kwu() * 50);
    devnet.set_competing_fee_rate(Some(spike));
    mine(devnet, 1);
    let spend = devnet.find_spend(&outpoint, 0).await.unwrap();
    assert!(
        spend.as_ref().is_none_or(|s| s.block.is_none()),
        "{what} at the calm rate is not mined in the spike"
    );
    wait_until(&format!("{what} replaced"), || async {
        devnet
            .find_spend(&outpoint, 0)
            .await
            .unwrap()
            .is_some_and(|s| s.tx != first)
    })
    .await;
    (first, first_fee, spike)
}

/// Mallory pays a 100,000 sat invoice of the hub's over `ch` with an HTLC expiring 40
/// blocks out, and reads nothing after the hub's update_fulfill_htlc: her current
/// commitment (returned) keeps the HTLC, whose preimage the hub knows. Returns that
/// commitment, the invoice and the expiry.
async fn withheld_payment(
    hub: &hub::node::Node,
    m: &mut Mallory,
    ch: &mut channel::state::Channel,
) -> (Transaction, hub::node::InvoiceRecord, u32) {
    let (inv, expiry) = m.offer_to_hub(ch, hub, 100_000_000).await;
    let mut kept = Vec::new();
    m.serve_until(ch, &[], &mut kept, settled_with(1)).await;
    // The hub settles it off chain (fulfill and commitment_signed); Mallory reads no more.
    let (commitment, _) = ch.signed_local_commitment().unwrap();
    loop {
        match next(&mut m.r).await {
            Some(channel::msgs::Message::UpdateFulfillHtlc(f)) => {
                assert_eq!(f.payment_preimage, inv.preimage);
                break;
            }
            Some(_) => {}
            None => panic!("the hub never fulfilled"),
        }
    }
    (commitment, inv, expiry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fee_spike_the_anchor_commitment_and_its_htlc_confirm_in_time() {
    // Mallory's anchor channel gives the hub 400,000 sat.
    let (devnet, _dir, hub, mut m, mut ch) =
        hub_with_coins_and_anchor_channel(0x73, 400_000_000).await;
    let id = ch.channel_id();
    assert!(ch.anchors());
    let wallet_before = hub.wallet_balance().await.to_sat();

    // The hub offers her 150,000 sat expiring in 20 blocks; she takes it and goes silent.
    let expiry = devnet.tip().1 + 20;
    let hash = PaymentPreimage([0x77; 32]).payment_hash();
    {
        let hub = hub.clone();
        tokio::spawn(async move { hub.pay(&id, Msat(150_000_000), hash, expiry).await });
    }
    let mut kept = Vec::new();
    m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
        .await;

    // The spike: 50× the estimate.
    let before = devnet
        .estimate_fee_rate(6)
        .await
        .unwrap()
        .expect("an estimate");
    let spike = FeeRate::from_sat_per_kwu(before.to_sat_per_kwu() * 50);
    devnet.set_competing_fee_rate(Some(spike));
    assert_eq!(devnet.estimate_fee_rate(6).await.unwrap(), Some(spike));
    assert!(
        spike.to_sat_per_kwu() > 2_500,
        "the commitment's own rate is below the spike"
    );

    // Blocks until the hub goes to chain at the HTLC's expiry.
    let mut broadcast_at = None;
    for _ in 0..25 {
        mine(&devnet, 1);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        if hub.channel(&id).await.unwrap().status != ChannelStatus::Normal {
            broadcast_at = Some(devnet.tip().1);
            break;
        }
    }
    let broadcast_at = broadcast_at.expect("the hub went to chain");
    assert!(
        broadcast_at <= expiry + 1,
        "{broadcast_at} vs expiry {expiry}"
    );
    let funding = ch.setup().funding_outpoint;

    // The commitment confirms through the child on its anchor, in the next block.
    wait_until("the commitment and its child in the mempool", || async {
        devnet.read(|s| s.mempool().len()) >= 2
    })
    .await;
    mine(&devnet, 1);
    let commitment = confirmed_spend(&devnet, funding).await;
    let (commitment, commitment_height) = commitment.expect("the commitment confirmed");
    let commitment_txid = commitment.compute_txid();
    let commitment_fee = fee_of(&devnet, &commitment).await;
    let commitment_rate = commitment_fee * 1000 / commitment.weight().to_wu();
    assert!(commitment_rate < spike.to_sat_per_kwu());
    let mut child = None;
    for v in 0..commitment.output.len() as u32 {
        if commitment.output[v as usize].value.to_sat() == 330 {
            child = child.or(confirmed_spend(&devnet, OutPoint::new(commitment_txid, v)).await);
        }
    }
    let (child, child_height) = child.expect("a child spent our anchor");
    assert_eq!(child_height, commitment_height, "mined together");
    let child_fee = fee_of(&devnet, &child).await;
    let package_rate =
        (commitment_fee + child_fee) * 1000 / (commitment.weight() + child.weight()).to_wu();
    assert!(package_rate >= spike.to_sat_per_kwu(), "{package_rate}");

    // The HTLC output goes back to the hub by its HTLC-timeout, paid at the spiked rate.
    let htlc_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 150_000)
        .expect("the HTLC output") as u32;
    let htlc_out = OutPoint::new(commitment_txid, htlc_vout);
    wait_until("the HTLC-timeout in the mempool", || async {
        devnet.find_spend(&htlc_out, 0).await.unwrap().is_some()
    })
    .await;
    mine(&devnet, 1);
    let timeout = confirmed_spend(&devnet, htlc_out).await;
    let (timeout, timeout_height) = timeout.expect("the HTLC-timeout confirmed");
    assert!(timeout.input[0].witness.iter().all(|w| w != [0x77; 32]));
    let timeout_fee = fee_of(&devnet, &timeout).await;
    // An upstream hop would have allowed the hub its cltv_expiry_delta (40 blocks).
    assert!(timeout_height < expiry + 40, "{timeout_height}");

    // The spike ends; the CSV-delayed outputs come home.
    devnet.set_competing_fee_rate(None);
    let to_local_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 250_000)
        .expect("the hub's to_local: 400,000 sat less the HTLC (Mallory pays the fee)")
        as u32;
    let to_local = commitment.output[to_local_vout as usize].value.to_sat();
    mine(&devnet, 145);
    mine_until_closed(&devnet, &hub, &id, 30).await;
    let sweep_fees = fees_of_sweeps(
        &devnet,
        commitment_txid,
        to_local_vout,
        timeout.compute_txid(),
    )
    .await;

    // Every satoshi: the wallet got to_local, the HTLC and our anchor back, less the fees
    // of the child, the HTLC-timeout and the two sweeps.
    let fees = child_fee + timeout_fee + sweep_fees;
    let recovered = to_local + 150_000;
    wait_until("the wallet holds the swept coins", || async {
        hub.wallet_balance().await.to_sat() == wallet_before + recovered + 330 - fees
    })
    .await;
    println!(
        "fee spike {}→{} sat/kwu: commitment ({} sat/kwu) confirmed {} block(s) after broadcast \
         with its child (fee {child_fee} sat, package {package_rate} sat/kwu); HTLC-timeout \
         confirmed {} block(s) later (wallet fee {timeout_fee} sat); sweeps {sweep_fees} sat; \
         fees paid {fees} sat of {recovered} sat recovered",
        before.to_sat_per_kwu(),
        spike.to_sat_per_kwu(),
        commitment_rate,
        commitment_height - broadcast_at,
        timeout_height - commitment_height,
    );
    assert!(
        fees < recovered / 2,
        "fees {fees} within the budget of {recovered}"
    );
}

/// Mallory, who mines, confirms her revoked commitment herself; the hub's justice goes
/// out at the calm estimate, then the spike starts before any block takes it: the next
/// block the hub replaces it at the spiked estimate (RBF), and it confirms long before
/// her CSV delay ends. The hub's wallet gets the channel less the fees, to the satoshi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fee_spike_justice_is_bumped_and_confirms_before_the_csv_ends() {
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x76, 200_000_000).await;
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
    let revoked_height = devnet.tip().1;
    let revoked_txid = revoked.compute_txid();
    assert_eq!(revoked.output.len(), 2, "to_local and to_remote");
    let to_local = OutPoint::new(
        revoked_txid,
        revoked
            .output
            .iter()
            .position(|o| o.value.to_sat() > 290_000)
            .expect("her to_local: 300,000 sat less the fee") as u32,
    );
    let (_, first_fee, spike) =
        spike_until_replaced(&devnet, to_local, before, "the hub's justice").await;
    mine(&devnet, 1);
    let (justice, height) = confirmed_spend(&devnet, to_local)
        .await
        .expect("the replacement confirmed");
    let justice_fee = fee_of(&devnet, &justice).await;
    let rate = justice_fee * 1000 / justice.weight().to_wu();
    assert!(rate >= spike.to_sat_per_kwu(), "{rate}");
    assert_eq!(
        height,
        revoked_height + 2,
        "in the block after the spike's first"
    );

    // The hub's own output (to_remote) comes home once the spike is over.
    devnet.set_competing_fee_rate(None);
    mine_until_closed(&devnet, &hub, &id, 30).await;
    let to_remote = OutPoint::new(revoked_txid, 1 - to_local.vout);
    let (sweep, _) = confirmed_spend(&devnet, to_remote)
        .await
        .expect("to_remote swept");
    let sweep_fee = fee_of(&devnet, &sweep).await;
    let commitment_fee = FUNDING_SAT - revoked.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
    let received = FUNDING_SAT - commitment_fee - justice_fee - sweep_fee;
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == received
    })
    .await;
    println!(
        "breach in a fee spike {}→{} sat/kwu: justice first at {} sat, replaced at {justice_fee} sat \
         ({rate} sat/kwu), confirmed 2 blocks after the revoked commitment; the hub received \
         {received} sat of the channel's {FUNDING_SAT}",
        before.to_sat_per_kwu(),
        spike.to_sat_per_kwu(),
        first_fee,
    );
}

/// Mallory pays an invoice of the hub's, withholds her revocation of the commitment that
/// settles it, and mines her commitment with the HTLC still on it herself, betting that
/// the hub's claim with the preimage will not confirm before the HTLC's expiry, after
/// which she takes it back by timeout. The claim goes out at the calm estimate; the spike
/// starts before any block takes it, and the next block the hub replaces it at the
/// estimate for the blocks left before the expiry (RBF). It confirms far before the
/// expiry; the hub's wallet gets its to_remote and the HTLC less the fees, to the satoshi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fee_spike_a_claim_with_a_preimage_is_bumped_before_the_expiry() {
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x78, 200_000_000).await;
    let id = ch.channel_id();
    let (commitment, inv, expiry) = withheld_payment(&hub, &mut m, &mut ch).await;
    let before = devnet
        .estimate_fee_rate(6)
        .await
        .unwrap()
        .expect("an estimate");

    devnet
        .mine_block_on(
            &devnet.tip().0,
            vec![commitment.clone()],
            elsewhere().script_pubkey(),
        )
        .unwrap();
    let commitment_height = devnet.tip().1;
    let commitment_txid = commitment.compute_txid();
    let htlc = OutPoint::new(
        commitment_txid,
        commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == 100_000)
            .expect("the HTLC output") as u32,
    );
    let (_, first_fee, spike) =
        spike_until_replaced(&devnet, htlc, before, "the hub's claim").await;
    mine(&devnet, 1);
    let (claim, height) = confirmed_spend(&devnet, htlc)
        .await
        .expect("the replacement confirmed");
    assert!(
        claim.input[0].witness.iter().any(|w| w == inv.preimage.0),
        "claimed with the preimage"
    );
    let claim_fee = fee_of(&devnet, &claim).await;
    let rate = claim_fee * 1000 / claim.weight().to_wu();
    assert!(rate >= spike.to_sat_per_kwu(), "{rate}");
    assert!(
        claim_fee <= 100_000 / 2,
        "within the budget: {claim_fee} sat"
    );
    assert_eq!(height, commitment_height + 2);
    assert!(height < expiry, "{height} before the expiry {expiry}");

    // The hub's to_remote comes home once the spike is over.
    devnet.set_competing_fee_rate(None);
    mine_until_closed(&devnet, &hub, &id, 30).await;
    let to_remote_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 200_000)
        .expect("the hub's to_remote: the push") as u32;
    let (sweep, _) = confirmed_spend(&devnet, OutPoint::new(commitment_txid, to_remote_vout))
        .await
        .expect("to_remote swept");
    let sweep_fee = fee_of(&devnet, &sweep).await;
    let received = 200_000 + 100_000 - claim_fee - sweep_fee;
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == received
    })
    .await;
    println!(
        "claim with a preimage in a fee spike {}→{} sat/kwu: first at {first_fee} sat, replaced \
         at {claim_fee} sat ({rate} sat/kwu), confirmed {} blocks before the HTLC's expiry; the \
         hub received {received} sat (to_remote sweep fee {sweep_fee} sat)",
        before.to_sat_per_kwu(),
        spike.to_sat_per_kwu(),
        expiry - height,
    );
}

/// The hub's own anchor commitment with an HTLC-success: Mallory withholds her
/// revocation after the hub fulfilled her payment, and the hub goes to chain. Its
/// HTLC-success, funded by the wallet at the calm estimate, waits in the mempool when
/// the spike starts; the next block the hub funds it again at the estimate for the
/// blocks left before the HTLC's expiry (RBF) and rebuilds the sweep of its output on
/// the new txid. It confirms before the expiry, and the hub's wallet gets to_local and
/// the HTLC less every fee, to the satoshi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_fee_spike_an_anchor_htlc_success_is_funded_again_before_the_expiry() {
    htlc_success_in_a_spike(false).await;
}

/// As above, but a miner that never saw the replacement mines the first version: the
/// hub sweeps that version's output instead, and its wallet is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_replaced_htlc_success_is_mined_its_output_is_swept() {
    htlc_success_in_a_spike(true).await;
}

async fn htlc_success_in_a_spike(earlier_version_mined: bool) {
    let (devnet, _dir, hub, mut m, mut ch) =
        hub_with_coins_and_anchor_channel(0x79, 200_000_000).await;
    let id = ch.channel_id();
    let wallet_before = hub.wallet_balance().await.to_sat();
    let (_, inv, expiry) = withheld_payment(&hub, &mut m, &mut ch).await;

    let before = devnet.estimate_fee_rate(6).await.unwrap().unwrap();

    // The hub goes to chain; its commitment pays enough in calm times.
    let commitment_txid = hub.force_close(&id).await.unwrap();
    wait_until("the commitment in the mempool", || async {
        devnet.read(|s| s.mempool().len()) >= 1
    })
    .await;
    mine(&devnet, 1);
    let (commitment, _) = devnet
        .transaction(&commitment_txid)
        .await
        .unwrap()
        .expect("the commitment confirmed");
    let htlc = OutPoint::new(
        commitment_txid,
        commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == 100_000)
            .expect("the HTLC output") as u32,
    );
    let (first, first_fee, spike) =
        spike_until_replaced(&devnet, htlc, before, "the HTLC-success").await;
    assert!(first.input.len() >= 2, "funded by the wallet");
    let height_before = devnet.tip().1;
    if earlier_version_mined {
        devnet
            .mine_block_on(
                &devnet.tip().0,
                vec![first.clone()],
                elsewhere().script_pubkey(),
            )
            .unwrap();
    } else {
        mine(&devnet, 1);
    }
    let (success, height) = confirmed_spend(&devnet, htlc)
        .await
        .expect("an HTLC-success confirmed");
    assert_eq!(height, height_before + 1);
    assert!(height < expiry, "{height} before the expiry {expiry}");
    assert!(
        success.input[0].witness.iter().any(|w| w == inv.preimage.0),
        "HTLC-success with the preimage"
    );
    let success_fee = fee_of(&devnet, &success).await;
    let rate = success_fee * 1000 / success.weight().to_wu();
    if earlier_version_mined {
        assert_eq!(success, first);
    } else {
        assert!(rate >= spike.to_sat_per_kwu(), "{rate}");
    }
    assert!(
        success_fee <= 100_000 / 2,
        "within the budget: {success_fee}"
    );

    // After the spike and the CSV delay, to_local and the HTLC-success's output come home.
    devnet.set_competing_fee_rate(None);
    mine(&devnet, 145);
    mine_until_closed(&devnet, &hub, &id, 30).await;
    let to_local_vout = commitment
        .output
        .iter()
        .position(|o| o.value.to_sat() == 200_000)
        .expect("the hub's to_local: the push (Mallory pays the fee and anchors)")
        as u32;
    let to_local = commitment.output[to_local_vout as usize].value.to_sat();
    let to_local_sweep = confirmed_spend(&devnet, OutPoint::new(commitment_txid, to_local_vout))
        .await
        .expect("to_local swept")
        .0;
    let htlc_sweep = confirmed_spend(&devnet, OutPoint::new(success.compute_txid(), 0))
        .await
        .expect("the confirmed version's output swept")
        .0;
    let sweep_fees = if to_local_sweep == htlc_sweep {
        // One batch swept both (neither has a deadline).
        fee_of(&devnet, &to_local_sweep).await
    } else {
        fee_of(&devnet, &to_local_sweep).await + fee_of(&devnet, &htlc_sweep).await
    };
    let fees = success_fee + sweep_fees;
    wait_until("the hub's wallet", || async {
        hub.wallet_balance().await.to_sat() == wallet_before + to_local + 100_000 - fees
    })
    .await;
    let confirmed = if earlier_version_mined {
        "the first version mined by a miner that missed the replacement"
    } else {
        "the replacement confirmed"
    };
    println!(
        "anchor HTLC-success in a fee spike {}→{} sat/kwu: first at {first_fee} sat, funded again; \
         {confirmed}: {success_fee} sat ({rate} sat/kwu), {} blocks before the HTLC's expiry; \
         sweeps {sweep_fees} sat",
        before.to_sat_per_kwu(),
        spike.to_sat_per_kwu(),
        expiry - height,
    );
}
