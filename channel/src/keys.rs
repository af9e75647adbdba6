//! BOLT 3 "Key Derivation": basepoints, per-commitment keys and revocation keys.
//!
//! Every commitment transaction uses keys tweaked by that commitment's per-commitment
//! point, so that the revocation secret for one commitment reveals nothing about others.

use crate::secrets::PerCommitmentSecretGenerator;
use crate::types::CommitmentNumber;
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::{self, All, PublicKey, Scalar, Secp256k1, SecretKey};
use std::sync::OnceLock;

/// The process-wide secp256k1 context (creating one costs far more than using it).
pub fn secp() -> &'static Secp256k1<All> {
    static CTX: OnceLock<Secp256k1<All>> = OnceLock::new();
    CTX.get_or_init(Secp256k1::new)
}

fn sha256_of_points(a: &PublicKey, b: &PublicKey) -> [u8; 32] {
    let mut engine = sha256::Hash::engine();
    engine.input(&a.serialize());
    engine.input(&b.serialize());
    sha256::Hash::from_engine(engine).to_byte_array()
}

fn scalar(bytes: [u8; 32]) -> Scalar {
    // A SHA-256 output is below the curve order except with negligible probability; the
    // BOLT 3 formulas have no fallback for that case, so neither do we.
    Scalar::from_be_bytes(bytes).expect("sha256 output below curve order")
}

/// BOLT 3: `pubkey = basepoint + SHA256(per_commitment_point || basepoint) * G`.
/// Used for localpubkey, local_htlcpubkey, remote_htlcpubkey, local_delayedpubkey and
/// (without `option_static_remotekey`) remotepubkey.
pub fn derive_pubkey(basepoint: &PublicKey, per_commitment_point: &PublicKey) -> PublicKey {
    let tweak = sha256_of_points(per_commitment_point, basepoint);
    // `tweak * G` by fixed-base multiplication plus one point addition costs about half
    // of libsecp256k1's tweak_add, which runs a general double multiplication.
    let tweak_point = SecretKey::from_slice(&tweak)
        .expect("sha256 output is a valid scalar")
        .public_key(secp());
    basepoint
        .combine(&tweak_point)
        .expect("tweak from a hash does not cancel the basepoint")
}

/// BOLT 3: `privkey = basepoint_secret + SHA256(per_commitment_point || basepoint)`.
pub fn derive_privkey(basepoint_secret: &SecretKey, per_commitment_point: &PublicKey) -> SecretKey {
    let basepoint = PublicKey::from_secret_key(secp(), basepoint_secret);
    let tweak = sha256_of_points(per_commitment_point, &basepoint);
    basepoint_secret
        .add_tweak(&scalar(tweak))
        .expect("tweak from a hash does not cancel the secret")
}

/// BOLT 3: `revocationpubkey = revocation_basepoint * SHA256(revocation_basepoint ||
/// per_commitment_point) + per_commitment_point * SHA256(per_commitment_point ||
/// revocation_basepoint)`.
pub fn derive_revocation_pubkey(
    revocation_basepoint: &PublicKey,
    per_commitment_point: &PublicKey,
) -> PublicKey {
    let t1 = sha256_of_points(revocation_basepoint, per_commitment_point);
    let t2 = sha256_of_points(per_commitment_point, revocation_basepoint);
    let a = revocation_basepoint
        .mul_tweak(secp(), &scalar(t1))
        .expect("non-zero tweak");
    let b = per_commitment_point
        .mul_tweak(secp(), &scalar(t2))
        .expect("non-zero tweak");
    a.combine(&b).expect("sum is not the point at infinity")
}

/// [`derive_revocation_pubkey`] for the holder of the revocation basepoint's secret:
/// `revocation_basepoint * h1` becomes a fixed-base multiplication `(secret * h1) * G`,
/// which costs a fraction of a variable-base one.
pub fn derive_revocation_pubkey_with_basepoint_secret(
    revocation_basepoint_secret: &SecretKey,
    revocation_basepoint: &PublicKey,
    per_commitment_point: &PublicKey,
) -> PublicKey {
    let t1 = sha256_of_points(revocation_basepoint, per_commitment_point);
    let t2 = sha256_of_points(per_commitment_point, revocation_basepoint);
    let a = revocation_basepoint_secret
        .mul_tweak(&scalar(t1))
        .expect("non-zero tweak")
        .public_key(secp());
    let b = per_commitment_point
        .mul_tweak(secp(), &scalar(t2))
        .expect("non-zero tweak");
    a.combine(&b).expect("sum is not the point at infinity")
}

