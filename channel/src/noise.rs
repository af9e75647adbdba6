//! BOLT 8 transport: the Noise_XK_secp256k1_ChaChaPoly_SHA256 handshake and the encrypted,
//! length-prefixed message framing with key rotation. Pure state: the caller moves bytes.

use crate::keys::secp;
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{ecdh::SharedSecret, PublicKey, SecretKey};
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use hkdf::Hkdf;

const PROTOCOL_NAME: &[u8] = b"Noise_XK_secp256k1_ChaChaPoly_SHA256";
const PROLOGUE: &[u8] = b"lightning";
/// Size of act one and act two.
pub const ACT_ONE_LEN: usize = 50;
/// Size of act three.
pub const ACT_THREE_LEN: usize = 66;
/// Size of an encrypted length prefix (2 bytes + 16-byte MAC).
pub const HEADER_LEN: usize = 18;
/// Size of the MAC after each ciphertext.
pub const MAC_LEN: usize = 16;
/// A key is rotated after this many uses.
const ROTATE_AFTER: u64 = 1000;

/// Why a handshake failed, named as in BOLT 8's test vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Act one, two or three had the wrong length.
    #[error("ACT{0}_READ_FAILED")]
    ReadFailed(u8),
    /// Unknown handshake version byte.
    #[error("ACT{0}_BAD_VERSION {1}")]
    BadVersion(u8, u8),
    /// The ephemeral (or, in act three, static) key is not a valid point.
    #[error("ACT{0}_BAD_PUBKEY")]
    BadPubkey(u8),
    /// The final MAC of an act did not verify.
    #[error("ACT{0}_BAD_TAG")]
    BadTag(u8),
    /// Act three's encrypted static key did not decrypt.
    #[error("ACT3_BAD_CIPHERTEXT")]
    BadCiphertext,
}

/// A frame that did not decrypt: the connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The MAC did not verify.
    #[error("message authentication failed")]
    BadMac,
    /// A message longer than 65535 bytes cannot be framed.
    #[error("message too long")]
    TooLong,
    /// Wrong input size.
    #[error("wrong frame size")]
    BadLength,
}

fn nonce(n: u64) -> Nonce {
    let mut b = [0u8; 12];
    b[4..].copy_from_slice(&n.to_le_bytes());
    Nonce::from(b)
}

fn encrypt(key: &[u8; 32], n: u64, ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut buf = plaintext.to_vec();
    let tag = ChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt_in_place_detached(&nonce(n), ad, &mut buf)
        .expect("plaintext within ChaCha20-Poly1305 limits");
    buf.extend_from_slice(&tag);
    buf
}

fn decrypt(key: &[u8; 32], n: u64, ad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
    if ciphertext.len() < MAC_LEN {
        return None;
    }
    let (body, tag) = ciphertext.split_at(ciphertext.len() - MAC_LEN);
    let mut buf = body.to_vec();
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt_in_place_detached(&nonce(n), ad, &mut buf, Tag::from_slice(tag))
        .ok()?;
    Some(buf)
}

/// BOLT 8 `HKDF(salt, ikm)`: 64 bytes, split into two 32-byte keys.
fn hkdf2(salt: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut okm = [0u8; 64];
    Hkdf::<sha2::Sha256>::new(Some(salt), ikm)
        .expand(&[], &mut okm)
        .expect("64 bytes is a valid HKDF-SHA256 length");
    let (a, b) = okm.split_at(32);
    (a.try_into().expect("32"), b.try_into().expect("32"))
}

fn ecdh(point: &PublicKey, key: &SecretKey) -> [u8; 32] {
    SharedSecret::new(point, key).secret_bytes()
}

fn mix_hash(h: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    e.input(h);
    e.input(data);
    sha256::Hash::from_engine(e).to_byte_array()
}

/// The handshake's running chaining key and hash.
#[derive(Clone)]
struct Symmetric {
    ck: [u8; 32],
    h: [u8; 32],
    temp_k2: [u8; 32],
}

impl Symmetric {
    fn new(responder_static: &PublicKey) -> Self {
        let h = sha256::Hash::hash(PROTOCOL_NAME).to_byte_array();
        let ck = h;
        let h = mix_hash(&h, PROLOGUE);
        let h = mix_hash(&h, &responder_static.serialize());
        Symmetric {
            ck,
            h,
            temp_k2: [0; 32],
        }
    }

