//! The node: peers, channels, the chain and the wallet, tied together.
//!
//! Every channel sits behind its own lock. A message for a channel is applied to the
//! channel's state machine, the new state (with any revoked commitment) is committed to the
//! database through group commit, and only then are the replies sent: no message ever
//! leaves before the state it depends on is durable.

mod anchor_cpfp;
mod channel_close;
mod channel_open;
mod channel_updates;
mod channels;
mod commitment_fees;
mod events;
mod forward_history;
mod funding_fees;
mod gossip;
mod htlc_tx_fees;
mod incoming;
mod invoices;
mod justice_fees;
mod merchants;
mod mpp;
mod onchain;
mod pay;
mod peers;
mod reorg;
mod route;
mod sweep_batch;
mod sweep_fees;
mod sweeps;
mod tower_subscriptions;
mod towers;
pub mod webhook_target;

pub use anchor_cpfp::DEFAULT_FEE_BUDGET_PERCENT;
pub use forward_history::DEFAULT_FAILED_FORWARD_RETENTION;
pub use funding_fees::DEFAULT_FUNDING_FEE_BUDGET_PERCENT;
pub use invoices::PaymentLimits;
pub use mpp::DEFAULT_MPP_TIMEOUT;
pub use sweep_batch::DEFAULT_SWEEP_BATCH_MAX_INPUTS;
pub use towers::{DEFAULT_TOWER_PENALTY_FEERATE, PRUNE_CONFIRMATIONS};

pub use channels::{ChannelStatus, ChannelSummary};
pub use events::{
    signature_header, DeliveryRecord, RetryPolicy, WebhookRecord, DEFAULT_WEBHOOK_CONCURRENCY,
    DEFAULT_WEBHOOK_CONCURRENCY_PER_OWNER, EVENT_TYPES, MAX_PENDING_TEST_DELIVERIES,
};
pub use merchants::{
    MerchantQuotas, MerchantRecord, DEFAULT_MERCHANT_MAX_CAPACITY_SAT,
    DEFAULT_MERCHANT_MAX_CHANNELS, DEFAULT_MERCHANT_MAX_WEBHOOKS,
};
pub use pay::{codes, now_ms, ForwardRecord, ForwardingPolicy, InvoiceRecord, PaymentRecord};

use crate::store::{GroupCommit, Store, StoreError};
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::Network;
use chain::wallet::Wallet;
use chain::ChainSource;
use channel::keys::{secp, ChannelSecrets};
use channel::msgs::Message;
use channel::{ChannelId, PaymentHash, PaymentPreimage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Mutex};

/// What a node is for: the same code runs both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The hub: accepts any peer and channels from anyone.
    Hub,
    /// A merchant's or user's node: its only peer is its hub (when `hub` is set, nobody
    /// else may connect to it).
    Light {
        /// The hub's node id.
        hub: Option<PublicKey>,
    },
}

