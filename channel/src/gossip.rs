//! BOLT 7 announcements: the `channel_announcement` both ends of a public channel sign,
//! the `announcement_signatures` they exchange for it, the node's `node_announcement`,
//! and the short-channel-id lists of the gossip queries.

use crate::keys::secp;
use crate::msgs::{AnnouncementSignatures, ChannelAnnouncement, NodeAnnouncement};
use crate::wire::Reader;
use crate::ChannelId;
use bitcoin::secp256k1::{ecdsa::Signature, Message as SecpMessage, PublicKey, SecretKey};
use std::net::{IpAddr, SocketAddr};

/// Confirmations the funding needs before `announcement_signatures` (BOLT 7).
pub const ANNOUNCEMENT_DEPTH: u32 = 6;

/// Most short channel ids one `reply_channel_range` carries (8 bytes each, within a
/// 65,535-byte message).
pub const MAX_SHORT_IDS_PER_REPLY: usize = 8000;

/// Why an announcement could not be built or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GossipError {
    /// The peer signed another short channel id than the one the funding has.
    #[error("announcement_signatures for short channel id {theirs}, the funding is {ours}")]
    ShortChannelId {
        /// Ours, from the funding transaction's position in the chain.
        ours: u64,
        /// The peer's.
        theirs: u64,
    },
    /// The node signature does not verify against the peer's node id.
    #[error("announcement_signatures: node_signature does not verify")]
    NodeSignature,
    /// The bitcoin signature does not verify against the peer's funding key.
    #[error("announcement_signatures: bitcoin_signature does not verify")]
    BitcoinSignature,
    /// An alias longer than 32 bytes.
    #[error("alias is {0} bytes; at most 32")]
    AliasTooLong(usize),
    /// An address that cannot be announced.
    #[error("address {0}: {1}")]
    Address(String, &'static str),
    /// An `encoded_short_ids` (or query flags) field that does not decode.
    #[error("encoded short channel ids: {0}")]
    Encoding(&'static str),
}

/// One end of a channel as its `channel_announcement` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelEnd {
    /// The node's id.
    pub node_id: PublicKey,
    /// Its funding key in this channel.
    pub funding_key: PublicKey,
}

/// A signature the announcement's hash is computed without (the hash skips the four
/// signatures), replaced once both ends have signed.
fn placeholder_signature() -> Signature {
    Signature::from_compact(&[1u8; 64]).expect("a valid compact signature")
}

/// The channel's `channel_announcement` before signing: `node_id_1` is the lesser of the
/// two compressed node ids, each funding key goes with its node, no channel features.
pub fn unsigned_channel_announcement(
    chain_hash: [u8; 32],
    short_channel_id: u64,
    a: ChannelEnd,
    b: ChannelEnd,
) -> ChannelAnnouncement {
    let (one, two) = if a.node_id.serialize() < b.node_id.serialize() {
        (a, b)
    } else {
        (b, a)
    };
    ChannelAnnouncement {
        node_signature_1: placeholder_signature(),
        node_signature_2: placeholder_signature(),
        bitcoin_signature_1: placeholder_signature(),
        bitcoin_signature_2: placeholder_signature(),
        features: vec![],
        chain_hash,
        short_channel_id,
        node_id_1: one.node_id,
        node_id_2: two.node_id,
        bitcoin_key_1: one.funding_key,
        bitcoin_key_2: two.funding_key,
    }
}

/// Our `announcement_signatures` for `announcement`: its hash signed with the node key
/// and with the channel's funding key.
pub fn sign_channel_announcement(
    announcement: &ChannelAnnouncement,
    channel_id: ChannelId,
    node_key: &SecretKey,
    funding_key: &SecretKey,
) -> AnnouncementSignatures {
    let msg = SecpMessage::from_digest(announcement.signing_hash());
    AnnouncementSignatures {
        channel_id,
        short_channel_id: announcement.short_channel_id,
        node_signature: secp().sign_ecdsa(&msg, node_key),
        bitcoin_signature: secp().sign_ecdsa(&msg, funding_key),
    }
}

/// Checks the peer's `announcement_signatures` against the announcement we built: the
/// same short channel id, and both signatures by the peer's keys over its hash.
pub fn check_announcement_signatures(
    announcement: &ChannelAnnouncement,
    theirs: &AnnouncementSignatures,
    remote: &ChannelEnd,
) -> Result<(), GossipError> {
    if theirs.short_channel_id != announcement.short_channel_id {
        return Err(GossipError::ShortChannelId {
            ours: announcement.short_channel_id,
            theirs: theirs.short_channel_id,
        });
    }
    let msg = SecpMessage::from_digest(announcement.signing_hash());
    secp()
        .verify_ecdsa(&msg, &theirs.node_signature, &remote.node_id)
        .map_err(|_| GossipError::NodeSignature)?;
    secp()
        .verify_ecdsa(&msg, &theirs.bitcoin_signature, &remote.funding_key)
        .map_err(|_| GossipError::BitcoinSignature)?;
    Ok(())
}

