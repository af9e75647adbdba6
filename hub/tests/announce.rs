//! Public channels (BOLT 7) against a scripted peer: Mallory opens a channel with
//! `announce_channel` to the hub. At six confirmations the hub sends its
//! announcement_signatures; a forged reply (her node signature over the right hash, the
//! bitcoin signature by the wrong key) gets a warning and the connection closed, and the
//! channel stays unannounced. After a reconnection the hub sends its signatures again; her
//! valid ones make the hub announce the channel: a channel_announcement whose four
//! signatures verify, its channel_update without `dont_forward`, and its
//! node_announcement; its gossip queries then name the channel. The announcement survives
//! a restart.

mod common;

use bitcoin::secp256k1::{Message as SecpMessage, PublicKey, SecretKey};
use channel::gossip::*;
use channel::keys::{secp, ChannelSecrets};
use channel::msgs::*;
use common::mallory::*;
use common::*;
use hub::peer::connect;
use std::time::Duration;

const MALLORY_KEY: [u8; 32] = [0x4d; 32];

/// Reads until a message `pick` accepts arrives (others are set aside), or panics.
async fn expect<T>(
    r: &mut hub::peer::PeerReader,
    what: &str,
    mut pick: impl FnMut(&Message) -> Option<T>,
) -> (T, Vec<Message>) {
    let mut others = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        match next_within(r, Duration::from_secs(2)).await {
            Some(m) => match pick(&m) {
                Some(t) => return (t, others),
                None => others.push(m),
            },
            None => continue,
        }
    }
    panic!("{what} never came; got {others:?}");
}

/// Mallory's query_channel_range over blocks 0 to `blocks`, and the hub's reply.
async fn channel_range(m: &mut Mallory, blocks: u32) -> ReplyChannelRange {
    m.w.send(&Message::QueryChannelRange(QueryChannelRange {
        chain_hash: chain_hash(),
        first_blocknum: 0,
        number_of_blocks: blocks,
        query_option: None,
    }))
    .await
    .unwrap();
    expect(&mut m.r, "reply_channel_range", |msg| match msg {
        Message::ReplyChannelRange(r) => Some(r.clone()),
        _ => None,
    })
    .await
    .0
}

