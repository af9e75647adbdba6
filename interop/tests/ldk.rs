//! The hub against LDK (ldk-node 0.7.1, lightning 0.2, stock configuration), both on the
//! devnet, which LDK reads through its Bitcoin Core JSON-RPC chain source: channels opened
//! by each side, payments both ways (and through the hub to a merchant), reconnection in
//! the middle of a commitment dance, and cooperative closes by each side, with the hub's
//! satoshis checked exactly.

mod common;

use common::*;
use ldk_node::payment::{PaymentDirection, PaymentKind, PaymentStatus};
use ldk_node::Event;
use serde_json::{json, Value};

/// Amount of each of the many small payments.
const SMALL_MSAT: u64 = 10_000;

#[test]
fn ldk_opens_to_the_hub_pays_both_ways_and_closes() {
    let w = World::new();
    let ldk = ldk_node(&w, "opener");
    fund_ldk(&w, &ldk);

    let user_channel_id = ldk
        .open_channel(w.hub_id(), w.hub_addr(), 1_000_000, None, None)
        .expect("LDK opens a channel to the hub");
    next_event(&ldk, "ChannelPending", |e| {
        matches!(e, Event::ChannelPending { .. }).then_some(())
    });
    w.mine(6);
    let id = wait_channel_usable(&w, &ldk);
    // LDK proposes anchors (its default) and the hub, with its reserve, takes them.
    assert_eq!(
        w.hub_channel(&id)["channel_type"],
        "anchors_zero_fee_htlc_tx"
    );
    let hub_onchain_before = w.hub_onchain_sat();

    // LDK pays the hub, the hub pays LDK.
    let fee = ldk_pay(&ldk, &w.hub_invoice(50_000_000, "from LDK"));
    assert_eq!(fee, 0, "a direct payment carries no fee");
    let paid = w.hub_pay(&ldk_invoice(&ldk, 20_000_000, "from the hub"));
    assert_eq!(paid["status"], "succeeded", "{paid}");
    next_event(&ldk, "PaymentReceived", |e| {
        matches!(
            e,
            Event::PaymentReceived {
                amount_msat: 20_000_000,
                ..
            }
        )
        .then_some(())
    });
    let mut expected_local = 30_000_000u64;
    assert_eq!(w.hub_channel(&id)["local_balance_msat"], expected_local);

    // 200 each way: every key rotation of the link and 400 commitment dances.
    for i in 0..200 {
        ldk_pay(&ldk, &w.hub_invoice(SMALL_MSAT, &format!("small {i}")));
        let p = w.hub_pay(&ldk_invoice(&ldk, SMALL_MSAT / 2, &format!("back {i}")));
        assert_eq!(p["status"], "succeeded", "payment {i}: {p}");
    }
    expected_local += 200 * (SMALL_MSAT - SMALL_MSAT / 2);
    wait("the hub's channel quiet", || {
        let c = w.hub_channel(&id);
        c["htlcs"] == 0 && c["local_balance_msat"] == expected_local
    });

    // LDK closes cooperatively; LDK opened, so LDK pays the closing fee and the hub's
    // output is its whole balance.
    ldk.close_channel(&user_channel_id, w.hub_id())
        .expect("LDK closes");
    wait("the hub sees the close", || {
        let s = w.hub_channel(&id)["status"].clone();
        s == "closing" || s == "closed"
    });
    w.mine(1);
    wait("the hub's wallet has its channel balance", || {
        w.hub_onchain_sat() == hub_onchain_before + expected_local / 1000
    });
    next_event(&ldk, "ChannelClosed", |e| {
        matches!(e, Event::ChannelClosed { .. }).then_some(())
    });
    ldk.stop().expect("LDK stops");
}

