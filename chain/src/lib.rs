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
