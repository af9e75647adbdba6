//! The `devnet` binary: serves JSON-RPC on loopback and, killed and started again on the
//! same data directory, comes back with the same chain.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use chain::rpc::client::{RpcClient, RpcCredentials};
use chain::source::{ChainControl, ChainSource};

/// Kills the child process when dropped, so a failing test leaves nothing running.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(datadir: &std::path::Path) -> anyhow::Result<(Running, String)> {
    start_with(datadir, Some("p"))
}

/// Starts `devnet` with user `u` and `password`, or with a cookie file when `None`.
fn start_with(
    datadir: &std::path::Path,
    password: Option<&str>,
) -> anyhow::Result<(Running, String)> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_devnet"));
    command.args([
        "--datadir",
        &datadir.display().to_string(),
        "--rpcbind",
        "127.0.0.1:0",
        "--rpcuser",
        "u",
    ]);
    match password {
        Some(p) => command.env("DEVNET_RPC_PASSWORD", p),
        None => command.env_remove("DEVNET_RPC_PASSWORD"),
    };
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning devnet")?;
    let stdout = child.stdout.take().context("stdout")?;
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let url = line
        .trim()
        .strip_prefix("devnet JSON-RPC on ")
        .context("startup line")?
        .to_string();
    Ok((running, url))
}

#[tokio::test]
async fn killed_and_restarted_devnet_process_keeps_its_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let creds = || RpcCredentials::UserPass("u".into(), "p".into());
    let address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".parse()?;

    let (process, url) = start(dir.path())?;
    let client = RpcClient::new(url, creds())?;
    let mined = client.generate_to_address(5, &address).await?;
    let tip = client.tip().await?;
    assert_eq!((tip.hash, tip.height), (mined[4], 5));
    drop(process); // SIGKILL: no clean shutdown.

    let (_process, url) = start(dir.path())?;
    let client = RpcClient::new(url, creds())?;
    assert_eq!(client.tip().await?, tip);
    assert_eq!(client.block_hash(1).await?, Some(mined[0]));
    client.generate_to_address(1, &address).await?;
    assert_eq!(client.tip().await?.height, 6);
    Ok(())
}

#[tokio::test]
async fn sigterm_saves_the_mempool_for_the_next_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let creds = || RpcCredentials::UserPass("u".into(), "p".into());
    let key = common::Key::new(40);
    let (mut process, url) = start(dir.path())?;
    let client = RpcClient::new(url, creds())?;
    let mined = client.generate_to_address(101, &key.address()).await?;
    let first = client.block(&mined[0]).await?.context("block")?;
    let coin = bitcoin::OutPoint {
        txid: first.txdata[0].compute_txid(),
        vout: 0,
    };
    let value = first.txdata[0].output[0].value;
    let tx = common::p2wpkh_spend(
        &key,
        coin,
        value,
        key.p2wpkh(),
        bitcoin::Amount::from_sat(1_000),
    );
    let txid = client.broadcast(&tx).await?;

    let status = Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()?;
    assert!(status.success());
    let exit = process.0.wait()?;
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");

    let (_process, url) = start(dir.path())?;
    let client = RpcClient::new(url, creds())?;
    assert_eq!(client.mempool_txids().await?, vec![txid]);
    Ok(())
}

#[tokio::test]
async fn without_a_password_it_writes_a_0600_cookie_like_bitcoind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut process, url) = start_with(dir.path(), None)?;
    let cookie = dir.path().join(".cookie");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&cookie)?.permissions().mode() & 0o777,
            0o600
        );
    }
    let client = RpcClient::new(url.clone(), RpcCredentials::from_cookie_file(&cookie)?)?;
    assert_eq!(client.tip().await?.height, 0);
    let guess = RpcClient::new(url, RpcCredentials::UserPass("u".into(), "p".into()))?;
    assert_eq!(
        guess.tip().await,
        Err(chain::source::ChainError::Unauthorized)
    );
    // A clean stop removes the cookie.
    assert!(Command::new("kill")
        .args(["-TERM", &process.0.id().to_string()])
        .status()?
        .success());
    assert!(process.0.wait()?.success());
    assert!(!cookie.exists());
    Ok(())
}
