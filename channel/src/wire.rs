//! BOLT 1 encoding primitives: big-endian fields, BigSize integers and TLV streams.

use bitcoin::secp256k1::{ecdsa::Signature, PublicKey};

/// Why bytes from a peer could not be decoded. Each variant names the spec rule broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field did.
    #[error("message too short")]
    ShortRead,
    /// A field holds a value the spec does not allow (a point off the curve, ...).
    #[error("invalid {0}")]
    InvalidValue(&'static str),
    /// BigSize not in its shortest form.
    #[error("non-minimal BigSize encoding")]
    NonMinimalBigSize,
    /// An even message type this node does not know (BOLT 1: close the connection).
    #[error("unknown even message type {0}")]
    UnknownEvenMessage(u16),
    /// An even TLV type this node does not know (BOLT 1: fail to parse).
    #[error("unknown even TLV type {0}")]
    UnknownEvenTlv(u64),
    /// TLV types must strictly increase.
    #[error("TLV types not strictly increasing at {0}")]
    TlvOrder(u64),
    /// A known TLV record has the wrong length.
    #[error("TLV type {0} has a bad length")]
    TlvLength(u64),
}

/// Appends BOLT 1 fields to a buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }
    /// The bytes written.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// BigSize (BOLT 1 "Appendix A").
    pub fn bigsize(&mut self, v: u64) {
        match v {
            0..=0xfc => self.buf.push(v as u8),
            0xfd..=0xffff => {
                self.buf.push(0xfd);
                self.bytes(&(v as u16).to_be_bytes());
            }
            0x1_0000..=0xffff_ffff => {
                self.buf.push(0xfe);
                self.bytes(&(v as u32).to_be_bytes());
            }
            _ => {
                self.buf.push(0xff);
                self.bytes(&v.to_be_bytes());
            }
        }
    }
    /// One TLV record.
    pub fn tlv(&mut self, ty: u64, value: &[u8]) {
        self.bigsize(ty);
        self.bigsize(value.len() as u64);
        self.bytes(value);
    }
}

/// Reads BOLT 1 fields from a message.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }
    /// True when all bytes were read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::ShortRead);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
    /// BigSize, rejecting non-minimal encodings.
    pub fn bigsize(&mut self) -> Result<u64, DecodeError> {
        let first = self.array::<1>()?[0];
        let (v, min) = match first {
            0xfd => (u64::from(u16::from_be_bytes(self.array()?)), 0xfd),
            0xfe => (u64::from(u32::from_be_bytes(self.array()?)), 0x1_0000),
            0xff => (u64::from_be_bytes(self.array()?), 0x1_0000_0000),
            b => return Ok(u64::from(b)),
        };
        if v < min {
            return Err(DecodeError::NonMinimalBigSize);
        }
        Ok(v)
    }
}

/// A field with a fixed BOLT 1 encoding.
pub trait WireField: Sized {
    /// Appends the field.
    fn write(&self, w: &mut Writer);
    /// Reads the field.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

macro_rules! int_field {
    ($($t:ty),*) => {$(
        impl WireField for $t {
            fn write(&self, w: &mut Writer) {
                w.bytes(&self.to_be_bytes());
            }
            fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                Ok(<$t>::from_be_bytes(r.array()?))
            }
        }
    )*};
}
int_field!(u8, u16, u32, u64);

impl<const N: usize> WireField for [u8; N] {
    fn write(&self, w: &mut Writer) {
        w.bytes(self);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.array()
    }
}

/// `point`: a 33-byte compressed secp256k1 public key.
impl WireField for PublicKey {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.serialize());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        PublicKey::from_slice(r.take(33)?).map_err(|_| DecodeError::InvalidValue("point"))
    }
}

/// `signature`: 64-byte compact ECDSA signature.
impl WireField for Signature {
    fn write(&self, w: &mut Writer) {
        w.bytes(&self.serialize_compact());
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Signature::from_compact(r.take(64)?).map_err(|_| DecodeError::InvalidValue("signature"))
    }
}

/// `u16 len` followed by `len` bytes.
impl WireField for Vec<u8> {
    fn write(&self, w: &mut Writer) {
        (self.len() as u16).write(w);
        w.bytes(self);
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let len = u16::read(r)?;
        Ok(r.take(len as usize)?.to_vec())
    }
}

/// `u16 num` followed by `num` signatures (commitment_signed's htlc_signature).
impl WireField for Vec<Signature> {
    fn write(&self, w: &mut Writer) {
        (self.len() as u16).write(w);
        for s in self {
            s.write(w);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let n = u16::read(r)?;
        (0..n).map(|_| Signature::read(r)).collect()
    }
}

/// A value carried in a TLV record, whose length comes from the record.
pub trait TlvValue: Sized {
    /// The value's bytes.
    fn encode(&self) -> Vec<u8>;
    /// Parses the whole record value.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl TlvValue for Vec<u8> {
    fn encode(&self) -> Vec<u8> {
        self.clone()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(bytes.to_vec())
    }
}

impl TlvValue for u64 {
    fn encode(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
}

impl TlvValue for PublicKey {
    fn encode(&self) -> Vec<u8> {
        self.serialize().to_vec()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        PublicKey::from_slice(bytes).ok()
    }
}

/// A list of 32-byte values (init's `networks`).
impl TlvValue for Vec<[u8; 32]> {
    fn encode(&self) -> Vec<u8> {
        self.concat()
    }
    fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() % 32 != 0 {
            return None;
        }
        Some(
            bytes
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32-byte chunk"))
                .collect(),
        )
    }
}

/// Reads a TLV stream to its end, handing each record to `known`, which returns
/// `Ok(true)` when it took the record. Enforces BOLT 1: strictly increasing types,
/// unknown even types fail, unknown odd types are skipped.
pub fn read_tlv_stream(
    r: &mut Reader<'_>,
    mut known: impl FnMut(u64, &[u8]) -> Result<bool, DecodeError>,
) -> Result<(), DecodeError> {
    let mut last: Option<u64> = None;
    while !r.is_empty() {
        let ty = r.bigsize()?;
        if last.is_some_and(|l| ty <= l) {
            return Err(DecodeError::TlvOrder(ty));
        }
        last = Some(ty);
        let len = r.bigsize()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::ShortRead)?;
        let value = r.take(len)?;
        if !known(ty, value)? && ty % 2 == 0 {
            return Err(DecodeError::UnknownEvenTlv(ty));
        }
    }
    Ok(())
}

/// Decodes a known TLV record's value or reports its bad length.
pub fn tlv_value<T: TlvValue>(ty: u64, bytes: &[u8]) -> Result<T, DecodeError> {
    T::decode(bytes).ok_or(DecodeError::TlvLength(ty))
}
