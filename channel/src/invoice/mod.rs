//! BOLT 11 payment requests: the `lnbc...` strings a merchant hands to a payer, signed by
//! the payee's node key so a payer knows who it pays and cannot be sent a forged hash.
//!
//! Decoding checks everything the spec tells a reader to check (checksum, case, amount
//! multiplier and precision, field lengths, required fields, unknown required features,
//! signature); [`InvoiceBuilder`] writes what LND, CLN and LDK expect today: a payment
//! secret, the `var_onion_optin` and `payment_secret` feature bits, and explicit expiry
//! and `min_final_cltv_expiry_delta`.

mod bech32;
mod builder;
mod fields;

pub use builder::InvoiceBuilder;

pub use fields::{Description, Fallback, RouteHintHop};

use crate::keys::secp;
use crate::types::PaymentHash;
use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature};
use bitcoin::secp256k1::{Message, PublicKey};
use bitcoin::Network;
use fields::Field;
use std::fmt;
use std::str::FromStr;

/// Expiry a reader assumes when the invoice has no `x` field.
pub const DEFAULT_EXPIRY_SECS: u64 = 3600;
/// `min_final_cltv_expiry_delta` a reader assumes when the invoice has no `c` field.
pub const DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 18;
/// Feature bit `var_onion_optin` (required form).
pub const FEATURE_VAR_ONION_OPTIN: u16 = 8;
/// Feature bit `payment_secret` (required form).
pub const FEATURE_PAYMENT_SECRET: u16 = 14;
/// Feature bit `basic_mpp` (required form).
pub const FEATURE_BASIC_MPP: u16 = 16;
/// Feature bit `option_payment_metadata` (required form).
pub const FEATURE_PAYMENT_METADATA: u16 = 48;

/// Feature pairs (even = required, odd = optional) this implementation understands in
/// an invoice. An invoice requiring anything else cannot be paid, so it is rejected.
const KNOWN_FEATURES: [u16; 4] = [
    FEATURE_VAR_ONION_OPTIN,
    FEATURE_PAYMENT_SECRET,
    FEATURE_BASIC_MPP,
    FEATURE_PAYMENT_METADATA,
];

/// The order [`InvoiceBuilder`] writes tagged fields in unless told otherwise.
const CANONICAL_ORDER: &str = "spdhnmxcfr9";

/// Why a string is not a valid invoice, or an invoice could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// No `1` separates the human-readable part from the data.
    #[error("no bech32 separator")]
    NoSeparator,
    /// Upper and lower case mixed (BIP 173 forbids it).
    #[error("mixed-case string")]
    MixedCase,
    /// A character outside the Bech32 alphabet.
    #[error("invalid bech32 character")]
    InvalidChar,
    /// The Bech32 checksum does not match.
    #[error("bad bech32 checksum")]
    BadChecksum,
    /// Too short to hold a timestamp, a signature and a checksum.
    #[error("invoice too short")]
    TooShort,
    /// The prefix is not `ln` followed by a known currency.
    #[error("unknown prefix or currency")]
    UnknownCurrency,
    /// The amount is not a plain positive decimal number.
    #[error("invalid amount")]
    InvalidAmount,
    /// The amount's multiplier is not one of `m`, `u`, `n`, `p`.
    #[error("invalid amount multiplier")]
    InvalidMultiplier,
    /// A pico-bitcoin amount that is not a whole number of millisatoshis.
    #[error("amount below millisatoshi precision")]
    SubMillisatoshi,
    /// The amount does not fit in 64 bits of millisatoshis.
    #[error("amount too large")]
    AmountOverflow,
    /// No valid `p` field.
    #[error("missing payment hash")]
    MissingPaymentHash,
    /// No valid `s` field (required by BOLT 11 since payment secrets became mandatory).
    #[error("missing payment secret")]
    MissingPaymentSecret,
    /// Neither `d` nor `h`.
    #[error("missing description")]
    MissingDescription,
    /// A `d` field that is not UTF-8.
    #[error("description is not UTF-8")]
    InvalidDescription,
    /// An integer field wider than 64 bits.
    #[error("field `{0}` value too large")]
    FieldOverflow(char),
    /// A field with an impossible value (pubkey off the curve, route hint of bad size...).
    #[error("field `{0}` malformed")]
    MalformedField(char),
    /// A required (even) feature bit this node does not know.
    #[error("unknown required feature bit {0}")]
    UnknownRequiredFeature(usize),
    /// The recovery id is not 0..=3 or no key can be recovered from the signature.
    #[error("signature not recoverable")]
    UnrecoverableSignature,
    /// The signature does not verify against the `n` field (or is not in low-S form).
    #[error("invalid signature")]
    InvalidSignature,
    /// A field's data exceeds the 1023 groups its 10-bit length can express.
    #[error("field `{0}` too long")]
    FieldTooLong(char),
}

