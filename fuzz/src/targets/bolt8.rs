//! BOLT 8 transport frames, on a link established once from the spec's handshake keys.

use std::sync::OnceLock;

use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
use channel::noise::{
    Decryptor, Encryptor, InitiatorHandshake, ResponderHandshake, HEADER_LEN, MAC_LEN,
};

use super::tag;

/// The two ends of one link: what the initiator sends and what the responder reads.
#[derive(Clone)]
struct Link {
    tx: Encryptor,
    rx: Decryptor,
}

/// Two links: fresh, and one a few messages short of BOLT 8's key rotation (every 1000
/// nonces, i.e. 500 messages), so short runs of frames cross a rotation.
fn links() -> &'static [Link; 2] {
    static LINKS: OnceLock<[Link; 2]> = OnceLock::new();
    LINKS.get_or_init(|| {
        let fresh = handshake();
        let mut near = fresh.clone();
        for _ in 0..497 {
            let frame = near.tx.encrypt(b"").expect("short message");
            near.rx
                .decrypt_length(&frame[..HEADER_LEN])
                .expect("own frame");
            near.rx
                .decrypt_body(&frame[HEADER_LEN..])
                .expect("own frame");
        }
        [fresh, near]
    })
}

fn key(hex: &str) -> SecretKey {
    SecretKey::from_slice(&hex::decode(hex).expect("hex")).expect("valid key")
}

/// Runs the spec's initiator/responder handshake (keys of the BOLT 8 test vectors).
fn handshake() -> Link {
    let v = crate::seeds::bolt8_vectors();
    let i = &v["initiator"][0];
    let r = &v["responder"][0];
    let field = |c: &serde_json::Value, k: &str| c[k].as_str().expect("vector key").to_string();
    let secp = Secp256k1::new();
    let responder_static = key(&field(r, "ls_priv"));
    let responder_pub: PublicKey = responder_static.public_key(&secp);
    let (init, act_one) = InitiatorHandshake::new(
        key(&field(i, "ls_priv")),
        &responder_pub,
        key(&field(i, "e_priv")),
    );
    let mut resp = ResponderHandshake::new(responder_static, key(&field(r, "e_priv")));
    let act_two = resp.process_act_one(&act_one).expect("spec handshake");
    let (act_three, initiator) = init.process_act_two(&act_two).expect("spec handshake");
    let (_, responder) = resp.process_act_three(&act_three).expect("spec handshake");
    let (tx, _) = initiator.split();
    let (_, rx) = responder.split();
    Link { tx, rx }
}

/// Reads `data` as a script of operations on a link: forged headers and bodies must be
/// rejected (a forged Poly1305 tag passes with probability 2^-128), honest frames must
/// come back unchanged, and a frame with any bit flipped must be rejected.
pub fn bolt8_frames(data: &[u8]) -> u64 {
    let Some((&first, mut rest)) = data.split_first() else {
        return 0;
    };
    let mut link = links()[usize::from(first & 1)].clone();
    let mut label = u64::from(first & 1);
    let mut ops = 0;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        ops += 1;
        if ops > 64 {
            break;
        }
        let n = usize::from(op >> 2);
        match op & 3 {
            0 => {
                // Arbitrary bytes as an encrypted length header (any size).
                let take = if op & 4 == 0 { HEADER_LEN } else { n };
                let (header, tail) = rest.split_at(take.min(rest.len()));
                rest = tail;
                let mut rx = link.rx.clone();
                let r = rx.decrypt_length(header);
                // The header of an honest frame depends only on the length and the nonce
                // (the spec's vectors hold such frames): accepted only if it is one.
                if let Ok(len) = r {
                    let honest = link.tx.clone().encrypt(&vec![0; usize::from(len)]);
                    assert!(
                        honest.is_ok_and(|f| f[..HEADER_LEN] == *header),
                        "forged length header accepted"
                    );
                }
                label = label.rotate_left(3) ^ tag(&r);
            }
            1 => {
                // Arbitrary bytes as a body, after an honest header.
                let (body, tail) = rest.split_at((n * 5).min(rest.len()));
                rest = tail;
                let mut tx = link.tx.clone();
                let mut rx = link.rx.clone();
                let frame = tx.encrypt(body).expect("short message");
                rx.decrypt_length(&frame[..HEADER_LEN])
                    .expect("honest header");
                let r = rx.decrypt_body(body);
                assert!(r.is_err(), "forged body accepted");
                label = label.rotate_left(3) ^ tag(&r) ^ 1;
            }
            2 => {
                // An honest frame: the message comes back, and the link advances.
                let (msg, tail) = rest.split_at((n * 9).min(rest.len()));
                rest = tail;
                let frame = link.tx.encrypt(msg).expect("short message");
                assert_eq!(frame.len(), HEADER_LEN + msg.len() + MAC_LEN);
                let len = link
                    .rx
                    .decrypt_length(&frame[..HEADER_LEN])
                    .expect("honest header");
                assert_eq!(usize::from(len), msg.len(), "length header changed");
                let body = link
                    .rx
                    .decrypt_body(&frame[HEADER_LEN..])
                    .expect("honest body");
                assert_eq!(body, msg, "body changed in transit");
                label = label.rotate_left(3) ^ 2;
            }
            _ => {
                // An honest frame with one bit flipped, or cut short: rejected.
                let Some((&pos, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let msg = vec![op; n];
                let mut tx = link.tx.clone();
                let mut rx = link.rx.clone();
                let mut frame = tx.encrypt(&msg).expect("short message");
                let i = usize::from(pos) * frame.len() / 256;
                let cut = op & 4 != 0;
                if cut {
                    frame.truncate(i);
                } else {
                    frame[i] ^= 1 << (pos % 8);
                }
                let header = rx.decrypt_length(&frame[..HEADER_LEN.min(frame.len())]);
                let body = header
                    .is_ok()
                    .then(|| rx.decrypt_body(&frame[HEADER_LEN.min(frame.len())..]));
                assert!(
                    header.is_err() || body.as_ref().is_some_and(Result::is_err),
                    "tampered frame accepted"
                );
                label = label.rotate_left(3) ^ 3 ^ u64::from(cut) << 2;
            }
        }
    }
    label
}

/// Frames from the spec's message test, and scripts of every operation.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = crate::seeds::bolt8_frames();
    for frame in out.clone() {
        let mut script = vec![0, 0];
        script.extend(&frame);
        out.push(script);
    }
    out.push(vec![
        1,
        2 | 4 << 2,
        b'h',
        b'e',
        b'l',
        b'l',
        b'o',
        3,
        200,
        7,
        9,
    ]);
    out.push(vec![0, 1 | 8 << 2, 1, 2, 3, 4, 5, 6, 7, 8]);
    out.push(vec![0, 3 | 4, 17, 3, 0, 2 | 1 << 2, 0xaa]);
    out
}
