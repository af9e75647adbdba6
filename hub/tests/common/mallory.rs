//! Mallory: a scripted malicious peer built on the channel crate's pure builders over a
//! raw BOLT 8 link, with a wallet of its own on the devnet. The adversary tests drive it
//! step by step, or let it answer the hub's channel updates as an ordinary peer would
//! while it keeps every commitment it was given (to broadcast the revoked ones later).

use super::*;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, Network, OutPoint, ScriptBuf};
use chain::wallet::Wallet;
use chain::{ChainPoller, ChainSource, Devnet};
use channel::channel_type::ChannelType;
use channel::keys::ChannelSecrets;
use channel::msgs::*;
use channel::state::open::setup_from_messages;
use channel::state::{Channel, ViewOf};
use channel::*;
use hub::node::Node;
use hub::peer::{connect, PeerReader, PeerWriter};
use std::sync::Arc;
use std::time::Duration;

pub const FUNDING_SAT: u64 = 500_000;

pub fn chain_hash() -> [u8; 32] {
    bitcoin::constants::ChainHash::using_genesis_block(Network::Regtest).to_bytes()
}

/// The hub's next message, if one comes within 700 ms (to drain what it sends).
pub async fn next(r: &mut PeerReader) -> Option<Message> {
    next_within(r, Duration::from_millis(700)).await
}

/// The hub's next message, if one comes within `wait`.
pub async fn next_within(r: &mut PeerReader, wait: Duration) -> Option<Message> {
    match tokio::time::timeout(wait, r.recv()).await {
        Ok(Ok(m)) => Some(m),
        _ => None,
    }
}

/// The answer the hub owes: given time on a loaded machine.
pub const ANSWER: Duration = Duration::from_secs(10);

/// The hub's answer to what was just sent: its channel_updates (sent on their own once a
/// funding confirms) are skipped.
pub async fn answer(r: &mut PeerReader) -> Option<Message> {
    loop {
        match next_within(r, ANSWER).await {
            Some(Message::ChannelUpdate(_)) => continue,
            other => return other,
        }
    }
}

/// Mallory: a key, a wallet on the devnet and a link to the hub.
pub struct Mallory {
    pub wallet: Wallet,
    pub poller: ChainPoller<dyn ChainSource>,
    pub w: PeerWriter,
    pub r: PeerReader,
    pub source: Arc<dyn ChainSource>,
    /// The `update_fail_htlc`s the hub sent her: HTLC id and onion failure.
    pub failures: Vec<(u64, Vec<u8>)>,
}

