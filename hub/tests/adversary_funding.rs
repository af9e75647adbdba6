//! A scripted malicious peer ("Mallory", built on the channel crate's pure builders over a
//! raw BOLT 8 link, on the devnet) opens channels to the hub with funding that is not what
//! it claims: a confirmed transaction that does not pay the 2-of-2, a real 2-of-2 output
//! one satoshi short, and the funding outpoint of a channel that already exists. The hub
//! must never make such a channel usable, must not let it replace the real one, and its
//! wallet must not move by a satoshi.

mod common;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, Network, OutPoint, ScriptBuf, Txid};
use chain::wallet::Wallet;
use chain::{ChainPoller, ChainSource, Devnet};
use channel::channel_type::ChannelType;
use channel::keys::ChannelSecrets;
use channel::msgs::*;
use channel::state::open::setup_from_messages;
use channel::state::Channel;
use channel::*;
use common::*;
use hub::node::{ChannelStatus, Node};
use hub::peer::{connect, PeerReader, PeerWriter};
use std::sync::Arc;
use std::time::Duration;

const FUNDING_SAT: u64 = 500_000;

fn chain_hash() -> [u8; 32] {
    bitcoin::constants::ChainHash::using_genesis_block(Network::Regtest).to_bytes()
}

/// The hub's next message, if one comes within 700 ms (to drain what it sends).
async fn next(r: &mut PeerReader) -> Option<Message> {
    next_within(r, Duration::from_millis(700)).await
}

/// The hub's next message, if one comes within `wait`.
async fn next_within(r: &mut PeerReader, wait: Duration) -> Option<Message> {
    match tokio::time::timeout(wait, r.recv()).await {
        Ok(Ok(m)) => Some(m),
        _ => None,
    }
}

/// The answer the hub owes: given time on a loaded machine.
const ANSWER: Duration = Duration::from_secs(10);

/// The hub's answer to what was just sent: its channel_updates (sent on their own once a
/// funding confirms) are skipped.
async fn answer(r: &mut PeerReader) -> Option<Message> {
    loop {
        match next_within(r, ANSWER).await {
            Some(Message::ChannelUpdate(_)) => continue,
            other => return other,
        }
    }
}

/// Mallory: a key, a wallet on the devnet and a link to the hub.
struct Mallory {
    wallet: Wallet,
    poller: ChainPoller<dyn ChainSource>,
    w: PeerWriter,
    r: PeerReader,
    source: Arc<dyn ChainSource>,
}

impl Mallory {
    async fn new(devnet: &Arc<Devnet>, hub: &Node) -> Mallory {
        let (wallet, poller) = funded_wallet(devnet, &[9; 32]).await;
        let source: Arc<dyn ChainSource> = devnet.clone();
        let key = SecretKey::from_slice(&[0x4d; 32]).unwrap();
        let (w, r) = connect(hub.listen_addr(), key, hub.node_id(), chain_hash())
            .await
            .unwrap();
        Mallory {
            wallet,
            poller,
            w,
            r,
            source,
        }
    }

    fn open_msg(secrets: &ChannelSecrets, temp: u8) -> OpenChannel {
        let b = secrets.basepoints();
        OpenChannel {
            chain_hash: chain_hash(),
            temporary_channel_id: ChannelId([temp; 32]),
            funding_satoshis: FUNDING_SAT,
            push_msat: 0,
            dust_limit_satoshis: 546,
            max_htlc_value_in_flight_msat: FUNDING_SAT * 1000,
            channel_reserve_satoshis: 5_000,
            htlc_minimum_msat: 1,
            feerate_per_kw: 2500,
            to_self_delay: 144,
            max_accepted_htlcs: 30,
            funding_pubkey: b.funding_pubkey,
            revocation_basepoint: b.revocation_basepoint,
            payment_basepoint: b.payment_basepoint,
            delayed_payment_basepoint: b.delayed_payment_basepoint,
            htlc_basepoint: b.htlc_basepoint,
            first_per_commitment_point: secrets.per_commitment_point(CommitmentNumber(0)),
            channel_flags: 0,
            upfront_shutdown_script: None,
            channel_type: Some(ChannelType::StaticRemoteKey.to_bytes()),
        }
    }

    /// open_channel, then accept_channel from the hub: the funding script.
    async fn open(&mut self, open: &OpenChannel) -> AcceptChannel {
        self.w
            .send(&Message::OpenChannel(open.clone()))
            .await
            .unwrap();
        match answer(&mut self.r).await {
            Some(Message::AcceptChannel(a)) => a,
            other => panic!(
                "accept_channel expected for {:?}, got {other:?}",
                open.temporary_channel_id
            ),
        }
    }