/// A decoded (and signature-checked) or freshly signed BOLT 11 invoice.
#[derive(Clone, PartialEq, Eq)]
pub struct Invoice {
    network: Network,
    amount_msat: Option<u64>,
    timestamp: u64,
    payment_hash: PaymentHash,
    payment_secret: Option<[u8; 32]>,
    description: Description,
    expiry_secs: Option<u64>,
    min_final_cltv_expiry_delta: Option<u64>,
    payee: PublicKey,
    payee_in_field: bool,
    route_hints: Vec<Vec<RouteHintHop>>,
    fallbacks: Vec<Fallback>,
    features: Vec<u8>,
    metadata: Option<Vec<u8>>,
    field_order: String,
    signature: RecoverableSignature,
    signing_hash: [u8; 32],
    encoded: String,
}

impl fmt::Debug for Invoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The payment secret is what stops intermediate hops from probing the payee;
        // keep it out of logs.
        f.debug_struct("Invoice")
            .field("network", &self.network)
            .field("amount_msat", &self.amount_msat)
            .field("timestamp", &self.timestamp)
            .field("payment_hash", &self.payment_hash)
            .field("description", &self.description)
            .field("payee", &self.payee)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Invoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encoded)
    }
}

fn currency_prefix(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "bc",
        Network::Testnet => "tb",
        Network::Signet => "tbs",
        Network::Regtest => "bcrt",
        _ => "tb",
    }
}

/// Splits `ln<currency><amount>` into the network and the amount in millisatoshis.
fn parse_hrp(hrp: &str) -> Result<(Network, Option<u64>), InvoiceError> {
    let rest = hrp
        .strip_prefix("ln")
        .ok_or(InvoiceError::UnknownCurrency)?;
    // Longest prefix first: `bcrt` before `bc`, `tbs` before `tb`.
    let (network, amount) = [
        ("bcrt", Network::Regtest),
        ("bc", Network::Bitcoin),
        ("tbs", Network::Signet),
        ("tb", Network::Testnet),
    ]
    .iter()
    .find_map(|(p, n)| rest.strip_prefix(p).map(|a| (*n, a)))
    .ok_or(InvoiceError::UnknownCurrency)?;
    if amount.is_empty() {
        return Ok((network, None));
    }
    let (digits, multiplier) = match amount.as_bytes()[amount.len() - 1] {
        b'0'..=b'9' => (amount, None),
        m => (&amount[..amount.len() - 1], Some(m)),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(match multiplier {
            Some(_) if digits.bytes().all(|b| b.is_ascii_digit()) => InvoiceError::InvalidAmount,
            _ => InvoiceError::InvalidMultiplier,
        });
    }
    if digits.starts_with('0') {
        return Err(InvoiceError::InvalidAmount);
    }
    let n: u64 = digits.parse().map_err(|_| InvoiceError::AmountOverflow)?;
    let msat = match multiplier {
        None => n.checked_mul(100_000_000_000),
        Some(b'm') => n.checked_mul(100_000_000),
        Some(b'u') => n.checked_mul(100_000),
        Some(b'n') => n.checked_mul(100),
        Some(b'p') => {
            if n % 10 != 0 {
                return Err(InvoiceError::SubMillisatoshi);
            }
            Some(n / 10)
        }
        Some(_) => return Err(InvoiceError::InvalidMultiplier),
    };
    Ok((network, Some(msat.ok_or(InvoiceError::AmountOverflow)?)))
}

