//! Writing and signing invoices.

use super::bech32;
use super::fields::{Description, Fallback, Field, RouteHintHop, Tag};
use super::{
    check_features, currency_prefix, encode_amount, signing_hash, Invoice, InvoiceError,
    CANONICAL_ORDER, DEFAULT_EXPIRY_SECS, DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA, FEATURE_BASIC_MPP,
    FEATURE_PAYMENT_METADATA, FEATURE_PAYMENT_SECRET, FEATURE_VAR_ONION_OPTIN,
};
use crate::keys::secp;
use crate::types::PaymentHash;
use bitcoin::secp256k1::{Message, PublicKey, SecretKey};
use bitcoin::Network;
use std::str::FromStr;

/// Writes and signs an invoice. By default it includes everything today's
/// implementations expect: `s`, `9` with `var_onion_optin` and `payment_secret` required,
/// `x` = 3600 and `c` = 18 written out (older readers assumed other defaults).
#[derive(Clone, Debug)]
pub struct InvoiceBuilder {
    pub(super) network: Network,
    pub(super) amount_msat: Option<u64>,
    pub(super) timestamp: u64,
    pub(super) payment_hash: PaymentHash,
    pub(super) payment_secret: Option<[u8; 32]>,
    pub(super) description: Description,
    pub(super) expiry_secs: Option<u64>,
    pub(super) min_final_cltv_expiry_delta: Option<u64>,
    pub(super) include_payee: bool,
    pub(super) route_hints: Vec<Vec<RouteHintHop>>,
    pub(super) fallbacks: Vec<Fallback>,
    pub(super) features: Vec<u8>,
    pub(super) metadata: Option<Vec<u8>>,
    pub(super) field_order: String,
}

fn feature_bytes(bits: &[u16]) -> Vec<u8> {
    let top = bits
        .iter()
        .copied()
        .max()
        .map_or(0, |b| usize::from(b) / 8 + 1);
    let mut out = vec![0u8; top];
    for b in bits {
        let b = usize::from(*b);
        out[top - 1 - b / 8] |= 1 << (b % 8);
    }
    out
}

