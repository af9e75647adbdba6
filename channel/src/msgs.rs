//! BOLT 1 and BOLT 2 messages and their binary encoding: `[u16 type][payload][TLV stream]`.

use crate::types::{ChannelId, PaymentHash, PaymentPreimage};
use crate::wire::{read_tlv_stream, tlv_value, DecodeError, Reader, TlvValue, WireField, Writer};
use bitcoin::secp256k1::{ecdsa::Signature, PublicKey};

/// Size of the BOLT 4 onion packet carried by update_add_htlc.
pub const ONION_PACKET_LEN: usize = 1366;

/// The 1366-byte onion routing packet of update_add_htlc (opaque to the channel).
#[derive(Clone, PartialEq, Eq)]
pub struct OnionPacket(pub Box<[u8; ONION_PACKET_LEN]>);

impl std::fmt::Debug for OnionPacket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnionPacket(version {})", self.0[0])
    }
}

/// Stored as hex: 1366 bytes as a JSON array of numbers would be four times larger.
impl serde::Serialize for OnionPacket {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use bitcoin::hex::DisplayHex;
        s.serialize_str(&self.0.to_lower_hex_string())
    }
}

impl<'de> serde::Deserialize<'de> for OnionPacket {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use bitcoin::hex::FromHex;
        let s = <String as serde::Deserialize>::deserialize(d)?;
        let bytes = <[u8; ONION_PACKET_LEN]>::from_hex(&s).map_err(serde::de::Error::custom)?;
        Ok(OnionPacket(Box::new(bytes)))
    }
}

impl Default for OnionPacket {
    fn default() -> Self {
        OnionPacket(Box::new([0u8; ONION_PACKET_LEN]))
    }
}

impl WireField for OnionPacket {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.0[..]);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(OnionPacket(Box::new(r.array()?)))
    }
}

macro_rules! bytes32_field {
    ($($t:ident),*) => {$(
        impl WireField for $t {
            fn write(&self, w: &mut Writer) {
                w.bytes(&self.0);
            }
            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok($t(r.array()?))
            }
        }
    )*};
}
bytes32_field!(ChannelId, PaymentHash, PaymentPreimage);

/// closing_signed's `fee_range` TLV: the fees the sender accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeeRange {
    /// Lowest acceptable fee.
    pub min_fee_satoshis: u64,
    /// Highest acceptable fee.
    pub max_fee_satoshis: u64,
}

impl TlvValue for FeeRange {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.min_fee_satoshis.to_be_bytes().to_vec();
        v.extend_from_slice(&self.max_fee_satoshis.to_be_bytes());
        v
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 16 {
            return None;
        }
        Some(FeeRange {
            min_fee_satoshis: u64::from_be_bytes(bytes[..8].try_into().ok()?),
            max_fee_satoshis: u64::from_be_bytes(bytes[8..].try_into().ok()?),
        })
    }
}

impl ChannelUpdate {
    /// The double SHA-256 the signature covers: the encoded message after the signature.
    pub fn signing_hash(&self) -> [u8; 32] {
        signed_part_hash(&Message::ChannelUpdate(self.clone()), 64)
    }
}

impl ChannelAnnouncement {
    /// The double SHA-256 the four signatures cover: the message after them.
    pub fn signing_hash(&self) -> [u8; 32] {
        signed_part_hash(&Message::ChannelAnnouncement(self.clone()), 4 * 64)
    }
}

impl NodeAnnouncement {
    /// The double SHA-256 the signature covers: the encoded message after the signature.
    pub fn signing_hash(&self) -> [u8; 32] {
        signed_part_hash(&Message::NodeAnnouncement(self.clone()), 64)
    }
}

/// The double SHA-256 of an encoded message past its type and its first `skip` bytes.
fn signed_part_hash(m: &Message, skip: usize) -> [u8; 32] {
    use bitcoin::hashes::{sha256d, Hash};
    sha256d::Hash::hash(&m.encode()[2 + skip..]).to_byte_array()
}

