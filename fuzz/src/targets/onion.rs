//! BOLT 4 onions: peeling packets and reading failures.

use std::sync::OnceLock;

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use channel::msgs::{OnionPacket, ONION_PACKET_LEN};
use channel::onion::{
    build_failure, create_onion_raw, decode_failure, peel, peel_raw, wrap_failure, PeeledRaw,
};

use super::tag;

/// The BOLT 4 vectors' route: hop private keys, the payment hash, and the failure
/// vector's shared secrets.
struct Route {
    keys: Vec<SecretKey>,
    pubs: Vec<PublicKey>,
    associated_data: [u8; 32],
    ephemeral: [u8; 33],
    failure_secrets: Vec<[u8; 32]>,
}

fn route() -> &'static Route {
    static ROUTE: OnceLock<Route> = OnceLock::new();
    ROUTE.get_or_init(|| {
        let v = crate::seeds::bolt4_onion();
        let hex32 = |s: &serde_json::Value| -> [u8; 32] {
            let b = hex::decode(s.as_str().expect("hex field")).expect("hex");
            b.try_into().expect("32 bytes")
        };
        let keys: Vec<SecretKey> = v["decode"]
            .as_array()
            .expect("hop keys")
            .iter()
            .map(|k| SecretKey::from_slice(&hex32(k)).expect("valid key"))
            .collect();
        let secp = Secp256k1::new();
        let pubs = keys.iter().map(|k| k.public_key(&secp)).collect();
        let onion = hex::decode(v["onion"].as_str().expect("onion")).expect("hex");
        let e = crate::seeds::bolt4_error();
        Route {
            keys,
            pubs,
            associated_data: hex32(&v["generate"]["associated_data"]),
            ephemeral: onion[1..34].try_into().expect("33 bytes"),
            failure_secrets: e["generate"]["hops"]
                .as_array()
                .expect("hops")
                .iter()
                .map(|h| hex32(&h["hop_shared_secret"]))
                .collect(),
        }
    })
}

fn packet_from(bytes: &[u8]) -> OnionPacket {
    let mut p = OnionPacket::default();
    let n = bytes.len().min(ONION_PACKET_LEN);
    p.0[..n].copy_from_slice(&bytes[..n]);
    p
}

/// The first byte picks a mode: an arbitrary 1366-byte packet (as is, or with a valid
/// version and ephemeral key so the HMAC check runs), an onion built from the input and
/// peeled back (the payloads must come out as they went in), or a failure packet
/// (arbitrary bytes, and failures built by a hop and wrapped back to the origin).
pub fn onion_peel(data: &[u8]) -> u64 {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let r = route();
    match mode % 4 {
        0 | 1 => {
            let mut p = packet_from(rest);
            if mode % 4 == 1 {
                p.0[0] = 0;
                p.0[1..34].copy_from_slice(&r.ephemeral);
            }
            let raw = peel_raw(&r.keys[0], &p, &r.associated_data);
            let full = peel(&r.keys[0], &p, &r.associated_data);
            if raw.is_err() {
                assert!(full.is_err(), "peel accepted what peel_raw rejected");
            }
            tag(&raw) ^ tag(&full).rotate_left(1)
        }
        2 => build_and_peel(rest),
        _ => {
            let arbitrary = decode_failure(&r.failure_secrets, rest);
            tag(&arbitrary) ^ failure_roundtrip(rest).rotate_left(2)
        }
    }
}

/// Builds an onion over 1–3 of the vector's hops with payloads cut from the input, then
/// peels each layer with that hop's key.
fn build_and_peel(rest: &[u8]) -> u64 {
    let r = route();
    let (head, payloads) = rest.split_at(rest.len().min(2));
    let hops = 1 + usize::from(head.first().copied().unwrap_or(0) % 3);
    let session =
        SecretKey::from_slice(&[0x41 ^ head.get(1).copied().unwrap_or(0); 32]).unwrap_or(r.keys[1]);
    let chunk = payloads.len().div_ceil(hops).max(1);
    let mut parts: Vec<Vec<u8>> = payloads.chunks(chunk).map(<[u8]>::to_vec).collect();
    parts.resize(hops, Vec::new());
    let route_hops: Vec<(PublicKey, Vec<u8>)> = r.pubs[..hops]
        .iter()
        .copied()
        .zip(parts.iter().cloned())
        .collect();
    let (mut packet, _) = match create_onion_raw(&session, &route_hops, &r.associated_data) {
        Ok(built) => built,
        Err(e) => return tag(&e) ^ 0x55,
    };
    let mut label = hops as u64;
    for (i, part) in parts.iter().enumerate() {
        let peeled = peel_raw(&r.keys[i], &packet, &r.associated_data);
        label = label.rotate_left(4) ^ tag(&peeled);
        // Payloads shorter than two bytes are rejected on peeling (BOLT 4 framing).
        if part.len() < 2 {
            assert!(peeled.is_err());
            return label;
        }
        let last = i + 1 == hops;
        match peeled {
            Ok(PeeledRaw::Final { payload, .. }) if last => {
                assert_eq!(&payload, part, "final payload changed");
            }
            Ok(PeeledRaw::Forward { payload, next, .. }) if !last => {
                assert_eq!(&payload, part, "forward payload changed");
                let _ = peel(&r.keys[i], &packet, &r.associated_data);
                packet = next;
            }
            other => panic!("hop {i} of {hops} peeled to {other:?}"),
        }
    }
    label
}

/// A failure from hop `h` with code and data from the input, wrapped by every hop before
/// it: the origin must attribute it to `h` and read the same code and data.
fn failure_roundtrip(rest: &[u8]) -> u64 {
    let r = route();
    let secrets = &r.failure_secrets;
    let Some((&h, tail)) = rest.split_first() else {
        return 0;
    };
    let h = usize::from(h) % secrets.len();
    let code = u16::from_be_bytes([
        tail.first().copied().unwrap_or(0),
        tail.get(1).copied().unwrap_or(0),
    ]);
    let data = tail.get(2..).unwrap_or_default();
    let mut packet = build_failure(&secrets[h], code, data);
    for ss in secrets[..h].iter().rev() {
        packet = wrap_failure(ss, &packet);
    }
    let d = decode_failure(secrets, &packet).expect("well-formed failure");
    assert_eq!((d.hop_index, d.code), (h, code), "failure misattributed");
    assert_eq!(d.data, data, "failure data changed");
    h as u64
}

/// The vector onion in every mode, and the BOLT 4 hop payloads to build onions from.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (i, s) in crate::seeds::onion_packets().into_iter().enumerate() {
        for mode in 0..4u8 {
            if i == 0 || mode >= 2 {
                let mut v = vec![mode];
                v.extend(&s);
                out.push(v);
            }
        }
    }
    out
}