/// The announcement with both ends' signatures in place.
pub fn complete_channel_announcement(
    mut announcement: ChannelAnnouncement,
    local_node_id: &PublicKey,
    ours: &AnnouncementSignatures,
    theirs: &AnnouncementSignatures,
) -> ChannelAnnouncement {
    let (one, two) = if announcement.node_id_1 == *local_node_id {
        (ours, theirs)
    } else {
        (theirs, ours)
    };
    announcement.node_signature_1 = one.node_signature;
    announcement.node_signature_2 = two.node_signature;
    announcement.bitcoin_signature_1 = one.bitcoin_signature;
    announcement.bitcoin_signature_2 = two.bitcoin_signature;
    announcement
}

/// Whether all four signatures of a `channel_announcement` verify (what every receiver
/// checks before taking it).
pub fn verify_channel_announcement(a: &ChannelAnnouncement) -> bool {
    let msg = SecpMessage::from_digest(a.signing_hash());
    let ok = |sig: &Signature, key: &PublicKey| secp().verify_ecdsa(&msg, sig, key).is_ok();
    ok(&a.node_signature_1, &a.node_id_1)
        && ok(&a.node_signature_2, &a.node_id_2)
        && ok(&a.bitcoin_signature_1, &a.bitcoin_key_1)
        && ok(&a.bitcoin_signature_2, &a.bitcoin_key_2)
}

/// An address a node announces it accepts connections on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetAddress {
    /// An IPv4 or IPv6 address and port (descriptor types 1 and 2).
    Ip(SocketAddr),
    /// A DNS host name and port (descriptor type 5).
    Dns {
        /// ASCII host name, at most 255 bytes.
        host: String,
        /// Port, not 0.
        port: u16,
    },
}

impl std::str::FromStr for NetAddress {
    type Err = GossipError;

    /// `1.2.3.4:9735`, `[2001:db8::1]:9735` or `node.example.com:9735`.
    fn from_str(s: &str) -> Result<Self, GossipError> {
        let bad = |why| GossipError::Address(s.to_string(), why);
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(bad("port 0"));
            }
            return Ok(NetAddress::Ip(addr));
        }
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        let port: u16 = port.parse().map_err(|_| bad("invalid port"))?;
        if port == 0 {
            return Err(bad("port 0"));
        }
        if host.is_empty() || host.len() > 255 || host.parse::<IpAddr>().is_ok() {
            return Err(bad("invalid host"));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(bad("a host name is letters, digits, '-' and '.'"));
        }
        Ok(NetAddress::Dns {
            host: host.to_string(),
            port,
        })
    }
}