impl Mallory {
    pub async fn new(devnet: &Arc<Devnet>, hub: &Node) -> Mallory {
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
            failures: Vec::new(),
        }
    }

    pub fn open_msg(secrets: &ChannelSecrets, temp: u8) -> OpenChannel {
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
    pub async fn open(&mut self, open: &OpenChannel) -> AcceptChannel {
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
    pub async fn fund(
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
    pub async fn pay_to(
        &mut self,
        devnet: &Arc<Devnet>,
        script: ScriptBuf,
        value: u64,
    ) -> OutPoint {
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

pub fn funding_spk(open: &OpenChannel, accept: &AcceptChannel) -> ScriptBuf {
    let ws = channel::script::funding_script(&open.funding_pubkey, &accept.funding_pubkey);
    ScriptBuf::new_p2wsh(&ws.wscript_hash())
}

/// A hub on a fresh devnet, and Mallory with a usable channel to it that she funded
/// with `FUNDING_SAT`, `push_msat` of it given to the hub.
pub async fn hub_and_mallory(
    seed: u8,
    push_msat: u64,
) -> (Arc<Devnet>, tempfile::TempDir, Arc<Node>, Mallory, Channel) {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start(&devnet, dir.path(), None).await;
    let mut m = Mallory::new(&devnet, &hub).await;
    let ch = m
        .open_usable(
            &devnet,
            &hub,
            ChannelSecrets::from_seed(&[seed; 32]),
            seed,
            push_msat,
        )
        .await;
    (devnet, dir, hub, m, ch)
}

/// One of Mallory's commitments as she held it: signed, with her signed HTLC-success
/// (where she knows the preimage) and HTLC-timeout transactions.
#[derive(Clone, Debug)]
pub struct Kept {
    pub number: CommitmentNumber,
    pub commitment: bitcoin::Transaction,
    pub htlc_txs: Vec<bitcoin::Transaction>,
    pub htlcs: usize,
}

impl Mallory {
    /// A real channel opened to `hub` and usable: `push_msat` given to the hub, funded
    /// with a confirmed 2-of-2 output, channel_ready both ways.
    pub async fn open_usable(
        &mut self,
        devnet: &Arc<Devnet>,
        hub: &Node,
        secrets: ChannelSecrets,
        temp: u8,
        push_msat: u64,
    ) -> Channel {
        self.open_usable_flags(devnet, hub, secrets, temp, push_msat, 0)
            .await
    }

    /// [`Mallory::open_usable`] with `channel_flags` in her open_channel (1: announce).
    pub async fn open_usable_flags(
        &mut self,
        devnet: &Arc<Devnet>,
        hub: &Node,
        secrets: ChannelSecrets,
        temp: u8,
        push_msat: u64,
        channel_flags: u8,
    ) -> Channel {
        let mut open = Mallory::open_msg(&secrets, temp);
        open.push_msat = push_msat;
        open.channel_flags = channel_flags;
        self.open_usable_as(devnet, hub, secrets, open).await
    }

    /// [`Mallory::open_usable`] with the open_channel `open` (made from `secrets`).
    pub async fn open_usable_as(
        &mut self,
        devnet: &Arc<Devnet>,
        hub: &Node,
        secrets: ChannelSecrets,
        open: OpenChannel,
    ) -> Channel {
        let accept = self.open(&open).await;
        let outpoint = self
            .pay_to(devnet, funding_spk(&open, &accept), FUNDING_SAT)
            .await;
        let (mut ch, answered) = self.fund(&open, &accept, secrets, outpoint).await;
        match answered {
            Some(Message::FundingSigned(m)) => ch.receive_initial_signature(m.signature).unwrap(),
            other => panic!("funding_signed expected, got {other:?}"),
        }
        devnet
            .generate_to_script(3, &elsewhere().script_pubkey())
            .unwrap();
        self.w
            .send(&Message::ChannelReady(ch.channel_ready()))
            .await
            .unwrap();
        match answer(&mut self.r).await {
            Some(Message::ChannelReady(m)) => ch.receive_channel_ready(&m).unwrap(),
            other => panic!("channel_ready expected, got {other:?}"),
        }
        let id = ch.channel_id();
        wait_until("the hub's channel usable", || async {
            hub.channel(&id)
                .await
                .is_ok_and(|c| c.status == hub::node::ChannelStatus::Normal)
        })
        .await;
        ch
    }

    /// Answers the hub's channel updates as an honest peer would, until `done` holds
    /// (panics if the hub is silent for `ANSWER` before): adds, fulfills and fails are taken in, every commitment_signed
    /// is revoked and answered. Each commitment Mallory is given is kept in `kept`, with
    /// her HTLC transactions (HTLC-success for the hashes of `preimages`).
    pub async fn serve_until(
        &mut self,
        ch: &mut Channel,
        preimages: &[PaymentPreimage],
        kept: &mut Vec<Kept>,
        done: impl Fn(&Channel) -> bool,
    ) {
        let preimage_for =
            |h: &PaymentHash| preimages.iter().find(|p| p.payment_hash() == *h).copied();
        while !done(ch) {
            let Some(msg) = next_within(&mut self.r, ANSWER).await else {
                panic!(
                    "the hub went quiet before the dance was over: {} HTLCs here, {} in the hub's \
                     commitment, awaiting revoke {}, changes to sign {}",
                    ch.view(ViewOf::CurrentLocal).htlcs.len(),
                    ch.remote_commitment().htlcs.len(),
                    ch.awaiting_revoke(),
                    ch.has_changes_to_sign()
                );
            };
            match msg {
                Message::UpdateAddHtlc(m) => ch.receive_add_htlc(&m).unwrap(),
                Message::UpdateFulfillHtlc(m) => {
                    ch.receive_fulfill(&m).unwrap();
                }
                Message::UpdateFailHtlc(m) => {
                    ch.receive_fail(&m).unwrap();
                    self.failures.push((m.id, m.reason));
                }
                Message::UpdateFailMalformedHtlc(m) => {
                    ch.receive_fail_malformed(&m).unwrap();
                }
                Message::CommitmentSigned(m) => {
                    let raa = ch.receive_commitment(&m).unwrap();
                    let (commitment, built) = ch.signed_local_commitment().unwrap();
                    kept.push(Kept {
                        number: ch.local_commitment_number(),
                        commitment,
                        htlc_txs: ch.signed_local_htlc_txs(preimage_for),
                        htlcs: built.htlcs.len(),
                    });
                    self.w.send(&Message::RevokeAndAck(raa)).await.unwrap();
                    self.sign_if_needed(ch).await;
                }
                Message::RevokeAndAck(m) => {
                    ch.receive_revoke(&m).unwrap();
                    self.sign_if_needed(ch).await;
                }
                Message::Ping(p) => {
                    let pong = Message::Pong(Pong {
                        ignored: vec![0; p.num_pong_bytes as usize],
                    });
                    self.w.send(&pong).await.unwrap();
                }
                // channel_ready comes again after a reconnection before any payment.
                Message::ChannelUpdate(_) | Message::Pong(_) | Message::ChannelReady(_) => {}
                other => panic!("Mallory did not expect {other:?}"),
            }
        }
    }

    /// Settles the one HTLC the hub offered her with `preimage` and answers the dance
    /// until neither commitment holds an HTLC.
    pub async fn fulfill_held(
        &mut self,
        ch: &mut Channel,
        preimage: PaymentPreimage,
        kept: &mut Vec<Kept>,
    ) {
        let id = ch.view(ViewOf::CurrentLocal).htlcs[0].id;
        let fulfill = ch.send_fulfill(id, preimage).unwrap();
        self.w
            .send(&Message::UpdateFulfillHtlc(fulfill))
            .await
            .unwrap();
        self.sign_if_needed(ch).await;
        self.serve_until(ch, &[preimage], kept, settled_with(0))
            .await;
    }

    /// Mallory offers the hub an HTLC paying a new `amount_msat` invoice of its, expiring
    /// 40 blocks out, and signs it. Returns the invoice and the expiry.
    pub async fn offer_to_hub(
        &mut self,
        ch: &mut Channel,
        hub: &Node,
        amount_msat: u64,
    ) -> (hub::node::InvoiceRecord, u32) {
        let inv = hub
            .create_invoice(Some(amount_msat), "from mallory", 3600, "")
            .await
            .unwrap();
        let expiry = self.source.tip().await.unwrap().height + 40;
        let (onion, _) = channel::onion::create_onion(
            &SecretKey::from_slice(&[0x75; 32]).unwrap(),
            &[(
                hub.node_id(),
                channel::onion::HopPayload {
                    amt_to_forward: amount_msat,
                    outgoing_cltv_value: expiry,
                    short_channel_id: None,
                    payment_data: Some((inv.payment_secret, amount_msat)),
                },
            )],
            &inv.payment_hash.0,
        )
        .unwrap();
        let add = ch
            .send_add_htlc(Msat(amount_msat), inv.payment_hash, expiry, onion)
            .unwrap();
        self.w.send(&Message::UpdateAddHtlc(add)).await.unwrap();
        self.sign_if_needed(ch).await;
        (inv, expiry)
    }

    /// Mallory pays a `amount_msat` invoice of the hub's over `ch` and answers the dance
    /// until the payment is settled (her commitments from before are revoked).
    pub async fn pay_hub(&mut self, ch: &mut Channel, hub: &Node, amount_msat: u64) {
        self.offer_to_hub(ch, hub, amount_msat).await;
        let from = ch.local_commitment_number().0;
        let mut kept = Vec::new();
        self.serve_until(ch, &[], &mut kept, |c| {
            settled_with(0)(c) && c.local_commitment_number().0 >= from + 2
        })
        .await;
    }

    /// commitment_signed for Mallory's own changes, when she has some and may sign.
    pub async fn sign_if_needed(&mut self, ch: &mut Channel) {
        if ch.has_changes_to_sign() && !ch.awaiting_revoke() {
            let m = ch.send_commitment().unwrap();
            self.w.send(&Message::CommitmentSigned(m)).await.unwrap();
        }
    }
}

/// Both commitments hold `n` HTLCs and no dance is under way.
pub fn settled_with(n: usize) -> impl Fn(&Channel) -> bool {
    move |ch: &Channel| {
        ch.view(ViewOf::CurrentLocal).htlcs.len() == n
            && ch.remote_commitment().htlcs.len() == n
            && !ch.awaiting_revoke()
            && !ch.has_changes_to_sign()
    }
}

/// A hub whose wallet holds one matured 50 BTC coinbase (for its anchor fees) and
/// Mallory with a usable anchor channel to it that she funded, `push_msat` of it given
/// to the hub.
pub async fn hub_with_coins_and_anchor_channel(
    seed: u8,
    push_msat: u64,
) -> (
    Arc<Devnet>,
    tempfile::TempDir,
    Arc<hub::node::Node>,
    Mallory,
    channel::state::Channel,
) {
    let devnet = Arc::new(Devnet::in_memory());
    let dir = tempfile::tempdir().unwrap();
    let hub = start(&devnet, dir.path(), None).await;
    let addr = hub.new_address().await.unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    let mut m = Mallory::new(&devnet, &hub).await; // mines 101 blocks
    wait_until("the hub's coinbase matured", || async {
        hub.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;
    let secrets = ChannelSecrets::from_seed(&[seed; 32]);
    let mut open = Mallory::open_msg(&secrets, seed);
    open.push_msat = push_msat;
    open.channel_type = Some(ChannelType::AnchorsZeroFeeHtlcTx.to_bytes());
    let ch = m.open_usable_as(&devnet, &hub, secrets, open).await;
    (devnet, dir, hub, m, ch)
}
