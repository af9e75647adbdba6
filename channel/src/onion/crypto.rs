//! The BOLT 4 primitives every onion step uses: HMAC-SHA256 keyed by a key type, the
//! ChaCha20 stream with a zero nonce, and the ECDH shared secret.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Key type for the stream that obfuscates `hop_payloads` (BOLT 4 "Key Generation").
pub(crate) const RHO: &[u8] = b"rho";
/// Key type for the packet HMAC.
pub(crate) const MU: &[u8] = b"mu";
/// Key type for the HMAC of a returned failure.
pub(crate) const UM: &[u8] = b"um";
/// Key type for the stream that fills the unused tail of a fresh packet.
pub(crate) const PAD: &[u8] = b"pad";
/// Key type for the stream that obfuscates a returned failure.
pub(crate) const AMMAG: &[u8] = b"ammag";

/// HMAC-SHA256 of the concatenation of `parts` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Checks an HMAC without leaking through timing how many leading bytes matched.
pub(crate) fn hmac_eq(a: &[u8; 32], b: &[u8]) -> bool {
    b.len() == 32 && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// BOLT 4 key generation: the key type (without a NUL terminator) is the HMAC key and
/// the shared secret is the message.
pub(crate) fn derive_key(key_type: &[u8], shared_secret: &[u8; 32]) -> [u8; 32] {
    hmac_sha256(key_type, &[shared_secret])
}

/// XORs `buf` with the ChaCha20 stream of `key` (96-bit zero nonce, counter from 0),
/// which is how BOLT 4 both generates a pseudo-random stream and applies it.
pub(crate) fn apply_stream(key: &[u8; 32], buf: &mut [u8]) {
    let mut cipher = ChaCha20::new(key.into(), &[0u8; 12].into());
    cipher.apply_keystream(buf);
}

/// `len` bytes of the ChaCha20 stream of `key`.
pub(crate) fn stream(key: &[u8; 32], len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    apply_stream(key, &mut buf);
    buf
}
