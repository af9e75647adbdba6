//! BOLT 4 onion routing against the specification's vectors (see
//! `tests/vectors/README.md`), plus round trips over random routes.

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use channel::msgs::OnionPacket;
use channel::onion::{self, failure, HopPayload, OnionError, Peeled, PeeledRaw};
use proptest::prelude::*;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("json")
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("hex")
}

fn b32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().expect("32 bytes")
}

/// Strips the BigSize length prefix that the vector keeps in front of each payload.
fn strip_len(framed: &[u8]) -> Vec<u8> {
    let (len, prefix) = match framed[0] {
        0xfd => (usize::from(u16::from_be_bytes([framed[1], framed[2]])), 3),
        b => (usize::from(b), 1),
    };
    assert_eq!(framed.len(), prefix + len, "vector payload length prefix");
    framed[prefix..].to_vec()
}

fn packet(b: &[u8]) -> OnionPacket {
    OnionPacket(Box::new(b.try_into().expect("1366 bytes")))
}

struct Route {
    session_key: SecretKey,
    ad: [u8; 32],
    hops: Vec<(PublicKey, Vec<u8>)>,
    node_secrets: Vec<SecretKey>,
    onion: Vec<u8>,
}

fn route() -> Route {
    let v = load("bolt4-onion-test.json");
    let g = &v["generate"];
    let hops = g["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                PublicKey::from_slice(&bytes(&h["pubkey"])).unwrap(),
                strip_len(&bytes(&h["payload"])),
            )
        })
        .collect();
    Route {
        session_key: SecretKey::from_slice(&bytes(&g["session_key"])).unwrap(),
        ad: b32(&g["associated_data"]),
        hops,
        node_secrets: v["decode"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| SecretKey::from_slice(&bytes(s)).unwrap())
            .collect(),
        onion: bytes(&v["onion"]),
    }
}

#[test]
fn packet_construction_is_byte_for_byte() {
    let r = route();
    let (onion, secrets) = onion::create_onion_raw(&r.session_key, &r.hops, &r.ad).unwrap();
    assert_eq!(hex::encode(&onion.0[..]), hex::encode(&r.onion));
    // Same session key and node keys as the error vector, so the same shared secrets.
    let e = load("bolt4-onion-error-test.json");
    for (i, h) in e["generate"]["hops"].as_array().unwrap().iter().enumerate() {
        assert_eq!(secrets[i], b32(&h["hop_shared_secret"]), "hop {i}");
    }
}

#[test]
fn each_hop_peels_its_payload() {
    let r = route();
    let mut current = packet(&r.onion);
    for (i, secret) in r.node_secrets.iter().enumerate() {
        match onion::peel_raw(secret, &current, &r.ad).unwrap() {
            PeeledRaw::Forward { payload, next, .. } => {
                assert!(i < 4, "hop {i} should be final");
                assert_eq!(payload, r.hops[i].1, "hop {i}");
                // The typed reader agrees (unknown odd TLV 513 at hop 1 is skipped).
                let Peeled::Forward { payload: typed, .. } =
                    onion::peel(secret, &current, &r.ad).unwrap()
                else {
                    panic!("typed peel disagrees at hop {i}");
                };
                assert_eq!(typed.short_channel_id, Some(i as u64 + 1));
                current = next;
            }
            PeeledRaw::Final { payload, .. } => {
                assert_eq!(i, 4);
                assert_eq!(payload, r.hops[i].1);
                let Peeled::Final { payload: typed, .. } =
                    onion::peel(secret, &current, &r.ad).unwrap()
                else {
                    panic!("typed final");
                };
                assert_eq!(typed.amt_to_forward, 10_000);
                assert_eq!(typed.outgoing_cltv_value, 1000);
                assert_eq!(typed.payment_data.unwrap().1, 10_000);
            }
        }
    }
    // First hop's typed payload, written out from the vector's bytes.
    let Peeled::Forward { payload, .. } =
        onion::peel(&r.node_secrets[0], &packet(&r.onion), &r.ad).unwrap()
    else {
        panic!("hop 0 forwards");
    };
    assert_eq!(
        payload,
        HopPayload {
            amt_to_forward: 15_000,
            outgoing_cltv_value: 1500,
            short_channel_id: Some(1),
            payment_data: None
        }
    );
    assert_eq!(onion::HopPayload::encode(&payload), r.hops[0].1);
}