/// How a node is set up.
#[derive(Clone)]
pub struct NodeConfig {
    /// Hub or light node.
    pub role: Role,
    /// Where the seed (mode 0600) and the SQLite file live.
    pub data_dir: PathBuf,
    /// `sqlite://...` or `postgres://...`; defaults to `sqlite://<data_dir>/hub.db`.
    pub database_url: Option<String>,
    /// Address to accept peers on (port 0 picks one).
    pub listen: SocketAddr,
    /// The chain.
    pub chain: Arc<dyn ChainSource>,
    /// The chain's network (for addresses and the chain hash in init).
    pub network: Network,
    /// Confirmations before a channel is usable (BOLT 2 minimum_depth).
    pub minimum_depth: u32,
    /// How often to poll the chain tip.
    pub chain_poll: Duration,
    /// Fees and CLTV delta for forwarding (announced to peers in channel_update).
    pub policy: ForwardingPolicy,
    /// How webhook deliveries are retried.
    pub webhook_retry: RetryPolicy,
    /// Non-public addresses webhooks may still be delivered to (see
    /// [`webhook_target`]); empty: public addresses only.
    pub webhook_allow_ips: Vec<std::net::IpAddr>,
    /// Watchtowers (base URLs) that get an appointment for every revoked commitment.
    pub towers: Vec<String>,
    /// On-chain coins kept for each anchor channel (they pay its HTLC transactions'
    /// fees): an anchor channel is proposed or accepted only when the wallet holds this
    /// much per anchor channel, the new one included; static_remotekey otherwise. 0: no
    /// reserve.
    pub anchor_reserve_sat: u64,
    /// The most, in percent of what a transaction recovers for us, that its fee may
    /// take: the child paying for an anchor commitment (of what the commitment holds for
    /// us), the wallet's fee on an anchor channel's HTLC transaction (of the HTLC), and
    /// our own sweeps and HTLC claims (of the output). Justice may take the whole output.
    pub fee_budget_percent: u64,
    /// The most, in percent of a channel's capacity, the child paying for our stuck
    /// funding transaction may take (less the funding's own fee); 0: never bumped.
    pub funding_fee_budget_percent: u64,
    /// The most inputs one transaction sweeping our outputs without a deadline may
    /// have (`sweep_batch`); 0 or 1: each is swept alone.
    pub sweep_batch_max_inputs: usize,
    /// The fee rate of the penalties pre-signed for watchtowers (a tower cannot bump
    /// them), sat per 1000 weight units.
    pub tower_penalty_feerate: u32,
    /// Inbound peer connections at once (handshakes included); beyond, a new one is
    /// closed at once.
    pub max_inbound: usize,
    /// Inbound peer connections at once from one IP address.
    pub max_inbound_per_ip: usize,
    /// How long the parts of a multi-part payment to one of our invoices are held while
    /// the rest is awaited; then they all fail with `mpp_timeout`.
    pub mpp_timeout: Duration,
    /// What each merchant may hold.
    pub merchant_quotas: MerchantQuotas,
    /// Webhook deliveries under way at once.
    pub webhook_concurrency: usize,
    /// Webhook deliveries under way at once for one owner (a merchant, or the operator).
    pub webhook_concurrency_per_owner: usize,
    /// Failed forwards kept (the oldest beyond are forgotten; settled ones are kept).
    pub failed_forward_retention: usize,
    /// How long an invoice that expired unpaid is kept before it is forgotten.
    pub unpaid_invoice_retention: Duration,
    /// The name in our node_announcement (UTF-8, at most 32 bytes).
    pub alias: String,
    /// The colour in our node_announcement.
    pub color: [u8; 3],
    /// The addresses our node_announcement offers for connections (none by default:
    /// the listening address is often not reachable from outside).
    pub announce_addresses: Vec<channel::gossip::NetAddress>,
}

impl NodeConfig {
    /// A configuration with the defaults for everything but what must be given.
    pub fn new(
        role: Role,
        data_dir: PathBuf,
        chain: Arc<dyn ChainSource>,
        network: Network,
    ) -> NodeConfig {
        NodeConfig {
            role,
            data_dir,
            database_url: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            chain,
            network,
            minimum_depth: 3,
            chain_poll: Duration::from_millis(200),
            policy: ForwardingPolicy::default(),
            webhook_retry: RetryPolicy::default(),
            webhook_allow_ips: Vec::new(),
            towers: Vec::new(),
            anchor_reserve_sat: DEFAULT_ANCHOR_RESERVE_SAT,
            fee_budget_percent: DEFAULT_FEE_BUDGET_PERCENT,
            funding_fee_budget_percent: DEFAULT_FUNDING_FEE_BUDGET_PERCENT,
            sweep_batch_max_inputs: DEFAULT_SWEEP_BATCH_MAX_INPUTS,
            tower_penalty_feerate: DEFAULT_TOWER_PENALTY_FEERATE,
            max_inbound: DEFAULT_MAX_INBOUND,
            max_inbound_per_ip: DEFAULT_MAX_INBOUND_PER_IP,
            mpp_timeout: mpp::DEFAULT_MPP_TIMEOUT,
            merchant_quotas: MerchantQuotas::default(),
            webhook_concurrency: events::DEFAULT_WEBHOOK_CONCURRENCY,
            webhook_concurrency_per_owner: events::DEFAULT_WEBHOOK_CONCURRENCY_PER_OWNER,
            failed_forward_retention: forward_history::DEFAULT_FAILED_FORWARD_RETENTION,
            unpaid_invoice_retention: invoices::DEFAULT_UNPAID_INVOICE_RETENTION,
            alias: DEFAULT_ALIAS.to_string(),
            color: DEFAULT_COLOR,
            announce_addresses: Vec::new(),
        }
    }
}

/// The default of [`NodeConfig::alias`].
pub const DEFAULT_ALIAS: &str = "hub";
/// The default of [`NodeConfig::color`].
pub const DEFAULT_COLOR: [u8; 3] = [0x3a, 0x7b, 0xd5];
/// The default of [`NodeConfig::anchor_reserve_sat`]: LDK's default per-channel reserve.
pub const DEFAULT_ANCHOR_RESERVE_SAT: u64 = 25_000;
/// The default of [`NodeConfig::max_inbound`].
pub const DEFAULT_MAX_INBOUND: usize = 512;
/// The default of [`NodeConfig::max_inbound_per_ip`].
pub const DEFAULT_MAX_INBOUND_PER_IP: usize = 16;