    fn mix_key(&mut self, ikm: &[u8; 32]) -> [u8; 32] {
        let (ck, k) = hkdf2(&self.ck, ikm);
        self.ck = ck;
        k
    }

    /// Reads act one or act two: `version || e.pub || MAC`.
    fn read_act(
        &mut self,
        act: u8,
        bytes: &[u8],
        local: &SecretKey,
    ) -> Result<(PublicKey, [u8; 32]), HandshakeError> {
        if bytes.len() != ACT_ONE_LEN {
            return Err(HandshakeError::ReadFailed(act));
        }
        if bytes[0] != 0 {
            return Err(HandshakeError::BadVersion(act, bytes[0]));
        }
        let re =
            PublicKey::from_slice(&bytes[1..34]).map_err(|_| HandshakeError::BadPubkey(act))?;
        self.h = mix_hash(&self.h, &re.serialize());
        let k = self.mix_key(&ecdh(&re, local));
        decrypt(&k, 0, &self.h, &bytes[34..]).ok_or(HandshakeError::BadTag(act))?;
        self.h = mix_hash(&self.h, &bytes[34..]);
        Ok((re, k))
    }

    /// Writes act one or act two with ephemeral key `e` and the DH result with the peer.
    fn write_act(&mut self, e: &SecretKey, peer: &PublicKey) -> ([u8; ACT_ONE_LEN], [u8; 32]) {
        let e_pub = e.public_key(secp());
        self.h = mix_hash(&self.h, &e_pub.serialize());
        let k = self.mix_key(&ecdh(peer, e));
        let c = encrypt(&k, 0, &self.h, &[]);
        self.h = mix_hash(&self.h, &c);
        let mut out = [0u8; ACT_ONE_LEN];
        out[1..34].copy_from_slice(&e_pub.serialize());
        out[34..].copy_from_slice(&c);
        (out, k)
    }
}

/// The initiator's side of the handshake, after it has sent act one.
pub struct InitiatorHandshake {
    sym: Symmetric,
    local_static: SecretKey,
    ephemeral: SecretKey,
}

impl InitiatorHandshake {
    /// Starts a handshake to `remote_static` with a fresh `ephemeral` key; returns act one.
    pub fn new(
        local_static: SecretKey,
        remote_static: &PublicKey,
        ephemeral: SecretKey,
    ) -> (Self, [u8; ACT_ONE_LEN]) {
        let mut sym = Symmetric::new(remote_static);
        let (act_one, _) = sym.write_act(&ephemeral, remote_static);
        (
            InitiatorHandshake {
                sym,
                local_static,
                ephemeral,
            },
            act_one,
        )
    }

    /// Processes act two; returns act three and the transport.
    pub fn process_act_two(
        mut self,
        act_two: &[u8],
    ) -> Result<([u8; ACT_THREE_LEN], Transport), HandshakeError> {
        let (re, temp_k2) = self.sym.read_act(2, act_two, &self.ephemeral)?;
        let s_pub = self.local_static.public_key(secp()).serialize();
        let c = encrypt(&temp_k2, 1, &self.sym.h, &s_pub);
        self.sym.h = mix_hash(&self.sym.h, &c);
        let temp_k3 = self.sym.mix_key(&ecdh(&re, &self.local_static));
        let t = encrypt(&temp_k3, 0, &self.sym.h, &[]);
        let (sk, rk) = hkdf2(&self.sym.ck, &[]);
        let mut out = [0u8; ACT_THREE_LEN];
        out[1..50].copy_from_slice(&c);
        out[50..].copy_from_slice(&t);
        Ok((out, Transport::new(self.sym.ck, sk, rk)))
    }
}

/// The responder's side of the handshake.
pub struct ResponderHandshake {
    sym: Symmetric,
    local_static: SecretKey,
    ephemeral: SecretKey,
    remote_ephemeral: Option<PublicKey>,
}

impl ResponderHandshake {
    /// Waits for act one, answering with the fresh `ephemeral` key.
    pub fn new(local_static: SecretKey, ephemeral: SecretKey) -> Self {
        let sym = Symmetric::new(&local_static.public_key(secp()));
        ResponderHandshake {
            sym,
            local_static,
            ephemeral,
            remote_ephemeral: None,
        }
    }

