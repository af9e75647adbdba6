//! BOLT 4 onion routing: the Sphinx packet an origin builds so that each hop learns only
//! its own instructions and the next hop, the peeling each hop does, and the failure
//! messages that travel back obfuscated at every hop.
//!
//! Only TLV hop payloads are supported: the legacy 65-byte `realm` 0 frames are gone
//! from the network, and a frame whose length prefix is 0 is rejected.

mod crypto;
pub mod failure;
mod payload;

pub use failure::{
    build_failure, build_failure_padded, decode_failure, wrap_failure, DecodedFailure,
};
pub use payload::{HopPayload, PayloadError};

use crate::keys::secp;
use crate::msgs::OnionPacket;
use crate::wire::{Reader, Writer};
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{ecdh::SharedSecret, PublicKey, Scalar, SecretKey};
use crypto::{apply_stream, derive_key, hmac_eq, hmac_sha256, stream, MU, PAD, RHO};

/// Size of `hop_payloads`, the routing part of every onion.
pub const HOP_PAYLOADS_LEN: usize = 1300;
/// Size of an HMAC in a hop frame and at the end of the packet.
pub const HMAC_LEN: usize = 32;
/// The only onion version defined.
pub const ONION_VERSION: u8 = 0;
/// The most hops a route may have; the packet itself only limits the payloads' total size,
/// but implementations agree on 20 (and the origin decodes failures that many times).
pub const MAX_HOPS: usize = 20;

/// Why an onion could not be built or peeled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnionError {
    /// The version byte is not 0: answer `invalid_onion_version` in
    /// `update_fail_malformed_htlc`, with the SHA-256 of the onion.
    #[error("unknown onion version")]
    InvalidVersion {
        /// SHA-256 of the whole onion packet as received.
        sha256_of_onion: [u8; 32],
    },
    /// The HMAC does not match: `invalid_onion_hmac`.
    #[error("onion HMAC mismatch")]
    InvalidHmac {
        /// SHA-256 of the whole onion packet as received.
        sha256_of_onion: [u8; 32],
    },
    /// The ephemeral key is not a point on the curve: `invalid_onion_key`.
    #[error("onion ephemeral key unparsable")]
    InvalidKey {
        /// SHA-256 of the whole onion packet as received.
        sha256_of_onion: [u8; 32],
    },
    /// The onion is authentic but this hop's payload is not usable: answer
    /// `invalid_onion_payload` (an ordinary, encrypted failure).
    #[error("invalid hop payload: {0}")]
    InvalidPayload(#[from] PayloadError),
    /// The frame's length runs past the packet, or is 0 (legacy) or 1 (reserved).
    #[error("hop frame length invalid")]
    InvalidFrame,
    /// A route must have between 1 and 20 hops.
    #[error("route must have 1 to {MAX_HOPS} hops, not {0}")]
    RouteLength(usize),
    /// The hop payloads do not fit in the 1300 bytes of `hop_payloads`.
    #[error("hop payloads need {0} bytes, more than {HOP_PAYLOADS_LEN}")]
    PayloadsTooLarge(usize),
    /// A failure packet is too short or its lengths do not add up.
    #[error("failure packet malformed")]
    MalformedFailure,
    /// No hop's keys authenticate the failure packet: it was corrupted on its way back.
    #[error("failure packet not authenticated by any hop")]
    UnknownFailureSource,
}

impl OnionError {
    /// The failure code a forwarding hop returns for this error, where it has one.
    pub fn failure_code(&self) -> Option<u16> {
        match self {
            OnionError::InvalidVersion { .. } => Some(failure::INVALID_ONION_VERSION),
            OnionError::InvalidHmac { .. } => Some(failure::INVALID_ONION_HMAC),
            OnionError::InvalidKey { .. } => Some(failure::INVALID_ONION_KEY),
            OnionError::InvalidPayload(_) | OnionError::InvalidFrame => {
                Some(failure::INVALID_ONION_PAYLOAD)
            }
            _ => None,
        }
    }

