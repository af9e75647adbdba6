//! The tagged fields of a BOLT 11 data part, each a 5-bit type, a 10-bit length in
//! 5-bit groups, and the value.

use super::bech32::{from_groups, groups_to_u64, to_groups, u64_to_groups};
use super::InvoiceError;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Address, Network, PubkeyHash, ScriptHash, WitnessProgram, WitnessVersion};

/// What the payer is paying for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Description {
    /// `d`: the text itself (UTF-8, at most 639 bytes).
    Direct(String),
    /// `h`: SHA-256 of a longer description the payer gets some other way.
    Hash([u8; 32]),
}

/// One hop of a private route (`r` field): the channel from `src_node_id` toward the
/// payee and the fees and CLTV delta that hop charges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteHintHop {
    /// The node at the start of the channel.
    pub src_node_id: PublicKey,
    /// The channel, as block height << 40 | tx index << 16 | output index.
    pub short_channel_id: u64,
    /// Base fee of the hop.
    pub fee_base_msat: u32,
    /// Proportional fee of the hop, in millionths.
    pub fee_proportional_millionths: u32,
    /// CLTV delta of the hop.
    pub cltv_expiry_delta: u16,
}

/// An on-chain address to pay instead (`f` field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Version 17: P2PKH.
    PubkeyHash([u8; 20]),
    /// Version 18: P2SH.
    ScriptHash([u8; 20]),
    /// Versions 0–16: a segwit program of that witness version.
    Witness {
        /// Witness version, 0 to 16.
        version: u8,
        /// The witness program.
        program: Vec<u8>,
    },
}

impl Fallback {
    /// The address on `network`, or `None` for a witness program no address can carry.
    pub fn to_address(&self, network: Network) -> Option<Address> {
        Some(match self {
            Fallback::PubkeyHash(h) => Address::p2pkh(PubkeyHash::from_byte_array(*h), network),
            Fallback::ScriptHash(h) => {
                Address::p2sh_from_hash(ScriptHash::from_byte_array(*h), network)
            }
            Fallback::Witness { version, program } => {
                let v = WitnessVersion::try_from(*version).ok()?;
                let wp = WitnessProgram::new(v, program).ok()?;
                Address::from_witness_program(wp, network)
            }
        })
    }
}

/// Field types (the 5-bit value of the tag character).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Tag {
    PaymentHash = 1,
    Route = 3,
    Features = 5,
    Expiry = 6,
    Fallback = 9,
    Description = 13,
    PaymentSecret = 16,
    Payee = 19,
    DescriptionHash = 23,
    MinFinalCltv = 24,
    Metadata = 27,
}

impl Tag {
    fn from_u5(v: u8) -> Option<Tag> {
        Some(match v {
            1 => Tag::PaymentHash,
            3 => Tag::Route,
            5 => Tag::Features,
            6 => Tag::Expiry,
            9 => Tag::Fallback,
            13 => Tag::Description,
            16 => Tag::PaymentSecret,
            19 => Tag::Payee,
            23 => Tag::DescriptionHash,
            24 => Tag::MinFinalCltv,
            27 => Tag::Metadata,
            _ => return None,
        })
    }
    pub(crate) fn char(self) -> char {
        super::bech32::char_of(self as u8)
    }
    pub(crate) fn from_char(c: char) -> Option<Tag> {
        super::bech32::value_of(c as u8).and_then(Tag::from_u5)
    }
}

/// A known field with its value.
#[derive(Clone, Debug)]
pub(crate) enum Field {
    PaymentHash([u8; 32]),
    PaymentSecret([u8; 32]),
    Description(Description),
    Payee(PublicKey),
    Expiry(u64),
    MinFinalCltv(u64),
    Fallback(Fallback),
    Route(Vec<RouteHintHop>),
    Features(Vec<u8>),
    Metadata(Vec<u8>),
}

