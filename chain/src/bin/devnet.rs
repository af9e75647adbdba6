//! `devnet`: runs the embedded devnet chain as its own process, serving Bitcoin Core's
//! JSON-RPC (regtest flavour) so that several processes can share one chain.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use chain::devnet::{Devnet, DevnetConfig};
use chain::rpc::server::{serve, RpcAuth};
use clap::Parser;

/// Command-line options, named like bitcoind's where there is an equivalent.
#[derive(Parser, Debug)]
#[command(
    name = "devnet",
    about = "Embedded Bitcoin devnet with Bitcoin Core's JSON-RPC"
)]
struct Args {
    /// Data directory (blocks are kept there across restarts).
    #[arg(long, default_value = "./devnet-data")]
    datadir: PathBuf,
    /// Address to listen on for JSON-RPC.
    #[arg(long, default_value = "127.0.0.1:18443")]
    rpcbind: SocketAddr,
    /// JSON-RPC user name.
    #[arg(long, default_value = "devnet")]
    rpcuser: String,
    /// JSON-RPC password (or set DEVNET_RPC_PASSWORD). Without one, random credentials
    /// are written to `<datadir>/.cookie` like bitcoind does.
    #[arg(long, env = "DEVNET_RPC_PASSWORD", hide_env_values = true)]
    rpcpassword: Option<String>,
    /// Minimum relay fee rate in sat/kvB (Bitcoin Core's default is 100).
    #[arg(long, default_value_t = 100)]
    minrelaytxfee_sat_per_kvb: u64,
    /// Refuse every mempool conflict (`txn-mempool-conflict`) instead of full-RBF.
    #[arg(long)]
    no_rbf: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = DevnetConfig {
        data_dir: Some(args.datadir.clone()),
        min_relay_fee: bitcoin::FeeRate::from_sat_per_kwu(args.minrelaytxfee_sat_per_kvb / 4),
        full_rbf: !args.no_rbf,
    };
    let devnet = Devnet::with_config(config)
        .with_context(|| format!("opening {}", args.datadir.display()))?;
    let cookie = args.datadir.join(".cookie");
    let auth = match args.rpcpassword {
        Some(password) => RpcAuth {
            user: args.rpcuser,
            password,
        },
        None => RpcAuth::write_cookie(&args.datadir)
            .with_context(|| format!("writing {}", cookie.display()))?,
    };
    let server = serve(devnet.clone(), args.rpcbind, auth)
        .await
        .with_context(|| format!("binding {}", args.rpcbind))?;
    println!("devnet JSON-RPC on http://{}", server.addr);
    shutdown_signal().await?;
    server.shutdown().await.context("stopping the server")?;
    devnet.save_mempool().context("saving the mempool")?;
    if std::fs::remove_file(&cookie).is_err() {
        tracing::debug!("no cookie file to remove");
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix (how service managers and test harnesses stop processes).
async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    Ok(())
}