    /// For the BADONION errors, the SHA-256 of the onion that
    /// `update_fail_malformed_htlc` carries.
    pub fn sha256_of_onion(&self) -> Option<[u8; 32]> {
        match self {
            OnionError::InvalidVersion { sha256_of_onion }
            | OnionError::InvalidHmac { sha256_of_onion }
            | OnionError::InvalidKey { sha256_of_onion } => Some(*sha256_of_onion),
            _ => None,
        }
    }
}

/// What a hop learns from peeling its layer of the onion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peeled {
    /// Forward an HTLC over `payload.short_channel_id` carrying `next`.
    Forward {
        /// This hop's instructions.
        payload: HopPayload,
        /// The onion for the next hop.
        next: OnionPacket,
        /// Kept to obfuscate a failure coming back for this HTLC.
        shared_secret: [u8; 32],
    },
    /// This node is the recipient.
    Final {
        /// The recipient's instructions.
        payload: HopPayload,
        /// Kept to build a failure for this HTLC.
        shared_secret: [u8; 32],
    },
}

/// [`Peeled`] with the payload left as the raw TLV bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeeledRaw {
    /// Another hop follows.
    Forward {
        /// This hop's payload bytes (without the length prefix).
        payload: Vec<u8>,
        /// The onion for the next hop.
        next: OnionPacket,
        /// This hop's shared secret.
        shared_secret: [u8; 32],
    },
    /// This node is the recipient.
    Final {
        /// The payload bytes (without the length prefix).
        payload: Vec<u8>,
        /// This hop's shared secret.
        shared_secret: [u8; 32],
    },
}

fn sha256_bytes(data: &[u8]) -> [u8; 32] {
    sha256::Hash::hash(data).to_byte_array()
}

/// The factor by which the ephemeral key is multiplied between hops, so that two hops
/// see unrelated keys: SHA-256(ephemeral public key || shared secret).
fn blinding_factor(ephemeral: &PublicKey, shared_secret: &[u8; 32]) -> Scalar {
    let mut e = sha256::Hash::engine();
    e.input(&ephemeral.serialize());
    e.input(shared_secret);
    // SHA-256 lands at or above the curve order with negligible probability; the spec
    // has no fallback, so neither do we.
    Scalar::from_be_bytes(sha256::Hash::from_engine(e).to_byte_array())
        .expect("sha256 below curve order")
}

fn frame_len(payload_len: usize) -> usize {
    let mut w = Writer::new();
    w.bigsize(payload_len as u64);
    w.into_bytes().len() + payload_len + HMAC_LEN
}

/// The per-hop shared secrets and the ephemeral key the first hop sees (BOLT 4 "Shared
/// Secret" and "Blinding Ephemeral Keys").
fn shared_secrets(
    session_key: &SecretKey,
    hops: &[PublicKey],
) -> Result<(PublicKey, Vec<[u8; 32]>), OnionError> {
    let first = PublicKey::from_secret_key(secp(), session_key);
    let mut eph_secret = *session_key;
    let mut eph_public = first;
    let mut secrets = Vec::with_capacity(hops.len());
    for (i, hop) in hops.iter().enumerate() {
        let ss = SharedSecret::new(hop, &eph_secret).secret_bytes();
        secrets.push(ss);
        if i + 1 < hops.len() {
            let b = blinding_factor(&eph_public, &ss);
            // A product of non-zero scalars modulo a prime is non-zero.
            eph_secret = eph_secret.mul_tweak(&b).expect("non-zero product");
            eph_public = PublicKey::from_secret_key(secp(), &eph_secret);
        }
    }
    Ok((first, secrets))
}