    /// funding_created naming `outpoint`; returns what the hub answered.
    async fn fund(
        &mut self,
        open: &OpenChannel,
        accept: &AcceptChannel,
        secrets: ChannelSecrets,
        outpoint: OutPoint,
    ) -> (Channel, Option<Message>) {
        let ch = Channel::new(setup_from_messages(open, accept, outpoint, true), secrets);
        self.w
            .send(&Message::FundingCreated(FundingCreated {
                temporary_channel_id: open.temporary_channel_id,
                funding_txid: outpoint.txid.to_byte_array(),
                funding_output_index: outpoint.vout as u16,
                signature: ch.sign_initial_remote_commitment().unwrap(),
            }))
            .await
            .unwrap();
        (ch, answer(&mut self.r).await)
    }

    /// A real transaction paying `value` to `script`, broadcast and confirmed.
    async fn pay_to(&mut self, devnet: &Arc<Devnet>, script: ScriptBuf, value: u64) -> OutPoint {
        for e in self.poller.poll().await.unwrap() {
            self.wallet.apply(&e).unwrap();
        }
        let funding = self
            .wallet
            .build_funding_tx(
                script,
                Amount::from_sat(value),
                bitcoin::FeeRate::from_sat_per_vb_u32(2),
            )
            .unwrap();
        self.source.broadcast(&funding.tx).await.unwrap();
        devnet
            .generate_to_script(1, &elsewhere().script_pubkey())
            .unwrap();
        OutPoint::new(funding.tx.compute_txid(), funding.funding_output_index)
    }
}

fn funding_spk(open: &OpenChannel, accept: &AcceptChannel) -> ScriptBuf {
    let ws = channel::script::funding_script(&open.funding_pubkey, &accept.funding_pubkey);
    ScriptBuf::new_p2wsh(&ws.wscript_hash())
}

