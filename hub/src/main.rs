//! `hub`: runs a node (the hub, or a merchant's/user's light node) on the embedded devnet
//! chain and an SQLite file by default.

use anyhow::Context;
use bitcoin::hashes::{sha256, Hash};
use chain::rpc::client::{RpcClient, RpcCredentials};
use chain::ChainSource;
use clap::Parser;
use hub::api::{router, App};
use hub::node::{Node, NodeConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A Lightning-style payment-channel node.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: Args,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Runs a devnet, a hub, a merchant, two users and a watchtower in this process and
    /// narrates channels opening, payments, a cooperative close, a force close and a
    /// cheater punished by the tower, checking every balance.
    Demo {
        /// Where the parties keep their files (default: a fresh temporary directory).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Keep the files afterwards.
        #[arg(long)]
        keep: bool,
    },
}

/// Running a node.
#[derive(clap::Args, Debug)]
struct Args {
    /// Data directory: seed (mode 0600), SQLite database, embedded devnet chain.
    #[arg(long, env = "HUB_DATA_DIR", default_value = "./hub-data")]
    data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data dir).
    #[arg(long, env = "HUB_DATABASE_URL")]
    database_url: Option<String>,
    /// Where peers connect (BOLT 8).
    #[arg(long, env = "HUB_LISTEN", default_value = "127.0.0.1:9735")]
    listen: SocketAddr,
    /// Where the REST API listens.
    #[arg(long, env = "HUB_API_LISTEN", default_value = "127.0.0.1:8080")]
    api_listen: SocketAddr,
    /// Use Bitcoin Core at this JSON-RPC URL instead of the embedded devnet.
    #[arg(long, env = "HUB_BITCOIND_URL")]
    bitcoind_url: Option<String>,
    /// bitcoind RPC user.
    #[arg(long, env = "HUB_BITCOIND_USER", default_value = "")]
    bitcoind_user: String,
    /// bitcoind RPC password.
    #[arg(
        long,
        env = "HUB_BITCOIND_PASSWORD",
        default_value = "",
        hide_env_values = true,
        conflicts_with = "bitcoind_password_file"
    )]
    bitcoind_password: String,
    /// A file holding the bitcoind RPC password (kept out of process arguments).
    #[arg(long, env = "HUB_BITCOIND_PASSWORD_FILE")]
    bitcoind_password_file: Option<PathBuf>,
    /// Network of the bitcoind back-end: regtest, signet, testnet or bitcoin.
    #[arg(long, env = "HUB_NETWORK", default_value = "regtest")]
    network: bitcoin::Network,
    /// Where the embedded devnet serves Bitcoin Core's JSON-RPC (user "devnet", password
    /// in <data-dir>/devnet/rpcpassword), so blocks can be mined with curl.
    #[arg(long, env = "HUB_DEVNET_RPC", default_value = "127.0.0.1:18443")]
    devnet_rpc: SocketAddr,
    /// Confirmations before a channel is usable (default 3 on devnet/regtest, 6 otherwise).
    #[arg(long, env = "HUB_MINIMUM_DEPTH")]
    minimum_depth: Option<u32>,
    /// `hub` accepts any peer; `light` is a merchant's or user's node whose only peer is
    /// its hub (`--hub-node-id`).
    #[arg(long, env = "HUB_ROLE", default_value = "hub", value_parser = ["hub", "light"])]
    role: String,
    /// With `--role light`: the hub's node id; other peers are refused.
    #[arg(long, env = "HUB_HUB_NODE_ID")]
    hub_node_id: Option<bitcoin::secp256k1::PublicKey>,
    /// Operator API key (default: generated at first start and printed once). Visible in
    /// `ps`: prefer --api-key-file.
    #[arg(
        long,
        env = "HUB_API_KEY",
        hide_env_values = true,
        conflicts_with = "api_key_file"
    )]
    api_key: Option<String>,
    /// A file holding the operator API key (kept out of process arguments).
    #[arg(long, env = "HUB_API_KEY_FILE")]
    api_key_file: Option<PathBuf>,
    /// Forwarding fee: fixed part per HTLC.
    #[arg(long, env = "HUB_FEE_BASE_MSAT", default_value_t = 1000)]
    fee_base_msat: u32,
    /// Forwarding fee: proportional part, in millionths of the amount.
    #[arg(long, env = "HUB_FEE_PROPORTIONAL_MILLIONTHS", default_value_t = 100)]
    fee_proportional_millionths: u32,
    /// Blocks between an incoming HTLC's expiry and the outgoing one's when forwarding.
    #[arg(long, env = "HUB_CLTV_EXPIRY_DELTA", default_value_t = 40)]
    cltv_expiry_delta: u16,
    /// Watchtower URLs (repeat the flag, or comma-separate in the variable): each gets an
    /// appointment for every commitment a peer revokes.
    #[arg(long = "tower-url", env = "HUB_TOWER_URLS", value_delimiter = ',')]
    tower_urls: Vec<String>,
    /// On-chain satoshis kept per anchor channel for the fees of its HTLC transactions;
    /// without them a channel is opened or accepted as static_remotekey (0: no reserve).
    #[arg(long, env = "HUB_ANCHOR_RESERVE_SAT", default_value_t = hub::node::DEFAULT_ANCHOR_RESERVE_SAT)]
    anchor_reserve_sat: u64,
    /// The most, in percent of what a transaction recovers, its fee may take: the child
    /// paying for an anchor commitment through its anchor (of what the commitment holds
    /// for us), the wallet's fee on an anchor channel's HTLC transaction (of the HTLC),
    /// and our own sweeps and HTLC claims (of the output).
    #[arg(long, env = "HUB_FEE_BUDGET_PERCENT", default_value_t = hub::node::DEFAULT_FEE_BUDGET_PERCENT, value_parser = clap::value_parser!(u64).range(1..=100))]
    fee_budget_percent: u64,
    /// The most, in percent of a channel's capacity, that the child paying for our stuck
    /// funding transaction (through its change) may take, less what the funding paid
    /// itself. Nothing is at risk while a funding waits, so this is kept small.
    #[arg(long, env = "HUB_FUNDING_FEE_BUDGET_PERCENT", default_value_t = hub::node::DEFAULT_FUNDING_FEE_BUDGET_PERCENT, value_parser = clap::value_parser!(u64).range(0..=100))]
    funding_fee_budget_percent: u64,
    /// The most inputs one transaction sweeping the hub's outputs without a deadline
    /// (to_local, to_remote, HTLC transaction outputs, from every channel) may have;
    /// 0 or 1 sweeps each alone.
    #[arg(long, env = "HUB_SWEEP_BATCH_MAX_INPUTS", default_value_t = hub::node::DEFAULT_SWEEP_BATCH_MAX_INPUTS as u64, value_parser = clap::value_parser!(u64).range(0..=1000))]
    sweep_batch_max_inputs: u64,
    /// Fee rate, in sat per 1000 weight units, of the penalties pre-signed for
    /// watchtowers (a tower cannot bump them; the default is LND's 10 sat/vB).
    #[arg(long, env = "HUB_TOWER_PENALTY_FEERATE", default_value_t = hub::node::DEFAULT_TOWER_PENALTY_FEERATE, value_parser = clap::value_parser!(u32).range(253..=100_000))]
    tower_penalty_feerate: u32,
    /// Inbound peer connections at once (handshakes included); beyond, new ones are
    /// closed at once.
    #[arg(long, env = "HUB_MAX_INBOUND", default_value_t = hub::node::DEFAULT_MAX_INBOUND)]
    max_inbound: usize,
    /// Inbound peer connections at once from one IP address.
    #[arg(long, env = "HUB_MAX_INBOUND_PER_IP", default_value_t = hub::node::DEFAULT_MAX_INBOUND_PER_IP)]
    max_inbound_per_ip: usize,
    /// Seconds the parts of a multi-part payment to one of our invoices are held while
    /// the rest is awaited (BOLT 4 asks for at least 60); then all fail with mpp_timeout.
    #[arg(long, env = "HUB_MPP_TIMEOUT_SECS", default_value_t = 60)]
    mpp_timeout_secs: u64,
    /// Channels the hub funds to one merchant's node (not yet closed).
    #[arg(long, env = "HUB_MERCHANT_MAX_CHANNELS", default_value_t = hub::node::DEFAULT_MERCHANT_MAX_CHANNELS)]
    merchant_max_channels: usize,
    /// Satoshis the hub's channels to one merchant's node may hold together.
    #[arg(long, env = "HUB_MERCHANT_MAX_CAPACITY_SAT", default_value_t = hub::node::DEFAULT_MERCHANT_MAX_CAPACITY_SAT)]
    merchant_max_capacity_sat: u64,
    /// Webhooks one merchant may register.
    #[arg(long, env = "HUB_MERCHANT_MAX_WEBHOOKS", default_value_t = hub::node::DEFAULT_MERCHANT_MAX_WEBHOOKS)]
    merchant_max_webhooks: usize,
    /// Seconds an invoice that expired unpaid is kept before it is forgotten.
    #[arg(
        long,
        env = "HUB_UNPAID_INVOICE_RETENTION_SECS",
        default_value_t = 86_400
    )]
    unpaid_invoice_retention_secs: u64,
    /// Requests per second a merchant key may make on average (beyond: 429 rate_limited).
    #[arg(long, env = "HUB_MERCHANT_RATE_PER_SEC", default_value_t = hub::api::DEFAULT_MERCHANT_RATE_PER_SEC)]
    merchant_rate_per_sec: u32,
    /// Requests a merchant key may make at once after a quiet time.
    #[arg(long, env = "HUB_MERCHANT_RATE_BURST", default_value_t = hub::api::DEFAULT_MERCHANT_RATE_BURST)]
    merchant_rate_burst: u32,
    /// Webhook deliveries under way at once.
    #[arg(long, env = "HUB_WEBHOOK_CONCURRENCY", default_value_t = hub::node::DEFAULT_WEBHOOK_CONCURRENCY)]
    webhook_concurrency: usize,
    /// Webhook deliveries under way at once for one merchant (or the operator).
    #[arg(long, env = "HUB_WEBHOOK_CONCURRENCY_PER_MERCHANT", default_value_t = hub::node::DEFAULT_WEBHOOK_CONCURRENCY_PER_OWNER)]
    webhook_concurrency_per_merchant: usize,
    /// Failed forwards kept for `GET /v1/forwards`; the oldest beyond are forgotten
    /// (settled ones are all kept).
    #[arg(long, env = "HUB_FAILED_FORWARD_RETENTION", default_value_t = hub::node::DEFAULT_FAILED_FORWARD_RETENTION)]
    failed_forward_retention: usize,
    /// The node's name in its node_announcement (at most 32 bytes of UTF-8).
    #[arg(long, env = "HUB_ALIAS", default_value = hub::node::DEFAULT_ALIAS, value_parser = parse_alias)]
    alias: String,
    /// The node's colour in its node_announcement, as six hex digits (RRGGBB).
    #[arg(long, env = "HUB_COLOR", default_value = "3a7bd5", value_parser = parse_color)]
    color: [u8; 3],
    /// An address (ip:port, [ipv6]:port or host:port) the node_announcement offers for
    /// connections; repeat for several. None by default.
    #[arg(
        long = "announce-addr",
        env = "HUB_ANNOUNCE_ADDR",
        value_delimiter = ','
    )]
    announce_addr: Vec<channel::gossip::NetAddress>,
    /// Seconds before the first retry of a failed webhook delivery (doubled after each).
    #[arg(long, env = "HUB_WEBHOOK_RETRY_SECS", default_value_t = 5)]
    webhook_retry_secs: u64,
    /// A non-public address webhooks may be delivered to (repeatable; by default only
    /// public addresses are, so a merchant cannot aim the hub at its own network).
    #[arg(long, env = "HUB_WEBHOOK_ALLOW_IPS", value_delimiter = ',')]
    webhook_allow_ip: Vec<std::net::IpAddr>,
}