#[test]
fn returning_errors_trace_byte_for_byte() {
    let v = load("bolt4-returning-errors.json");
    let secrets: Vec<[u8; 32]> = v["shared_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(b32)
        .collect();
    let expected: Vec<Vec<u8>> = v["error_packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(bytes)
        .collect();
    // The secrets are those the origin derives when building the onion.
    let r = route();
    let (_, ours) = onion::create_onion_raw(&r.session_key, &r.hops, &r.ad).unwrap();
    assert_eq!(ours, secrets);

    let mut msg = (v["failure_code"].as_u64().unwrap() as u16)
        .to_be_bytes()
        .to_vec();
    msg.extend(failure::payment_details_data(
        v["htlc_msat"].as_u64().unwrap(),
        v["height"].as_u64().unwrap() as u32,
    ));
    msg.extend([0xfd, 0x84, 0xd1, 0xfd, 0x01, 0x2c]); // type 34001, length 300
    msg.extend([0x80u8; 300]);
    let padded = v["padded_len"].as_u64().unwrap() as usize;
    let src = v["failure_source"].as_u64().unwrap() as usize;

    let mut pkt = onion::build_failure_padded(&secrets[src], &msg, padded);
    // Undoing this hop's obfuscation shows the spec's raw packet HMAC.
    assert_eq!(
        hex::encode(&onion::wrap_failure(&secrets[src], &pkt)[..32]),
        v["raw_error_packet_hmac"].as_str().unwrap()
    );
    assert_eq!(hex::encode(&pkt), hex::encode(&expected[src]), "node {src}");
    for i in (0..src).rev() {
        pkt = onion::wrap_failure(&secrets[i], &pkt);
        assert_eq!(hex::encode(&pkt), hex::encode(&expected[i]), "node {i}");
    }
    let d = onion::decode_failure(&secrets, &pkt).unwrap();
    assert_eq!(d.hop_index, 4);
    assert_eq!(d.code, failure::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS);
    assert!(failure::has_flag(d.code, failure::PERM));
    assert_eq!(d.data, msg[2..]);
}

#[test]
fn onion_error_json_vector() {
    let v = load("bolt4-onion-error-test.json");
    let hops = v["generate"]["hops"].as_array().unwrap();
    let secrets: Vec<[u8; 32]> = hops.iter().map(|h| b32(&h["hop_shared_secret"])).collect();
    let code = u16::from_be_bytes(bytes(&v["generate"]["failure_message"]).try_into().unwrap());
    assert_eq!(code, failure::TEMPORARY_NODE_FAILURE);
    let mut pkt = onion::build_failure(&secrets[4], code, &[]);
    assert_eq!(pkt.len(), 32 + 2 + 2 + 256);
    for i in (0..4).rev() {
        pkt = onion::wrap_failure(&secrets[i], &pkt);
    }
    assert_eq!(hex::encode(&pkt), v["errorpacket"].as_str().unwrap());
    let d = onion::decode_failure(&secrets, &pkt).unwrap();
    assert_eq!((d.hop_index, d.code, d.data.len()), (4, code, 0));
    // A corrupted failure is attributed to nobody.
    pkt[100] ^= 1;
    assert_eq!(
        onion::decode_failure(&secrets, &pkt),
        Err(OnionError::UnknownFailureSource)
    );
}

#[test]
fn tampered_onion_is_rejected_with_the_right_code() {
    let r = route();
    let good = packet(&r.onion);
    let mut flipped = good.clone();
    flipped.0[500] ^= 0x01;
    let err = onion::peel(&r.node_secrets[0], &flipped, &r.ad).unwrap_err();
    assert_eq!(err.failure_code(), Some(failure::INVALID_ONION_HMAC));
    assert_eq!(
        err.sha256_of_onion(),
        Some(bitcoin::hashes::Hash::to_byte_array(
            <bitcoin::hashes::sha256::Hash as bitcoin::hashes::Hash>::hash(&flipped.0[..])
        ))
    );
    // Wrong associated data (another payment hash) fails the same way.
    let err = onion::peel(&r.node_secrets[0], &good, &[0u8; 32]).unwrap_err();
    assert!(matches!(err, OnionError::InvalidHmac { .. }));
    let mut version = good.clone();
    version.0[0] = 1;
    let err = onion::peel(&r.node_secrets[0], &version, &r.ad).unwrap_err();
    assert_eq!(err.failure_code(), Some(failure::INVALID_ONION_VERSION));
    let mut key = good.clone();
    key.0[1] = 0x05;
    let err = onion::peel(&r.node_secrets[0], &key, &r.ad).unwrap_err();
    assert_eq!(err.failure_code(), Some(failure::INVALID_ONION_KEY));
    // The wrong node cannot peel it either.
    let err = onion::peel(&r.node_secrets[1], &good, &r.ad).unwrap_err();
    assert!(matches!(err, OnionError::InvalidHmac { .. }));
}

#[test]
fn failure_code_flags() {
    assert_eq!(failure::INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, 0x400f);
    assert_eq!(failure::INVALID_ONION_HMAC, 0xc005);
    assert_eq!(failure::TEMPORARY_CHANNEL_FAILURE, 0x1007);
    assert_eq!(failure::UNKNOWN_NEXT_PEER, 0x400a);
    assert_eq!(failure::FEE_INSUFFICIENT, 0x100c);
    assert_eq!(failure::FINAL_INCORRECT_CLTV_EXPIRY, 18);
    assert!(failure::has_flag(
        failure::INVALID_ONION_KEY,
        failure::BADONION
    ));
    assert!(!failure::has_flag(
        failure::TEMPORARY_NODE_FAILURE,
        failure::PERM
    ));
    // temporary_channel_failure with an empty channel_update still decodes.
    let ss = [9u8; 32];
    let pkt = onion::build_failure(
        &ss,
        failure::TEMPORARY_CHANNEL_FAILURE,
        &failure::channel_update_data(&[]),
    );
    let d =
        onion::decode_failure(&[[1u8; 32], ss], &onion::wrap_failure(&[1u8; 32], &pkt)).unwrap();
    assert_eq!(
        (d.hop_index, d.code, d.data),
        (1, failure::TEMPORARY_CHANNEL_FAILURE, vec![0, 0])
    );
}

#[test]
fn route_limits() {
    let sk = SecretKey::from_slice(&[1; 32]).unwrap();
    assert_eq!(
        onion::create_onion_raw(&sk, &[], &[0; 32]).unwrap_err(),
        OnionError::RouteLength(0)
    );
    let pk = PublicKey::from_secret_key(&Secp256k1::new(), &sk);
    let big = vec![(pk, vec![0x0b; 1300])];
    assert!(matches!(
        onion::create_onion_raw(&sk, &big, &[0; 32]),
        Err(OnionError::PayloadsTooLarge(_))
    ));
}

fn payload_strategy() -> impl Strategy<Value = HopPayload> {
    (
        any::<u64>(),
        any::<u32>(),
        proptest::option::of(any::<u64>()),
        proptest::option::of((any::<[u8; 32]>(), any::<u64>())),
    )
        .prop_map(|(a, c, s, p)| HopPayload {
            amt_to_forward: a,
            outgoing_cltv_value: c,
            short_channel_id: s,
            payment_data: p,
        })
}

fn secret(seed: [u8; 32]) -> SecretKey {
    SecretKey::from_slice(&seed).unwrap_or_else(|_| SecretKey::from_slice(&[7; 32]).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_routes_round_trip(
        seeds in proptest::collection::vec(any::<[u8; 32]>(), 1..=20),
        payloads in proptest::collection::vec(payload_strategy(), 20),
        session in any::<[u8; 32]>(),
        ad in any::<[u8; 32]>(),
        failing in any::<prop::sample::Index>(),
    ) {
        let secp = Secp256k1::new();
        let nodes: Vec<SecretKey> = seeds.iter().map(|s| secret(*s)).collect();
        let n = nodes.len();
        let hops: Vec<(PublicKey, HopPayload)> = nodes
            .iter()
            .zip(&payloads)
            .enumerate()
            .map(|(i, (k, p))| {
                let mut p = p.clone();
                // Intermediate hops need a channel; the last must not carry one.
                if i + 1 < n {
                    p.short_channel_id.get_or_insert(i as u64);
                    p.payment_data = None;
                } else {
                    p.short_channel_id = None;
                }
                (PublicKey::from_secret_key(&secp, k), p)
            })
            .collect();
        let (mut pkt, secrets) = onion::create_onion(&secret(session), &hops, &ad).unwrap();
        let mut hop_secrets = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            match onion::peel(node, &pkt, &ad).unwrap() {
                Peeled::Forward { payload, next, shared_secret } => {
                    prop_assert!(i + 1 < n);
                    prop_assert_eq!(&payload, &hops[i].1);
                    hop_secrets.push(shared_secret);
                    pkt = next;
                }
                Peeled::Final { payload, shared_secret } => {
                    prop_assert_eq!(i + 1, n);
                    prop_assert_eq!(&payload, &hops[i].1);
                    hop_secrets.push(shared_secret);
                }
            }
        }
        prop_assert_eq!(&hop_secrets, &secrets);

        let at = failing.index(n);
        let mut f = onion::build_failure(&hop_secrets[at], failure::UNKNOWN_NEXT_PEER, &[]);
        for ss in hop_secrets[..at].iter().rev() {
            f = onion::wrap_failure(ss, &f);
        }
        let d = onion::decode_failure(&secrets, &f).unwrap();
        prop_assert_eq!((d.hop_index, d.code), (at, failure::UNKNOWN_NEXT_PEER));
    }

    #[test]
    fn random_bytes_never_panic(
        body in proptest::collection::vec(any::<u8>(), 1366),
        valid_key in any::<bool>(),
        failure_bytes in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let sk = SecretKey::from_slice(&[3; 32]).unwrap();
        let mut p = packet(&body);
        if valid_key {
            p.0[0] = 0;
            p.0[1..34].copy_from_slice(&PublicKey::from_secret_key(&Secp256k1::new(), &sk).serialize());
        }
        let _ = onion::peel(&sk, &p, &[0; 32]);
        let _ = onion::decode_failure(&[[1; 32], [2; 32]], &failure_bytes);
    }

    #[test]
    fn any_flipped_bit_is_caught(byte in 0usize..1366, bit in 0u8..8) {
        let r = route();
        let mut p = packet(&r.onion);
        p.0[byte] ^= 1 << bit;
        let err = onion::peel(&r.node_secrets[0], &p, &r.ad).unwrap_err();
        prop_assert!(err.failure_code().is_some_and(|c| failure::has_flag(c, failure::BADONION)));
    }
}
