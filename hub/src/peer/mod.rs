//! The peer link: TCP, the BOLT 8 handshake and encrypted framing, then BOLT 1 `init`
//! and ping/pong. What flows above it are the BOLT 2 messages of `channel::msgs`.

mod features;
mod link;

pub use features::{
    check_remote_features, local_features, offers, FeatureError, ANCHORS_ZERO_FEE_HTLC_TX,
};
pub use link::{accept, connect, PeerError, PeerReader, PeerWriter};
