//! Lightning "signmessage"-style signatures, as lnd and Core Lightning produce them and as
//! The Eye of Satoshi uses for appointments: a recoverable ECDSA signature over
//! `SHA256d("Lightning Signed Message:" || message)`, serialized as 65 bytes
//! (`31 + recovery id`, then r and s) and written in zbase32. The signer's public key is
//! recovered from the signature, so a request needs no separate key proof.

use bitcoin::hashes::{sha256d, Hash};
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};
use std::sync::OnceLock;

const PREFIX: &[u8] = b"Lightning Signed Message:";
const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// One shared secp256k1 context.
pub fn secp() -> &'static Secp256k1<All> {
    static CTX: OnceLock<Secp256k1<All>> = OnceLock::new();
    CTX.get_or_init(Secp256k1::new)
}

fn digest(message: &[u8]) -> Message {
    let mut data = Vec::with_capacity(PREFIX.len() + message.len());
    data.extend_from_slice(PREFIX);
    data.extend_from_slice(message);
    Message::from_digest(sha256d::Hash::hash(&data).to_byte_array())
}

/// Signs `message` with `key`; returns the zbase32 signature.
pub fn sign(message: &[u8], key: &SecretKey) -> String {
    let sig = secp().sign_ecdsa_recoverable(&digest(message), key);
    let (id, rs) = sig.serialize_compact();
    let mut bytes = Vec::with_capacity(65);
    bytes.push(31 + id.to_i32() as u8);
    bytes.extend_from_slice(&rs);
    zbase32_encode(&bytes)
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// Not zbase32, not 65 bytes, or not a valid recoverable signature.
    #[error("malformed signature")]
    Malformed,
    /// No public key signs this message with this signature.
    #[error("signature does not recover a public key")]
    Unrecoverable,
}

/// The compressed public key that signed `message` with `signature` (zbase32).
pub fn recover(message: &[u8], signature: &str) -> Result<PublicKey, SigError> {
    let bytes = zbase32_decode(signature).ok_or(SigError::Malformed)?;
    if bytes.len() != 65 || !(31..=34).contains(&bytes[0]) {
        return Err(SigError::Malformed);
    }
    let id = RecoveryId::from_i32(i32::from(bytes[0] - 31)).map_err(|_| SigError::Malformed)?;
    let sig =
        RecoverableSignature::from_compact(&bytes[1..], id).map_err(|_| SigError::Malformed)?;
    secp()
        .recover_ecdsa(&digest(message), &sig)
        .map_err(|_| SigError::Unrecoverable)
}

/// zbase32 (as in lnd's signmessage): 5 bits per character, most significant first, no
/// padding.
pub fn zbase32_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 8 / 5 + 1);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in data {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes zbase32; trailing bits that do not fill a byte are dropped.
pub fn zbase32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zbase32_round_trips() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(zbase32_decode(&zbase32_encode(&data)), Some(data));
        }
        // Known value from the zbase32 description: 0xF0 0xBF 0xC7 -> "6n9hq".
        assert_eq!(zbase32_encode(&[0xf0, 0xbf, 0xc7]), "6n9hq");
        assert_eq!(zbase32_decode("not base32!"), None);
    }

    #[test]
    fn the_signer_is_recovered_and_nobody_else() {
        let key = SecretKey::from_slice(&[0x42; 32]).unwrap();
        let pk = PublicKey::from_secret_key(secp(), &key);
        let sig = sign(b"hello tower", &key);
        assert_eq!(sig.len(), 104);
        assert_eq!(recover(b"hello tower", &sig), Ok(pk));
        assert_ne!(recover(b"hello tower!", &sig), Ok(pk));
        assert_eq!(recover(b"x", "yy"), Err(SigError::Malformed));
    }
}
