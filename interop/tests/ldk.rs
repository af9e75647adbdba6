//! The hub against LDK (ldk-node 0.7.1, lightning 0.2, stock configuration), both on the
//! devnet, which LDK reads through its Bitcoin Core JSON-RPC chain source: channels opened
//! by each side, payments both ways (and through the hub to a merchant), reconnection in
//! the middle of a commitment dance, and cooperative closes by each side, with the hub's
//! satoshis checked exactly.

mod common;

use common::*;
use ldk_node::Event;
use serde_json::json;

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
    let opened = w.hub(
        "POST",
        "/v1/channels",
        Some(json!({"peer_id": ldk.node_id().to_string(), "capacity_sat": 2_000_000})),
    );
    let id = opened["channel_id"]
        .as_str()
        .expect("channel_id")
        .to_string();
    w.mine(6);
    assert_eq!(wait_channel_usable(&w, &ldk), id);

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
    ldk.stop().expect("LDK stops");
}
