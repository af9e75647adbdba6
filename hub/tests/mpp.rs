//! Basic multi-part payments (BOLT 4) to one of the hub's invoices, paid by Mallory (the
//! scripted peer of `common::mallory`) in parts she builds herself: the hub fulfills
//! nothing until the parts reach the payer's `total_msat`, then every part; a set left
//! short fails whole with `mpp_timeout`; parts that disagree on the total fail whole.
//! The hub's balance is checked to the millisatoshi after each.

mod common;

use bitcoin::secp256k1::SecretKey;
use channel::msgs::{Message, OnionPacket};
use channel::onion::{create_onion, decode_failure, HopPayload};
use channel::state::{Channel, ViewOf};
use channel::*;
use common::mallory::*;
use common::*;
use hub::node::{InvoiceRecord, Node};
use std::sync::Arc;
use std::time::Duration;

const MPP_TIMEOUT: u16 = 23;
const INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS: u16 = 0x4000 | 15;

/// A hub whose multi-part payments time out after `mpp_timeout`, and Mallory with a
/// 500,000 sat channel to it that she funded (the hub's side holds nothing).
async fn hub_and_payer(
    mpp_timeout: Duration,
) -> (
    Arc<chain::Devnet>,
    tempfile::TempDir,
    Arc<Node>,
    Mallory,
    Channel,
) {
    let devnet = Arc::new(chain::Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start_configured(&devnet, dir.path(), None, |c| c.mpp_timeout = mpp_timeout).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let ch = m
        .open_usable(
            &devnet,
            &hub,
            channel::keys::ChannelSecrets::from_seed(&[0x3c; 32]),
            0x3c,
            0,
        )
        .await;
    (devnet, dir, hub, m, ch)
}

/// The onion of one part: `pays_msat` of the payer's `total_msat` for `inv`, and the
/// shared secret to read a failure with.
fn part_onion(
    hub: &Node,
    inv: &InvoiceRecord,
    pays_msat: u64,
    total_msat: u64,
    expiry: u32,
    session: u8,
) -> (OnionPacket, Vec<[u8; 32]>) {
    create_onion(
        &SecretKey::from_slice(&[session; 32]).unwrap(),
        &[(
            hub.node_id(),
            HopPayload {
                amt_to_forward: pays_msat,
                outgoing_cltv_value: expiry,
                short_channel_id: None,
                payment_data: Some((inv.payment_secret, total_msat)),
            },
        )],
        &inv.payment_hash.0,
    )
    .unwrap()
}

/// Mallory adds a part of `total_msat` and signs; returns the shared secrets of its
/// onion.
async fn send_part(
    m: &mut Mallory,
    ch: &mut Channel,
    hub: &Node,
    inv: &InvoiceRecord,
    pays_msat: u64,
    total_msat: u64,
    session: u8,
) -> Vec<[u8; 32]> {
    let expiry = m.source.tip().await.unwrap().height + 40;
    let (onion, secrets) = part_onion(hub, inv, pays_msat, total_msat, expiry, session);
    let add = ch
        .send_add_htlc(Msat(pays_msat), inv.payment_hash, expiry, onion)
        .unwrap();
    m.w.send(&Message::UpdateAddHtlc(add)).await.unwrap();
    m.sign_if_needed(ch).await;
    secrets
}

/// What the hub's `update_fail_htlc` for Mallory's HTLC `id` says (the failure code).
fn failure_code(m: &Mallory, id: u64, secrets: &[[u8; 32]]) -> u16 {
    let (_, reason) = m
        .failures
        .iter()
        .find(|(i, _)| *i == id)
        .unwrap_or_else(|| panic!("HTLC {id} was failed"));
    decode_failure(secrets, reason).unwrap().code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_fulfilled_together_once_they_reach_the_total() {
    let (_devnet, _dir, hub, mut m, mut ch) = hub_and_payer(hub::node::DEFAULT_MPP_TIMEOUT).await;
    let id = ch.channel_id();
    let inv = hub
        .create_invoice(Some(200_000_000), "two parts", 3600, "")
        .await
        .unwrap();
    let preimage = hub.invoice(&inv.payment_hash, None).unwrap().preimage;
    let mut kept = Vec::new();

    // The first part, 120,000 sat of 200,000: committed, then held.
    send_part(&mut m, &mut ch, &hub, &inv, 120_000_000, 200_000_000, 1).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
        .await;
    let quiet = next_within(&mut m.r, Duration::from_secs(2)).await;
    assert!(
        !matches!(
            quiet,
            Some(Message::UpdateFulfillHtlc(_) | Message::UpdateFailHtlc(_))
        ),
        "the hub resolved a part of an incomplete set: {quiet:?}"
    );
    assert_eq!(hub.invoice(&inv.payment_hash, None).unwrap().status, "open");
    assert_eq!(hub.channel(&id).await.unwrap().local, Msat(0));

    // The second, 80,000 sat: both are fulfilled, with the invoice's preimage.
    send_part(&mut m, &mut ch, &hub, &inv, 80_000_000, 200_000_000, 2).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    assert!(m.failures.is_empty(), "no part failed: {:?}", m.failures);
    let paid = hub.invoice(&inv.payment_hash, None).unwrap();
    assert_eq!(paid.status, "paid");
    assert_eq!(paid.amount_received_msat, Some(200_000_000));
    assert_eq!(paid.preimage, preimage);
    wait_until("the hub's balance is the whole payment", || async {
        hub.channel(&id).await.unwrap().local == Msat(200_000_000)
    })
    .await;
    assert_eq!(
        ch.view(ViewOf::CurrentLocal).local,
        Msat(300_000_000),
        "Mallory paid exactly the invoice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_short_of_its_total_times_out_and_disagreeing_totals_fail_whole() {
    let (_devnet, _dir, hub, mut m, mut ch) = hub_and_payer(Duration::from_secs(2)).await;
    let id = ch.channel_id();
    let mut kept = Vec::new();
    let inv = hub
        .create_invoice(Some(200_000_000), "short", 3600, "")
        .await
        .unwrap();

    // One part of 100,000 sat out of 200,000: failed with mpp_timeout once the timeout
    // passes, and the hub keeps nothing.
    let secrets = send_part(&mut m, &mut ch, &hub, &inv, 100_000_000, 200_000_000, 3).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
        .await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    assert_eq!(failure_code(&m, 0, &secrets), MPP_TIMEOUT);
    assert_eq!(hub.invoice(&inv.payment_hash, None).unwrap().status, "open");
    assert_eq!(hub.channel(&id).await.unwrap().local, Msat(0));

    // Two parts that disagree on the total (200,000 and 250,000 sat, both
    // acceptable for the invoice): both fail with
    // incorrect_or_unknown_payment_details, though together they would cover either.
    let a = send_part(&mut m, &mut ch, &hub, &inv, 100_000_000, 200_000_000, 4).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
        .await;
    let b = send_part(&mut m, &mut ch, &hub, &inv, 150_000_000, 250_000_000, 5).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    assert_eq!(
        failure_code(&m, 1, &a),
        INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
    );
    assert_eq!(
        failure_code(&m, 2, &b),
        INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
    );
    assert_eq!(hub.invoice(&inv.payment_hash, None).unwrap().status, "open");
    assert_eq!(hub.channel(&id).await.unwrap().local, Msat(0));

    // The payer tries again, in two parts sent together: paid.
    send_part(&mut m, &mut ch, &hub, &inv, 50_000_000, 200_000_000, 6).await;
    send_part(&mut m, &mut ch, &hub, &inv, 150_000_000, 200_000_000, 7).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    assert_eq!(m.failures.len(), 3, "only the parts above failed");
    assert_eq!(hub.invoice(&inv.payment_hash, None).unwrap().status, "paid");
    wait_until("the hub's balance is the payment", || async {
        hub.channel(&id).await.unwrap().local == Msat(200_000_000)
    })
    .await;
}

/// The attacks an earlier version allowed: a part held in its set was checked again on
/// its own each time its channel moved, so a part whose expiry had become too close was
/// failed back to the payer while still counted, and a 1-msat part then completed the set
/// and got the preimage; and once an invoice was paid, any HTLC with its payment secret,
/// 1 msat included, got the preimage. Now a held part is the set's alone to decide, and a
/// paid invoice pays the parts that paid it and no one else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_part_cannot_be_failed_out_of_its_set_and_a_paid_invoice_pays_no_one_else() {
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_payer(hub::node::DEFAULT_MPP_TIMEOUT).await;
    let id = ch.channel_id();
    let mut kept = Vec::new();
    let inv = hub
        .create_invoice(Some(200_000_000), "exact", 3600, "")
        .await
        .unwrap();
    let total = 200_000_000;

    // P1, all but 1 msat, expiring exactly at the invoice's minimum from the tip.
    let tip = m.source.tip().await.unwrap().height;
    let expiry = tip + inv.min_final_cltv_expiry_delta;
    let (onion, _) = part_onion(&hub, &inv, total - 1, total, expiry, 8);
    let p1 = ch
        .send_add_htlc(Msat(total - 1), inv.payment_hash, expiry, onion)
        .unwrap();
    m.w.send(&Message::UpdateAddHtlc(p1)).await.unwrap();
    m.sign_if_needed(&mut ch).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
        .await;

    // A block: P1's expiry is now closer than the invoice's minimum. Then an HTLC the
    // hub cannot read, which makes it look at the channel's HTLCs again.
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let junk = ch
        .send_add_htlc(
            Msat(10_000),
            PaymentHash([0x66; 32]),
            expiry + 100,
            Default::default(),
        )
        .unwrap();
    m.w.send(&Message::UpdateAddHtlc(junk)).await.unwrap();
    m.sign_if_needed(&mut ch).await;
    m.serve_until(&mut ch, &[], &mut kept, |c| {
        settled_with(1)(c) && c.view(ViewOf::CurrentLocal).htlcs[0].amount == Msat(total - 1)
    })
    .await;
    assert!(
        m.failures.is_empty(),
        "P1 failed back while held: {:?}",
        m.failures
    );

    // P2, 1 msat, completes the set: both fulfilled, the hub has the whole amount.
    send_part(&mut m, &mut ch, &hub, &inv, 1, total, 9).await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    assert!(m.failures.is_empty(), "{:?}", m.failures);
    assert_eq!(hub.invoice(&inv.payment_hash, None).unwrap().status, "paid");
    wait_until("the hub holds the whole amount", || async {
        hub.channel(&id).await.unwrap().local == Msat(total)
    })
    .await;

    // Paid: 1 msat with the right secret gets no preimage.
    let start = ch.local_commitment_number().0;
    let secrets = send_part(&mut m, &mut ch, &hub, &inv, 1, 1, 10).await;
    // Two dances: the add, then its removal.
    m.serve_until(&mut ch, &[], &mut kept, |c| {
        settled_with(0)(c) && c.local_commitment_number().0 >= start + 2
    })
    .await;
    let (htlc, _) = m.failures.last().cloned().expect("the extra HTLC failed");
    assert_eq!(
        failure_code(&m, htlc, &secrets),
        INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS
    );
    assert_eq!(hub.channel(&id).await.unwrap().local, Msat(total));
}
