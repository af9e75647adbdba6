//! The fuzz targets. Each takes arbitrary bytes, must not panic on any input, and returns
//! a coarse label of the path the input took (which error, which message type); the
//! runner keeps inputs whose label it has not seen, a cheap stand-in for coverage.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

mod bolt11;
mod bolt8;
mod json;
mod onion;
mod tower;
mod wire;

pub use bolt11::{bolt11, fix_checksum};
pub use bolt8::bolt8_frames;
pub use json::{rest_body, rpc_response};
pub use onion::onion_peel;
pub use wire::{tlv_stream, wire_message};

/// A label for a value's enum variant (error kind, `Ok`/`Err`), not its contents.
fn tag<T>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    std::mem::discriminant(v).hash(&mut h);
    h.finish()
}

/// A fuzz target with its seeds.
pub struct Target {
    /// The name used on the command line.
    pub name: &'static str,
    /// The function under test.
    pub run: fn(&[u8]) -> u64,
    /// The seed corpus.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens the mutator may insert.
    pub dictionary: &'static [&'static [u8]],
    /// Whether inputs are JSON, so the JSON-aware mutation applies.
    pub json: bool,
}

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "wire_message",
            run: wire_message,
            seeds: wire::message_seeds,
            dictionary: &[&[0xfd], &[0xff, 0xff], &[0x00, 0x01], &[0x80, 0x00]],
            json: false,
        },
        Target {
            name: "tlv_stream",
            run: tlv_stream,
            seeds: wire::tlv_seeds,
            dictionary: &[&[0xfd], &[0xfe], &[0xff], &[0x02, 0x08], &[0x06, 0x08]],
            json: false,
        },
        Target {
            name: "bolt8_frames",
            run: bolt8_frames,
            seeds: bolt8::seeds,
            dictionary: &[&[0; 18], &[0xff; 16]],
            json: false,
        },
        Target {
            name: "onion_peel",
            run: onion_peel,
            seeds: onion::seeds,
            dictionary: &[&[0x00], &[0xfd, 0x01, 0x00], &[0x02, 0x08]],
            json: false,
        },
        Target {
            name: "bolt11",
            run: bolt11,
            seeds: bolt11::seeds,
            dictionary: &[b"1", b"lnbc", b"lntb", b"lnbcrt", b"m", b"p", b"pp5", b"qq"],
            json: false,
        },
        Target {
            name: "rpc_response",
            run: rpc_response,
            seeds: crate::seeds::rpc_replies,
            dictionary: json::DICTIONARY,
            json: true,
        },
        Target {
            name: "rest_body",
            run: rest_body,
            seeds: crate::seeds::rest_bodies,
            dictionary: json::DICTIONARY,
            json: true,
        },
        Target {
            name: "watchtower_appointment",
            run: tower::watchtower_appointment,
            seeds: tower::seeds,
            dictionary: json::DICTIONARY,
            json: true,
        },
    ]
}

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    all().into_iter().find(|t| t.name == name)
}