/// The shortest amount string: the largest multiplier that divides the amount exactly.
fn encode_amount(msat: u64) -> String {
    for (unit, suffix) in [
        (100_000_000_000u64, ""),
        (100_000_000, "m"),
        (100_000, "u"),
        (100, "n"),
    ] {
        if msat % unit == 0 {
            return format!("{}{suffix}", msat / unit);
        }
    }
    format!("{}p", u128::from(msat) * 10)
}

/// What the signature commits to: SHA-256 of the human-readable part's bytes followed by
/// the data part (before the signature) regrouped into bytes, zero-padded at the end.
fn signing_hash(hrp: &str, data: &[u8]) -> [u8; 32] {
    let mut preimage = hrp.as_bytes().to_vec();
    // Regroup into bytes, keeping a trailing partial byte with its low bits zero.
    let (mut acc, mut bits) = (0u32, 0u32);
    for g in data {
        acc = ((acc << 5) | u32::from(*g)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            preimage.push((acc >> bits) as u8);
        }
    }
    if bits > 0 {
        preimage.push((acc << (8 - bits)) as u8);
    }
    sha256::Hash::hash(&preimage).to_byte_array()
}

fn check_features(features: &[u8]) -> Result<(), InvoiceError> {
    for (i, byte) in features.iter().rev().enumerate() {
        for b in 0..8 {
            let bit = i * 8 + b;
            if byte >> b & 1 == 1 && bit % 2 == 0 && !KNOWN_FEATURES.contains(&(bit as u16)) {
                return Err(InvoiceError::UnknownRequiredFeature(bit));
            }
        }
    }
    Ok(())
}

impl FromStr for Invoice {
    type Err = InvoiceError;

