//! Mutation fuzzing for everything the hub reads from outside the process: BOLT 1/2
//! messages and TLV streams, BOLT 8 frames, BOLT 4 onions, BOLT 11 invoices, Bitcoin
//! Core's RPC replies and the REST API's request bodies.
//!
//! No external framework (and no nightly toolchain): a seeded generator ([`rng`]),
//! byte- and JSON-level mutations ([`mutate`]), seed corpora from the conformance
//! vectors ([`seeds`]), the targets ([`targets`]) and a loop that catches panics
//! ([`runner`]). `cargo run --release -p fuzz -- all` runs it; `cargo test -p fuzz`
//! runs every target for a bounded number of executions.

pub mod mutate;
pub mod rng;
pub mod runner;
pub mod seeds;
pub mod targets;