fn random_hex(bytes: usize) -> String {
    use bitcoin::secp256k1::rand::RngCore;
    let mut b = vec![0u8; bytes];
    bitcoin::secp256k1::rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Writes a secret file readable only by its owner.
fn write_secret(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The demo narrates on stdout; only warnings go to the log unless RUST_LOG says more.
    let default_filter = if cli.command.is_some() {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    match cli.command {
        Some(Command::Demo { data_dir, keep }) => {
            hub::demo::run(hub::demo::DemoOptions { data_dir, keep }).await
        }
        None => run_node(cli.node).await,
    }
}

async fn run_node(args: Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;

    let (chain, network, depth): (Arc<dyn ChainSource>, bitcoin::Network, u32) =
        match &args.bitcoind_url {
            Some(url) => {
                let client = RpcClient::new(
                    url.clone(),
                    RpcCredentials::UserPass(
                        args.bitcoind_user.clone(),
                        match &args.bitcoind_password_file {
                            Some(f) => read_secret_file(f)?,
                            None => args.bitcoind_password.clone(),
                        },
                    ),
                )?;
                let depth = if args.network == bitcoin::Network::Regtest {
                    3
                } else {
                    6
                };
                (Arc::new(client), args.network, depth)
            }
            None => {
                let dir = args.data_dir.join("devnet");
                std::fs::create_dir_all(&dir)?;
                let devnet = chain::Devnet::open(&dir)
                    .with_context(|| format!("opening devnet in {}", dir.display()))?;
                let pw_path = dir.join("rpcpassword");
                if !pw_path.exists() {
                    write_secret(&pw_path, &random_hex(16))?;
                }
                let password = std::fs::read_to_string(&pw_path)?.trim().to_string();
                let server = chain::rpc::server::serve(
                    devnet.clone(),
                    args.devnet_rpc,
                    chain::rpc::server::RpcAuth {
                        user: "devnet".into(),
                        password,
                    },
                )
                .await
                .with_context(|| format!("serving devnet RPC on {}", args.devnet_rpc))?;
                println!(
                "devnet chain: Bitcoin Core JSON-RPC on http://{} (user devnet, password in {})",
                server.addr,
                pw_path.display()
            );
                std::mem::forget(server);
                (Arc::new(devnet), bitcoin::Network::Regtest, 3)
            }
        };
    let role = match args.role.as_str() {
        "light" => hub::node::Role::Light {
            hub: args.hub_node_id,
        },
        _ => hub::node::Role::Hub,
    };
    let node = Node::start(NodeConfig {
        role,
        data_dir: args.data_dir.clone(),
        database_url: args.database_url.clone(),
        listen: args.listen,
        chain,
        network,
        minimum_depth: args.minimum_depth.unwrap_or(depth),
        chain_poll: Duration::from_millis(500),
        policy: hub::node::ForwardingPolicy {
            fee_base_msat: args.fee_base_msat,
            fee_proportional_millionths: args.fee_proportional_millionths,
            cltv_expiry_delta: args.cltv_expiry_delta,
        },
        webhook_allow_ips: args.webhook_allow_ip.clone(),
        webhook_retry: hub::node::RetryPolicy {
            base: Duration::from_secs(args.webhook_retry_secs.max(1)),
        },
        towers: args.tower_urls.clone(),
        anchor_reserve_sat: args.anchor_reserve_sat,
        fee_budget_percent: args.fee_budget_percent,
        funding_fee_budget_percent: args.funding_fee_budget_percent,
        sweep_batch_max_inputs: args.sweep_batch_max_inputs as usize,
        tower_penalty_feerate: args.tower_penalty_feerate,
        max_inbound: args.max_inbound,
        max_inbound_per_ip: args.max_inbound_per_ip,
        mpp_timeout: Duration::from_secs(args.mpp_timeout_secs.max(1)),
        webhook_concurrency: args.webhook_concurrency,
        webhook_concurrency_per_owner: args.webhook_concurrency_per_merchant,
        failed_forward_retention: args.failed_forward_retention,
        unpaid_invoice_retention: Duration::from_secs(args.unpaid_invoice_retention_secs),
        alias: args.alias.clone(),
        color: args.color,
        announce_addresses: args.announce_addr.clone(),
        merchant_quotas: hub::node::MerchantQuotas {
            max_channels: args.merchant_max_channels,
            max_capacity_sat: args.merchant_max_capacity_sat,
            max_webhooks: args.merchant_max_webhooks,
        },
    })
    .await?;

    let key_hash_path = args.data_dir.join("api_key.sha256");
    let api_key = match &args.api_key_file {
        Some(f) => Some(read_secret_file(f)?),
        None => args.api_key.clone(),
    };
    let api_key_hash = match (&api_key, key_hash_path.exists()) {
        (Some(k), _) => sha256::Hash::hash(k.as_bytes()).to_byte_array(),
        (None, true) => {
            let h = std::fs::read_to_string(&key_hash_path)?;
            <[u8; 32]>::try_from(hex::decode(h.trim())?.as_slice())
                .context("api_key.sha256 holds 32 hex bytes")?
        }
        (None, false) => {
            let key = random_hex(24);
            let h = sha256::Hash::hash(key.as_bytes()).to_byte_array();
            write_secret(&key_hash_path, &hex::encode(h))?;
            println!("operator API key (shown once, only its hash is stored): {key}");
            h
        }
    };
    let app = Arc::new(App::new(
        node.clone(),
        api_key_hash,
        hub::api::RateLimit {
            per_sec: args.merchant_rate_per_sec,
            burst: args.merchant_rate_burst,
        },
    ));
    let listener = tokio::net::TcpListener::bind(args.api_listen)
        .await
        .with_context(|| format!("binding {}", args.api_listen))?;
    println!(
        "node id {} listening for peers on {}",
        node.node_id(),
        node.listen_addr()
    );
    println!(
        "REST API on http://{}  (try: curl -H 'Authorization: Bearer <key>' http://{}/v1/info)",
        listener.local_addr()?,
        listener.local_addr()?
    );
    axum::serve(listener, router(app))
        .with_graceful_shutdown(async {
            // SIGINT or SIGTERM: stop taking requests, let the ones in flight finish.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await?;
    node.shutdown().await;
    Ok(())
}

/// A secret from a file (first line, surrounding whitespace removed); an empty one is an
/// error rather than an empty password.
fn read_secret_file(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the secret file {}", path.display()))?;
    let secret = text.lines().next().unwrap_or_default().trim().to_string();
    anyhow::ensure!(
        !secret.is_empty(),
        "the secret file {} is empty",
        path.display()
    );
    Ok(secret)
}

/// `--alias`: UTF-8 of at most 32 bytes (BOLT 7).
fn parse_alias(s: &str) -> Result<String, String> {
    if s.len() > 32 {
        return Err(format!("{} bytes; at most 32", s.len()));
    }
    Ok(s.to_string())
}

/// `--color`: RRGGBB in hex.
fn parse_color(s: &str) -> Result<[u8; 3], String> {
    hex::decode(s)
        .ok()
        .and_then(|b| <[u8; 3]>::try_from(b).ok())
        .ok_or_else(|| "six hex digits, RRGGBB".to_string())
}