    fn from_str(s: &str) -> Result<Invoice, InvoiceError> {
        let has_lower = s.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = s.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper {
            return Err(InvoiceError::MixedCase);
        }
        let s = s.to_ascii_lowercase();
        let (hrp, data) = s.rsplit_once('1').ok_or(InvoiceError::NoSeparator)?;
        if hrp.is_empty() || !hrp.bytes().all(|b| (33..=126).contains(&b)) {
            return Err(InvoiceError::UnknownCurrency);
        }
        let groups: Vec<u8> = data
            .bytes()
            .map(bech32::value_of)
            .collect::<Option<_>>()
            .ok_or(InvoiceError::InvalidChar)?;
        // 7 timestamp groups, 104 signature groups, 6 checksum groups.
        if groups.len() < 7 + 104 + 6 {
            return Err(InvoiceError::TooShort);
        }
        if !bech32::verify(hrp, &groups) {
            return Err(InvoiceError::BadChecksum);
        }
        let (network, amount_msat) = parse_hrp(hrp)?;
        let data = &groups[..groups.len() - 6];
        let (signed, sig_groups) = data.split_at(data.len() - 104);
        let timestamp = bech32::groups_to_u64(&signed[..7]).expect("35 bits fit");

        let mut inv = Decoding::default();
        let mut rest = &signed[7..];
        while !rest.is_empty() {
            if rest.len() < 3 {
                return Err(InvoiceError::MalformedField('?'));
            }
            let len = usize::from(rest[1]) << 5 | usize::from(rest[2]);
            if rest.len() < 3 + len {
                return Err(InvoiceError::MalformedField(bech32::char_of(rest[0])));
            }
            inv.field(rest[0], &rest[3..3 + len])?;
            rest = &rest[3 + len..];
        }

        let payment_hash = inv.payment_hash.ok_or(InvoiceError::MissingPaymentHash)?;
        let payment_secret = inv
            .payment_secret
            .ok_or(InvoiceError::MissingPaymentSecret)?;
        let description = inv.description.ok_or(InvoiceError::MissingDescription)?;
        check_features(&inv.features)?;

        let sig_bytes = bech32::from_groups(sig_groups);
        let recid = RecoveryId::from_i32(i32::from(sig_bytes[64]))
            .map_err(|_| InvoiceError::UnrecoverableSignature)?;
        // Recovery uses the low-S form of the signature with the recovery id as given,
        // as BOLT 11's "public-key recovery with high-S signature" example requires.
        let mut low_s = Signature::from_compact(&sig_bytes[..64])
            .map_err(|_| InvoiceError::UnrecoverableSignature)?;
        low_s.normalize_s();
        let signature = RecoverableSignature::from_compact(&low_s.serialize_compact(), recid)
            .map_err(|_| InvoiceError::UnrecoverableSignature)?;
        let hash = signing_hash(hrp, signed);
        let msg = Message::from_digest(hash);
        let payee = match inv.payee {
            // With an explicit key, BOLT 11 says to verify, and verification accepts only
            // low-S signatures.
            Some(n) => {
                let plain = Signature::from_compact(&sig_bytes[..64])
                    .map_err(|_| InvoiceError::InvalidSignature)?;
                secp()
                    .verify_ecdsa(&msg, &plain, &n)
                    .map_err(|_| InvoiceError::InvalidSignature)?;
                n
            }
            None => secp()
                .recover_ecdsa(&msg, &signature)
                .map_err(|_| InvoiceError::UnrecoverableSignature)?,
        };

        Ok(Invoice {
            network,
            amount_msat,
            timestamp,
            payment_hash,
            payment_secret: Some(payment_secret),
            description,
            expiry_secs: inv.expiry,
            min_final_cltv_expiry_delta: inv.min_final_cltv,
            payee,
            payee_in_field: inv.payee.is_some(),
            route_hints: inv.route_hints,
            fallbacks: inv.fallbacks,
            features: inv.features,
            metadata: inv.metadata,
            field_order: inv.order,
            signature,
            signing_hash: hash,
            encoded: s.clone(),
        })
    }
}

/// Fields gathered while reading the data part.
#[derive(Default)]
struct Decoding {
    payment_hash: Option<PaymentHash>,
    payment_secret: Option<[u8; 32]>,
    description: Option<Description>,
    payee: Option<PublicKey>,
    expiry: Option<u64>,
    min_final_cltv: Option<u64>,
    route_hints: Vec<Vec<RouteHintHop>>,
    fallbacks: Vec<Fallback>,
    features: Vec<u8>,
    metadata: Option<Vec<u8>>,
    order: String,
}

impl Decoding {
    fn field(&mut self, tag: u8, data: &[u8]) -> Result<(), InvoiceError> {
        let Some(field) = Field::decode(tag, data)? else {
            // Unknown tags, and known tags with a length the spec says to skip.
            return Ok(());
        };
        // The first valid occurrence of a single-valued field wins.
        let tag_char = field.tag().char();
        let first = !self.order.contains(tag_char);
        match field {
            Field::PaymentHash(h) if first => self.payment_hash = Some(PaymentHash(h)),
            Field::PaymentSecret(s) if first => self.payment_secret = Some(s),
            Field::Description(d) if self.description.is_none() => self.description = Some(d),
            Field::Payee(p) if first => self.payee = Some(p),
            Field::Expiry(x) if first => self.expiry = Some(x),
            Field::MinFinalCltv(c) if first => self.min_final_cltv = Some(c),
            Field::Features(f) if first => self.features = f,
            Field::Metadata(m) if first => self.metadata = Some(m),
            Field::Fallback(f) => self.fallbacks.push(f),
            Field::Route(r) => self.route_hints.push(r),
            _ => return Ok(()),
        }
        if first {
            self.order.push(tag_char);
        }
        Ok(())
    }
}