/// The filler: the bytes that, after every hop before the last has shifted in its
/// obfuscated zero padding, sit at the end of the last hop's `hop_payloads`. The origin
/// puts them there so the last hop's HMAC covers what it will actually see.
fn filler(secrets: &[[u8; 32]], frames: &[usize]) -> Vec<u8> {
    let mut filler = Vec::new();
    for (ss, &size) in secrets
        .iter()
        .zip(frames)
        .take(secrets.len().saturating_sub(1))
    {
        let before = filler.len();
        filler.resize(before + size, 0);
        let s = stream(&derive_key(RHO, ss), HOP_PAYLOADS_LEN + size);
        for (f, k) in filler.iter_mut().zip(&s[HOP_PAYLOADS_LEN - before..]) {
            *f ^= k;
        }
    }
    filler
}

/// Builds an onion whose hop payloads are given as raw bytes (each without its length
/// prefix). Returns the packet and each hop's shared secret, which the origin keeps to
/// decode a failure.
pub fn create_onion_raw(
    session_key: &SecretKey,
    hops: &[(PublicKey, Vec<u8>)],
    associated_data: &[u8; 32],
) -> Result<(OnionPacket, Vec<[u8; 32]>), OnionError> {
    if hops.is_empty() || hops.len() > MAX_HOPS {
        return Err(OnionError::RouteLength(hops.len()));
    }
    let frames: Vec<usize> = hops.iter().map(|(_, p)| frame_len(p.len())).collect();
    let total: usize = frames.iter().sum();
    if total > HOP_PAYLOADS_LEN {
        return Err(OnionError::PayloadsTooLarge(total));
    }
    let keys: Vec<PublicKey> = hops.iter().map(|(k, _)| *k).collect();
    let (first_key, secrets) = shared_secrets(session_key, &keys)?;
    let filler = filler(&secrets, &frames);

    // The tail that no hop's frame covers starts as pseudo-random bytes, so a hop cannot
    // tell from the padding how many hops remain.
    let mut mix = stream(
        &derive_key(PAD, &session_key.secret_bytes()),
        HOP_PAYLOADS_LEN,
    );
    let mut next_hmac = [0u8; HMAC_LEN];
    for i in (0..hops.len()).rev() {
        let size = frames[i];
        mix.copy_within(0..HOP_PAYLOADS_LEN - size, size);
        let mut w = Writer::new();
        w.bigsize(hops[i].1.len() as u64);
        w.bytes(&hops[i].1);
        w.bytes(&next_hmac);
        mix[..size].copy_from_slice(&w.into_bytes());
        apply_stream(&derive_key(RHO, &secrets[i]), &mut mix);
        if i == hops.len() - 1 {
            let start = HOP_PAYLOADS_LEN - filler.len();
            mix[start..].copy_from_slice(&filler);
        }
        next_hmac = hmac_sha256(&derive_key(MU, &secrets[i]), &[&mix, associated_data]);
    }
    Ok((assemble(&first_key, &mix, &next_hmac), secrets))
}

fn assemble(key: &PublicKey, hop_payloads: &[u8], hmac: &[u8; 32]) -> OnionPacket {
    let mut packet = OnionPacket::default();
    packet.0[0] = ONION_VERSION;
    packet.0[1..34].copy_from_slice(&key.serialize());
    packet.0[34..34 + HOP_PAYLOADS_LEN].copy_from_slice(hop_payloads);
    packet.0[34 + HOP_PAYLOADS_LEN..].copy_from_slice(hmac);
    packet
}

/// Builds the onion for a payment along `hops` (BOLT 4 "Packet Construction").
/// `associated_data` is the payment hash, which binds the onion to its HTLC.
pub fn create_onion(
    session_key: &SecretKey,
    hops: &[(PublicKey, HopPayload)],
    associated_data: &[u8; 32],
) -> Result<(OnionPacket, Vec<[u8; 32]>), OnionError> {
    let raw: Vec<(PublicKey, Vec<u8>)> = hops.iter().map(|(k, p)| (*k, p.encode())).collect();
    create_onion_raw(session_key, &raw, associated_data)
}