    /// Processes act one; returns act two.
    pub fn process_act_one(&mut self, act_one: &[u8]) -> Result<[u8; ACT_ONE_LEN], HandshakeError> {
        let mut sym = self.sym.clone();
        let (re, _) = sym.read_act(1, act_one, &self.local_static)?;
        let (act_two, temp_k2) = sym.write_act(&self.ephemeral, &re);
        sym.temp_k2 = temp_k2;
        self.sym = sym;
        self.remote_ephemeral = Some(re);
        Ok(act_two)
    }

    /// Processes act three; returns the initiator's static key (its node id) and the
    /// transport.
    pub fn process_act_three(
        self,
        act_three: &[u8],
    ) -> Result<(PublicKey, Transport), HandshakeError> {
        let mut sym = self.sym;
        if act_three.len() != ACT_THREE_LEN || self.remote_ephemeral.is_none() {
            return Err(HandshakeError::ReadFailed(3));
        }
        if act_three[0] != 0 {
            return Err(HandshakeError::BadVersion(3, act_three[0]));
        }
        let c = &act_three[1..50];
        let t = &act_three[50..];
        let rs = decrypt(&sym.temp_k2, 1, &sym.h, c).ok_or(HandshakeError::BadCiphertext)?;
        let rs = PublicKey::from_slice(&rs).map_err(|_| HandshakeError::BadPubkey(3))?;
        sym.h = mix_hash(&sym.h, c);
        let temp_k3 = sym.mix_key(&ecdh(&rs, &self.ephemeral));
        decrypt(&temp_k3, 0, &sym.h, t).ok_or(HandshakeError::BadTag(3))?;
        let (rk, sk) = hkdf2(&sym.ck, &[]);
        Ok((rs, Transport::new(sym.ck, sk, rk)))
    }
}

/// One direction's cipher state: key, nonce and chaining key for rotation.
#[derive(Clone)]
struct CipherState {
    k: [u8; 32],
    n: u64,
    ck: [u8; 32],
}

impl CipherState {
    /// Seals or opens one piece with the current key and nonce, then advances the nonce;
    /// the key rotates once it has been used `ROTATE_AFTER` times (BOLT 8 "Lightning
    /// Message Key Rotation": after nonce 999 is *used*, never before).
    fn with_next_nonce<T>(&mut self, op: impl FnOnce(&[u8; 32], u64) -> T) -> T {
        let out = op(&self.k, self.n);
        self.n += 1;
        if self.n == ROTATE_AFTER {
            let (ck, k) = hkdf2(&self.ck, &self.k);
            self.ck = ck;
            self.k = k;
            self.n = 0;
        }
        out
    }
}

/// The encrypted link after the handshake (BOLT 8 "Lightning Message Specification").
#[derive(Clone)]
pub struct Transport {
    send: CipherState,
    recv: CipherState,
}

/// The sending half of a [`Transport`], for a writer task.
#[derive(Clone)]
pub struct Encryptor(CipherState);

/// The receiving half of a [`Transport`], for a reader task.
#[derive(Clone)]
pub struct Decryptor(CipherState);

impl Encryptor {
    /// See [`Transport::encrypt`].
    pub fn encrypt(&mut self, msg: &[u8]) -> Result<Vec<u8>, TransportError> {
        encrypt_frame(&mut self.0, msg)
    }
}

impl Decryptor {
    /// See [`Transport::decrypt_length`].
    pub fn decrypt_length(&mut self, header: &[u8]) -> Result<u16, TransportError> {
        decrypt_length(&mut self.0, header)
    }
    /// See [`Transport::decrypt_body`].
    pub fn decrypt_body(&mut self, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        decrypt_body(&mut self.0, body)
    }
}

fn encrypt_frame(c: &mut CipherState, msg: &[u8]) -> Result<Vec<u8>, TransportError> {
    let len = u16::try_from(msg.len()).map_err(|_| TransportError::TooLong)?;
    let mut out = c.with_next_nonce(|k, n| encrypt(k, n, &[], &len.to_be_bytes()));
    out.extend(c.with_next_nonce(|k, n| encrypt(k, n, &[], msg)));
    Ok(out)
}

fn decrypt_length(c: &mut CipherState, header: &[u8]) -> Result<u16, TransportError> {
    if header.len() != HEADER_LEN {
        return Err(TransportError::BadLength);
    }
    let len = c
        .with_next_nonce(|k, n| decrypt(k, n, &[], header))
        .ok_or(TransportError::BadMac)?;
    Ok(u16::from_be_bytes([len[0], len[1]]))
}