impl InvoiceBuilder {
    /// An invoice for `payment_hash`, created at `timestamp` (Unix seconds).
    pub fn new(
        network: Network,
        payment_hash: PaymentHash,
        payment_secret: [u8; 32],
        description: Description,
        timestamp: u64,
    ) -> InvoiceBuilder {
        InvoiceBuilder {
            network,
            amount_msat: None,
            timestamp,
            payment_hash,
            payment_secret: Some(payment_secret),
            description,
            expiry_secs: Some(DEFAULT_EXPIRY_SECS),
            min_final_cltv_expiry_delta: Some(DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA),
            include_payee: false,
            route_hints: Vec::new(),
            fallbacks: Vec::new(),
            features: feature_bytes(&[FEATURE_VAR_ONION_OPTIN, FEATURE_PAYMENT_SECRET]),
            metadata: None,
            field_order: String::new(),
        }
    }
    /// The amount asked for.
    pub fn amount_msat(mut self, msat: u64) -> Self {
        self.amount_msat = Some(msat);
        self
    }
    /// Expiry in seconds; `None` leaves the `x` field out (readers then assume 3600).
    pub fn expiry_secs(mut self, secs: Option<u64>) -> Self {
        self.expiry_secs = secs;
        self
    }
    /// `min_final_cltv_expiry_delta`; `None` leaves `c` out (readers assume 18).
    pub fn min_final_cltv_expiry_delta(mut self, delta: Option<u64>) -> Self {
        self.min_final_cltv_expiry_delta = delta;
        self
    }
    /// Also write the payee's key in an `n` field (readers then verify rather than
    /// recover, which is cheaper).
    pub fn include_payee(mut self, yes: bool) -> Self {
        self.include_payee = yes;
        self
    }
    /// Adds one private route into the payee.
    pub fn route_hint(mut self, hops: Vec<RouteHintHop>) -> Self {
        self.route_hints.push(hops);
        self
    }
    /// Adds an on-chain fallback.
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallbacks.push(fallback);
        self
    }
    /// Replaces the feature bits (big-endian bytes, as [`Invoice::features`] returns).
    pub fn features(mut self, features: Vec<u8>) -> Self {
        self.features = features;
        self
    }
    /// Adds `payment_metadata` and sets its feature bit as required.
    pub fn metadata(mut self, metadata: Vec<u8>) -> Self {
        self.metadata = Some(metadata);
        self.with_feature_bit(FEATURE_PAYMENT_METADATA)
    }
    /// Offers `basic_mpp` (the optional bit): the payee gathers a payment's parts.
    pub fn basic_mpp(self) -> Self {
        self.with_feature_bit(FEATURE_BASIC_MPP + 1)
    }
    fn with_feature_bit(mut self, bit: u16) -> Self {
        let bits = (0..self.features.len() * 8)
            .filter(|b| self.features[self.features.len() - 1 - b / 8] >> (b % 8) & 1 == 1)
            .map(|b| b as u16)
            .chain([bit])
            .collect::<Vec<_>>();
        self.features = feature_bytes(&bits);
        self
    }
    /// The order to write field tags in (e.g. `"psd9"`), to reproduce an existing
    /// invoice; fields not named follow in the default order.
    pub fn field_order(mut self, order: &str) -> Self {
        self.field_order = order.to_string();
        self
    }

    fn fields(&self, payee: &PublicKey) -> Vec<Field> {
        let mut order: String = self.field_order.clone();
        order.extend(
            CANONICAL_ORDER
                .chars()
                .filter(|c| !self.field_order.contains(*c)),
        );
        let mut out = Vec::new();
        for c in order.chars() {
            match Tag::from_char(c) {
                Some(Tag::PaymentHash) => out.push(Field::PaymentHash(self.payment_hash.0)),
                Some(Tag::PaymentSecret) => {
                    out.extend(self.payment_secret.map(Field::PaymentSecret))
                }
                Some(Tag::Description) if matches!(self.description, Description::Direct(_)) => {
                    out.push(Field::Description(self.description.clone()))
                }
                Some(Tag::DescriptionHash) if matches!(self.description, Description::Hash(_)) => {
                    out.push(Field::Description(self.description.clone()))
                }
                Some(Tag::Payee) if self.include_payee => out.push(Field::Payee(*payee)),
                Some(Tag::Metadata) => out.extend(self.metadata.clone().map(Field::Metadata)),
                Some(Tag::Expiry) => out.extend(self.expiry_secs.map(Field::Expiry)),
                Some(Tag::MinFinalCltv) => {
                    out.extend(self.min_final_cltv_expiry_delta.map(Field::MinFinalCltv))
                }
                Some(Tag::Fallback) => {
                    out.extend(self.fallbacks.iter().cloned().map(Field::Fallback))
                }
                Some(Tag::Route) => out.extend(self.route_hints.iter().cloned().map(Field::Route)),
                Some(Tag::Features) if !self.features.is_empty() => {
                    out.push(Field::Features(self.features.clone()))
                }
                _ => {}
            }
        }
        out
    }

    /// Signs with the payee's node key (RFC 6979 deterministic ECDSA) and encodes.
    pub fn build_signed(&self, node_key: &SecretKey) -> Result<Invoice, InvoiceError> {
        check_features(&self.features)?;
        if self.timestamp >> 35 != 0 {
            return Err(InvoiceError::FieldOverflow('t'));
        }
        let payee = PublicKey::from_secret_key(secp(), node_key);
        let hrp = format!(
            "ln{}{}",
            currency_prefix(self.network),
            self.amount_msat.map(encode_amount).unwrap_or_default()
        );
        let mut data = bech32::u64_to_groups(self.timestamp);
        while data.len() < 7 {
            data.insert(0, 0);
        }
        for f in self.fields(&payee) {
            let groups = f.encode();
            if groups.len() > 1023 {
                return Err(InvoiceError::FieldTooLong(f.tag().char()));
            }
            data.push(f.tag() as u8);
            data.push((groups.len() >> 5) as u8);
            data.push((groups.len() & 31) as u8);
            data.extend(groups);
        }
        let hash = signing_hash(&hrp, &data);
        let sig = secp().sign_ecdsa_recoverable(&Message::from_digest(hash), node_key);
        let (recid, compact) = sig.serialize_compact();
        let mut sig_bytes = compact.to_vec();
        sig_bytes.push(recid.to_i32() as u8);
        data.extend(bech32::to_groups(&sig_bytes));
        let checksum = bech32::checksum(&hrp, &data);
        let mut s = hrp;
        s.push('1');
        s.extend(data.iter().chain(&checksum).map(|g| bech32::char_of(*g)));
        // Decoding what we wrote applies every reader check to our own output.
        Invoice::from_str(&s)
    }
}