/// Node-level failures.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The wallet failed (seed file, coin selection, ...).
    #[error("wallet: {0}")]
    Wallet(#[from] chain::wallet::WalletError),
    /// The chain back-end failed.
    #[error("chain: {0}")]
    Chain(#[from] chain::ChainError),
    /// Peer connection failed.
    #[error("peer: {0}")]
    Peer(#[from] crate::peer::PeerError),
    /// The channel state machine refused.
    #[error("channel: {0}")]
    Channel(#[from] channel::state::ChannelError),
    /// A peer's announcement_signatures or gossip query did not check out.
    #[error("gossip: {0}")]
    Gossip(#[from] channel::gossip::GossipError),
    /// No such channel.
    #[error("unknown channel")]
    UnknownChannel,
    /// Not connected to that peer.
    #[error("peer not connected")]
    NotConnected,
    /// The request does not fit the channel's state.
    #[error("{0}")]
    Invalid(&'static str),
    /// A payment failed.
    #[error("payment failed: {0}")]
    PaymentFailed(String),
    /// The request is malformed or out of range.
    #[error("{0}")]
    BadRequest(String),
    /// No channel leads to the payee.
    #[error("no route to the payee")]
    NoRoute,
    /// Every route to the payee costs more, or locks funds longer, than allowed.
    #[error("{0}")]
    RouteOverLimit(String),
    /// The invoice has expired.
    #[error("the invoice has expired")]
    InvoiceExpired,
    /// No channel has the balance for the payment.
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    /// A merchant's quota would be exceeded.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// No such object (or not the caller's).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with what exists.
    #[error("{0}")]
    Conflict(&'static str),
    /// Stored data could not be read back.
    #[error("corrupt stored state: {0}")]
    Corrupt(String),
    /// A webhook URL whose destination the hub does not deliver to.
    #[error(transparent)]
    WebhookTarget(#[from] webhook_target::TargetError),
    /// A peer's message was refused for one channel (or channel being opened): the peer
    /// gets an `error` for that channel id and the connection stays up (BOLT 1).
    #[error("{reason}")]
    ChannelRefused {
        /// The channel (or temporary channel) id the `error` names.
        channel_id: ChannelId,
        /// What the `error` says.
        reason: String,
    },
}

/// A running node.
pub struct Node {
    config: NodeConfig,
    node_key: SecretKey,
    seed: Vec<u8>,
    store: Store,
    group: GroupCommit,
    wallet: Mutex<Wallet>,
    channels: Mutex<HashMap<ChannelId, Arc<Mutex<channels::ChannelEntry>>>>,
    pending_opens: Mutex<HashMap<ChannelId, channel_open::PendingOpen>>,
    /// Each connected peer's outgoing queue (bounded: `peers::PEER_QUEUE`).
    peers: Mutex<HashMap<PublicKey, mpsc::Sender<Message>>>,
    peer_addrs: Mutex<HashMap<PublicKey, SocketAddr>>,
    /// The `init` features of each connected peer.
    peer_features: std::sync::Mutex<HashMap<PublicKey, Vec<u8>>>,
    pay: std::sync::Mutex<pay::PayState>,
    waiters: Mutex<HashMap<PaymentHash, oneshot::Sender<Result<PaymentPreimage, String>>>>,
    deliveries_wake: Arc<tokio::sync::Notify>,
    towers: std::sync::Mutex<towers::TowerBook>,
    towers_wake: Arc<tokio::sync::Notify>,
    /// Where penalties held by towers pay (one of the wallet's addresses, kept).
    penalty_script: bitcoin::ScriptBuf,
    /// Key of the tags on tower appointments.
    tag_key: [u8; 32],
    open_waiters: Mutex<HashMap<ChannelId, oneshot::Sender<Result<ChannelId, String>>>>,
    /// Serializes channel index allocation.
    channel_index_lock: Mutex<()>,
    /// Per peer, the lock ordering the start and end of its connections.
    peer_sessions: std::sync::Mutex<HashMap<PublicKey, Arc<Mutex<()>>>>,
    /// Webhook deliveries under way.
    deliveries_in_flight: std::sync::Mutex<events::DeliveriesInFlight>,
    /// Held across a merchant quota's check and the write it allows (webhooks, keys).
    quota_lock: Mutex<()>,
    /// One per merchant, held across a channel open's quota check and the open.
    merchant_open_locks: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    fundee_accepts: Mutex<HashMap<ChannelId, channel::msgs::AcceptChannel>>,
    unsigned_funder: Mutex<HashMap<ChannelId, (ChannelId, channels::ChannelEntry)>>,
    synced_blocks: std::sync::atomic::AtomicU64,
    /// Transactions sweeping several of our outputs without a deadline, until they are
    /// deep (`sweep_batch`).
    sweep_batches: std::sync::Mutex<Vec<sweep_batch::SweepBatch>>,
    /// Our node_announcement, made once per run when first needed.
    node_announcement: std::sync::Mutex<Option<channel::msgs::NodeAnnouncement>>,
    /// Peers whose connection has had our gossip (after their gossip_timestamp_filter).
    gossip_peers: std::sync::Mutex<std::collections::HashSet<PublicKey>>,
    listen_addr: SocketAddr,
    /// Every background task (listener, peers, chain follower, workers): aborted by
    /// `shutdown`, so a stopped node is silent even when its process lives on.
    tasks: std::sync::Mutex<Tasks>,
}

/// The node's background tasks, and whether it is stopping (then no new task starts).
#[derive(Default)]
struct Tasks {
    set: tokio::task::JoinSet<()>,
    stopping: bool,
}

/// Block heights of short channel id aliases: above any real chain's for centuries, and
/// the range LND uses.
const ALIAS_BLOCKS: std::ops::Range<u64> = 16_000_000..16_250_000;

fn tagged_hash(seed: &[u8], tag: &[u8], index: u64) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(seed);
    e.input(tag);
    e.input(&index.to_be_bytes());
    sha256::Hash::from_engine(e).to_byte_array()
}

impl Node {
    /// The short channel id alias (option_scid_alias) of the channel with index `index`:
    /// sent in channel_ready, derived from the seed (so never stored), with a block
    /// height no chain has.
    pub(super) fn scid_alias(&self, index: u64) -> u64 {
        let h = tagged_hash(&self.seed, b"scid_alias", index);
        let n = |b: &[u8]| b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
        let block = ALIAS_BLOCKS.start + n(&h[0..4]) % (ALIAS_BLOCKS.end - ALIAS_BLOCKS.start);
        (block << 40) | (n(&h[4..7]) << 16) | n(&h[7..9])
    }

    /// Opens the data directory and database, loads the channels, starts listening for
    /// peers and following the chain.
    pub async fn start(config: NodeConfig) -> Result<Arc<Node>, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::Corrupt(e.to_string()))?;
        let seed_path = config.data_dir.join("seed");
        let seed = chain::wallet::load_or_create_seed(&seed_path)?;
        let wallet = Wallet::from_seed(&seed, config.network)?;
        let node_key =
            SecretKey::from_slice(&tagged_hash(&seed, b"node", 0)).expect("hash is a valid key");
        let url = config
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", config.data_dir.join("hub.db").display()));
        let store = Store::open(&url).await?;
        let mut wallet = wallet;
        let penalty_script = match store.meta("penalty_script").await? {
            Some(s) => bitcoin::ScriptBuf::from_bytes(s),
            None => {
                let s = wallet.new_address()?.script_pubkey();
                store
                    .write(&[crate::store::Write::Meta {
                        key: "penalty_script".into(),
                        value: s.to_bytes(),
                    }])
                    .await?;
                s
            }
        };
        let tag_key = tagged_hash(&seed, b"tower tag", 0);
        let group = GroupCommit::start(store.clone());
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| NodeError::Peer(e.into()))?;
        let listen_addr = listener
            .local_addr()
            .map_err(|e| NodeError::Peer(e.into()))?;
        let node = Arc::new(Node {
            config,
            node_key,
            seed,
            store,
            group,
            wallet: Mutex::new(wallet),
            channels: Mutex::new(HashMap::new()),
            pending_opens: Mutex::new(HashMap::new()),
            peers: Mutex::new(HashMap::new()),
            peer_addrs: Mutex::new(HashMap::new()),
            peer_features: std::sync::Mutex::new(HashMap::new()),
            pay: std::sync::Mutex::new(pay::PayState::default()),
            waiters: Mutex::new(HashMap::new()),
            deliveries_wake: Arc::new(tokio::sync::Notify::new()),
            towers: std::sync::Mutex::new(towers::TowerBook::default()),
            towers_wake: Arc::new(tokio::sync::Notify::new()),
            penalty_script,
            tag_key,
            open_waiters: Mutex::new(HashMap::new()),
            channel_index_lock: Mutex::new(()),
            quota_lock: Mutex::new(()),
            deliveries_in_flight: Default::default(),
            peer_sessions: Default::default(),
            merchant_open_locks: std::sync::Mutex::new(HashMap::new()),
            fundee_accepts: Mutex::new(HashMap::new()),
            unsigned_funder: Mutex::new(HashMap::new()),
            synced_blocks: std::sync::atomic::AtomicU64::new(0),
            sweep_batches: std::sync::Mutex::new(Vec::new()),
            node_announcement: std::sync::Mutex::new(None),
            gossip_peers: std::sync::Mutex::new(std::collections::HashSet::new()),
            listen_addr,
            tasks: Default::default(),
        });
        crate::monitor::records::convert_legacy_revoked(&node.store).await?;
        node.load_channels().await?;
        node.load_sweep_batches().await?;
        node.undo_closes_reorganised_while_away().await;
        node.fail_unsent_forwards().await;
        node.spawn_delivery_worker();
        node.spawn_mpp_timer();
        node.start_towers().await?;
        node.clone().spawn_listener(listener);
        node.restore_peers().await?;
        node.clone().spawn_chain_follower().await?;
        Ok(node)
    }

    /// Stops cleanly: every state is already durable (nothing is sent before its commit),
    /// so this stops every task (peers are disconnected, the listener closes, the chain
    /// is no longer followed) and closes the database.
    pub async fn shutdown(&self) {
        let mut set = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            tasks.stopping = true;
            std::mem::take(&mut tasks.set)
        };
        set.abort_all();
        // Wait until every task is gone, so none touches the store after it closes.
        while set.join_next().await.is_some() {}
        // Writers end once their queues have no sender left.
        self.peers.lock().await.clear();
        self.store.close().await;
    }

    /// Runs `task` in the background until it ends or the node shuts down (a node that
    /// is stopping starts nothing new).
    pub(super) fn spawn_task(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if tasks.stopping {
            return;
        }
        // Reap the finished ones so the set does not grow with every connection.
        while tasks.set.try_join_next().is_some() {}
        tasks.set.spawn(task);
    }

    /// Database transactions committed so far (group commit folds many writes into one).
    pub fn db_transactions(&self) -> u64 {
        self.group.transactions()
    }

    /// This node's id (BOLT 8 static key).
    pub fn node_id(&self) -> PublicKey {
        PublicKey::from_secret_key(secp(), &self.node_key)
    }

    /// The name in our node_announcement.
    pub fn alias(&self) -> &str {
        &self.config.alias
    }

    /// Where peers can connect.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The chain's network.
    pub fn network(&self) -> Network {
        self.config.network
    }

    /// The chain this node uses.
    pub fn chain(&self) -> &Arc<dyn ChainSource> {
        &self.config.chain
    }

    fn chain_hash(&self) -> [u8; 32] {
        bitcoin::constants::ChainHash::using_genesis_block(self.config.network).to_bytes()
    }

    /// The secrets of the channel with key index `index`.
    fn channel_secrets(&self, index: u64) -> ChannelSecrets {
        ChannelSecrets::from_seed(&tagged_hash(&self.seed, b"channel", index))
    }

    /// A fresh address of the node's on-chain wallet.
    pub async fn new_address(&self) -> Result<bitcoin::Address, NodeError> {
        Ok(self.wallet.lock().await.new_address()?)
    }

    /// The on-chain wallet's confirmed, spendable balance.
    pub async fn wallet_balance(&self) -> bitcoin::Amount {
        self.wallet.lock().await.balance().spendable
    }

    /// Holds incoming HTLCs for `hash`: they are neither fulfilled nor failed off-chain
    /// until [`Node::release`] (a "hold invoice"). On chain, a known preimage is used.
    pub async fn hold(&self, hash: PaymentHash) {
        self.pay.lock().expect("pay lock").held.insert(hash);
    }

    /// Stops holding `hash`: its HTLCs are settled (or failed) at the next update.
    pub async fn release(&self, hash: &PaymentHash) {
        self.pay.lock().expect("pay lock").held.remove(hash);
        let ids: Vec<ChannelId> = self.channels.lock().await.keys().copied().collect();
        for id in ids {
            // Advancing settles the released HTLCs.
            let _ = self.with_channel(&id, |_, _| Ok(())).await;
        }
    }

    /// Registers a preimage: incoming HTLCs for its hash are fulfilled.
    pub async fn add_preimage(&self, preimage: PaymentPreimage) -> Result<PaymentHash, NodeError> {
        let hash = preimage.payment_hash();
        self.group
            .commit(vec![pay::preimage_write(&preimage)])
            .await?;
        self.pay
            .lock()
            .expect("pay lock")
            .preimages
            .insert(hash, preimage);
        Ok(hash)
    }
}