fn decrypt_body(c: &mut CipherState, body: &[u8]) -> Result<Vec<u8>, TransportError> {
    c.with_next_nonce(|k, n| decrypt(k, n, &[], body))
        .ok_or(TransportError::BadMac)
}

impl Transport {
    /// The transport in the state a handshake leaves it: chaining key, sending key and
    /// receiving key (as BOLT 8's message vectors give them).
    pub fn from_keys(ck: [u8; 32], sk: [u8; 32], rk: [u8; 32]) -> Self {
        Self::new(ck, sk, rk)
    }

    fn new(ck: [u8; 32], sk: [u8; 32], rk: [u8; 32]) -> Self {
        Transport {
            send: CipherState { k: sk, n: 0, ck },
            recv: CipherState { k: rk, n: 0, ck },
        }
    }

    /// Encrypts one message: encrypted 2-byte length + MAC, then encrypted body + MAC.
    pub fn encrypt(&mut self, msg: &[u8]) -> Result<Vec<u8>, TransportError> {
        encrypt_frame(&mut self.send, msg)
    }

    /// Decrypts an 18-byte header into the body length that follows (plus its MAC).
    pub fn decrypt_length(&mut self, header: &[u8]) -> Result<u16, TransportError> {
        decrypt_length(&mut self.recv, header)
    }

    /// Decrypts a body of `length + 16` bytes.
    pub fn decrypt_body(&mut self, body: &[u8]) -> Result<Vec<u8>, TransportError> {
        decrypt_body(&mut self.recv, body)
    }