/// Mallory's query_short_channel_ids: the types of what the hub answers before its
/// reply_short_channel_ids_end.
async fn short_ids_answer(m: &mut Mallory, ids: &[u64], query_flags: Option<Vec<u8>>) -> Vec<u16> {
    m.w.send(&Message::QueryShortChannelIds(QueryShortChannelIds {
        chain_hash: chain_hash(),
        encoded_short_ids: encode_short_ids(ids),
        query_flags,
    }))
    .await
    .unwrap();
    let (_, answered) = expect(&mut m.r, "reply_short_channel_ids_end", |msg| match msg {
        Message::ReplyShortChannelIdsEnd(e) => Some(e.full_information),
        _ => None,
    })
    .await;
    answered.iter().map(|m| m.msg_type()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_channel_is_announced_only_with_valid_signatures() {
    let devnet = std::sync::Arc::new(chain::Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start(&devnet, dir.path(), None).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let secrets = ChannelSecrets::from_seed(&[0x51; 32]);
    let funding_key = secrets.funding_key;
    let mut ch = m
        .open_usable_flags(&devnet, &hub, secrets, 0x51, 0, 1)
        .await;
    let id = ch.channel_id();
    let summary = hub.channel(&id).await.unwrap();
    assert!(summary.public && !summary.announced);
    let scid = summary.short_channel_id.expect("funding confirmed");
    let mallory_node = SecretKey::from_slice(&MALLORY_KEY).unwrap();
    let mallory_end = ChannelEnd {
        node_id: PublicKey::from_secret_key(secp(), &mallory_node),
        funding_key: PublicKey::from_secret_key(secp(), &funding_key),
    };
    let hub_end = ChannelEnd {
        node_id: hub.node_id(),
        funding_key: ch.setup().remote_basepoints.funding_pubkey,
    };
    let unsigned = unsigned_channel_announcement(chain_hash(), scid, mallory_end, hub_end);

    // Four confirmations so far: nothing announced before six.
    while let Some(msg) = next(&mut m.r).await {
        assert!(
            !matches!(msg, Message::AnnouncementSignatures(_)),
            "announcement_signatures before six confirmations"
        );
    }
    devnet
        .generate_to_script(2, &elsewhere().script_pubkey())
        .unwrap();
    let (hub_sigs, _) = expect(
        &mut m.r,
        "the hub's announcement_signatures",
        |msg| match msg {
            Message::AnnouncementSignatures(s) => Some(s.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(hub_sigs.channel_id, id);
    check_announcement_signatures(&unsigned, &hub_sigs, &hub_end)
        .expect("the hub's signatures verify");

    // A forged answer: her node signature is right, the bitcoin one is by her node key.
    let mut forged = sign_channel_announcement(&unsigned, id, &mallory_node, &funding_key);
    forged.bitcoin_signature = forged.node_signature;
    m.w.send(&Message::AnnouncementSignatures(forged))
        .await
        .unwrap();
    let (warning, _) = expect(&mut m.r, "a warning", |msg| match msg {
        Message::Warning(w) => Some(w.clone()),
        _ => None,
    })
    .await;
    assert!(String::from_utf8_lossy(&warning.data).contains("bitcoin_signature"));
    wait_until("the connection closed", || async {
        !hub.channel(&id).await.unwrap().active
    })
    .await;
    assert!(!hub.channel(&id).await.unwrap().announced);

    // She comes back: after the reestablish the hub sends its signatures again (it has
    // none of hers), and her valid ones complete the announcement.
    let (w, r) = connect(hub.listen_addr(), mallory_node, hub.node_id(), chain_hash())
        .await
        .unwrap();
    m.w = w;
    m.r = r;
    m.w.send(&Message::ChannelReestablish(ch.reestablish_message()))
        .await
        .unwrap();
    let (again, seen) = expect(&mut m.r, "announcement_signatures again", |msg| match msg {
        Message::AnnouncementSignatures(s) => Some(s.clone()),
        _ => None,
    })
    .await;
    assert!(seen
        .iter()
        .any(|m| matches!(m, Message::ChannelReestablish(_))));
    check_announcement_signatures(&unsigned, &again, &hub_end).unwrap();
    let valid = sign_channel_announcement(&unsigned, id, &mallory_node, &funding_key);
    m.w.send(&Message::AnnouncementSignatures(valid.clone()))
        .await
        .unwrap();
    let (announcement, _) = expect(&mut m.r, "the channel_announcement", |msg| match msg {
        Message::ChannelAnnouncement(a) => Some(a.clone()),
        _ => None,
    })
    .await;
    assert!(verify_channel_announcement(&announcement));
    assert_eq!(
        announcement,
        complete_channel_announcement(unsigned.clone(), &mallory_end.node_id, &valid, &again)
    );
    let (update, _) = expect(&mut m.r, "the public channel_update", |msg| match msg {
        Message::ChannelUpdate(u) if u.short_channel_id == scid => Some(u.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        update.message_flags, 1,
        "no dont_forward on a public channel"
    );
    let hub_is_1 = announcement.node_id_1 == hub.node_id();
    assert_eq!(update.channel_flags & 1, u8::from(!hub_is_1));
    secp()
        .verify_ecdsa(
            &SecpMessage::from_digest(update.signing_hash()),
            &update.signature,
            &hub.node_id(),
        )
        .unwrap();
    assert!(update.htlc_maximum_msat <= FUNDING_SAT * 1000);
    let (node_ann, _) = expect(&mut m.r, "the node_announcement", |msg| match msg {
        Message::NodeAnnouncement(n) => Some(n.clone()),
        _ => None,
    })
    .await;
    assert_eq!(node_ann.node_id, hub.node_id());
    assert_eq!(&node_ann.alias[..4], b"hub\0");
    secp()
        .verify_ecdsa(
            &SecpMessage::from_digest(node_ann.signing_hash()),
            &node_ann.signature,
            &hub.node_id(),
        )
        .unwrap();
    assert!(hub.channel(&id).await.unwrap().announced);
    // Her signatures again: answered by nothing (ours went out on this connection), and
    // the channel is not broadcast again before its week is up.
    m.w.send(&Message::AnnouncementSignatures(valid.clone()))
        .await
        .unwrap();
    while let Some(msg) = next(&mut m.r).await {
        assert!(
            !matches!(
                msg,
                Message::ChannelAnnouncement(_) | Message::AnnouncementSignatures(_)
            ),
            "{msg:?}"
        );
    }

    // Gossip queries now name the channel.
    let height = scid_block(scid);
    let range = channel_range(&mut m, height + 10).await;
    assert_eq!(
        decode_short_ids(&range.encoded_short_ids).unwrap(),
        vec![scid]
    );
    assert_eq!(
        (
            range.first_blocknum,
            range.number_of_blocks,
            range.sync_complete
        ),
        (0, height + 10, 1)
    );
    // A range that ends before the funding block names nothing.
    let empty = channel_range(&mut m, height).await;
    assert!(decode_short_ids(&empty.encoded_short_ids)
        .unwrap()
        .is_empty());
    let types = short_ids_answer(&mut m, &[scid, scid + 1], None).await;
    assert_eq!(
        types,
        vec![256, 258, 257],
        "announcement, our update, node_announcement"
    );
    // Only the announcement, asked with query flags.
    assert_eq!(
        short_ids_answer(&mut m, &[scid], Some(vec![0, 1])).await,
        vec![256]
    );
    // Badly encoded ids: a warning and the connection closed, nothing else.
    m.w.send(&Message::QueryShortChannelIds(QueryShortChannelIds {
        chain_hash: chain_hash(),
        encoded_short_ids: vec![0, 1, 2, 3],
        query_flags: None,
    }))
    .await
    .unwrap();
    let (_, _) = expect(&mut m.r, "a warning", |msg| match msg {
        Message::Warning(_) => Some(()),
        _ => None,
    })
    .await;

    // The peer's signatures are stored: after a restart the channel is still announced
    // and a gossip filter gets its gossip.
    hub.shutdown().await;
    drop(hub);
    let hub = start(&devnet, dir.path(), None).await;
    assert!(hub.channel(&id).await.unwrap().announced);
    let (mut w, mut r) = connect(hub.listen_addr(), mallory_node, hub.node_id(), chain_hash())
        .await
        .unwrap();
    w.send(&Message::ChannelReestablish(ch.reestablish_message()))
        .await
        .unwrap();
    w.send(&Message::GossipTimestampFilter(GossipTimestampFilter {
        chain_hash: chain_hash(),
        first_timestamp: 0,
        timestamp_range: u32::MAX,
    }))
    .await
    .unwrap();
    let (again, _) = expect(
        &mut r,
        "the channel_announcement after a restart",
        |msg| match msg {
            Message::ChannelAnnouncement(a) => Some(a.clone()),
            _ => None,
        },
    )
    .await;
    assert_eq!(again, announcement);
    let _ = &mut ch;
}