/// [`derive_revocation_pubkey`] for the holder of the per-commitment secret (one's own
/// commitment): `per_commitment_point * h2` becomes `(secret * h2) * G`.
pub fn derive_revocation_pubkey_with_commitment_secret(
    revocation_basepoint: &PublicKey,
    per_commitment_secret: &SecretKey,
    per_commitment_point: &PublicKey,
) -> PublicKey {
    let t1 = sha256_of_points(revocation_basepoint, per_commitment_point);
    let t2 = sha256_of_points(per_commitment_point, revocation_basepoint);
    let a = revocation_basepoint
        .mul_tweak(secp(), &scalar(t1))
        .expect("non-zero tweak");
    let b = per_commitment_secret
        .mul_tweak(&scalar(t2))
        .expect("non-zero tweak")
        .public_key(secp());
    a.combine(&b).expect("sum is not the point at infinity")
}

/// BOLT 3: `revocationprivkey = revocation_basepoint_secret * SHA256(revocation_basepoint
/// || per_commitment_point) + per_commitment_secret * SHA256(per_commitment_point ||
/// revocation_basepoint)`. Only the party holding both secrets (after a revocation) can
/// compute it.
pub fn derive_revocation_privkey(
    revocation_basepoint_secret: &SecretKey,
    per_commitment_secret: &SecretKey,
) -> SecretKey {
    let revocation_basepoint = PublicKey::from_secret_key(secp(), revocation_basepoint_secret);
    let per_commitment_point = PublicKey::from_secret_key(secp(), per_commitment_secret);
    let t1 = sha256_of_points(&revocation_basepoint, &per_commitment_point);
    let t2 = sha256_of_points(&per_commitment_point, &revocation_basepoint);
    let a = revocation_basepoint_secret
        .mul_tweak(&scalar(t1))
        .expect("non-zero tweak");
    let b = per_commitment_secret
        .mul_tweak(&scalar(t2))
        .expect("non-zero tweak");
    a.add_tweak(&Scalar::from(b)).expect("sum is not zero")
}

/// The public basepoints one side announces in open_channel / accept_channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Basepoints {
    /// Key in the 2-of-2 funding output.
    pub funding_pubkey: PublicKey,
    /// Combined with the counterparty's per-commitment point into revocation keys.
    pub revocation_basepoint: PublicKey,
    /// Receives the counterparty's to_remote output (directly, with static_remotekey).
    pub payment_basepoint: PublicKey,
    /// Tweaked into the key of one's own delayed to_local output.
    pub delayed_payment_basepoint: PublicKey,
    /// Tweaked into the HTLC keys.
    pub htlc_basepoint: PublicKey,
}

/// One side's channel secrets: basepoint secrets and the per-commitment seed.
/// Deliberately not `Debug`: nothing secret should reach a log.
#[derive(Clone)]
pub struct ChannelSecrets {
    /// Secret of the funding pubkey.
    pub funding_key: SecretKey,
    /// Secret of the revocation basepoint.
    pub revocation_basepoint_secret: SecretKey,
    /// Secret of the payment basepoint.
    pub payment_basepoint_secret: SecretKey,
    /// Secret of the delayed payment basepoint.
    pub delayed_payment_basepoint_secret: SecretKey,
    /// Secret of the HTLC basepoint.
    pub htlc_basepoint_secret: SecretKey,
    /// Seed of the BOLT 3 per-commitment secret generator.
    pub commitment_seed: [u8; 32],
}

