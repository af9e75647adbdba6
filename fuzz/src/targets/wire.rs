//! BOLT 1/2 messages and TLV streams.

use bitcoin::secp256k1::{Message as SecpMessage, PublicKey, Secp256k1, SecretKey};
use channel::msgs::Message;
use channel::onion::HopPayload;
use channel::wire::{read_tlv_stream, tlv_value, Reader, Writer};

use super::tag;

/// Decodes one message; a message that decodes must survive encode → decode unchanged.
pub fn wire_message(data: &[u8]) -> u64 {
    match Message::decode(data) {
        Ok(m) => {
            let again = Message::decode(&m.encode());
            assert_eq!(again.as_ref(), Ok(&m), "encode→decode changed a message");
            u64::from(m.msg_type()) << 8 | 1
        }
        Err(e) => tag(&e),
    }
}

/// Reads a TLV stream the way messages do (with records of every `TlvValue` type known),
/// BigSize values, and onion hop payloads, which are TLV streams too.
pub fn tlv_stream(data: &[u8]) -> u64 {
    let mut label = 0u64;
    let mut seen = Vec::new();
    let r = read_tlv_stream(&mut Reader::new(data), |ty, bytes| {
        seen.push(ty);
        match ty % 8 {
            0 | 1 => tlv_value::<u64>(ty, bytes).map(|_| true),
            2 | 3 => tlv_value::<PublicKey>(ty, bytes).map(|_| true),
            4 | 5 => tlv_value::<Vec<[u8; 32]>>(ty, bytes).map(|_| true),
            6 => tlv_value::<channel::msgs::FeeRange>(ty, bytes).map(|_| true),
            _ => Ok(false),
        }
    });
    if r.is_ok() {
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "TLV types not increasing"
        );
    }
    label ^= tag(&r);

    // A BigSize that decodes re-encodes to exactly the bytes it was read from (BOLT 1
    // requires the minimal encoding).
    let mut r = Reader::new(data);
    if let Ok(v) = r.bigsize() {
        let used = data.len() - r.remaining().len();
        let mut w = Writer::new();
        w.bigsize(v);
        assert_eq!(
            w.into_bytes(),
            &data[..used],
            "non-canonical BigSize accepted"
        );
        label = label.wrapping_add(0x100);
    }

    for is_final in [false, true] {
        match HopPayload::decode(data, is_final) {
            Ok(p) => {
                assert_eq!(
                    HopPayload::decode(&p.encode(), is_final).as_ref(),
                    Ok(&p),
                    "hop payload encode→decode changed it"
                );
                label = label.wrapping_add(0x1000);
            }
            Err(e) => label ^= tag(&e).rotate_left(7),
        }
    }
    label
}

/// A message type, its fields' letters, and its TLV records (type, fields' letters).
type Layout = (u16, &'static str, &'static [(u8, &'static str)]);

/// Field layouts of the messages in `channel::msgs`, one letter per field, used to build
/// valid seeds without the crate's test-only generators: `h` 32 bytes, `q` u64, `i` u32,
/// `s` u16, `b` u8, `k` public key, `g` signature, `v` u16-prefixed bytes, `G` u16-counted
/// signatures, `o` onion packet. The third element is TLV records appended after.
const LAYOUTS: &[Layout] = &[
    (1, "hv", &[]),
    (16, "vv", &[(1, "hh"), (3, "v")]),
    (17, "hv", &[]),
    (18, "sv", &[]),
    (19, "v", &[]),
    (32, "hhqqqqqqisskkkkkkb", &[(0, "v"), (1, "v")]),
    (33, "hqqqqisskkkkkk", &[(0, "v"), (1, "v")]),
    (34, "hhsg", &[]),
    (35, "hg", &[]),
    (36, "hk", &[(1, "q")]),
    (38, "hv", &[]),
    (39, "hqg", &[(1, "qq")]),
    (128, "hqqhio", &[(0, "k")]),
    (130, "hqh", &[]),
    (131, "hqv", &[]),
    (132, "hgG", &[]),
    (133, "hhk", &[]),
    (134, "hi", &[]),
    (135, "hqhs", &[]),
    (136, "hqqhk", &[]),
    (0x8001, "vvv", &[]),
];

fn fields(layout: &str, n: u8, key: &PublicKey, sig: &[u8; 64]) -> Vec<u8> {
    let mut out = Vec::new();
    for (j, c) in layout.chars().enumerate() {
        let fill = n.wrapping_add(j as u8);
        match c {
            'h' => out.extend([fill; 32]),
            'q' => out.extend(u64::from(fill).to_be_bytes()),
            'i' => out.extend(u32::from(fill).to_be_bytes()),
            's' => out.extend(u16::from(fill).to_be_bytes()),
            'b' => out.push(fill),
            'k' => out.extend(key.serialize()),
            'g' => out.extend(sig),
            'v' => {
                let len = usize::from(fill % 7);
                out.extend((len as u16).to_be_bytes());
                out.extend(vec![fill; len]);
            }
            'G' => {
                let count = fill % 3;
                out.extend(u16::from(count).to_be_bytes());
                for _ in 0..count {
                    out.extend(sig);
                }
            }
            'o' => out.extend(vec![fill; channel::msgs::ONION_PACKET_LEN]),
            _ => unreachable!("layout letters are fixed above"),
        }
    }
    out
}

/// Encoded messages of every known type (twice, with and without their TLV records)
/// and an unknown odd type.
pub fn message_seeds() -> Vec<Vec<u8>> {
    let secp = Secp256k1::new();
    let sk = SecretKey::from_slice(&[0x41; 32]).expect("valid key");
    let key = sk.public_key(&secp);
    let sig = secp
        .sign_ecdsa(&SecpMessage::from_digest([7; 32]), &sk)
        .serialize_compact();
    let mut out = Vec::new();
    for (n, (ty, layout, tlvs)) in LAYOUTS.iter().enumerate() {
        let mut msg = ty.to_be_bytes().to_vec();
        msg.extend(fields(layout, n as u8, &key, &sig));
        out.push(msg.clone());
        for (t, l) in tlvs.iter() {
            let mut value = fields(l, n as u8, &key, &sig);
            if *l == "v" {
                value.drain(..2);
            }
            let mut w = Writer::new();
            w.tlv(u64::from(*t), &value);
            msg.extend(w.into_bytes());
        }
        out.push(msg);
    }
    out
}

/// TLV streams and BigSize encodings, plus the BOLT 4 vectors' hop payloads.
pub fn tlv_seeds() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x01, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x2a],
        vec![0xfc],
        vec![0xfd, 0x00, 0xfd],
        vec![0xfe, 0x00, 0x01, 0x00, 0x00],
        vec![0xff, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
        vec![0x03, 0x00, 0x05, 0x01, 0xff, 0x07, 0x00],
    ];
    out.extend(crate::seeds::onion_packets().into_iter().skip(1).take(5));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_seed_decodes() {
        for seed in message_seeds() {
            let m = Message::decode(&seed).unwrap_or_else(|e| panic!("{e:?}: {seed:02x?}"));
            assert_eq!(m.encode(), seed);
        }
    }
}
