//! Bitcoin Core's JSON-RPC: the devnet server ([`server`], [`methods`]) and a client
//! ([`client`]) that works against it and against a real `bitcoind`.

pub mod client;
pub mod format;
pub mod methods;
pub mod params;
pub mod response;
pub mod server;