impl ChannelSecrets {
    /// Derives all channel secrets from one 32-byte channel seed (which the node derives
    /// from its own master seed). Each key is `SHA256(seed || label)`.
    pub fn from_seed(seed: &[u8; 32]) -> ChannelSecrets {
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut engine = sha256::Hash::engine();
            engine.input(seed);
            engine.input(label);
            sha256::Hash::from_engine(engine).to_byte_array()
        };
        let key = |label: &[u8]| {
            SecretKey::from_slice(&derive(label)).expect("hash output is a valid key")
        };
        ChannelSecrets {
            funding_key: key(b"funding"),
            revocation_basepoint_secret: key(b"revocation"),
            payment_basepoint_secret: key(b"payment"),
            delayed_payment_basepoint_secret: key(b"delayed_payment"),
            htlc_basepoint_secret: key(b"htlc"),
            commitment_seed: derive(b"commitment_seed"),
        }
    }

    /// The public basepoints for open_channel / accept_channel.
    pub fn basepoints(&self) -> Basepoints {
        let p = |k: &SecretKey| PublicKey::from_secret_key(secp(), k);
        Basepoints {
            funding_pubkey: p(&self.funding_key),
            revocation_basepoint: p(&self.revocation_basepoint_secret),
            payment_basepoint: p(&self.payment_basepoint_secret),
            delayed_payment_basepoint: p(&self.delayed_payment_basepoint_secret),
            htlc_basepoint: p(&self.htlc_basepoint_secret),
        }
    }

    /// The per-commitment secret of our commitment number `n`.
    pub fn per_commitment_secret(&self, n: CommitmentNumber) -> [u8; 32] {
        PerCommitmentSecretGenerator::new(self.commitment_seed).secret(n.secret_index())
    }

    /// The per-commitment point of our commitment number `n`.
    pub fn per_commitment_point(&self, n: CommitmentNumber) -> PublicKey {
        point_from_secret(&self.per_commitment_secret(n))
    }
}

/// The public point of a 32-byte per-commitment secret.
pub fn point_from_secret(secret: &[u8; 32]) -> PublicKey {
    let sk = SecretKey::from_slice(secret).expect("per-commitment secret is a valid key");
    PublicKey::from_secret_key(secp(), &sk)
}

/// The public keys of one commitment transaction, derived once from the per-commitment
/// point and reused for every output, HTLC transaction and signature of that commitment.
///
/// "Local" and "remote" are relative to the commitment's holder (the party who can
/// broadcast it), as in BOLT 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommitmentKeys {
    /// The holder's per-commitment point for this commitment.
    pub per_commitment_point: PublicKey,
    /// Lets the counterparty take everything once this commitment is revoked.
    pub revocation_key: PublicKey,
    /// The holder's key in its HTLC outputs.
    pub local_htlc_key: PublicKey,
    /// The counterparty's key in the HTLC outputs.
    pub remote_htlc_key: PublicKey,
    /// The holder's key for its CSV-delayed to_local output.
    pub local_delayed_key: PublicKey,
    /// The key the counterparty's to_remote output pays to.
    pub to_remote_key: PublicKey,
}

impl CommitmentKeys {
    /// Derives the keys of the holder's commitment with `per_commitment_point`.
    /// `static_remotekey` selects `option_static_remotekey` (to_remote pays the
    /// counterparty's payment basepoint untweaked).
    pub fn derive(
        per_commitment_point: &PublicKey,
        holder: &Basepoints,
        counterparty: &Basepoints,
        static_remotekey: bool,
    ) -> CommitmentKeys {
        let revocation_key =
            derive_revocation_pubkey(&counterparty.revocation_basepoint, per_commitment_point);
        Self::derive_with_revocation_key(
            per_commitment_point,
            holder,
            counterparty,
            static_remotekey,
            revocation_key,
        )
    }

    /// [`CommitmentKeys::derive`] with the revocation key already computed (by one of the
    /// faster formulas a party with a secret can use).
    pub fn derive_with_revocation_key(
        per_commitment_point: &PublicKey,
        holder: &Basepoints,
        counterparty: &Basepoints,
        static_remotekey: bool,
        revocation_key: PublicKey,
    ) -> CommitmentKeys {
        let to_remote_key = if static_remotekey {
            counterparty.payment_basepoint
        } else {
            derive_pubkey(&counterparty.payment_basepoint, per_commitment_point)
        };
        CommitmentKeys {
            per_commitment_point: *per_commitment_point,
            revocation_key,
            local_htlc_key: derive_pubkey(&holder.htlc_basepoint, per_commitment_point),
            remote_htlc_key: derive_pubkey(&counterparty.htlc_basepoint, per_commitment_point),
            local_delayed_key: derive_pubkey(
                &holder.delayed_payment_basepoint,
                per_commitment_point,
            ),
            to_remote_key,
        }
    }
}

/// Checks a secret key against an expected public key.
pub fn secret_matches(secret: &SecretKey, expected: &PublicKey) -> bool {
    PublicKey::from_secret_key(secp(), secret) == *expected
}

/// Parses a 32-byte secret into a key, rejecting zero or out-of-range values.
pub fn secret_key(bytes: &[u8; 32]) -> Result<SecretKey, secp256k1::Error> {
    SecretKey::from_slice(bytes)
}