/// Removes this node's layer (BOLT 4 "Packet Forwarding"), leaving the payload as bytes.
pub fn peel_raw(
    node_secret: &SecretKey,
    packet: &OnionPacket,
    associated_data: &[u8; 32],
) -> Result<PeeledRaw, OnionError> {
    let bytes: &[u8; crate::msgs::ONION_PACKET_LEN] = &packet.0;
    let digest = || sha256_bytes(bytes);
    if bytes[0] != ONION_VERSION {
        return Err(OnionError::InvalidVersion {
            sha256_of_onion: digest(),
        });
    }
    let ephemeral = PublicKey::from_slice(&bytes[1..34]).map_err(|_| OnionError::InvalidKey {
        sha256_of_onion: digest(),
    })?;
    let hop_payloads = &bytes[34..34 + HOP_PAYLOADS_LEN];
    let hmac = &bytes[34 + HOP_PAYLOADS_LEN..];
    let ss = SharedSecret::new(&ephemeral, node_secret).secret_bytes();
    let expected = hmac_sha256(&derive_key(MU, &ss), &[hop_payloads, associated_data]);
    if !hmac_eq(&expected, hmac) {
        return Err(OnionError::InvalidHmac {
            sha256_of_onion: digest(),
        });
    }

    // Decrypt twice the length so the shifted-in tail is the stream, not zeros.
    let mut buf = vec![0u8; 2 * HOP_PAYLOADS_LEN];
    buf[..HOP_PAYLOADS_LEN].copy_from_slice(hop_payloads);
    apply_stream(&derive_key(RHO, &ss), &mut buf);
    let mut r = Reader::new(&buf);
    let len = r.bigsize().map_err(|_| OnionError::InvalidFrame)?;
    if len < 2 || len as usize > HOP_PAYLOADS_LEN {
        return Err(OnionError::InvalidFrame);
    }
    let len = len as usize;
    let prefix = buf.len() - r.remaining().len();
    if prefix + len + HMAC_LEN > HOP_PAYLOADS_LEN {
        return Err(OnionError::InvalidFrame);
    }
    let payload = buf[prefix..prefix + len].to_vec();
    let next_hmac: [u8; 32] = buf[prefix + len..prefix + len + HMAC_LEN]
        .try_into()
        .expect("32 bytes");
    if next_hmac == [0u8; 32] {
        return Ok(PeeledRaw::Final {
            payload,
            shared_secret: ss,
        });
    }
    let start = prefix + len + HMAC_LEN;
    let next_key = ephemeral
        .mul_tweak(secp(), &blinding_factor(&ephemeral, &ss))
        .map_err(|_| OnionError::InvalidKey {
            sha256_of_onion: digest(),
        })?;
    Ok(PeeledRaw::Forward {
        payload,
        next: assemble(&next_key, &buf[start..start + HOP_PAYLOADS_LEN], &next_hmac),
        shared_secret: ss,
    })
}

/// Removes this node's layer and parses its TLV payload. An error carries the failure
/// code to return: a BADONION code (with the onion's SHA-256) for
/// `update_fail_malformed_htlc`, or `invalid_onion_payload`.
pub fn peel(
    node_secret: &SecretKey,
    packet: &OnionPacket,
    associated_data: &[u8; 32],
) -> Result<Peeled, OnionError> {
    Ok(match peel_raw(node_secret, packet, associated_data)? {
        PeeledRaw::Forward {
            payload,
            next,
            shared_secret,
        } => Peeled::Forward {
            payload: HopPayload::decode(&payload, false)?,
            next,
            shared_secret,
        },
        PeeledRaw::Final {
            payload,
            shared_secret,
        } => Peeled::Final {
            payload: HopPayload::decode(&payload, true)?,
            shared_secret,
        },
    })
}