macro_rules! messages {
    ($(
        $(#[$doc:meta])*
        $name:ident = $ty:literal {
            $( $(#[$fdoc:meta])* $field:ident : $fty:ty ),* $(,)?
        }
        tlvs { $( $(#[$tdoc:meta])* $tnum:literal => $tfield:ident : $tty:ty ),* $(,)? }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Clone, Debug, PartialEq, Eq)]
            pub struct $name {
                $( $(#[$fdoc])* pub $field: $fty, )*
                $( $(#[$tdoc])* pub $tfield: Option<$tty>, )*
            }

            impl $name {
                /// The BOLT message type.
                pub const TYPE: u16 = $ty;

                fn write_payload(&self, w: &mut Writer) {
                    $( self.$field.write(w); )*
                    $( if let Some(v) = &self.$tfield { w.tlv($tnum, &TlvValue::encode(v)); } )*
                }

                fn read_payload(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                    $( let $field = <$fty as WireField>::read(r)?; )*
                    $( let mut $tfield: Option<$tty> = None; )*
                    read_tlv_stream(r, |ty, bytes| {
                        #[allow(clippy::match_single_binding)]
                        match ty {
                            $( $tnum => { $tfield = Some(tlv_value(ty, bytes)?); Ok(true) } )*
                            _ => { let _ = bytes; Ok(false) }
                        }
                    })?;
                    Ok($name { $($field,)* $($tfield,)* })
                }
            }

            impl From<$name> for Message {
                fn from(m: $name) -> Message {
                    Message::$name(m)
                }
            }

            #[cfg(test)]
            impl crate::msgs::gen::Gen for $name {
                fn gen(s: &mut crate::msgs::gen::Src) -> Self {
                    $name {
                        $( $field: crate::msgs::gen::Gen::gen(s), )*
                        $( $tfield: crate::msgs::gen::Gen::gen(s), )*
                    }
                }
            }
        )*

        /// Any message of BOLT 1 or BOLT 2 this node speaks.
        #[derive(Clone, Debug, PartialEq, Eq)]
        #[allow(clippy::large_enum_variant)]
        pub enum Message {
            $( $(#[$doc])* $name($name), )*
            /// A gossip message (`channel_announcement` 256, `node_announcement` 257,
            /// `channel_update` 258) that does not parse: others' gossip is never a reason
            /// to drop a connection (BOLT 7), so it is kept opaque and ignored.
            Announcement {
                /// Its type.
                msg_type: u16,
                /// Its payload.
                payload: Vec<u8>,
            },
            /// A message with an odd type this node does not know: ignored by BOLT 1.
            Unknown {
                /// Its type.
                msg_type: u16,
                /// Its payload.
                payload: Vec<u8>,
            },
        }

        impl Message {
            /// The message's type number.
            pub fn msg_type(&self) -> u16 {
                match self {
                    $( Message::$name(_) => $ty, )*
                    Message::Unknown { msg_type, .. } | Message::Announcement { msg_type, .. } => *msg_type,
                }
            }

            /// Encodes `[u16 type][payload][extension TLVs]`.
            pub fn encode(&self) -> Vec<u8> {
                let mut w = Writer::new();
                self.msg_type().write(&mut w);
                match self {
                    $( Message::$name(m) => m.write_payload(&mut w), )*
                    Message::Unknown { payload, .. } | Message::Announcement { payload, .. } => w.bytes(payload),
                }
                w.into_bytes()
            }

            /// Decodes one message. Unknown odd types come back as [`Message::Unknown`];
            /// unknown even types are an error (BOLT 1: "it's OK to be odd").
            pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
                let mut r = Reader::new(bytes);
                let msg_type = u16::read(&mut r)?;
                match msg_type {
                    $( $ty => match $name::read_payload(&mut r) {
                        Ok(m) => Ok(Message::$name(m)),
                        Err(_) if (256..=258).contains(&msg_type) => Ok(Message::Announcement {
                            msg_type,
                            payload: bytes[2..].to_vec(),
                        }),
                        Err(e) => Err(e),
                    }, )*
                    t if t % 2 == 1 => Ok(Message::Unknown { msg_type: t, payload: r.remaining().to_vec() }),
                    t => Err(DecodeError::UnknownEvenMessage(t)),
                }
            }
        }

        #[cfg(test)]
        pub(crate) fn gen_message(s: &mut crate::msgs::gen::Src) -> Message {
            const COUNT: u8 = [$($ty),*].len() as u8;
            let pick = s.byte() % COUNT;
            let mut i = 0u8;
            $(
                if pick == i {
                    return Message::$name(crate::msgs::gen::Gen::gen(s));
                }
                i += 1;
            )*
            let _ = i;
            unreachable!("pick is below the message count")
        }
    };
}

messages! {
    /// BOLT 1 `warning` (type 1).
    Warning = 1 {
        /// The channel concerned, or all zeroes for the connection.
        channel_id: ChannelId,
        /// Human-readable text.
        data: Vec<u8>,
    } tlvs {}

    /// BOLT 1 `init` (type 16).
    Init = 16 {
        /// Legacy global features.
        globalfeatures: Vec<u8>,
        /// Feature bits, big-endian bitfield.
        features: Vec<u8>,
    } tlvs {
        /// Chains the sender is interested in.
        1 => networks: Vec<[u8; 32]>,
        /// The sender's view of the receiver's address.
        3 => remote_addr: Vec<u8>,
    }

    /// BOLT 1 `error` (type 17).
    ErrorMessage = 17 {
        /// The channel concerned, or all zeroes for all channels.
        channel_id: ChannelId,
        /// Human-readable text.
        data: Vec<u8>,
    } tlvs {}

    /// BOLT 1 `ping` (type 18).
    Ping = 18 {
        /// How many bytes the pong must carry.
        num_pong_bytes: u16,
        /// Padding.
        ignored: Vec<u8>,
    } tlvs {}

    /// BOLT 1 `pong` (type 19).
    Pong = 19 {
        /// Padding, `num_pong_bytes` long.
        ignored: Vec<u8>,
    } tlvs {}

    /// BOLT 2 `open_channel` (type 32).
    OpenChannel = 32 {
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// Id until the funding transaction is known.
        temporary_channel_id: ChannelId,
        /// Channel capacity.
        funding_satoshis: u64,
        /// Amount given to the acceptor at open.
        push_msat: u64,
        /// Outputs below this are not created on the sender's commitment.
        dust_limit_satoshis: u64,
        /// Cap on the value of HTLCs offered to the sender.
        max_htlc_value_in_flight_msat: u64,
        /// Balance the acceptor must keep.
        channel_reserve_satoshis: u64,
        /// Smallest HTLC the sender accepts.
        htlc_minimum_msat: u64,
        /// Initial commitment fee rate.
        feerate_per_kw: u32,
        /// CSV delay on the acceptor's to_local output.
        to_self_delay: u16,
        /// Cap on HTLCs offered to the sender.
        max_accepted_htlcs: u16,
        /// Funding key.
        funding_pubkey: PublicKey,
        /// Revocation basepoint.
        revocation_basepoint: PublicKey,
        /// Payment basepoint.
        payment_basepoint: PublicKey,
        /// Delayed payment basepoint.
        delayed_payment_basepoint: PublicKey,
        /// HTLC basepoint.
        htlc_basepoint: PublicKey,
        /// Per-commitment point of commitment 0.
        first_per_commitment_point: PublicKey,
        /// Bit 0: announce the channel.
        channel_flags: u8,
    } tlvs {
        /// Where the sender's funds must go on a mutual close.
        0 => upfront_shutdown_script: Vec<u8>,
        /// Negotiated channel type.
        1 => channel_type: Vec<u8>,
    }

    /// BOLT 2 `accept_channel` (type 33).
    AcceptChannel = 33 {
        /// Id from open_channel.
        temporary_channel_id: ChannelId,
        /// Dust limit of the sender's commitment.
        dust_limit_satoshis: u64,
        /// Cap on the value of HTLCs offered to the sender.
        max_htlc_value_in_flight_msat: u64,
        /// Balance the funder must keep.
        channel_reserve_satoshis: u64,
        /// Smallest HTLC the sender accepts.
        htlc_minimum_msat: u64,
        /// Confirmations before channel_ready.
        minimum_depth: u32,
        /// CSV delay on the funder's to_local output.
        to_self_delay: u16,
        /// Cap on HTLCs offered to the sender.
        max_accepted_htlcs: u16,
        /// Funding key.
        funding_pubkey: PublicKey,
        /// Revocation basepoint.
        revocation_basepoint: PublicKey,
        /// Payment basepoint.
        payment_basepoint: PublicKey,
        /// Delayed payment basepoint.
        delayed_payment_basepoint: PublicKey,
        /// HTLC basepoint.
        htlc_basepoint: PublicKey,
        /// Per-commitment point of commitment 0.
        first_per_commitment_point: PublicKey,
    } tlvs {
        /// Where the sender's funds must go on a mutual close.
        0 => upfront_shutdown_script: Vec<u8>,
        /// Negotiated channel type.
        1 => channel_type: Vec<u8>,
    }

    /// BOLT 2 `funding_created` (type 34).
    FundingCreated = 34 {
        /// Id from open_channel.
        temporary_channel_id: ChannelId,
        /// The funding transaction's id (serialized byte order).
        funding_txid: [u8; 32],
        /// The funding output index.
        funding_output_index: u16,
        /// The funder's signature of the acceptor's first commitment.
        signature: Signature,
    } tlvs {}

    /// BOLT 2 `funding_signed` (type 35).
    FundingSigned = 35 {
        /// The real channel id.
        channel_id: ChannelId,
        /// The acceptor's signature of the funder's first commitment.
        signature: Signature,
    } tlvs {}

    /// BOLT 2 `channel_ready` (type 36).
    ChannelReady = 36 {
        /// The channel.
        channel_id: ChannelId,
        /// Per-commitment point of commitment 1.
        second_per_commitment_point: PublicKey,
    } tlvs {
        /// A short channel id alias.
        1 => short_channel_id: u64,
    }

    /// BOLT 2 `shutdown` (type 38).
    Shutdown = 38 {
        /// The channel.
        channel_id: ChannelId,
        /// Where the sender's funds go.
        scriptpubkey: Vec<u8>,
    } tlvs {}

    /// BOLT 2 `closing_signed` (type 39).
    ClosingSigned = 39 {
        /// The channel.
        channel_id: ChannelId,
        /// Proposed closing fee.
        fee_satoshis: u64,
        /// Signature of the closing transaction with that fee.
        signature: Signature,
    } tlvs {
        /// The fees the sender accepts.
        1 => fee_range: FeeRange,
    }

    /// BOLT 2 `update_add_htlc` (type 128).
    UpdateAddHtlc = 128 {
        /// The channel.
        channel_id: ChannelId,
        /// The sender's HTLC id.
        id: u64,
        /// HTLC value.
        amount_msat: u64,
        /// Hash the HTLC is locked to.
        payment_hash: PaymentHash,
        /// Block height at which the HTLC times out.
        cltv_expiry: u32,
        /// BOLT 4 onion for the next hops.
        onion_routing_packet: OnionPacket,
    } tlvs {
        /// Route blinding point.
        0 => blinding_point: PublicKey,
    }

    /// BOLT 2 `update_fulfill_htlc` (type 130).
    UpdateFulfillHtlc = 130 {
        /// The channel.
        channel_id: ChannelId,
        /// The receiver's HTLC id.
        id: u64,
        /// The preimage of the payment hash.
        payment_preimage: PaymentPreimage,
    } tlvs {}

    /// BOLT 2 `update_fail_htlc` (type 131).
    UpdateFailHtlc = 131 {
        /// The channel.
        channel_id: ChannelId,
        /// The receiver's HTLC id.
        id: u64,
        /// Encrypted failure reason for the origin.
        reason: Vec<u8>,
    } tlvs {}

    /// BOLT 2 `commitment_signed` (type 132).
    CommitmentSigned = 132 {
        /// The channel.
        channel_id: ChannelId,
        /// Signature of the receiver's new commitment.
        signature: Signature,
        /// Signatures of the receiver's HTLC transactions, in output order.
        htlc_signatures: Vec<Signature>,
    } tlvs {}

    /// BOLT 2 `revoke_and_ack` (type 133).
    RevokeAndAck = 133 {
        /// The channel.
        channel_id: ChannelId,
        /// Secret of the commitment being revoked.
        per_commitment_secret: [u8; 32],
        /// Point of the sender's commitment after next.
        next_per_commitment_point: PublicKey,
    } tlvs {}

    /// BOLT 2 `update_fee` (type 134).
    UpdateFee = 134 {
        /// The channel.
        channel_id: ChannelId,
        /// New commitment fee rate.
        feerate_per_kw: u32,
    } tlvs {}

    /// BOLT 2 `update_fail_malformed_htlc` (type 135).
    UpdateFailMalformedHtlc = 135 {
        /// The channel.
        channel_id: ChannelId,
        /// The receiver's HTLC id.
        id: u64,
        /// SHA-256 of the onion that could not be parsed.
        sha256_of_onion: [u8; 32],
        /// BOLT 4 failure code (BADONION bit set).
        failure_code: u16,
    } tlvs {}

    /// BOLT 2 `channel_reestablish` (type 136).
    ChannelReestablish = 136 {
        /// The channel.
        channel_id: ChannelId,
        /// Number of the next commitment_signed the sender expects to receive.
        next_commitment_number: u64,
        /// Number of the next revoke_and_ack the sender expects to receive.
        next_revocation_number: u64,
        /// The last per-commitment secret the sender received (zeroes if none).
        your_last_per_commitment_secret: [u8; 32],
        /// The sender's current per-commitment point.
        my_current_per_commitment_point: PublicKey,
    } tlvs {}

    /// BOLT 7 `query_short_channel_ids` (type 261).
    QueryShortChannelIds = 261 {
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// Encoding byte, then the short channel ids asked about.
        encoded_short_ids: Vec<u8>,
    } tlvs {
        /// What to send for each id.
        1 => query_flags: Vec<u8>,
    }

    /// BOLT 7 `reply_short_channel_ids_end` (type 262).
    ReplyShortChannelIdsEnd = 262 {
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// 1 when the sender keeps up-to-date information for the chain.
        full_information: u8,
    } tlvs {}

    /// BOLT 7 `query_channel_range` (type 263).
    QueryChannelRange = 263 {
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// First block of the range.
        first_blocknum: u32,
        /// Number of blocks in the range.
        number_of_blocks: u32,
    } tlvs {
        /// Timestamps and/or checksums wanted.
        1 => query_option: Vec<u8>,
    }

    /// BOLT 7 `reply_channel_range` (type 264).
    ReplyChannelRange = 264 {
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// First block covered.
        first_blocknum: u32,
        /// Blocks covered.
        number_of_blocks: u32,
        /// 1 unless the sender lacks information for the chain.
        sync_complete: u8,
        /// Encoding byte, then the short channel ids in the range.
        encoded_short_ids: Vec<u8>,
    } tlvs {}

    /// BOLT 7 `gossip_timestamp_filter` (type 265).
    GossipTimestampFilter = 265 {
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// Earliest gossip timestamp wanted.
        first_timestamp: u32,
        /// Width of the window.
        timestamp_range: u32,
    } tlvs {}

    /// BOLT 7 `announcement_signatures` (type 259): the sender's two signatures of the
    /// channel's `channel_announcement`, exchanged once the funding is six blocks deep.
    AnnouncementSignatures = 259 {
        /// The channel.
        channel_id: ChannelId,
        /// Its short channel id (the real one, never an alias).
        short_channel_id: u64,
        /// Signature by the sender's node key.
        node_signature: Signature,
        /// Signature by the sender's funding key.
        bitcoin_signature: Signature,
    } tlvs {}

    /// BOLT 7 `channel_announcement` (type 256): proof that the two nodes own the funding
    /// output named by `short_channel_id`.
    ChannelAnnouncement = 256 {
        /// `node_id_1`'s node-key signature.
        node_signature_1: Signature,
        /// `node_id_2`'s node-key signature.
        node_signature_2: Signature,
        /// `node_id_1`'s funding-key signature.
        bitcoin_signature_1: Signature,
        /// `node_id_2`'s funding-key signature.
        bitcoin_signature_2: Signature,
        /// Channel features.
        features: Vec<u8>,
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// The funding output: block height, transaction index, output index.
        short_channel_id: u64,
        /// The lesser of the two node ids.
        node_id_1: PublicKey,
        /// The greater of the two node ids.
        node_id_2: PublicKey,
        /// `node_id_1`'s funding key.
        bitcoin_key_1: PublicKey,
        /// `node_id_2`'s funding key.
        bitcoin_key_2: PublicKey,
    } tlvs {}

    /// BOLT 7 `node_announcement` (type 257): a node's features, alias, colour and
    /// addresses, signed by its node key.
    NodeAnnouncement = 257 {
        /// Signature of the double SHA-256 of everything after this field.
        signature: Signature,
        /// Node features.
        features: Vec<u8>,
        /// Unix seconds; a newer announcement replaces an older one.
        timestamp: u32,
        /// The node.
        node_id: PublicKey,
        /// Red, green, blue.
        rgb_color: [u8; 3],
        /// UTF-8, zero-padded.
        alias: [u8; 32],
        /// Address descriptors, in ascending type order.
        addresses: Vec<u8>,
    } tlvs {}

    /// BOLT 7 `channel_update` (type 258): the sender's forwarding policy for one
    /// direction of a channel. A hub sends it straight to its peer for unannounced channels,
    /// so a merchant can put the hub's fees in its invoices' route hints.
    ChannelUpdate = 258 {
        /// Signature of the double SHA-256 of everything after this field, by the
        /// sender's node key.
        signature: Signature,
        /// Genesis hash of the chain.
        chain_hash: [u8; 32],
        /// The channel: block height, transaction index and output index.
        short_channel_id: u64,
        /// Unix seconds; a newer update replaces an older one.
        timestamp: u32,
        /// Bit 0 is always 1 (`htlc_maximum_msat` present).
        message_flags: u8,
        /// Bit 0: direction (0 when the sender is the lesser node id); bit 1: disabled.
        channel_flags: u8,
        /// Blocks the sender subtracts from the incoming HTLC's expiry.
        cltv_expiry_delta: u16,
        /// Smallest HTLC the sender forwards.
        htlc_minimum_msat: u64,
        /// Fixed forwarding fee.
        fee_base_msat: u32,
        /// Proportional forwarding fee, in millionths.
        fee_proportional_millionths: u32,
        /// Largest HTLC the sender forwards.
        htlc_maximum_msat: u64,
    } tlvs {}
}

/// Deterministic value generation from random bytes, for the codec property tests.
#[cfg(test)]
pub(crate) mod gen {
    use super::*;
    use crate::keys::{point_from_secret, secp};
    use bitcoin::secp256k1::{Message as SecpMessage, SecretKey};

    /// A source of bytes; past its end it yields zeroes.
    pub struct Src<'a>(pub &'a [u8], pub usize);

    impl Src<'_> {
        pub fn byte(&mut self) -> u8 {
            let b = self.0.get(self.1).copied().unwrap_or(0);
            self.1 += 1;
            b
        }
        pub fn fill<const N: usize>(&mut self) -> [u8; N] {
            std::array::from_fn(|_| self.byte())
        }
    }

    /// Builds a value of the implementing type from random bytes.
    pub trait Gen {
        fn gen(s: &mut Src) -> Self;
    }

    macro_rules! gen_int {
        ($($t:ty),*) => {$(
            impl Gen for $t {
                fn gen(s: &mut Src) -> Self { <$t>::from_be_bytes(s.fill()) }
            }
        )*};
    }
    gen_int!(u8, u16, u32, u64);

    impl<const N: usize> Gen for [u8; N] {
        fn gen(s: &mut Src) -> Self {
            s.fill()
        }
    }
    impl Gen for ChannelId {
        fn gen(s: &mut Src) -> Self {
            ChannelId(s.fill())
        }
    }
    impl Gen for PaymentHash {
        fn gen(s: &mut Src) -> Self {
            PaymentHash(s.fill())
        }
    }
    impl Gen for PaymentPreimage {
        fn gen(s: &mut Src) -> Self {
            PaymentPreimage(s.fill())
        }
    }
    impl Gen for OnionPacket {
        fn gen(s: &mut Src) -> Self {
            let mut p = OnionPacket::default();
            p.0[..32].copy_from_slice(&s.fill::<32>());
            p
        }
    }
    impl Gen for Vec<u8> {
        fn gen(s: &mut Src) -> Self {
            let n = s.byte() % 40;
            (0..n).map(|_| s.byte()).collect()
        }
    }
    impl Gen for Vec<[u8; 32]> {
        fn gen(s: &mut Src) -> Self {
            let n = s.byte() % 3;
            (0..n).map(|_| s.fill()).collect()
        }
    }
    fn key(s: &mut Src) -> SecretKey {
        let mut b: [u8; 32] = s.fill();
        b[0] &= 0x7f;
        b[31] |= 1;
        SecretKey::from_slice(&b).expect("in range")
    }
    impl Gen for PublicKey {
        fn gen(s: &mut Src) -> Self {
            point_from_secret(&key(s).secret_bytes())
        }
    }
    impl Gen for Signature {
        fn gen(s: &mut Src) -> Self {
            secp().sign_ecdsa(&SecpMessage::from_digest(s.fill()), &key(s))
        }
    }
    impl Gen for Vec<Signature> {
        fn gen(s: &mut Src) -> Self {
            let n = s.byte() % 4;
            (0..n).map(|_| Signature::gen(s)).collect()
        }
    }
    impl Gen for FeeRange {
        fn gen(s: &mut Src) -> Self {
            FeeRange {
                min_fee_satoshis: u64::gen(s),
                max_fee_satoshis: u64::gen(s),
            }
        }
    }
    impl<T: Gen> Gen for Option<T> {
        fn gen(s: &mut Src) -> Self {
            (s.byte() % 2 == 1).then(|| T::gen(s))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::gen::Src;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every message decodes back to itself.
        #[test]
        fn roundtrip(seed in proptest::collection::vec(any::<u8>(), 600)) {
            let msg = gen_message(&mut Src(&seed, 0));
            let bytes = msg.encode();
            prop_assert_eq!(Message::decode(&bytes), Ok(msg));
        }

        /// Random bytes decode or fail, never panic; what decodes re-encodes to a prefix
        /// of the input (extra data may be ignored).
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            if let Ok(msg) = Message::decode(&bytes) {
                let again = Message::decode(&msg.encode());
                prop_assert_eq!(again, Ok(msg));
            }
        }

        /// Random payloads behind every known type never panic the decoder.
        #[test]
        fn random_payloads_of_known_types_never_panic(
            ty in proptest::sample::select(vec![1u16, 16, 17, 18, 19, 32, 33, 34, 35, 36, 38, 39, 128, 130, 131, 132, 133, 134, 135, 136]),
            payload in proptest::collection::vec(any::<u8>(), 0..1600),
        ) {
            let mut bytes = ty.to_be_bytes().to_vec();
            bytes.extend(payload);
            if let Ok(msg) = Message::decode(&bytes) {
                prop_assert_eq!(msg.msg_type(), ty);
                prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg));
            }
        }

        /// Mutating one byte of a valid message never panics the decoder.
        #[test]
        fn mutated_messages_never_panic(
            seed in proptest::collection::vec(any::<u8>(), 600),
            pos in any::<usize>(),
            val in any::<u8>(),
            cut in any::<usize>(),
        ) {
            let mut bytes = gen_message(&mut Src(&seed, 0)).encode();
            let i = pos % bytes.len();
            bytes[i] = val;
            let _ = Message::decode(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = Message::decode(&bytes);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn bigsize_vectors() {
        // BOLT 1 Appendix A: BigSize decoding tests.
        let ok: &[(&str, u64)] = &[
            ("00", 0),
            ("fc", 252),
            ("fd00fd", 253),
            ("fdffff", 65535),
            ("fe00010000", 65536),
            ("feffffffff", 4294967295),
            ("ff0000000100000000", 4294967296),
            ("ffffffffffffffffff", u64::MAX),
        ];
        for (h, v) in ok {
            assert_eq!(Reader::new(&hex(h)).bigsize(), Ok(*v), "{h}");
            let mut w = Writer::new();
            w.bigsize(*v);
            assert_eq!(w.into_bytes(), hex(h));
        }
        for h in ["fd00fc", "fe0000ffff", "ff00000000ffffffff"] {
            assert_eq!(
                Reader::new(&hex(h)).bigsize(),
                Err(DecodeError::NonMinimalBigSize),
                "{h}"
            );
        }
        for h in ["fd00", "feffff", "ffffffffff", "", "fd", "fe", "ff"] {
            assert_eq!(
                Reader::new(&hex(h)).bigsize(),
                Err(DecodeError::ShortRead),
                "{h}"
            );
        }
    }

    fn init_with(tlvs: &str) -> Vec<u8> {
        let mut v = hex("001000000000");
        v.extend(hex(tlvs));
        v
    }

    #[test]
    fn tlv_stream_rules() {
        // Unknown odd TLVs are ignored.
        let m = Message::decode(&init_with("2b00")).unwrap();
        assert_eq!(
            m,
            Message::Init(Init {
                globalfeatures: vec![],
                features: vec![],
                networks: None,
                remote_addr: None
            })
        );
        // Unknown even TLVs are rejected.
        assert_eq!(
            Message::decode(&init_with("0200")),
            Err(DecodeError::UnknownEvenTlv(2))
        );
        // Types must strictly increase.
        assert_eq!(
            Message::decode(&init_with("03000300")),
            Err(DecodeError::TlvOrder(3))
        );
        assert_eq!(
            Message::decode(&init_with("0500 0300".replace(' ', "").as_str())),
            Err(DecodeError::TlvOrder(3))
        );
        // A known TLV with a bad length is rejected.
        assert_eq!(
            Message::decode(&init_with("0101ff")),
            Err(DecodeError::TlvLength(1))
        );
        // A length past the end is rejected.
        assert_eq!(
            Message::decode(&init_with("0305ff")),
            Err(DecodeError::ShortRead)
        );
        // Known TLV decodes.
        let m = Message::decode(&init_with(&format!("0120{}", "11".repeat(32)))).unwrap();
        let Message::Init(init) = m else {
            panic!("init")
        };
        assert_eq!(init.networks, Some(vec![[0x11; 32]]));
    }

    #[test]
    fn unknown_message_types() {
        assert_eq!(
            Message::decode(&hex("8001")),
            Ok(Message::Unknown {
                msg_type: 0x8001,
                payload: vec![]
            })
        );
        assert_eq!(
            Message::decode(&hex("8000")),
            Err(DecodeError::UnknownEvenMessage(0x8000))
        );
        assert_eq!(
            Message::decode(&hex("0064aa")),
            Err(DecodeError::UnknownEvenMessage(100))
        );
        assert_eq!(
            Message::decode(&hex("0065aa")),
            Ok(Message::Unknown {
                msg_type: 101,
                payload: vec![0xaa]
            })
        );
        assert_eq!(Message::decode(&hex("00")), Err(DecodeError::ShortRead));
    }

    #[test]
    fn invalid_points_and_signatures_are_rejected() {
        let msg = Message::RevokeAndAck(RevokeAndAck {
            channel_id: ChannelId([1; 32]),
            per_commitment_secret: [2; 32],
            next_per_commitment_point: point_from(3),
        });
        let mut bytes = msg.encode();
        let at = bytes.len() - 33;
        bytes[at] = 0x05; // not a valid point prefix
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::InvalidValue("point"))
        );

        let sig_msg = Message::FundingSigned(FundingSigned {
            channel_id: ChannelId([1; 32]),
            signature: Signature::from_compact(&[1u8; 64]).unwrap(),
        });
        let mut bytes = sig_msg.encode();
        let len = bytes.len();
        bytes[len - 64..len - 32].copy_from_slice(&[0xff; 32]); // r above the curve order
        assert_eq!(
            Message::decode(&bytes),
            Err(DecodeError::InvalidValue("signature"))
        );
    }

    fn point_from(b: u8) -> PublicKey {
        crate::keys::point_from_secret(&[b; 32])
    }
}
