//! `watchtower`: watches a chain (Bitcoin Core JSON-RPC, or the hub's devnet serving the
//! same calls) for revoked commitments on behalf of its clients and broadcasts their
//! penalties.

use anyhow::Context;
use chain::rpc::client::{RpcClient, RpcCredentials};
use chain::ChainSource;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use watchtower::store::Store;
use watchtower::{Tower, TowerConfig};

/// A watchtower for payment channels.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Data directory (holds the SQLite database by default).
    #[arg(long, env = "WATCHTOWER_DATA_DIR", default_value = "./watchtower-data")]
    data_dir: PathBuf,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB (default: SQLite in the data dir).
    #[arg(long, env = "WATCHTOWER_DATABASE_URL")]
    database_url: Option<String>,
    /// Where the REST API listens.
    #[arg(long, env = "WATCHTOWER_LISTEN", default_value = "127.0.0.1:9814")]
    listen: SocketAddr,
    /// The chain: Bitcoin Core's JSON-RPC URL (the hub's embedded devnet serves it on
    /// 127.0.0.1:18443). bitcoind needs -txindex=1.
    #[arg(
        long,
        env = "WATCHTOWER_BITCOIND_URL",
        default_value = "http://127.0.0.1:18443"
    )]
    bitcoind_url: String,
    /// JSON-RPC user.
    #[arg(long, env = "WATCHTOWER_BITCOIND_USER", default_value = "devnet")]
    bitcoind_user: String,
    /// JSON-RPC password.
    #[arg(
        long,
        env = "WATCHTOWER_BITCOIND_PASSWORD",
        hide_env_values = true,
        conflicts_with = "bitcoind_password_file"
    )]
    bitcoind_password: Option<String>,
    /// File holding the JSON-RPC password (e.g. hub-data/devnet/rpcpassword).
    #[arg(long, env = "WATCHTOWER_BITCOIND_PASSWORD_FILE")]
    bitcoind_password_file: Option<PathBuf>,
    /// Confirmations after which a penalty is done.
    #[arg(long, env = "WATCHTOWER_CONFIRMATIONS", default_value_t = 6)]
    confirmations: u32,
    /// Appointment slots per registered client.
    #[arg(long, env = "WATCHTOWER_MAX_APPOINTMENTS", default_value_t = 10_000)]
    max_appointments: u32,
    /// Users registered at once; beyond, new ones are refused (503 tower_full).
    #[arg(long, env = "WATCHTOWER_MAX_USERS", default_value_t = watchtower::tower::DEFAULT_MAX_USERS)]
    max_users: usize,
    /// Blocks a registration lasts (renewed by registering again).
    #[arg(long, env = "WATCHTOWER_SUBSCRIPTION_BLOCKS", default_value_t = 4032)]
    subscription_blocks: u32,
    /// Largest accepted encrypted blob, in bytes.
    #[arg(long, env = "WATCHTOWER_MAX_BLOB_SIZE", default_value_t = 65_536)]
    max_blob_size: usize,
    /// How often to poll the chain, in milliseconds.
    #[arg(long, env = "WATCHTOWER_POLL_MS", default_value_t = 500)]
    poll_ms: u64,
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let url = match &args.database_url {
        Some(u) => u.clone(),
        None => format!(
            "sqlite://{}",
            args.data_dir.join("watchtower.sqlite").display()
        ),
    };
    let store = Store::open(&url).await.context("opening the database")?;
    let password = match (&args.bitcoind_password, &args.bitcoind_password_file) {
        (Some(p), _) => p.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string(),
        (None, None) => String::new(),
    };
    let rpc = RpcClient::new(
        args.bitcoind_url.clone(),
        RpcCredentials::UserPass(args.bitcoind_user.clone(), password),
    )?;
    let chain: Arc<dyn ChainSource> = Arc::new(rpc);
    let tip = chain
        .tip()
        .await
        .with_context(|| format!("reaching the chain at {}", args.bitcoind_url))?;
    tracing::info!(height = tip.height, url = %args.bitcoind_url, "chain reached");
    let tower = Tower::open(
        store.clone(),
        chain,
        TowerConfig {
            confirmations: args.confirmations,
            max_appointments: args.max_appointments,
            subscription_blocks: args.subscription_blocks,
            max_blob_size: args.max_blob_size,
            poll_interval: Duration::from_millis(args.poll_ms),
            max_users: args.max_users,
        },
    )
    .await?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let watcher = {
        let mut stop = stop_rx.clone();
        tokio::spawn(tower.clone().run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("watchtower listening on http://{}", listener.local_addr()?);
    let mut stop = stop_rx.clone();
    let server =
        axum::serve(listener, watchtower::api::router(tower)).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        });
    let server = tokio::spawn(async move { server.await });
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = server.await;
    let _ = watcher.await;
    store.close().await;
    Ok(())
}