    /// Splits into independent sending and receiving halves.
    pub fn split(self) -> (Encryptor, Decryptor) {
        (Encryptor(self.send), Decryptor(self.recv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (Transport, Transport) {
        let i_static = SecretKey::from_slice(&[1; 32]).unwrap();
        let r_static = SecretKey::from_slice(&[2; 32]).unwrap();
        let (init, act1) = InitiatorHandshake::new(
            i_static,
            &r_static.public_key(secp()),
            SecretKey::from_slice(&[3; 32]).unwrap(),
        );
        let mut resp = ResponderHandshake::new(r_static, SecretKey::from_slice(&[4; 32]).unwrap());
        let act2 = resp.process_act_one(&act1).unwrap();
        let (act3, a) = init.process_act_two(&act2).unwrap();
        let (node_id, b) = resp.process_act_three(&act3).unwrap();
        assert_eq!(node_id, i_static.public_key(secp()));
        (a, b)
    }

    fn hex32(v: &serde_json::Value) -> [u8; 32] {
        hex::decode(v.as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    }
    fn sk(v: &serde_json::Value) -> SecretKey {
        SecretKey::from_slice(&hex32(v)).unwrap()
    }
    fn bytes(v: &serde_json::Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }
    fn vectors() -> serde_json::Value {
        serde_json::from_str(include_str!("../tests/vectors/bolt8-transport.json")).unwrap()
    }
    fn check_error(err: HandshakeError, step: &serde_json::Value) {
        let want = step["error"].as_str().unwrap();
        let got = err.to_string();
        // The spec prints a version number after some BAD_VERSION codes only.
        assert!(
            got == want || got.split(' ').next() == Some(want),
            "{got} vs {want}"
        );
    }

    #[test]
    fn bolt8_initiator_vectors() {
        let v = vectors();
        let cases = v["initiator"].as_array().unwrap();
        assert_eq!(cases.len(), 5);
        for case in cases {
            let steps = case["steps"].as_array().unwrap();
            let rs = PublicKey::from_slice(&bytes(&case["rs_pub"])).unwrap();
            let (hs, act1) =
                InitiatorHandshake::new(sk(&case["ls_priv"]), &rs, sk(&case["e_priv"]));
            assert_eq!(
                act1.to_vec(),
                bytes(&steps[0]["output"]),
                "{}",
                case["name"]
            );
            match hs.process_act_two(&bytes(&steps[1]["input"])) {
                Err(e) => check_error(e, &steps[2]),
                Ok((act3, t)) => {
                    assert_eq!(act3.to_vec(), bytes(&steps[2]["output"]));
                    assert_eq!(t.send.k, hex32(&case["final_keys"]["sk"]));
                    assert_eq!(t.recv.k, hex32(&case["final_keys"]["rk"]));
                }
            }
        }
    }

    #[test]
    fn bolt8_responder_vectors() {
        let v = vectors();
        let cases = v["responder"].as_array().unwrap();
        assert_eq!(cases.len(), 10);
        let mut failures = 0;
        for case in cases {
            let steps = case["steps"].as_array().unwrap();
            let mut hs = ResponderHandshake::new(sk(&case["ls_priv"]), sk(&case["e_priv"]));
            let act2 = match hs.process_act_one(&bytes(&steps[0]["input"])) {
                Err(e) => {
                    check_error(e, &steps[1]);
                    failures += 1;
                    continue;
                }
                Ok(a) => a,
            };
            assert_eq!(
                act2.to_vec(),
                bytes(&steps[1]["output"]),
                "{}",
                case["name"]
            );
            match hs.process_act_three(&bytes(&steps[2]["input"])) {
                Err(e) => {
                    check_error(e, &steps[3]);
                    failures += 1;
                }
                Ok((_, t)) => {
                    assert_eq!(
                        t.send.k,
                        hex32(&case["final_keys"]["sk"]),
                        "{}",
                        case["name"]
                    );
                    assert_eq!(t.recv.k, hex32(&case["final_keys"]["rk"]));
                }
            }
        }
        assert_eq!(failures, 9);
    }

    /// BOLT 8: a key is used for nonces 0 to 999 and rotated *after* nonce 999 is used, so
    /// message 499's body is sealed with the old key at nonce 999.
    #[test]
    fn key_rotates_after_nonce_999_is_used() {
        let v = vectors();
        let m = &v["message_test"];
        let sk = hex32(&m["sk"]);
        let mut t = Transport::new(hex32(&m["ck"]), sk, hex32(&m["rk"]));
        let msg = bytes(&m["message_hex"]);
        for _ in 0..499 {
            t.encrypt(&msg).unwrap();
        }
        let frame = t.encrypt(&msg).unwrap();
        let mut want = encrypt(&sk, 998, &[], &(msg.len() as u16).to_be_bytes());
        want.extend(encrypt(&sk, 999, &[], &msg));
        assert_eq!(frame, want);
    }

    #[test]
    fn bolt8_message_vectors_with_key_rotation() {
        let v = vectors();
        let m = &v["message_test"];
        let mut t = Transport::new(hex32(&m["ck"]), hex32(&m["sk"]), hex32(&m["rk"]));
        let mut peer = Transport::new(hex32(&m["ck"]), hex32(&m["rk"]), hex32(&m["sk"]));
        let msg = bytes(&m["message_hex"]);
        let outputs = m["outputs"].as_object().unwrap();
        let mut checked = 0;
        for i in 0..=1001u32 {
            let frame = t.encrypt(&msg).unwrap();
            if let Some(want) = outputs.get(&i.to_string()) {
                assert_eq!(frame, bytes(want), "message {i}");
                checked += 1;
            }
            let len = peer.decrypt_length(&frame[..HEADER_LEN]).unwrap();
            assert_eq!(
                peer.decrypt_body(&frame[HEADER_LEN..HEADER_LEN + usize::from(len) + MAC_LEN])
                    .unwrap(),
                msg
            );
        }
        assert_eq!(checked, 6);
    }

    proptest! {
        /// Frames decrypt to what was sent, across key rotations; flipped bits are caught.
        #[test]
        fn frames_roundtrip(msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..40), flip in any::<usize>()) {
            let (mut a, mut b) = pair();
            for m in &msgs {
                let frame = a.encrypt(m).unwrap();
                let len = b.decrypt_length(&frame[..HEADER_LEN]).unwrap();
                prop_assert_eq!(usize::from(len), m.len());
                prop_assert_eq!(&b.decrypt_body(&frame[HEADER_LEN..]).unwrap(), m);
            }
            let mut frame = a.encrypt(&msgs[0]).unwrap();
            let i = flip % frame.len();
            frame[i] ^= 1;
            let mut b2 = b.clone();
            let header = b2.decrypt_length(&frame[..HEADER_LEN]);
            let body = b.decrypt_length(&frame[..HEADER_LEN]).and_then(|_| b.decrypt_body(&frame[HEADER_LEN..]));
            prop_assert!(header.is_err() || body.is_err());
        }
    }
}
