//! A watchtower for payment channels: a separate service that stores encrypted justice
//! transactions for its clients (appointments in the style of the BOLT 13 draft) and
//! broadcasts one when the revoked commitment it punishes shows up in a block.
//!
//! One module, one job:
//! - [`appointment`]: locators, blob encryption, the bytes clients sign;
//! - [`sig`]: Lightning signmessage-style recoverable signatures (zbase32);
//! - [`gatekeeper`]: users, slots, subscription expiry;
//! - [`watcher`]: the in-memory locator index and block scanning;
//! - [`responder`]: gets penalties confirmed (rebroadcast, reorgs);
//! - [`store`]: sqlx storage (SQLite or PostgreSQL); [`writer`]: group commit of
//!   appointments;
//! - [`tower`]: ties them together and follows the chain;
//! - [`api`], [`msgs`], [`metrics`]: the REST API;
//! - [`client`]: the client library a node uses to talk to a tower.

#![warn(missing_docs)]

pub mod api;
pub mod appointment;
pub mod bench;
pub mod client;
pub mod gatekeeper;
pub mod metrics;
pub mod msgs;
pub mod responder;
pub mod sig;
pub mod store;
pub mod tower;
pub mod watcher;
pub mod writer;

pub use appointment::Locator;
pub use tower::{Tower, TowerConfig};
