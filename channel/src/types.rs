//! Small value types of the protocol, so that a millisatoshi amount, a channel id or a
//! payment hash cannot be confused with another number or byte string.

use bitcoin::hashes::{sha256, Hash};
use std::fmt;

/// An amount in millisatoshis (BOLT 2 `amount_msat`, balances).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Msat(pub u64);

impl Msat {
    /// Zero millisatoshis.
    pub const ZERO: Msat = Msat(0);

    /// Whole satoshis, rounded down (BOLT 3 rounds commitment outputs down).
    pub fn to_sat(self) -> u64 {
        self.0 / 1000
    }

    /// Millisatoshis from satoshis; `None` on overflow.
    pub fn from_sat(sat: u64) -> Option<Msat> {
        sat.checked_mul(1000).map(Msat)
    }

    /// Addition that reports overflow instead of wrapping.
    pub fn checked_add(self, other: Msat) -> Option<Msat> {
        self.0.checked_add(other.0).map(Msat)
    }

    /// Subtraction that reports underflow instead of wrapping.
    pub fn checked_sub(self, other: Msat) -> Option<Msat> {
        self.0.checked_sub(other.0).map(Msat)
    }
}

impl fmt::Display for Msat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} msat", self.0)
    }
}

/// A 32-byte channel id (BOLT 2: funding txid XOR funding output index, or the
/// temporary id chosen by the funder before the funding transaction exists).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct ChannelId(pub [u8; 32]);

impl ChannelId {
    /// BOLT 2 `channel_id`: the funding txid (in its serialized, little-endian byte
    /// order) with its last two bytes XORed with the big-endian funding output index.
    pub fn from_funding_outpoint(txid: &bitcoin::Txid, index: u16) -> ChannelId {
        let mut id = txid.to_byte_array();
        id[30] ^= (index >> 8) as u8;
        id[31] ^= (index & 0xff) as u8;
        ChannelId(id)
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The SHA-256 of a payment preimage, which an HTLC locks funds to.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct PaymentHash(pub [u8; 32]);

/// The secret whose SHA-256 is the payment hash; revealing it settles an HTLC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PaymentPreimage(pub [u8; 32]);

impl PaymentPreimage {
    /// The payment hash this preimage unlocks.
    pub fn payment_hash(&self) -> PaymentHash {
        PaymentHash(sha256::Hash::hash(&self.0).to_byte_array())
    }
}

impl fmt::Debug for PaymentPreimage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A preimage is the proof of payment: keep it out of logs.
        f.write_str("PaymentPreimage(..)")
    }
}

/// BOLT 2 HTLC id: assigned by the offering node, starting at 0, incremented per add.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct HtlcId(pub u64);

/// A commitment number as BOLT 3 counts it: 0 for the first commitment, up to 2^48 - 1.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct CommitmentNumber(pub u64);

impl CommitmentNumber {
    /// The largest commitment number BOLT 3 allows (48 bits).
    pub const MAX: u64 = (1 << 48) - 1;

    /// The index into the per-commitment secret generator: BOLT 3 starts at 2^48 - 1
    /// for commitment 0 and counts down.
    pub fn secret_index(self) -> u64 {
        Self::MAX - self.0
    }

    /// The commitment number whose secret has this generator index.
    pub fn from_secret_index(index: u64) -> CommitmentNumber {
        CommitmentNumber(Self::MAX - index)
    }

    /// The next commitment number.
    pub fn next(self) -> CommitmentNumber {
        CommitmentNumber(self.0 + 1)
    }
}

/// A fee rate in satoshis per 1000 weight units (BOLT 2 `feerate_per_kw`).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FeeratePerKw(pub u32);

impl FeeratePerKw {
    /// The fee for a transaction of `weight` weight units, rounded down as BOLT 3 does.
    pub fn fee_for_weight(self, weight: u64) -> u64 {
        u64::from(self.0) * weight / 1000
    }
}

/// Which side of the channel a thing belongs to, from this node's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// This node.
    Local,
    /// The counterparty.
    Remote,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Local => Side::Remote,
            Side::Remote => Side::Local,
        }
    }
}
