//! Mallory (the scripted peer of `common::mallory`) abuses the HTLCs she may offer:
//!
//! - a forward whose outgoing HTLC would expire 10,000 blocks out (the hub's liquidity
//!   locked for months): refused with `expiry_too_far` before anything is offered on;
//! - a flood of dust HTLCs (each below the dust limit plus its HTLC transaction's fee, so
//!   trimmed from the commitments: on a force close they would go to miners): the hub
//!   takes them while its dust exposure stays within 50,000 sat and fails every later
//!   one with `temporary_channel_failure`.
//!
//! After each, every HTLC is failed back and both balances are exactly what they were.

mod common;

use bitcoin::secp256k1::{PublicKey, SecretKey};
use channel::keys::secp;
use channel::msgs::{Message, OnionPacket};
use channel::onion::{create_onion, decode_failure, HopPayload};
use channel::state::Channel;
use channel::*;
use common::mallory::*;
use common::*;
use hub::node::Node;
use std::sync::Arc;
use std::time::Duration;

const EXPIRY_TOO_FAR: u16 = 21;
const TEMPORARY_CHANNEL_FAILURE: u16 = 0x1000 | 7;
const MPP_TIMEOUT: u16 = 23;

fn mallory_id() -> PublicKey {
    PublicKey::from_secret_key(secp(), &SecretKey::from_slice(&[0x4d; 32]).unwrap())
}

/// Mallory adds an HTLC of `amount_msat` expiring at `expiry` with `onion`, and signs.
async fn offer(
    m: &mut Mallory,
    ch: &mut Channel,
    amount_msat: u64,
    hash: PaymentHash,
    expiry: u32,
    onion: OnionPacket,
) {
    let add = ch
        .send_add_htlc(Msat(amount_msat), hash, expiry, onion)
        .unwrap();
    m.w.send(&Message::UpdateAddHtlc(add)).await.unwrap();
    m.sign_if_needed(ch).await;
}

fn failure_code(m: &Mallory, id: u64, secrets: &[[u8; 32]]) -> u16 {
    let (_, reason) = m
        .failures
        .iter()
        .find(|(i, _)| *i == id)
        .unwrap_or_else(|| panic!("HTLC {id} was failed"));
    decode_failure(secrets, reason).unwrap().code
}

/// The channel's short channel id, once its funding is confirmed.
async fn short_channel_id(hub: &Node, id: &ChannelId) -> u64 {
    wait_until("the channel's short id", || async {
        hub.channel(id).await.unwrap().short_channel_id.is_some()
    })
    .await;
    hub.channel(id).await.unwrap().short_channel_id.unwrap()
}

/// An onion through the hub over channel `scid` back to Mallory, for `amount` expiring
/// at `outgoing` on the hub's side; its shared secrets.
fn forward_onion(
    hub: &Node,
    scid: u64,
    amount: u64,
    outgoing: u32,
    hash: PaymentHash,
    session: u8,
) -> (OnionPacket, Vec<[u8; 32]>) {
    let hop = |short_channel_id, payment_data| HopPayload {
        amt_to_forward: amount,
        outgoing_cltv_value: outgoing,
        short_channel_id,
        payment_data,
    };
    create_onion(
        &SecretKey::from_slice(&[session; 32]).unwrap(),
        &[
            (hub.node_id(), hop(Some(scid), None)),
            (mallory_id(), hop(None, Some(([0x64; 32], amount)))),
        ],
        &hash.0,
    )
    .unwrap()
}