impl Invoice {
    /// The chain the invoice is for (from `lnbc`, `lntb`, `lntbs`, `lnbcrt`).
    pub fn network(&self) -> Network {
        self.network
    }
    /// The amount asked for, if any (a donation invoice has none).
    pub fn amount_msat(&self) -> Option<u64> {
        self.amount_msat
    }
    /// Creation time, Unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }
    /// The hash whose preimage the payee reveals when paid.
    pub fn payment_hash(&self) -> PaymentHash {
        self.payment_hash
    }
    /// The secret the payer puts in the final hop's `payment_data`.
    pub fn payment_secret(&self) -> Option<[u8; 32]> {
        self.payment_secret
    }
    /// What is being paid for, or its hash.
    pub fn description(&self) -> &Description {
        &self.description
    }
    /// Seconds after [`Self::timestamp`] when the invoice expires (default 3600).
    pub fn expiry_secs(&self) -> u64 {
        self.expiry_secs.unwrap_or(DEFAULT_EXPIRY_SECS)
    }
    /// The CLTV delta the final HTLC must leave the payee (default 18).
    pub fn min_final_cltv_expiry_delta(&self) -> u64 {
        self.min_final_cltv_expiry_delta
            .unwrap_or(DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA)
    }
    /// The payee's node id: the `n` field, or the key recovered from the signature.
    pub fn payee(&self) -> PublicKey {
        self.payee
    }
    /// Private routes into the payee, each a list of hops ending at the payee.
    pub fn route_hints(&self) -> &[Vec<RouteHintHop>] {
        &self.route_hints
    }
    /// On-chain fallbacks, in the order given.
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }
    /// The fallbacks as addresses on this invoice's network.
    pub fn fallback_addresses(&self) -> Vec<bitcoin::Address> {
        self.fallbacks
            .iter()
            .filter_map(|f| f.to_address(self.network))
            .collect()
    }
    /// Feature bits as a big-endian byte string (BOLT 9 layout: bit 0 is the lowest
    /// bit of the last byte).
    pub fn features(&self) -> &[u8] {
        &self.features
    }
    /// True if feature `bit` is set.
    pub fn has_feature(&self, bit: usize) -> bool {
        let byte = bit / 8;
        byte < self.features.len()
            && self.features[self.features.len() - 1 - byte] >> (bit % 8) & 1 == 1
    }
    /// `payment_metadata` the payer must echo in the final onion payload.
    pub fn metadata(&self) -> Option<&[u8]> {
        self.metadata.as_deref()
    }
    /// When the invoice stops being payable, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.timestamp.saturating_add(self.expiry_secs())
    }
    /// True if `now` (Unix seconds) is at or past the expiry.
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.expires_at()
    }
    /// The payee's signature with its recovery id, in low-S form.
    pub fn signature(&self) -> &RecoverableSignature {
        &self.signature
    }
    /// The SHA-256 the signature signs.
    pub fn signing_hash(&self) -> [u8; 32] {
        self.signing_hash
    }
    /// The tags of the known fields in the order they appear (e.g. `"spdx9"`).
    pub fn field_order(&self) -> &str {
        &self.field_order
    }

    /// A builder holding exactly this invoice's fields, field order and timestamp, so it
    /// can be signed again (by the same key it reproduces a deterministic signature).
    pub fn to_builder(&self) -> InvoiceBuilder {
        InvoiceBuilder {
            network: self.network,
            amount_msat: self.amount_msat,
            timestamp: self.timestamp,
            payment_hash: self.payment_hash,
            payment_secret: self.payment_secret,
            description: self.description.clone(),
            expiry_secs: self.expiry_secs,
            min_final_cltv_expiry_delta: self.min_final_cltv_expiry_delta,
            include_payee: self.payee_in_field,
            route_hints: self.route_hints.clone(),
            fallbacks: self.fallbacks.clone(),
            features: self.features.clone(),
            metadata: self.metadata.clone(),
            field_order: self.field_order.clone(),
        }
    }
}
