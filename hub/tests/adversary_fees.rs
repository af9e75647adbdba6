//! Mallory, the funder of a channel with the hub, sends `update_fee` at 1 sat/kw (the
//! hub's commitment could never be relayed, let alone confirm) and at 1,000,000 sat/kw
//! (every HTLC trimmed to fees, the hub's balance eaten by the commitment fee). Each time
//! the hub answers with a warning and disconnects (BOLT 2: an update_fee too low for
//! timely processing, or unreasonably large); its commitment and balance stay exactly as
//! they were, Mallory's update is dropped on reconnection, and the channel pays again.

mod common;

use channel::msgs::{Message, UpdateFee};
use channel::*;
use common::mallory::*;
use common::*;
use hub::node::ChannelStatus;
use hub::peer::connect;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_fee_far_below_or_above_the_estimate_changes_nothing() {
    let (devnet, _dir, hub, mut m, mut ch) = hub_and_mallory(0x73, 200_000_000).await;
    let id = ch.channel_id();
    let mut commitment = hub.signed_commitment(&id).await.unwrap();
    let mut kept = Vec::new();

    for (round, feerate) in [1u32, 1_000_000].into_iter().enumerate() {
        m.w.send(&Message::UpdateFee(UpdateFee {
            channel_id: id,
            feerate_per_kw: feerate,
        }))
        .await
        .unwrap();
        // A warning, then the connection ends.
        let mut warned = false;
        while let Some(msg) = next_within(&mut m.r, ANSWER).await {
            if let Message::Warning(w) = msg {
                assert_eq!(w.channel_id, id);
                warned = true;
            }
        }
        assert!(warned, "no warning for update_fee at {feerate} sat/kw");
        // Nothing of the hub's moved.
        let c = hub.channel(&id).await.unwrap();
        assert_eq!(c.status, ChannelStatus::Normal);
        assert_eq!(c.local, Msat(200_000_000 - 10_000_000 * round as u64));
        assert_eq!(hub.signed_commitment(&id).await.unwrap(), commitment);

        // Mallory comes back: her uncommitted update_fee is gone on both sides.
        let key = bitcoin::secp256k1::SecretKey::from_slice(&[0x4d; 32]).unwrap();
        let (w, r) = connect(hub.listen_addr(), key, hub.node_id(), chain_hash())
            .await
            .unwrap();
        (m.w, m.r) = (w, r);
        ch.on_disconnect();
        m.w.send(&Message::ChannelReestablish(ch.reestablish_message()))
            .await
            .unwrap();
        match answer(&mut m.r).await {
            Some(Message::ChannelReestablish(r)) => {
                assert!(ch.handle_reestablish(&r).unwrap().is_empty());
            }
            other => panic!("channel_reestablish expected, got {other:?}"),
        }
        // Once the hub has her channel_reestablish (not before: BOLT 2), the channel pays.
        wait_until("the channel active again", || async {
            hub.channel(&id).await.unwrap().active
        })
        .await;
        // And the channel pays: the hub pays Mallory 10,000 sat.
        let preimage = PaymentPreimage([0x90 + round as u8; 32]);
        let paying = {
            let hub = hub.clone();
            let expiry = devnet.tip().1 + 40;
            tokio::spawn(async move {
                hub.pay(&id, Msat(10_000_000), preimage.payment_hash(), expiry)
                    .await
            })
        };
        m.serve_until(&mut ch, &[preimage], &mut kept, settled_with(1))
            .await;
        m.fulfill_held(&mut ch, preimage, &mut kept).await;
        assert_eq!(paying.await.unwrap().unwrap(), preimage);
        assert_eq!(
            hub.channel(&id).await.unwrap().local,
            Msat(200_000_000 - 10_000_000 * (round as u64 + 1))
        );
        commitment = hub.signed_commitment(&id).await.unwrap();
    }
    // The commitment fee rate never left the channel's 2,500 sat/kw.
    let feerate = ch.view(channel::state::ViewOf::CurrentLocal).feerate;
    assert_eq!(feerate, FeeratePerKw(2500));
}
