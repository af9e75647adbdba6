//! The main chain for the hub and the watchtower.
//!
//! - [`source::ChainSource`]: the one async interface to a chain (tip, blocks, broadcast,
//!   confirmations, spends), with [`poller::ChainPoller`] turning it into a reorg-safe
//!   stream of [`poller::ChainEvent`]s.
//! - [`devnet::Devnet`]: an embedded Bitcoin-format chain with Bitcoin Core's consensus
//!   rules at regtest difficulty, usable in-process or served over JSON-RPC
//!   ([`rpc::server`], binary `devnet`).
//! - [`rpc::client::RpcClient`]: a Bitcoin Core JSON-RPC client that works against a real
//!   `bitcoind` and the devnet server alike.
//! - [`wallet::Wallet`]: a BIP84 on-chain wallet that funds channels.
//! - [`watch::ChainWatcher`]: reorg-aware confirmations of txids and spends of outpoints
//!   (funding outputs, revoked commitments) from the event stream.
//!
//! ```no_run
//! # async fn demo(funding_tx: bitcoin::Transaction) -> Result<(), Box<dyn std::error::Error>> {
//! use std::{sync::Arc, time::Duration};
//! use chain::rpc::client::{RpcClient, RpcCredentials};
//! use chain::{ChainPoller, ChainSource, ChainWatcher, Devnet};
//!
//! // The embedded devnet, kept in a data directory, with blocks mined on demand...
//! let devnet = Arc::new(Devnet::open("./devnet-data".as_ref())?);
//! let address = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".parse()?;
//! devnet.generate_to_address(101, &address)?;
//! // ...or Bitcoin Core (or a `devnet` process) over JSON-RPC: same trait.
//! let _node = RpcClient::new("http://127.0.0.1:18443", RpcCredentials::UserPass("user".into(), "pass".into()))?;
//!
//! let source: Arc<dyn ChainSource> = devnet.clone();
//! let txid = source.broadcast(&funding_tx).await?;
//! let mut watcher = ChainWatcher::new();
//! watcher.watch_tx(txid);
//! let mut events = ChainPoller::from_tip(source.clone()).await?.spawn(Duration::from_millis(200));
//! while let Some(event) = events.recv().await {
//!     for noticed in watcher.apply(&event) {
//!         println!("{noticed:?}; funding confirmations: {}", watcher.confirmations(&txid));
//!     }
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod devnet;
pub mod poller;
pub mod rpc;
pub mod source;
pub mod wallet;
pub mod watch;

pub use devnet::Devnet;
pub use poller::{ChainEvent, ChainPoller};
pub use source::{BlockRef, ChainControl, ChainError, ChainSource, TxStatus};
pub use watch::{ChainWatcher, WatchEvent};
