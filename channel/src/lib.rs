//! The Lightning channel protocol with no I/O: BOLT 3 keys, scripts and transactions,
//! the BOLT 2 channel state machine, the BOLT 1 message codec, BOLT 4 onions and BOLT 11
//! invoices.
//!
//! Everything here is a pure function of explicit inputs (or a plain state machine fed
//! messages), so it can be tested against the specification's vectors.

#![warn(missing_docs)]

pub mod channel_type;
pub mod close;
pub mod commitment;
pub mod gossip;
pub mod invoice;
pub mod keys;
pub mod msgs;
pub mod noise;
pub mod onion;
pub mod script;
pub mod secrets;
pub mod sign;
pub mod state;
pub mod sweep;
pub mod types;
pub mod wire;

pub use types::*;
