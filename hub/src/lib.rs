//! The node: storage, peer link, channel manager. Same code for the hub and for a
//! merchant's or user's light node; the role decides what is enabled.

pub mod api;
pub mod demo;
pub mod metrics;
pub mod monitor;
pub mod node;
pub mod peer;
pub mod store;