/// Mines and gives the hub time to look at its channels; the hub must not have sent
/// channel_ready, and must have refused the channel with an error when the output exists.
async fn assert_never_ready(
    devnet: &Arc<Devnet>,
    hub: &Node,
    m: &mut Mallory,
    id: ChannelId,
    output_exists: bool,
) {
    devnet
        .generate_to_script(6, &elsewhere().script_pubkey())
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        while let Some(msg) = next(&mut m.r).await {
            seen.push(msg);
        }
    }
    assert!(
        !seen.iter().any(|x| matches!(x, Message::ChannelReady(_))),
        "the hub sent channel_ready for a fake funding: {seen:?}"
    );
    let status = hub.channel(&id).await.unwrap().status;
    if output_exists {
        assert!(
            seen.iter()
                .any(|x| matches!(x, Message::ErrorMessage(e) if e.channel_id == id)),
            "an error for the channel: {seen:?}"
        );
        assert_eq!(status, ChannelStatus::Closed);
    } else {
        assert_eq!(status, ChannelStatus::AwaitingLock);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_funding_never_makes_a_usable_channel() {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start(&devnet, dir.path(), None).await;
    let hub_addr = hub.new_address().await.unwrap();
    devnet
        .generate_to_script(1, &hub_addr.script_pubkey())
        .unwrap();
    let mut m = Mallory::new(&devnet, &hub).await;
    wait_until("hub funded", || async {
        hub.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;
    let hub_wallet = hub.wallet_balance().await;

    // 1. A confirmed output of the right value that pays another script.
    let s1 = ChannelSecrets::from_seed(&[0x41; 32]);
    let open1 = Mallory::open_msg(&s1, 0x51);
    let accept1 = m.open(&open1).await;
    let anyone = ScriptBuf::new_p2wsh(&ScriptBuf::from_bytes(vec![0x51]).wscript_hash());
    let elsewhere_out = m.pay_to(&devnet, anyone, FUNDING_SAT).await;
    let (ch1, answer) = m.fund(&open1, &accept1, s1, elsewhere_out).await;
    assert!(
        matches!(answer, Some(Message::FundingSigned(_))),
        "{answer:?}"
    );
    assert_never_ready(&devnet, &hub, &mut m, ch1.channel_id(), true).await;

    // 2. A real 2-of-2 output, one satoshi short of funding_satoshis.
    let s2 = ChannelSecrets::from_seed(&[0x42; 32]);
    let open2 = Mallory::open_msg(&s2, 0x52);
    let accept2 = m.open(&open2).await;
    let short = m
        .pay_to(&devnet, funding_spk(&open2, &accept2), FUNDING_SAT - 1)
        .await;
    let (ch2, answer) = m.fund(&open2, &accept2, s2, short).await;
    assert!(
        matches!(answer, Some(Message::FundingSigned(_))),
        "{answer:?}"
    );
    assert_never_ready(&devnet, &hub, &mut m, ch2.channel_id(), true).await;

    // 3. A txid that exists on no chain at all.
    let s3 = ChannelSecrets::from_seed(&[0x43; 32]);
    let open3 = Mallory::open_msg(&s3, 0x53);
    let accept3 = m.open(&open3).await;
    let nowhere = OutPoint::new(Txid::from_byte_array([0x99; 32]), 0);
    let (ch3, _) = m.fund(&open3, &accept3, s3, nowhere).await;
    assert_never_ready(&devnet, &hub, &mut m, ch3.channel_id(), false).await;

    // 4. An honest channel, then a second open naming its funding outpoint: refused with
    // an error on the temporary id; the real channel's state is untouched.
    let s4 = ChannelSecrets::from_seed(&[0x44; 32]);
    let open4 = Mallory::open_msg(&s4, 0x54);
    let accept4 = m.open(&open4).await;
    let real = m
        .pay_to(&devnet, funding_spk(&open4, &accept4), FUNDING_SAT)
        .await;
    let (ch4, answer) = m.fund(&open4, &accept4, s4, real).await;
    assert!(
        matches!(answer, Some(Message::FundingSigned(_))),
        "{answer:?}"
    );
    // The chain follower may give it its short channel id meanwhile; nothing else of it
    // may change.
    let unchanged = |mut c: hub::node::ChannelSummary| {
        c.short_channel_id = None;
        c
    };
    let before = unchanged(hub.channel(&ch4.channel_id()).await.unwrap());
    let s5 = ChannelSecrets::from_seed(&[0x45; 32]);
    let open5 = Mallory::open_msg(&s5, 0x55);
    let accept5 = m.open(&open5).await;
    let (_, answer) = m.fund(&open5, &accept5, s5, real).await;
    match answer {
        Some(Message::ErrorMessage(e)) => assert_eq!(e.channel_id, ChannelId([0x55; 32])),
        other => panic!("expected an error on the temporary id, got {other:?}"),
    }
    assert_eq!(
        unchanged(hub.channel(&ch4.channel_id()).await.unwrap()),
        before
    );

    // Nothing the hub holds moved.
    assert_eq!(hub.wallet_balance().await, hub_wallet);
}

/// A peer that opens channel after channel and never funds them: four at a time get an
/// accept_channel, every other one an `error` on its temporary id (no channel index, no
/// database write), the connection stays, and another peer can still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unfunded_opens_is_bounded() {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start(&devnet, dir.path(), None).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let secrets = ChannelSecrets::from_seed(&[0x61; 32]);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..1000u32 {
        let mut open = Mallory::open_msg(&secrets, 0);
        open.temporary_channel_id.0[..4].copy_from_slice(&i.to_be_bytes());
        m.w.send(&Message::OpenChannel(open)).await.unwrap();
    }
    while accepted + refused < 1000 {
        match next_within(&mut m.r, ANSWER).await {
            Some(Message::AcceptChannel(_)) => accepted += 1,
            Some(Message::ErrorMessage(_)) => refused += 1,
            other => panic!("unexpected {other:?} after {accepted} accepts, {refused} errors"),
        }
    }
    assert_eq!((accepted, refused), (4, 996));
    assert!(next(&mut m.r).await.is_none(), "nothing more");
    // Still connected.
    m.w.send(&Message::Ping(Ping {
        num_pong_bytes: 1,
        ignored: vec![],
    }))
    .await
    .unwrap();
    assert!(matches!(
        next_within(&mut m.r, ANSWER).await,
        Some(Message::Pong(_))
    ));
    // Another peer is not held back by Mallory's openings.
    let key = SecretKey::from_slice(&[0x62; 32]).unwrap();
    let (mut w, mut r) = connect(hub.listen_addr(), key, hub.node_id(), chain_hash())
        .await
        .unwrap();
    let open = Mallory::open_msg(&ChannelSecrets::from_seed(&[0x63; 32]), 0x64);
    w.send(&Message::OpenChannel(open)).await.unwrap();
    assert!(matches!(
        next_within(&mut r, ANSWER).await,
        Some(Message::AcceptChannel(_))
    ));
}
