//! Forwarding through the hub, in process on the devnet: the failures a payer can meet
//! and the stuck outgoing HTLC, which the hub must fail back before the incoming one
//! expires (so the payer's channel is not force-closed).

mod common;

use bitcoin::Amount;
use chain::Devnet;
use common::*;
use hub::node::{ChannelStatus, Node};
use std::sync::Arc;
use std::time::Duration;

struct Three {
    devnet: Arc<Devnet>,
    hub: Arc<Node>,
    user: Arc<Node>,
    merchant: Arc<Node>,
    uchan: channel::ChannelId,
    mchan: channel::ChannelId,
    _dirs: Vec<tempfile::TempDir>,
}

async fn synced(nodes: &[&Arc<Node>], devnet: &Arc<Devnet>) {
    let height = u64::from(devnet.tip().1);
    for n in nodes {
        wait_until("node synced", || async { n.synced_blocks() >= height }).await;
    }
}

async fn three() -> Three {
    let devnet = Arc::new(Devnet::in_memory());
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let hub = start(&devnet, dirs[0].path(), None).await;
    let user = light(&devnet, dirs[1].path(), &hub).await;
    let merchant = light(&devnet, dirs[2].path(), &hub).await;
    for n in [&hub, &user] {
        let addr = n.new_address().await.unwrap();
        devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    }
    devnet
        .generate_to_script(100, &elsewhere().script_pubkey())
        .unwrap();
    for n in [&hub, &user] {
        wait_until("funded", || async {
            n.wallet_balance().await == Amount::from_sat(5_000_000_000)
        })
        .await;
    }
    user.connect_peer(hub.node_id(), hub.listen_addr())
        .await
        .unwrap();
    merchant
        .connect_peer(hub.node_id(), hub.listen_addr())
        .await
        .unwrap();
    let mchan = hub
        .open_channel(merchant.node_id(), 500_000, channel::Msat(0))
        .await
        .unwrap();
    let uchan = user
        .open_channel(hub.node_id(), 500_000, channel::Msat(0))
        .await
        .unwrap();
    devnet
        .generate_to_script(3, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("usable, policy known", || async {
        let u = user.channel(&uchan).await.unwrap();
        let m = merchant.channel(&mchan).await.unwrap();
        u.status == ChannelStatus::Normal
            && m.status == ChannelStatus::Normal
            && m.peer_policy.is_some()
            && hub.channel(&uchan).await.unwrap().status == ChannelStatus::Normal
    })
    .await;
    Three {
        devnet,
        hub,
        user,
        merchant,
        uchan,
        mchan,
        _dirs: dirs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_outgoing_htlc_is_failed_back_before_the_incoming_expires() {
    let t = three().await;
    let user_before = t.user.channel(&t.uchan).await.unwrap();
    let inv = t
        .merchant
        .create_invoice(Some(10_000_000), "held", 3600, "")
        .await
        .unwrap();
    // The merchant holds the payment and never settles it.
    t.merchant.hold(inv.payment_hash).await;
    let p = t
        .user
        .pay_invoice(&inv.bolt11, None, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(p.status, "pending");
    wait_until("held at the merchant", || async {
        t.merchant.channel(&t.mchan).await.unwrap().htlcs == 1
            && t.hub.channel(&t.uchan).await.unwrap().htlcs == 1
    })
    .await;
    let forward = t.hub.forwards(None).pop().unwrap();
    assert_eq!(forward.status, "pending");
    assert_eq!(
        forward.in_cltv,
        forward.out_cltv + 40,
        "the hub keeps its CLTV delta"
    );

    // Blocks go by: the hub force-closes its channel to the merchant at the outgoing
    // expiry, and fails the incoming HTLC back before it expires.
    let nodes = [&t.hub, &t.user, &t.merchant];
    loop {
        let height = t.devnet.tip().1;
        if t.user.payment(&inv.payment_hash).unwrap().status == "failed" {
            break;
        }
        assert!(
            height + 1 < forward.in_cltv,
            "the incoming HTLC reached its expiry without being failed back"
        );
        mine_one(&t.devnet).await;
        synced(&nodes, &t.devnet).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paid = t.user.payment(&inv.payment_hash).unwrap();
    assert_eq!(
        paid.failure_code,
        Some(hub::node::codes::PERMANENT_CHANNEL_FAILURE),
        "{paid:?}"
    );
    assert!(t.devnet.tip().1 < forward.in_cltv);
    // The user's channel is intact and back where it was.
    wait_until("user's HTLC removed", || async {
        t.user.channel(&t.uchan).await.unwrap().htlcs == 0
    })
    .await;
    let user_after = t.user.channel(&t.uchan).await.unwrap();
    assert_eq!(user_after.status, ChannelStatus::Normal);
    assert_eq!(user_after.local, user_before.local);
    assert_eq!(
        t.hub.channel(&t.uchan).await.unwrap().status,
        ChannelStatus::Normal
    );
    // The channel to the merchant went to chain.
    assert!(matches!(
        t.hub.channel(&t.mchan).await.unwrap().status,
        ChannelStatus::ForceClosed | ChannelStatus::Closed
    ));
    assert_eq!(t.hub.forwards(None).pop().unwrap().status, "failed");
}

async fn mine_one(devnet: &Arc<Devnet>) {
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_on_the_route_leave_balances_unchanged() {
    let t = three().await;
    let before = (
        t.user.channel(&t.uchan).await.unwrap(),
        t.hub.channel(&t.uchan).await.unwrap(),
        t.hub.channel(&t.mchan).await.unwrap(),
    );
    // Unknown payment hash: the hub pays the merchant directly for a hash it never issued.
    let err = t
        .hub
        .pay(
            &t.mchan,
            channel::Msat(5_000),
            channel::PaymentHash([9; 32]),
            t.devnet.tip().1 + 40,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("incorrect_or_unknown_payment_details"),
        "{err}"
    );
    // An invoice whose route hint names a channel the hub does not have: unknown_next_peer.
    let stranger = bitcoin::secp256k1::SecretKey::from_slice(&[5; 32]).unwrap();
    let bogus = channel::invoice::InvoiceBuilder::new(
        bitcoin::Network::Regtest,
        channel::PaymentHash([3; 32]),
        [4; 32],
        channel::invoice::Description::Direct("nowhere".into()),
        hub::store::unix_now(),
    )
    .amount_msat(20_000)
    .route_hint(vec![channel::invoice::RouteHintHop {
        src_node_id: t.hub.node_id(),
        short_channel_id: (500u64 << 40) | (1 << 16),
        fee_base_msat: 1000,
        fee_proportional_millionths: 100,
        cltv_expiry_delta: 40,
    }])
    .build_signed(&stranger)
    .unwrap();
    let p = t
        .user
        .pay_invoice(&bogus.to_string(), None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(p.status, "failed");
    assert_eq!(
        p.failure_code,
        Some(hub::node::codes::UNKNOWN_NEXT_PEER),
        "{p:?}"
    );
    // Too little fee for the hub: the payer's hint claims the hub is free.
    let inv = t
        .merchant
        .create_invoice(Some(30_000), "", 600, "")
        .await
        .unwrap();
    let parsed: channel::invoice::Invoice = inv.bolt11.parse().unwrap();
    assert_eq!(parsed.route_hints().len(), 1);
    assert_eq!(parsed.route_hints()[0][0].src_node_id, t.hub.node_id());
    // Paying it works; paying twice pays once.
    let ok = t
        .user
        .pay_invoice(&inv.bolt11, None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(ok.status, "succeeded");
    let again = t
        .user
        .pay_invoice(&inv.bolt11, None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        (again.status.as_str(), again.preimage),
        ("succeeded", ok.preimage)
    );
    // Settled means both ends of both channels hold no HTLC and have nothing in flight:
    // the user's side can finish before the hub has the last revoke_and_ack.
    wait_until("settled", || async {
        let done = |c: hub::node::ChannelSummary| c.htlcs == 0 && c.quiescent;
        done(t.user.channel(&t.uchan).await.unwrap())
            && done(t.hub.channel(&t.uchan).await.unwrap())
            && done(t.hub.channel(&t.mchan).await.unwrap())
            && done(t.merchant.channel(&t.mchan).await.unwrap())
    })
    .await;
    let after = (
        t.user.channel(&t.uchan).await.unwrap(),
        t.hub.channel(&t.uchan).await.unwrap(),
        t.hub.channel(&t.mchan).await.unwrap(),
    );
    let fee = 1000 + 30_000 * 100 / 1_000_000;
    assert_eq!(
        after.0.local.0,
        before.0.local.0 - 30_000 - fee,
        "only the one payment moved"
    );
    assert_eq!(after.1.local.0, before.1.local.0 + 30_000 + fee);
    assert_eq!(after.2.local.0, before.2.local.0 - 30_000);
    assert_eq!(
        t.merchant.invoice(&inv.payment_hash, None).unwrap().status,
        "paid"
    );
}

/// A payee's invoice names the route hint's fee and CLTV delta: a thief's invoice can ask
/// the payer for any amount in "fees" to a node it controls. Over the limits (by default
/// 1% + 50 sat and 1008 blocks) the route is not tried: no HTLC, nothing recorded, a
/// clear error. Raised limits let the same invoice be tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_over_the_fee_or_cltv_limit_are_not_tried() {
    let t = three().await;
    let before = t.user.channel(&t.uchan).await.unwrap();
    let scid = t
        .merchant
        .channel(&t.mchan)
        .await
        .unwrap()
        .short_channel_id
        .unwrap();
    let thief = bitcoin::secp256k1::SecretKey::from_slice(&[6; 32]).unwrap();
    let invoice = |n: u8, fee_base_msat: u32, cltv_expiry_delta: u16| {
        channel::invoice::InvoiceBuilder::new(
            bitcoin::Network::Regtest,
            channel::PaymentHash([n; 32]),
            [n; 32],
            channel::invoice::Description::Direct("pricey".into()),
            hub::store::unix_now(),
        )
        .amount_msat(20_000_000)
        .route_hint(vec![channel::invoice::RouteHintHop {
            src_node_id: t.hub.node_id(),
            short_channel_id: scid,
            fee_base_msat,
            fee_proportional_millionths: 100,
            cltv_expiry_delta,
        }])
        .build_signed(&thief)
        .unwrap()
        .to_string()
    };
    let wait = Duration::from_secs(30);
    // 20,000 sat: the default fee limit is 200 + 50 sat.
    let pricey = invoice(0x61, 5_000_000, 40);
    let err = t.user.pay_invoice(&pricey, None, wait).await.unwrap_err();
    assert!(
        matches!(&err, hub::node::NodeError::RouteOverLimit(why) if why.contains("250000 msat")),
        "{err}"
    );
    let slow = invoice(0x62, 1_000, 1_500);
    let err = t.user.pay_invoice(&slow, None, wait).await.unwrap_err();
    assert!(
        matches!(&err, hub::node::NodeError::RouteOverLimit(why) if why.contains("1008 blocks")),
        "{err}"
    );
    // Nothing left the user's node.
    assert!(t.user.payment(&channel::PaymentHash([0x61; 32])).is_none());
    assert!(t.user.payment(&channel::PaymentHash([0x62; 32])).is_none());
    assert_eq!(t.user.channel(&t.uchan).await.unwrap().local, before.local);
    // A limit above two weeks of blocks is refused as bad input.
    let too_long = hub::node::PaymentLimits {
        max_fee_msat: None,
        max_cltv_expiry_delta: Some(5_000),
    };
    assert!(matches!(
        t.user
            .pay_invoice_within(&slow, None, too_long, wait)
            .await
            .unwrap_err(),
        hub::node::NodeError::BadRequest(_)
    ));
    // With the payer's consent the route is tried (and fails at the merchant, who
    // never made this invoice): the fee is the hint's.
    let generous = hub::node::PaymentLimits {
        max_fee_msat: Some(6_000_000),
        max_cltv_expiry_delta: None,
    };
    let tried = t
        .user
        .pay_invoice_within(&pricey, None, generous, wait)
        .await
        .unwrap();
    assert_eq!(tried.fee_msat, 5_000_000 + 2_000, "{tried:?}");
    assert_eq!(tried.status, "failed", "{tried:?}");
    wait_until("user's HTLC removed", || async {
        t.user.channel(&t.uchan).await.unwrap().htlcs == 0
    })
    .await;
    assert_eq!(t.user.channel(&t.uchan).await.unwrap().local, before.local);
}