/// Features as 5-bit groups: bit 0 is the lowest bit of the last group.
fn features_from_groups(groups: &[u8]) -> Vec<u8> {
    let nbits = groups.len() * 5;
    let mut out = vec![0u8; nbits.div_ceil(8)];
    let len = out.len();
    for (i, g) in groups.iter().rev().enumerate() {
        for b in 0..5 {
            if g >> b & 1 == 1 {
                let bit = i * 5 + b;
                out[len - 1 - bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    // Drop leading zero bytes so equal feature sets compare equal.
    let skip = out.iter().take_while(|b| **b == 0).count();
    out.split_off(skip)
}

fn features_to_groups(bytes: &[u8]) -> Vec<u8> {
    let bit_set = |bit: usize| bytes[bytes.len() - 1 - bit / 8] >> (bit % 8) & 1 == 1;
    let top = (0..bytes.len() * 8).rev().find(|b| bit_set(*b));
    let Some(top) = top else { return Vec::new() };
    let ngroups = top / 5 + 1;
    (0..ngroups)
        .rev()
        .map(|g| (0..5).fold(0u8, |acc, b| acc | (u8::from(bit_set(g * 5 + b)) << b)))
        .collect()
}

fn array<const N: usize>(groups: &[u8]) -> [u8; N] {
    from_groups(groups)[..N]
        .try_into()
        .expect("length checked by caller")
}

impl Field {
    pub(crate) fn tag(&self) -> Tag {
        match self {
            Field::PaymentHash(_) => Tag::PaymentHash,
            Field::PaymentSecret(_) => Tag::PaymentSecret,
            Field::Description(Description::Direct(_)) => Tag::Description,
            Field::Description(Description::Hash(_)) => Tag::DescriptionHash,
            Field::Payee(_) => Tag::Payee,
            Field::Expiry(_) => Tag::Expiry,
            Field::MinFinalCltv(_) => Tag::MinFinalCltv,
            Field::Fallback(_) => Tag::Fallback,
            Field::Route(_) => Tag::Route,
            Field::Features(_) => Tag::Features,
            Field::Metadata(_) => Tag::Metadata,
        }
    }

    /// Reads one field. `Ok(None)` for what a reader must skip: unknown tags, `p`, `h`,
    /// `s`, `n` of the wrong length, and fallbacks of unknown version.
    pub(crate) fn decode(tag: u8, data: &[u8]) -> Result<Option<Field>, InvoiceError> {
        let Some(tag) = Tag::from_u5(tag) else {
            return Ok(None);
        };
        let c = tag.char();
        let int = || groups_to_u64(data).ok_or(InvoiceError::FieldOverflow(c));
        Ok(Some(match tag {
            Tag::PaymentHash | Tag::PaymentSecret | Tag::DescriptionHash if data.len() != 52 => {
                return Ok(None)
            }
            Tag::PaymentHash => Field::PaymentHash(array(data)),
            Tag::PaymentSecret => Field::PaymentSecret(array(data)),
            Tag::DescriptionHash => Field::Description(Description::Hash(array(data))),
            Tag::Payee if data.len() != 53 => return Ok(None),
            Tag::Payee => Field::Payee(
                PublicKey::from_slice(&from_groups(data)[..33])
                    .map_err(|_| InvoiceError::MalformedField(c))?,
            ),
            Tag::Description => Field::Description(Description::Direct(
                String::from_utf8(from_groups(data))
                    .map_err(|_| InvoiceError::InvalidDescription)?,
            )),
            Tag::Expiry => Field::Expiry(int()?),
            Tag::MinFinalCltv => Field::MinFinalCltv(int()?),
            Tag::Features => Field::Features(features_from_groups(data)),
            Tag::Metadata => Field::Metadata(from_groups(data)),
            Tag::Fallback => {
                let Some((&version, program)) = data.split_first() else {
                    return Err(InvoiceError::MalformedField(c));
                };
                let program = from_groups(program);
                match version {
                    17 | 18 => {
                        let h: [u8; 20] = program
                            .try_into()
                            .map_err(|_| InvoiceError::MalformedField(c))?;
                        Field::Fallback(if version == 17 {
                            Fallback::PubkeyHash(h)
                        } else {
                            Fallback::ScriptHash(h)
                        })
                    }
                    0..=16 => {
                        let v = WitnessVersion::try_from(version)
                            .map_err(|_| InvoiceError::MalformedField(c))?;
                        WitnessProgram::new(v, &program)
                            .map_err(|_| InvoiceError::MalformedField(c))?;
                        Field::Fallback(Fallback::Witness { version, program })
                    }
                    _ => return Ok(None),
                }
            }
            Tag::Route => {
                let bytes = from_groups(data);
                if bytes.is_empty() || bytes.len() % 51 != 0 {
                    return Err(InvoiceError::MalformedField(c));
                }
                let hops = bytes
                    .chunks_exact(51)
                    .map(|h| {
                        Ok(RouteHintHop {
                            src_node_id: PublicKey::from_slice(&h[..33])
                                .map_err(|_| InvoiceError::MalformedField(c))?,
                            short_channel_id: u64::from_be_bytes(h[33..41].try_into().unwrap()),
                            fee_base_msat: u32::from_be_bytes(h[41..45].try_into().unwrap()),
                            fee_proportional_millionths: u32::from_be_bytes(
                                h[45..49].try_into().unwrap(),
                            ),
                            cltv_expiry_delta: u16::from_be_bytes(h[49..51].try_into().unwrap()),
                        })
                    })
                    .collect::<Result<_, InvoiceError>>()?;
                Field::Route(hops)
            }
        }))
    }

    /// The value as 5-bit groups.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Field::PaymentHash(b) | Field::PaymentSecret(b) => to_groups(b),
            Field::Description(Description::Hash(b)) => to_groups(b),
            Field::Description(Description::Direct(s)) => to_groups(s.as_bytes()),
            Field::Payee(p) => to_groups(&p.serialize()),
            Field::Expiry(v) | Field::MinFinalCltv(v) => u64_to_groups(*v),
            Field::Features(f) => features_to_groups(f),
            Field::Metadata(m) => to_groups(m),
            Field::Fallback(f) => {
                let (v, prog) = match f {
                    Fallback::PubkeyHash(h) => (17, h.as_slice()),
                    Fallback::ScriptHash(h) => (18, h.as_slice()),
                    Fallback::Witness { version, program } => (*version, program.as_slice()),
                };
                let mut g = vec![v];
                g.extend(to_groups(prog));
                g
            }
            Field::Route(hops) => {
                let mut bytes = Vec::with_capacity(hops.len() * 51);
                for h in hops {
                    bytes.extend_from_slice(&h.src_node_id.serialize());
                    bytes.extend_from_slice(&h.short_channel_id.to_be_bytes());
                    bytes.extend_from_slice(&h.fee_base_msat.to_be_bytes());
                    bytes.extend_from_slice(&h.fee_proportional_millionths.to_be_bytes());
                    bytes.extend_from_slice(&h.cltv_expiry_delta.to_be_bytes());
                }
                to_groups(&bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_groups_round_trip() {
        // Bits 8 and 14: the spec's `sgq`.
        let f = features_from_groups(&[16, 8, 0]);
        assert_eq!(f, vec![0x41, 0x00]);
        assert_eq!(features_to_groups(&f), vec![16, 8, 0]);
        assert!(features_to_groups(&[]).is_empty());
    }
}