impl NetAddress {
    fn descriptor_type(&self) -> u8 {
        match self {
            NetAddress::Ip(SocketAddr::V4(_)) => 1,
            NetAddress::Ip(SocketAddr::V6(_)) => 2,
            NetAddress::Dns { .. } => 5,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.descriptor_type());
        match self {
            NetAddress::Ip(SocketAddr::V4(a)) => {
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            NetAddress::Ip(SocketAddr::V6(a)) => {
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            NetAddress::Dns { host, port } => {
                out.push(host.len() as u8);
                out.extend_from_slice(host.as_bytes());
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
    }
}

/// The `addresses` field: descriptors in ascending type order, one host name at most.
pub fn encode_addresses(addresses: &[NetAddress]) -> Result<Vec<u8>, GossipError> {
    let names = addresses
        .iter()
        .filter(|a| matches!(a, NetAddress::Dns { .. }))
        .count();
    if names > 1 {
        return Err(GossipError::Address(
            format!("{names} host names"),
            "BOLT 7 allows one host name",
        ));
    }
    let mut sorted: Vec<&NetAddress> = addresses.iter().collect();
    sorted.sort_by_key(|a| a.descriptor_type());
    let mut out = Vec::new();
    for a in sorted {
        a.encode(&mut out);
    }
    Ok(out)
}

/// The node's `node_announcement`, signed with its node key. `alias` is UTF-8 of at most
/// 32 bytes (zero-padded); `features` the node's feature bits (big-endian, minimal).
pub fn node_announcement(
    node_key: &SecretKey,
    features: Vec<u8>,
    timestamp: u32,
    rgb_color: [u8; 3],
    alias: &str,
    addresses: &[NetAddress],
) -> Result<NodeAnnouncement, GossipError> {
    if alias.len() > 32 {
        return Err(GossipError::AliasTooLong(alias.len()));
    }
    let mut alias_bytes = [0u8; 32];
    alias_bytes[..alias.len()].copy_from_slice(alias.as_bytes());
    let mut m = NodeAnnouncement {
        signature: placeholder_signature(),
        features,
        timestamp,
        node_id: PublicKey::from_secret_key(secp(), node_key),
        rgb_color,
        alias: alias_bytes,
        addresses: encode_addresses(addresses)?,
    };
    let msg = SecpMessage::from_digest(m.signing_hash());
    m.signature = secp().sign_ecdsa(&msg, node_key);
    Ok(m)
}

/// The block height a short channel id names.
pub fn scid_block(short_channel_id: u64) -> u32 {
    (short_channel_id >> 40) as u32
}

/// `encoded_short_ids` with encoding type 0 (uncompressed, ascending).
pub fn encode_short_ids(ids: &[u64]) -> Vec<u8> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(1 + 8 * sorted.len());
    out.push(0);
    for id in sorted {
        out.extend_from_slice(&id.to_be_bytes());
    }
    out
}

/// Reads `encoded_short_ids`: encoding type 0 and a whole number of ids (type 1, zlib,
/// MUST NOT be used).
pub fn decode_short_ids(encoded: &[u8]) -> Result<Vec<u64>, GossipError> {
    match encoded.split_first() {
        Some((0, ids)) if ids.len() % 8 == 0 => Ok(ids
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
            .collect()),
        Some((0, _)) => Err(GossipError::Encoding("not a whole number of ids")),
        Some(_) => Err(GossipError::Encoding("unknown encoding type")),
        None => Err(GossipError::Encoding("empty")),
    }
}

/// Reads `query_flags` (an encoding byte, then one BigSize per id) for `count` ids.
pub fn decode_query_flags(encoded: &[u8], count: usize) -> Result<Vec<u64>, GossipError> {
    let Some((0, rest)) = encoded.split_first() else {
        return Err(GossipError::Encoding("unknown query flags encoding"));
    };
    let mut r = Reader::new(rest);
    let mut flags = Vec::new();
    while !r.is_empty() {
        flags.push(
            r.bigsize()
                .map_err(|_| GossipError::Encoding("query flags"))?,
        );
    }
    if flags.len() != count {
        return Err(GossipError::Encoding("not one query flag per id"));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msgs::Message;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_slice(&[b; 32]).unwrap()
    }
    fn public(k: &SecretKey) -> PublicKey {
        PublicKey::from_secret_key(secp(), k)
    }

    struct End {
        node: SecretKey,
        funding: SecretKey,
    }
    impl End {
        fn end(&self) -> ChannelEnd {
            ChannelEnd {
                node_id: public(&self.node),
                funding_key: public(&self.funding),
            }
        }
    }

    #[test]
    fn both_ends_build_the_same_announcement_and_each_checks_the_other() {
        let (a, b) = (
            End {
                node: key(3),
                funding: key(4),
            },
            End {
                node: key(5),
                funding: key(6),
            },
        );
        let scid = (700_000u64 << 40) | (12 << 16) | 1;
        let at_a = unsigned_channel_announcement([9; 32], scid, a.end(), b.end());
        let at_b = unsigned_channel_announcement([9; 32], scid, b.end(), a.end());
        assert_eq!(at_a, at_b, "the same bytes whichever end builds it");
        assert!(at_a.node_id_1.serialize() < at_a.node_id_2.serialize());
        let id = ChannelId([7; 32]);
        let sigs_a = sign_channel_announcement(&at_a, id, &a.node, &a.funding);
        let sigs_b = sign_channel_announcement(&at_b, id, &b.node, &b.funding);
        check_announcement_signatures(&at_a, &sigs_b, &b.end()).unwrap();
        check_announcement_signatures(&at_b, &sigs_a, &a.end()).unwrap();
        let full = complete_channel_announcement(at_a, &public(&a.node), &sigs_a, &sigs_b);
        assert!(verify_channel_announcement(&full));
        let full_b = complete_channel_announcement(at_b, &public(&b.node), &sigs_b, &sigs_a);
        assert_eq!(full, full_b);
        // It survives the wire.
        let wire = Message::ChannelAnnouncement(full.clone()).encode();
        assert_eq!(&wire[..2], &256u16.to_be_bytes());
        assert_eq!(
            Message::decode(&wire).unwrap(),
            Message::ChannelAnnouncement(full)
        );
    }

    #[test]
    fn wrong_signatures_and_a_wrong_scid_are_refused() {
        let (a, b) = (
            End {
                node: key(3),
                funding: key(4),
            },
            End {
                node: key(5),
                funding: key(6),
            },
        );
        let ann = unsigned_channel_announcement([9; 32], 42 << 40, a.end(), b.end());
        let id = ChannelId([7; 32]);
        let good = sign_channel_announcement(&ann, id, &b.node, &b.funding);
        // Node and funding keys swapped.
        let swapped = sign_channel_announcement(&ann, id, &b.funding, &b.node);
        assert_eq!(
            check_announcement_signatures(&ann, &swapped, &b.end()),
            Err(GossipError::NodeSignature)
        );
        let mut bad_bitcoin = good.clone();
        bad_bitcoin.bitcoin_signature = good.node_signature;
        assert_eq!(
            check_announcement_signatures(&ann, &bad_bitcoin, &b.end()),
            Err(GossipError::BitcoinSignature)
        );
        // Signed for another channel.
        let other = unsigned_channel_announcement([9; 32], 43 << 40, a.end(), b.end());
        let mut moved = sign_channel_announcement(&other, id, &b.node, &b.funding);
        assert!(matches!(
            check_announcement_signatures(&ann, &moved, &b.end()),
            Err(GossipError::ShortChannelId { .. })
        ));
        moved.short_channel_id = ann.short_channel_id;
        assert_eq!(
            check_announcement_signatures(&ann, &moved, &b.end()),
            Err(GossipError::NodeSignature)
        );
        let mine = sign_channel_announcement(&ann, id, &a.node, &a.funding);
        let mut full = complete_channel_announcement(ann, &public(&a.node), &mine, &good);
        assert!(verify_channel_announcement(&full));
        full.short_channel_id += 1;
        assert!(!verify_channel_announcement(&full));
    }

    #[test]
    fn node_announcement_is_signed_and_addresses_are_encoded_in_order() {
        let k = key(8);
        let addrs: Vec<NetAddress> = [
            "node.example.com:9735",
            "[2001:db8::1]:9736",
            "203.0.113.5:9735",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let m = node_announcement(&k, vec![0x0a], 1_700_000_000, [1, 2, 3], "hub", &addrs).unwrap();
        let msg = SecpMessage::from_digest(m.signing_hash());
        secp()
            .verify_ecdsa(&msg, &m.signature, &public(&k))
            .unwrap();
        assert_eq!(&m.alias[..4], b"hub\0");
        let mut want = vec![1, 203, 0, 113, 5, 0x26, 0x07, 2];
        want.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        want.extend_from_slice(&[0x26, 0x08, 5, 16]);
        want.extend_from_slice(b"node.example.com");
        want.extend_from_slice(&[0x26, 0x07]);
        assert_eq!(m.addresses, want);
        let wire = Message::NodeAnnouncement(m.clone()).encode();
        assert_eq!(
            Message::decode(&wire).unwrap(),
            Message::NodeAnnouncement(m)
        );
        assert_eq!(
            node_announcement(&k, vec![], 1, [0; 3], &"x".repeat(33), &[]),
            Err(GossipError::AliasTooLong(33))
        );
        for bad in ["1.2.3.4:0", "host", "a b:1", "two:1:2"] {
            assert!(bad.parse::<NetAddress>().is_err(), "{bad}");
        }
        let two_names: Vec<NetAddress> = vec![
            "a.example:1".parse().unwrap(),
            "b.example:1".parse().unwrap(),
        ];
        assert!(encode_addresses(&two_names).is_err());
    }

    #[test]
    fn short_ids_and_query_flags_round_trip_and_bad_encodings_are_refused() {
        let ids = [3u64 << 40, 1 << 40, 2 << 40];
        let enc = encode_short_ids(&ids);
        assert_eq!(
            decode_short_ids(&enc).unwrap(),
            vec![1 << 40, 2 << 40, 3 << 40]
        );
        assert!(decode_short_ids(&enc[..enc.len() - 1]).is_err());
        assert!(decode_short_ids(&[1, 0, 0]).is_err());
        assert!(decode_short_ids(&[]).is_err());
        assert_eq!(decode_short_ids(&[0]).unwrap(), Vec::<u64>::new());
        assert_eq!(
            decode_query_flags(&[0, 1, 0x1f, 0], 3).unwrap(),
            vec![1, 0x1f, 0]
        );
        assert!(decode_query_flags(&[0, 1], 2).is_err());
        assert!(decode_query_flags(&[1, 1], 1).is_err());
        assert_eq!(scid_block(ids[0]), 3);
    }

    #[test]
    fn unreadable_gossip_is_opaque_and_other_messages_are_not() {
        // A channel_announcement too short to parse: kept as gossip, not an error.
        let mut wire = 256u16.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0u8; 10]);
        assert!(matches!(
            Message::decode(&wire),
            Ok(Message::Announcement { msg_type: 256, .. })
        ));
        // A short announcement_signatures is a channel message: an error.
        let mut wire = 259u16.to_be_bytes().to_vec();
        wire.extend_from_slice(&[0u8; 10]);
        assert!(Message::decode(&wire).is_err());
    }
}