#[test]
fn the_hub_opens_to_ldk_pays_both_ways_and_closes() {
    let w = World::new();
    let ldk = ldk_node(&w, "fundee");
    let addr = ldk.listening_addresses().expect("listening")[0].to_string();
    w.hub(
        "POST",
        "/v1/peers",
        Some(json!({"node_id": ldk.node_id().to_string(), "address": addr})),
    );
    let id = hub_opens_to(&w, &ldk, 2_000_000);
    // LDK has no coins for the anchor reserve it keeps: it refused the hub's anchor
    // proposal and the hub proposed static_remotekey instead, as LDK itself does.
    assert_eq!(w.hub_channel(&id)["channel_type"], "static_remotekey");

    // LDK accepts at most 10% of the channel in flight (its default): 200,000 sat here.
    let paid = w.hub_pay(&ldk_invoice(&ldk, 100_000_000, "from the hub"));
    assert_eq!(paid["status"], "succeeded", "{paid}");
    ldk_pay(&ldk, &w.hub_invoice(40_000_000, "from LDK"));
    let hub_local = 2_000_000_000 - 60_000_000;
    wait("the hub's channel quiet", || {
        let c = w.hub_channel(&id);
        c["htlcs"] == 0 && c["local_balance_msat"] == hub_local
    });

    // The hub closes cooperatively and pays the closing fee: LDK's output is exactly its
    // 60,000 sat, the hub's is its balance minus the fee.
    let before = w.hub_onchain_sat();
    w.hub("POST", &format!("/v1/channels/{id}/close"), None);
    let mut closing_txid = String::new();
    wait("the closing transaction", || {
        let c = w.hub_channel(&id);
        match c["closing_txid"].as_str() {
            Some(t) => {
                closing_txid = t.to_string();
                true
            }
            None => false,
        }
    });
    let rpc = scenarios::rpc(&w.devnet.rpc);
    let tx =
        w.rt.block_on(rpc.call("getrawtransaction", json!([closing_txid, true])))
            .expect("the closing transaction reached the devnet's mempool");
    let outputs: Vec<u64> = tx["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .map(|o| (o["value"].as_f64().expect("value") * 1e8).round() as u64)
        .collect();
    let fee = 2_000_000 - outputs.iter().sum::<u64>();
    assert!(outputs.contains(&60_000), "LDK's output in {outputs:?}");
    assert!(
        outputs.contains(&(hub_local / 1000 - fee)),
        "the hub's output in {outputs:?}"
    );
    w.mine(1);
    wait("the hub's wallet has its channel balance", || {
        w.hub_onchain_sat() == before + hub_local / 1000 - fee
    });
    next_event(&ldk, "ChannelClosed", |e| {
        matches!(e, Event::ChannelClosed { .. }).then_some(())
    });

    // With coins for its reserve, LDK takes the hub's anchor channel, and it carries a
    // payment.
    fund_ldk(&w, &ldk);
    let id = hub_opens_to(&w, &ldk, 1_000_000);
    assert_eq!(
        w.hub_channel(&id)["channel_type"],
        "anchors_zero_fee_htlc_tx"
    );
    let paid = w.hub_pay(&ldk_invoice(&ldk, 50_000_000, "on the anchor channel"));
    assert_eq!(paid["status"], "succeeded", "{paid}");
    ldk.stop().expect("LDK stops");
}

/// The hub as funder follows the chain's fee estimate up and down: on a static_remotekey
/// channel to LDK (which cannot be bumped on chain) the estimate jumps to 50 sat/vB; the
/// hub sends update_fee at the estimate and LDK, which checks it against its own
/// estimator, takes it: both commitments carry the new rate, and a payment crosses the
/// channel after. Then the estimate falls back and the hub lowers the rate; LDK takes that
/// too.
#[test]
fn the_hub_raises_and_lowers_its_commitment_fee_rate_and_ldk_takes_both() {
    let w = World::new();
    let ldk = ldk_node(&w, "fee-fundee");
    let addr = ldk.listening_addresses().expect("listening")[0].to_string();
    w.hub(
        "POST",
        "/v1/peers",
        Some(json!({"node_id": ldk.node_id().to_string(), "address": addr})),
    );
    let id = hub_opens_to(&w, &ldk, 1_000_000);
    assert_eq!(w.hub_channel(&id)["channel_type"], "static_remotekey");
    // Opened at 2,500 sat/kw (or already lowered, if the devnet's calm estimate is under
    // half of it).
    let opened = w.hub_channel(&id)["feerate_per_kw"].as_u64().unwrap();
    assert!(opened <= 2500, "{opened}");

    // One transaction at 50 sat/vB, alone in a block after 12 empty ones: the devnet's
    // 6-block estimate becomes its rate.
    let spiker = ldk_node(&w, "fee-spiker");
    fund_ldk(&w, &spiker);
    w.mine(12);
    let to = spiker.onchain_payment().new_address().expect("address");
    let spike = spiker
        .onchain_payment()
        .send_to_address(
            &to,
            100_000,
            Some(ldk_node::bitcoin::FeeRate::from_sat_per_vb_u32(50)),
        )
        .expect("a 50 sat/vB transaction")
        .to_string();
    // LDK broadcasts from a background task: mine only once the devnet holds it.
    wait("the 50 sat/vB transaction in the devnet's mempool", || {
        w.rpc("getrawmempool", json!([]))
            .as_array()
            .is_some_and(|pool| pool.iter().any(|t| t.as_str() == Some(spike.as_str())))
    });
    w.mine(1);
    let mut rate = 0;
    wait(
        "the hub's commitment rate raised and LDK's equal to it",
        || {
            rate = w.hub_channel(&id)["feerate_per_kw"].as_u64().unwrap_or(0);
            let at_ldk = ldk
                .list_channels()
                .iter()
                .find(|c| c.counterparty_node_id == w.hub_id())
                .map(|c| u64::from(c.feerate_sat_per_1000_weight));
            rate > 10_000 && at_ldk == Some(rate)
        },
    );
    assert!(rate <= 12_500, "{rate}");
    let paid = w.hub_pay(&ldk_invoice(&ldk, 10_000_000, "after the fee rise"));
    assert_eq!(paid["status"], "succeeded", "{paid}");

    // The spike passes: 12 empty blocks, then one with a 2 sat/vB transaction. The rate
    // the hub follows (the larger of its 6- and 144-block estimates) is now under half
    // its commitment's: it lowers it with update_fee, and LDK, which refuses (and closes
    // the channel over) a rate below its own 144-block estimate less 250 sat/kw, takes
    // it. The channel carries a payment after.
    w.mine(12);
    // The spiker's wallet learns that its first transaction confirmed (else it would
    // spend the same coin again).
    spiker.sync_wallets().expect("the spiker's wallet syncs");
    let calm = spiker
        .onchain_payment()
        .send_to_address(
            &to,
            100_000,
            Some(ldk_node::bitcoin::FeeRate::from_sat_per_vb_u32(2)),
        )
        .expect("a 2 sat/vB transaction")
        .to_string();
    wait("the 2 sat/vB transaction in the devnet's mempool", || {
        w.rpc("getrawmempool", json!([]))
            .as_array()
            .is_some_and(|pool| pool.iter().any(|t| t.as_str() == Some(calm.as_str())))
    });
    w.mine(1);
    let mut lowered = 0;
    wait(
        "the hub's commitment rate lowered and LDK's equal to it",
        || {
            lowered = w.hub_channel(&id)["feerate_per_kw"].as_u64().unwrap_or(0);
            let at_ldk = ldk
                .list_channels()
                .iter()
                .find(|c| c.counterparty_node_id == w.hub_id())
                .map(|c| u64::from(c.feerate_sat_per_1000_weight));
            lowered * 2 < rate && at_ldk == Some(lowered)
        },
    );
    assert_eq!(w.hub_channel(&id)["status"], "normal");
    let paid = w.hub_pay(&ldk_invoice(&ldk, 10_000_000, "after the fee fall"));
    assert_eq!(paid["status"], "succeeded", "{paid}");
    println!("LDK took the hub's update_fee up to {rate} sat/kw and back down to {lowered} sat/kw");
    ldk.stop().expect("LDK stops");
    spiker.stop().expect("LDK stops");
}

/// The hub opens a channel of `capacity_sat` to `ldk`, confirms it and waits until both
/// sides can use it; returns its id.
fn hub_opens_to(w: &World, ldk: &ldk_node::Node, capacity_sat: u64) -> String {
    let opened = w.hub(
        "POST",
        "/v1/channels",
        Some(json!({"peer_id": ldk.node_id().to_string(), "capacity_sat": capacity_sat})),
    );
    let id = opened["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_string();
    w.mine(6);
    assert_eq!(wait_channel_usable(w, ldk), id);
    id
}

/// Public channels (BOLT 7) with LDK, opened by each side: at six confirmations the two
/// exchange announcement_signatures, and LDK's network graph, which checks every
/// signature, holds each channel with both ends' channel_updates and the hub's
/// node_announcement. A payment then crosses the first one.
#[test]
fn public_channels_are_announced_with_ldk_both_ways() {
    use ldk_node::lightning::routing::gossip::NodeId;
    let w = World::new();
    let ldk = ldk_node_with_alias(&w, "public", Some("ldk-public"));
    fund_ldk(&w, &ldk);
    let hub_node = NodeId::from_pubkey(&w.hub_id());
    let in_graph = |scid: u64| {
        let graph = ldk.network_graph();
        let Some(c) = graph.channel(scid) else {
            return false;
        };
        let hub_known = graph
            .node(&hub_node)
            .and_then(|n| n.announcement_info)
            .is_some_and(|a| a.alias().to_string() == "hub");
        c.one_to_two.is_some() && c.two_to_one.is_some() && hub_known
    };

    // LDK opens an announced channel to the hub.
    ldk.open_announced_channel(w.hub_id(), w.hub_addr(), 1_000_000, None, None)
        .expect("LDK opens an announced channel");
    next_event(&ldk, "ChannelPending", |e| {
        matches!(e, Event::ChannelPending { .. }).then_some(())
    });
    w.mine(6);
    let id = wait_channel_usable(&w, &ldk);
    assert_eq!(w.hub_channel(&id)["public"], true);
    let scid_of = |funding_txid: &str| {
        ldk.list_channels()
            .iter()
            .find(|c| {
                c.funding_txo
                    .is_some_and(|o| o.txid.to_string() == funding_txid)
            })
            .and_then(|c| c.short_channel_id)
            .expect("LDK's short channel id")
    };
    let scid = scid_of(w.hub_channel(&id)["funding_txid"].as_str().expect("txid"));
    wait(
        "LDK's graph holds the channel, both updates and the hub's announcement",
        || in_graph(scid),
    );
    wait("the hub reports the channel announced", || {
        w.hub_channel(&id)["announced"] == true
    });
    let graph = ldk.network_graph();
    let c = graph.channel(scid).expect("in the graph");
    let hub_update = if c.node_one == hub_node {
        c.one_to_two.clone()
    } else {
        c.two_to_one.clone()
    }
    .expect("the hub's update");
    assert!(hub_update.enabled);
    assert!(hub_update.htlc_maximum_msat <= 1_000_000_000);
    let fee = ldk_pay(&ldk, &w.hub_invoice(20_000_000, "over a public channel"));
    assert_eq!(fee, 0);

    // The hub opens an announced channel to LDK.
    let opened = w.hub(
        "POST",
        "/v1/channels",
        Some(json!({"peer_id": ldk.node_id().to_string(), "capacity_sat": 500_000, "announce": true})),
    );
    let id2 = opened["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_string();
    w.mine(6);
    wait("the hub's public channel usable", || {
        w.hub_channel(&id2)["status"] == "normal"
    });
    let scid2 = scid_of(w.hub_channel(&id2)["funding_txid"].as_str().expect("txid"));
    wait("LDK's graph holds the hub's channel", || in_graph(scid2));
    wait("the hub reports its channel announced", || {
        w.hub_channel(&id2)["announced"] == true
    });
    ldk.stop().expect("LDK stops");
}

/// The hub's use: a user on LDK pays a merchant's BOLT 11 invoice; the merchant runs a
/// light node whose invoices carry a route hint through the hub. LDK routes over its
/// channel to the hub and the hint; the hub forwards and earns its fee.
#[test]
fn ldk_pays_a_merchant_through_the_hub() {
    let w = World::new();
    let ldk = ldk_node(&w, "payer");
    fund_ldk(&w, &ldk);

    // The merchant's light node, connected to the hub; the hub opens a channel to it.
    let merchant = scenarios::spawn(&scenarios::light_args(
        w.dirs[1].path().join("merchant").to_str().expect("utf-8"),
        "merchant-key",
        &w.devnet.rpc,
        &w.hub.node_id,
    ));
    w.rt.block_on(w.api.connect(&merchant.api, "merchant-key", &w.hub));
    let mchan = w.hub(
        "POST",
        "/v1/channels",
        Some(json!({"peer_id": merchant.node_id, "capacity_sat": 1_000_000})),
    )["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_string();
    ldk.open_channel(w.hub_id(), w.hub_addr(), 1_000_000, None, None)
        .expect("LDK opens a channel to the hub");
    next_event(&ldk, "ChannelPending", |e| {
        matches!(e, Event::ChannelPending { .. }).then_some(())
    });
    w.mine(6);
    wait_channel_usable(&w, &ldk);
    w.rt.block_on(
        w.api
            .wait_usable(&merchant.api, "merchant-key", &mchan, true),
    );

    let amount = 150_000_000;
    let inv = w.rt.block_on(w.api.ok(
        &merchant.api,
        "merchant-key",
        "POST",
        "/v1/invoices",
        Some(json!({"amount_msat": amount, "description": "2 flat whites"})),
    ));
    let invoice: ldk_node::lightning_invoice::Bolt11Invoice = inv["bolt11"]
        .as_str()
        .expect("bolt11")
        .parse()
        .expect("LDK parses the merchant's invoice");
    assert_eq!(invoice.route_hints().len(), 1, "one hint, through the hub");
    let fee = ldk_pay(&ldk, &invoice);
    // --fee-base-msat 1000 + --fee-proportional-millionths 100 of the forwarded amount.
    assert_eq!(fee, 1000 + amount * 100 / 1_000_000);
    let hash = inv["payment_hash"].as_str().expect("hash");
    let paid = w.rt.block_on(w.api.ok(
        &merchant.api,
        "merchant-key",
        "GET",
        &format!("/v1/invoices/{hash}"),
        None,
    ));
    assert_eq!(paid["status"], "paid", "{paid}");
    let forwards = w.hub("GET", "/v1/forwards", None);
    let forward = forwards
        .as_array()
        .expect("forwards")
        .iter()
        .find(|f| f["payment_hash"] == hash)
        .cloned()
        .expect("the hub recorded the forward");
    assert_eq!(forward["fee_msat"], fee, "{forward}");
    ldk.stop().expect("LDK stops");
}

/// LDK pays one of the hub's invoices that neither of its two channels to the hub could
/// carry alone: the invoice offers basic_mpp, LDK splits the payment over both channels
/// (BOLT 4 multi-part), and the hub fulfills the parts once they reach the total.
#[test]
fn ldk_pays_the_hub_in_parts_over_two_channels() {
    let w = World::new();
    let ldk = ldk_node(&w, "splitter");
    fund_ldk(&w, &ldk);
    for n in 1..=2 {
        ldk.open_channel(w.hub_id(), w.hub_addr(), 200_000, None, None)
            .expect("LDK opens a channel to the hub");
        next_event(&ldk, "ChannelPending", |e| {
            matches!(e, Event::ChannelPending { .. }).then_some(())
        });
        // The funding in the mempool and confirmed before LDK's wallet picks coins for
        // the next one (else both would spend the same coin).
        wait("LDK's funding transaction in the mempool", || {
            let pool = w.rpc("getrawmempool", json!([]));
            w.hub_channels_with(&ldk.node_id()).len() == n
                && w.hub_channels_with(&ldk.node_id()).iter().all(|c| {
                    c["status"] != "awaiting_lock"
                        || pool
                            .as_array()
                            .is_some_and(|p| p.iter().any(|t| *t == c["funding_txid"]))
                })
        });
        w.mine(6);
        ldk.sync_wallets().expect("LDK syncs");
    }
    let mut ids = Vec::new();
    wait("both channels usable at the hub and at LDK", || {
        ids = w
            .hub_channels_with(&ldk.node_id())
            .into_iter()
            .filter(|c| c["status"] == "normal" && c["active"] == true)
            .map(|c| c["channel_id"].as_str().expect("id").to_string())
            .collect();
        let usable = ldk
            .list_channels()
            .iter()
            .filter(|c| c.counterparty_node_id == w.hub_id() && c.is_usable)
            .count();
        ids.len() == 2 && usable == 2
    });

    // 300,000 sat: more than either channel's 200,000 sat.
    let amount = 300_000_000;
    let largest = ldk
        .list_channels()
        .iter()
        .map(|c| c.next_outbound_htlc_limit_msat)
        .max()
        .expect("channels");
    assert!(
        largest < amount,
        "no single channel could carry it: {largest}"
    );
    let invoice = w.hub_invoice(amount, "in parts");
    let payment = ldk
        .bolt11_payment()
        .send(&invoice, None)
        .expect("LDK sends");
    let fee = payment_outcome(&ldk, payment)
        .unwrap_or_else(|e| panic!("LDK's multi-part payment failed: {e}"));
    assert_eq!(fee, 0, "a direct payment carries no fee");

    let hash = invoice.payment_hash().to_string();
    let paid = w.hub("GET", &format!("/v1/invoices/{hash}"), None);
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(paid["amount_received_msat"], amount, "{paid}");
    // Each channel carried a part; together exactly the invoice.
    let mut balances = Vec::new();
    wait("the hub's channels quiet", || {
        let cs: Vec<Value> = ids.iter().map(|id| w.hub_channel(id)).collect();
        balances = cs
            .iter()
            .map(|c| c["local_balance_msat"].as_u64().expect("balance"))
            .collect();
        cs.iter().all(|c| c["htlcs"] == 0) && balances.iter().sum::<u64>() == amount
    });
    assert!(
        balances.iter().all(|b| *b > 0),
        "both channels carried a part: {balances:?}"
    );
    ldk.stop().expect("LDK stops");
}

/// LDK drops the connection in the middle of commitment dances (payments in flight both
/// ways) and reconnects: channel_reestablish resumes the channel, every payment ends
/// settled or failed, and both sides agree on the balance.
#[test]
fn reconnect_in_the_middle_of_commitment_dances() {
    let w = World::new();
    let ldk = ldk_node(&w, "flaky");
    fund_ldk(&w, &ldk);
    ldk.open_channel(w.hub_id(), w.hub_addr(), 1_000_000, None, None)
        .expect("LDK opens a channel to the hub");
    next_event(&ldk, "ChannelPending", |e| {
        matches!(e, Event::ChannelPending { .. }).then_some(())
    });
    w.mine(6);
    let id = wait_channel_usable(&w, &ldk);

    for round in 0..5u64 {
        // Ten payments from LDK without waiting, then the link goes down at once.
        let mut sent = Vec::new();
        for i in 0..10u64 {
            let inv = w.hub_invoice(1_000_000 + round * 10 + i, &format!("r{round} p{i}"));
            sent.push(ldk.bolt11_payment().send(&inv, None).expect("LDK sends"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5 * round));
        ldk.disconnect(w.hub_id()).expect("LDK disconnects");
        ldk.connect(w.hub_id(), w.hub_addr(), true)
            .expect("LDK reconnects");
        // Each payment ends one way or the other.
        let mut done = 0;
        while done < sent.len() {
            next_event(&ldk, "payment outcome", |e| match e {
                Event::PaymentSuccessful { payment_id, .. }
                | Event::PaymentFailed { payment_id, .. }
                    if payment_id.is_some_and(|p| sent.contains(&p)) =>
                {
                    Some(())
                }
                _ => None,
            });
            done += 1;
        }
    }
    // Both sides agree: the hub's balance is what LDK's payment records say it sent.
    let succeeded: u64 = ldk
        .list_payments()
        .iter()
        .filter(|p| {
            p.status == PaymentStatus::Succeeded
                && p.direction == PaymentDirection::Outbound
                && matches!(p.kind, PaymentKind::Bolt11 { .. })
        })
        .filter_map(|p| p.amount_msat)
        .sum();
    assert!(succeeded > 0);
    wait("both sides agree on the balance", || {
        let c = w.hub_channel(&id);
        let ldk_usable = ldk
            .list_channels()
            .iter()
            .any(|c| c.counterparty_node_id == w.hub_id() && c.is_usable);
        let agree = c["htlcs"] == 0 && c["local_balance_msat"] == succeeded && ldk_usable;
        if !agree {
            eprintln!("hub {c}; LDK succeeded {succeeded} msat, usable {ldk_usable}");
        }
        agree
    });
    // And the channel still works.
    ldk_pay(&ldk, &w.hub_invoice(2_000_000, "after the storm"));
    wait("the last payment settled", || {
        w.hub_channel(&id)["local_balance_msat"] == succeeded + 2_000_000
    });
    ldk.stop().expect("LDK stops");
}

/// A channel LDK opened, with the hub holding 300,000 sat and a 50,000 sat HTLC from the
/// hub to LDK that LDK holds (an invoice for a hash whose preimage it does not know).
/// Returns (LDK's user channel id, the hub's channel id, the funding txid).
fn channel_with_an_htlc_in_flight(
    w: &World,
    ldk: &ldk_node::Node,
) -> (ldk_node::UserChannelId, String, String) {
    fund_ldk(w, ldk);
    let ucid = ldk
        .open_channel(w.hub_id(), w.hub_addr(), 1_000_000, None, None)
        .expect("LDK opens a channel to the hub");
    next_event(ldk, "ChannelPending", |e| {
        matches!(e, Event::ChannelPending { .. }).then_some(())
    });
    w.mine(6);
    let id = wait_channel_usable(w, ldk);
    ldk_pay(ldk, &w.hub_invoice(300_000_000, "to the hub"));
    wait("the hub holds 300,000 sat", || {
        let c = w.hub_channel(&id);
        c["htlcs"] == 0 && c["local_balance_msat"] == 300_000_000
    });
    let desc = ldk_node::lightning_invoice::Bolt11InvoiceDescription::Direct(
        ldk_node::lightning_invoice::Description::new("held".into()).expect("description"),
    );
    let held = ldk
        .bolt11_payment()
        .receive_for_hash(
            50_000_000,
            &desc,
            3600,
            ldk_node::lightning_types::payment::PaymentHash([0x42; 32]),
        )
        .expect("invoice for a hash");
    let p = w
        .hub_call(
            "POST",
            "/v1/payments",
            Some(json!({"invoice": held.to_string(), "wait_secs": 1})),
        )
        .expect("payment accepted");
    assert_eq!(p["status"], "pending", "{p}");
    next_event(ldk, "PaymentClaimable", |e| {
        matches!(e, Event::PaymentClaimable { .. }).then_some(())
    });
    wait("the HTLC committed on both sides", || {
        w.hub_channel(&id)["htlcs"] == 1
    });
    let funding = w.hub_channel(&id)["funding_txid"]
        .as_str()
        .expect("funding txid")
        .to_string();
    (ucid, id, funding)
}

/// Mines until every output of `commitment` for which `mine` says so is spent in the
/// chain; returns the confirmed transactions that spent them.
fn mine_until_swept(
    w: &World,
    commitment: &Value,
    height: u64,
    mine: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let txid = commitment["txid"].as_str().expect("txid").to_string();
    let outs: Vec<u64> = commitment["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .filter(|o| mine(o))
        .map(|o| o["n"].as_u64().expect("n"))
        .collect();
    assert!(!outs.is_empty());
    for _ in 0..60 {
        if outs.iter().all(|v| w.spent(&txid, *v)) {
            // Once each: one transaction may sweep several (a batch of the hub's).
            let mut found: Vec<Value> = Vec::new();
            for tx in outs
                .iter()
                .flat_map(|v| w.chain_spenders(&txid, *v, height))
            {
                if !found.iter().any(|f| f["txid"] == tx["txid"]) {
                    found.push(tx);
                }
            }
            return found;
        }
        w.mine(10);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    panic!("outputs {outs:?} of {txid} were not swept");
}

/// LDK force-closes with the hub's HTLC in flight. Its commitment pays the hub's balance to
/// the hub at once (static_remotekey) and the HTLC back to the hub after its expiry; the
/// hub's wallet gets exactly those outputs less the fees of its own sweeps.
#[test]
fn ldk_force_closes_with_an_htlc_in_flight() {
    let w = World::new();
    let ldk = ldk_node(&w, "forcer");
    let (ucid, id, funding) = channel_with_an_htlc_in_flight(&w, &ldk);
    let before = w.hub_onchain_sat();
    ldk.force_close_channel(&ucid, w.hub_id(), None)
        .expect("LDK force-closes");
    let mut commitment = None;
    wait("LDK's commitment in the mempool", || {
        commitment = w.mempool_spender(&funding);
        commitment.is_some()
    });
    let commitment = commitment.expect("commitment");
    let height = w.height() + 1;
    w.mine(1);
    // An anchor channel (LDK proposed it, the hub has its reserve). Ours: the to_remote
    // (250,000 sat, behind a 1-block CSV) and the 50,000 sat HTLC output.
    assert_eq!(
        w.hub_channel(&id)["channel_type"],
        "anchors_zero_fee_htlc_tx"
    );
    assert_eq!(anchor_outputs(&commitment), 2);
    let ours = |o: &Value| [250_000, 50_000].contains(&sat(&o["value"]));
    let to_hub: u64 = commitment["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .filter(|o| ours(o))
        .map(|o| sat(&o["value"]))
        .sum();
    assert_eq!(to_hub, 300_000, "the hub's outputs in LDK's commitment");
    let sweeps = mine_until_swept(&w, &commitment, height, ours);
    let gained: u64 = sweeps.iter().map(outputs_sat).sum();
    let fees = to_hub - gained;
    assert!(fees < 3_000, "the hub's sweeps paid {fees} sat");
    wait("the hub's wallet has its sweeps", || {
        w.hub_onchain_sat() == before + gained
    });
    let c = w.hub_channel(&id);
    assert!(
        c["status"] == "closed" || c["status"] == "force_closed",
        "{c}"
    );
    ldk.stop().expect("LDK stops");
}

/// The hub force-closes with its HTLC in flight: its own commitment, to_local after the
/// CSV delay, the HTLC through its HTLC-timeout transaction then the delay; LDK takes its
/// to_remote. Each side's wallet gets exactly its outputs less its own sweeps' fees.
#[test]
fn the_hub_force_closes_with_an_htlc_in_flight() {
    hub_force_closes(false);
}

/// [`the_hub_force_closes_with_an_htlc_in_flight`] in a fee spike: every block is full of
/// other users' transactions at 100 sat/vB (the devnet's `devnetsetfeespike`), far above
/// the rate LDK, the funder, gave the commitment. The commitment is not mined alone; the
/// hub pays for it through its anchor with a child at the spiked estimate (CPFP), and the
/// next block takes both. LDK, which watches the chain through the same devnet, sees its
/// channel closed and takes its to_remote once the spike is over.
#[test]
fn in_a_fee_spike_the_hub_pays_for_its_commitment_through_its_anchor() {
    hub_force_closes(true);
}

fn hub_force_closes(spike: bool) {
    let w = World::new();
    let ldk = ldk_node(&w, "victim");
    let (_, id, funding) = channel_with_an_htlc_in_flight(&w, &ldk);
    let before = w.hub_onchain_sat();
    let ldk_before = ldk.list_balances().total_onchain_balance_sats;
    const SPIKE_SAT_PER_KVB: u64 = 100_000;
    if spike {
        w.rpc("devnetsetfeespike", json!([SPIKE_SAT_PER_KVB]));
    }
    let closed = w.hub(
        "POST",
        &format!("/v1/channels/{id}/close"),
        Some(json!({"force": true})),
    );
    let commitment_txid = closed["commitment_txid"]
        .as_str()
        .expect("txid")
        .to_string();
    wait("the hub's commitment in the mempool", || {
        w.mempool_spender(&funding)
            .is_some_and(|t| t["txid"] == commitment_txid)
    });
    let commitment = w.rpc("getrawtransaction", json!([commitment_txid, true]));
    // What the hub's wallet put into (and got back from) children on its anchor.
    let mut child_net: i64 = 0;
    if spike {
        w.mine(1);
        let waiting = w.rpc("getrawtransaction", json!([commitment_txid, true]));
        assert_eq!(
            waiting["confirmations"].as_u64().unwrap_or(0),
            0,
            "the commitment alone is not mined in the spike"
        );
        let mut child = None;
        wait("a child on the hub's anchor", || {
            child = w.mempool_spender(&commitment_txid);
            child.is_some()
        });
        let child = child.expect("child");
        let commitment_fee = 1_000_000 - outputs_sat(&commitment);
        let child_in: u64 = child["vin"]
            .as_array()
            .expect("vin")
            .iter()
            .map(|i| w.prevout_sat(i))
            .sum();
        let child_fee = child_in - outputs_sat(&child);
        let weight = commitment["weight"].as_u64().expect("weight")
            + child["weight"].as_u64().expect("weight");
        let package = (commitment_fee + child_fee) * 1000 / weight;
        assert!(
            package >= SPIKE_SAT_PER_KVB / 4,
            "the package pays the spike: {package} sat/kwu"
        );
        // The anchor (330 sat) is the commitment's, the rest of the inputs the wallet's.
        child_net = outputs_sat(&child) as i64 - (child_in - 330) as i64;
        w.mine(1);
        let mined = w.rpc("getrawtransaction", json!([commitment_txid, true]));
        assert!(
            mined["confirmations"].as_u64().unwrap_or(0) >= 1,
            "the commitment confirms with its child: {mined}"
        );
        w.rpc("devnetsetfeespike", json!([0]));
        println!(
            "fee spike at {} sat/kwu: the commitment (fee {commitment_fee} sat) confirmed \
             through a child on the hub's anchor paying {child_fee} sat, {package} sat/kwu \
             together",
            SPIKE_SAT_PER_KVB / 4
        );
    }
    let height = w.height() + 1;
    w.mine(1);
    // An anchor channel: two anchors; the hub's outputs are to_local (250,000) and the
    // HTLC (50,000); LDK's is the to_remote, 1,000,000 - 300,000 less the commitment fee
    // and the anchors LDK pays as funder.
    assert_eq!(anchor_outputs(&commitment), 2);
    let hub_outs = |o: &Value| [250_000, 50_000].contains(&sat(&o["value"]));
    let ldk_out = |o: &Value| !hub_outs(o) && sat(&o["value"]) != 330;
    let hub_sweeps = mine_until_swept(&w, &commitment, height, hub_outs);
    // The HTLC's first stage is the hub's HTLC-timeout: zero fee of its own, the HTLC's
    // whole value to a to_local-style P2WSH (output 0, CSV-delayed, swept after), the fee
    // from a coin of the hub's wallet (input 1) with its change (output 1).
    let mut gained: i64 = child_net;
    // The hub batches its sweeps without a deadline: its to_local and its HTLC
    // transaction's output may leave in one transaction, counted once.
    let mut counted: Vec<Value> = Vec::new();
    for tx in &hub_sweeps {
        let htlc_tx = tx["vin"][0]["txid"] == commitment_txid.as_str()
            && sat(&tx["vout"][0]["value"]) == 50_000;
        if htlc_tx {
            assert_eq!(
                tx["vin"].as_array().expect("vin").len(),
                2,
                "a fee input: {tx}"
            );
            let wallet_in = w.prevout_sat(&tx["vin"][1]);
            let change = sat(&tx["vout"][1]["value"]);
            gained += change as i64 - wallet_in as i64;
            for swept in mine_until_swept(&w, tx, height, |o| o["n"] == 0) {
                if !counted.iter().any(|c| c["txid"] == swept["txid"]) {
                    gained += outputs_sat(&swept) as i64;
                    counted.push(swept);
                }
            }
        } else if !counted.iter().any(|c| c["txid"] == tx["txid"]) {
            gained += outputs_sat(tx) as i64;
            counted.push(tx.clone());
        }
    }
    let gained = u64::try_from(gained).expect("the hub gained");
    let to_hub: u64 = commitment["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .filter(|o| hub_outs(o))
        .map(|o| sat(&o["value"]))
        .sum();
    assert_eq!(to_hub, 300_000, "the hub's outputs in its commitment");
    // `gained` is what the wallet gets in all; the child on the anchor (spike only) is
    // paid from it, the sweeps from the outputs.
    let swept = u64::try_from(i64::try_from(gained).expect("gained") - child_net).expect("swept");
    assert!(
        to_hub - swept < 5_000,
        "the hub's sweeps paid {} sat",
        to_hub - swept
    );
    wait("the hub's wallet has its sweeps", || {
        w.hub_onchain_sat() == before + gained
    });
    // LDK's to_remote: swept by LDK's wallet.
    let ldk_value: u64 = commitment["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .filter(|o| ldk_out(o))
        .map(|o| sat(&o["value"]))
        .sum();
    wait("LDK has its to_remote", || {
        ldk.sync_wallets().ok();
        let now = ldk.list_balances().total_onchain_balance_sats;
        now > ldk_before && now <= ldk_before + ldk_value
    });
    ldk.stop().expect("LDK stops");
}

/// The anchor outputs (330 sat) of a transaction as Bitcoin Core's RPC shows it.
fn anchor_outputs(tx: &Value) -> usize {
    tx["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .filter(|o| sat(&o["value"]) == 330 && o["scriptPubKey"]["type"] == "witness_v0_scripthash")
        .count()
}