async fn balances(hub: &Node, ch: &Channel) -> (Msat, Msat) {
    let c = hub.channel(&ch.channel_id()).await.unwrap();
    (c.local, c.remote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_expiring_10000_blocks_out_is_refused() {
    // The hub holds 200,000 sat of the channel (Mallory pushed it).
    let (_devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x61, 200_000_000).await;
    let id = ch.channel_id();
    let scid = short_channel_id(&hub, &id).await;
    let before = balances(&hub, &ch).await;
    let mut kept = Vec::new();

    let tip = m.source.tip().await.unwrap().height;
    let amount = 100_000_000;
    let outgoing = tip + 10_000;
    let hash = PaymentPreimage([0x62; 32]).payment_hash();
    let (onion, secrets) = forward_onion(&hub, scid, amount, outgoing, hash, 0x63);
    // The hub's fee (1,000 msat + 100 ppm) and its 40-block delta are paid in full:
    // only the expiry is wrong.
    offer(
        &mut m,
        &mut ch,
        amount + 1_000 + 10_000,
        hash,
        outgoing + 40,
        onion,
    )
    .await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
        .await;
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    assert_eq!(failure_code(&m, 0, &secrets), EXPIRY_TOO_FAR);
    assert!(
        kept.iter().all(|k| k.htlcs <= 1),
        "nothing was offered on by the hub"
    );
    assert_eq!(balances(&hub, &ch).await, before);
    assert!(hub.forwards(None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dust_flood_stops_at_the_exposure_cap() {
    let devnet = Arc::new(chain::Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start_configured(&devnet, dir.path(), None, |c| {
        c.mpp_timeout = Duration::from_secs(3)
    })
    .await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let mut ch = m
        .open_usable(
            &devnet,
            &hub,
            channel::keys::ChannelSecrets::from_seed(&[0x65; 32]),
            0x65,
            0,
        )
        .await;
    // Mallory ignores the cap her own side would keep.
    ch.set_max_dust_exposure(Msat(u64::MAX));
    let before = balances(&hub, &ch).await;
    let mut kept = Vec::new();
    // A 1,000,000 sat invoice paid in parts of 2,000 sat: each below the 546 sat dust
    // limit plus an HTLC transaction's fee at 2,500 sat/kw, so trimmed on both sides.
    let inv = hub
        .create_invoice(Some(1_000_000_000), "flood", 3600, "")
        .await
        .unwrap();
    let part = 2_000_000u64;
    assert!(ch.is_dust(&channel::state::Htlc {
        id: HtlcId(0),
        offerer: Side::Local,
        amount: Msat(part),
        payment_hash: inv.payment_hash,
        cltv_expiry: 0,
        onion: OnionPacket::default(),
    }));
    let tip = m.source.tip().await.unwrap().height;
    let mut secrets = Vec::new();
    const PARTS: u64 = 40;
    for i in 0..PARTS {
        let (onion, s) = create_onion(
            &SecretKey::from_slice(&[0x70 + i as u8; 32]).unwrap(),
            &[(
                hub.node_id(),
                HopPayload {
                    amt_to_forward: part,
                    outgoing_cltv_value: tip + 40,
                    short_channel_id: None,
                    payment_data: Some((inv.payment_secret, 1_000_000_000)),
                },
            )],
            &inv.payment_hash.0,
        )
        .unwrap();
        secrets.push(s);
        offer(&mut m, &mut ch, part, inv.payment_hash, tip + 40, onion).await;
        m.serve_until(&mut ch, &[], &mut kept, |c: &Channel| {
            !c.awaiting_revoke() && !c.has_changes_to_sign()
        })
        .await;
    }
    // The set never completes: every part the hub took fails with mpp_timeout, and the
    // rest were refused at once for the cap.
    m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
        .await;
    let codes: Vec<u16> = (0..PARTS)
        .map(|id| failure_code(&m, id, &secrets[id as usize]))
        .collect();
    let held = codes.iter().filter(|c| **c == MPP_TIMEOUT).count() as u64;
    // Parts were taken while the dust exposure stayed within 50,000 sat (never beyond,
    // and not far below), every other one refused at once for the cap.
    let cap = channel::state::MAX_DUST_HTLC_EXPOSURE.0;
    assert!(
        held * part <= cap && held * part >= cap - 2 * part,
        "{held} parts held"
    );
    for (id, code) in codes.iter().enumerate() {
        assert!(
            *code == MPP_TIMEOUT || *code == TEMPORARY_CHANNEL_FAILURE,
            "part {id}: {code}"
        );
    }
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == TEMPORARY_CHANNEL_FAILURE)
            .count() as u64,
        PARTS - held
    );
    assert_eq!(m.failures.len() as u64, PARTS);
    assert_eq!(balances(&hub, &ch).await, before);
    assert_eq!(hub.invoice(&inv.payment_hash, None).unwrap().status, "open");
}

/// Mallory routes HTLCs through the hub that can only fail (the outgoing channel has
/// nothing on the hub's side): each leaves a failed forward. Beyond the retention limit
/// (3 here) the oldest are forgotten after the next block, in memory and in the
/// database, and the newest stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_forwards_beyond_the_retention_limit_are_forgotten() {
    let devnet = Arc::new(chain::Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let configure = |c: &mut hub::node::NodeConfig| c.failed_forward_retention = 3;
    let hub = start_configured(&devnet, dir.path(), None, configure).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let mut ch = m
        .open_usable(
            &devnet,
            &hub,
            channel::keys::ChannelSecrets::from_seed(&[0x66; 32]),
            0x66,
            0,
        )
        .await;
    let id = ch.channel_id();
    let scid = short_channel_id(&hub, &id).await;
    let before = balances(&hub, &ch).await;
    let mut kept = Vec::new();
    let tip = m.source.tip().await.unwrap().height;
    let amount = 10_000_000;
    for i in 0..6u8 {
        let hash = PaymentPreimage([0x80 + i; 32]).payment_hash();
        let (onion, _) = forward_onion(&hub, scid, amount, tip + 100, hash, 0x90 + i);
        offer(&mut m, &mut ch, amount + 2_000, hash, tip + 140, onion).await;
        m.serve_until(&mut ch, &[], &mut kept, settled_with(1))
            .await;
        m.serve_until(&mut ch, &[], &mut kept, settled_with(0))
            .await;
    }
    let failed = |hub: &Node| {
        let mut ids: Vec<u64> = hub
            .forwards(None)
            .into_iter()
            .filter(|f| f.status == "failed")
            .map(|f| f.in_htlc)
            .collect();
        ids.sort_unstable();
        ids
    };
    assert_eq!(
        failed(&hub),
        vec![0, 1, 2, 3, 4, 5],
        "each attempt recorded"
    );
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("the oldest failed forwards forgotten", || async {
        failed(&hub) == vec![3, 4, 5]
    })
    .await;
    assert_eq!(balances(&hub, &ch).await, before);
    // Gone from the database too.
    hub.shutdown().await;
    drop(hub);
    let hub = start_configured(&devnet, dir.path(), None, configure).await;
    assert_eq!(failed(&hub), vec![3, 4, 5]);
}
