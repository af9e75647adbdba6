//! BOLT 9 feature bits this node sets in `init`, and the check of the peer's.
//!
//! BOLT 9 lists var_onion_optin, option_data_loss_protect, option_static_remotekey,
//! payment_secret and option_channel_type as ASSUMED: every node of today sets them, and
//! LND, Core Lightning and LDK require most of them. This node requires all five and
//! offers the optional features it implements.

/// How this node treats a feature it implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    /// Set the even bit: a peer without the feature is refused.
    Required,
    /// Set the odd bit: used when the peer offers it too.
    Optional,
}

/// A feature this node implements: its even bit and whether we require it.
struct Feature {
    even_bit: usize,
    name: &'static str,
    need: Need,
}

/// Every feature this node implements (BOLT 9 numbering, even bit of each pair).
const FEATURES: &[Feature] = &[
    Feature {
        even_bit: 0,
        name: "option_data_loss_protect",
        need: Need::Required,
    },
    Feature {
        even_bit: 6,
        name: "gossip_queries",
        need: Need::Optional,
    },
    Feature {
        even_bit: 8,
        name: "var_onion_optin",
        need: Need::Required,
    },
    Feature {
        even_bit: 12,
        name: "option_static_remotekey",
        need: Need::Required,
    },
    Feature {
        even_bit: 14,
        name: "payment_secret",
        need: Need::Required,
    },
    Feature {
        even_bit: 16,
        name: "basic_mpp",
        need: Need::Optional,
    },
    Feature {
        even_bit: ANCHORS_ZERO_FEE_HTLC_TX,
        name: "option_anchors_zero_fee_htlc_tx",
        need: Need::Optional,
    },
    Feature {
        even_bit: 26,
        name: "option_shutdown_anysegwit",
        need: Need::Optional,
    },
    Feature {
        even_bit: 44,
        name: "option_channel_type",
        need: Need::Required,
    },
    Feature {
        even_bit: 46,
        name: "option_scid_alias",
        need: Need::Optional,
    },
];

/// The even bit of option_anchors_zero_fee_htlc_tx.
pub const ANCHORS_ZERO_FEE_HTLC_TX: usize = 22;

/// Whether `features` (a peer's init) offers the feature of even bit `even_bit`, required
/// or optional.
pub fn offers(features: &[u8], even_bit: usize) -> bool {
    is_set(features, even_bit) || is_set(features, even_bit + 1)
}

/// A peer's init that this node cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The peer requires a feature this node does not know (BOLT 1: fail the connection).
    #[error("peer requires unknown feature bit {0}")]
    UnknownRequired(usize),
    /// The peer lacks a feature this node requires.
    #[error("peer lacks required feature {name} (bit {bit})")]
    Missing {
        /// The even bit of the feature.
        bit: usize,
        /// Its BOLT 9 name.
        name: &'static str,
    },
}

fn set(bits: &mut Vec<u8>, bit: usize) {
    let len = bit / 8 + 1;
    if bits.len() < len {
        let mut grown = vec![0u8; len - bits.len()];
        grown.extend_from_slice(bits);
        *bits = grown;
    }
    let n = bits.len();
    bits[n - 1 - bit / 8] |= 1 << (bit % 8);
}

/// Whether `bit` is set in a big-endian feature bitfield.
pub fn is_set(bits: &[u8], bit: usize) -> bool {
    let byte = bit / 8;
    byte < bits.len() && bits[bits.len() - 1 - byte] & (1 << (bit % 8)) != 0
}

/// This node's feature vector (big-endian bitfield, as in init).
pub fn local_features() -> Vec<u8> {
    let mut bits = Vec::new();
    for f in FEATURES {
        let bit = match f.need {
            Need::Required => f.even_bit,
            Need::Optional => f.even_bit + 1,
        };
        set(&mut bits, bit);
    }
    bits
}

/// Checks the peer's `features` (and legacy `globalfeatures`, ORed in as BOLT 1 says):
/// every even bit it sets must be one we implement, and it must support every feature we
/// require. Unknown odd bits are fine.
pub fn check_remote_features(global: &[u8], features: &[u8]) -> Result<(), FeatureError> {
    let on = |bit: usize| is_set(global, bit) || is_set(features, bit);
    let max = global.len().max(features.len()) * 8;
    for bit in (0..max).step_by(2) {
        if on(bit) && !FEATURES.iter().any(|f| f.even_bit == bit) {
            return Err(FeatureError::UnknownRequired(bit));
        }
    }
    for f in FEATURES.iter().filter(|f| f.need == Need::Required) {
        if !on(f.even_bit) && !on(f.even_bit + 1) {
            return Err(FeatureError::Missing {
                bit: f.even_bit,
                name: f.name,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(list: &[usize]) -> Vec<u8> {
        let mut v = Vec::new();
        for b in list {
            set(&mut v, *b);
        }
        v
    }

    #[test]
    fn ours_are_the_assumed_features_required_and_the_rest_optional() {
        let ours = local_features();
        assert_eq!(ours, bits(&[0, 7, 8, 12, 14, 17, 23, 27, 44, 47]));
        assert_eq!(check_remote_features(&[], &ours), Ok(()));
    }

    /// The bits Core Lightning v26.06 and LDK 0.2.7 send (../shared/interop-notes.md), and a
    /// set with var_onion_optin and option_channel_type only offered (odd), as older nodes
    /// send.
    #[test]
    fn real_nodes_init_is_accepted() {
        let cln = bits(&[
            0, 5, 7, 8, 11, 12, 14, 17, 19, 23, 25, 27, 35, 39, 43, 44, 47, 51, 63,
        ]);
        assert_eq!(
            bitcoin::hex::DisplayHex::to_lower_hex_string(&cln[..]),
            "800898880a8a59a1"
        );
        assert_eq!(check_remote_features(&[], &cln), Ok(()));
        let ldk = bits(&[
            0, 5, 7, 8, 12, 14, 17, 19, 23, 25, 27, 35, 39, 43, 44, 47, 51, 63,
        ]);
        assert_eq!(check_remote_features(&[], &ldk), Ok(()));
        let lnd = bits(&[0, 5, 7, 9, 12, 14, 17, 23, 25, 27, 31, 45, 47, 51, 55]);
        assert_eq!(check_remote_features(&[], &lnd), Ok(()));
        // Legacy global features are ORed in.
        assert_eq!(
            check_remote_features(&bits(&[0]), &bits(&[9, 12, 14, 44])),
            Ok(())
        );
    }

    #[test]
    fn unknown_even_is_refused_unknown_odd_is_not() {
        let mut f = local_features();
        set(&mut f, 101);
        assert_eq!(check_remote_features(&[], &f), Ok(()));
        set(&mut f, 100);
        assert_eq!(
            check_remote_features(&[], &f),
            Err(FeatureError::UnknownRequired(100))
        );
        // Anchors required is fine; zero-conf required is not implemented, so refused.
        assert_eq!(
            check_remote_features(&[], &bits(&[0, 8, 12, 14, 22, 44])),
            Ok(())
        );
        assert_eq!(
            check_remote_features(&[], &bits(&[0, 8, 12, 14, 22, 44, 50])),
            Err(FeatureError::UnknownRequired(50))
        );
        // basic_mpp required is understood; option_support_large_channel is not.
        assert_eq!(
            check_remote_features(&bits(&[16]), &local_features()),
            Ok(())
        );
        assert_eq!(
            check_remote_features(&bits(&[18]), &local_features()),
            Err(FeatureError::UnknownRequired(18))
        );
    }

    #[test]
    fn a_peer_lacking_an_assumed_feature_is_refused() {
        for (missing, name) in [
            (0, "option_data_loss_protect"),
            (8, "var_onion_optin"),
            (12, "option_static_remotekey"),
            (14, "payment_secret"),
            (44, "option_channel_type"),
        ] {
            let list: Vec<usize> = [0, 8, 12, 14, 44]
                .into_iter()
                .filter(|b| *b != missing)
                .collect();
            assert_eq!(
                check_remote_features(&[], &bits(&list)),
                Err(FeatureError::Missing { bit: missing, name })
            );
        }
        // The optional (odd) bit is enough.
        assert_eq!(
            check_remote_features(&[], &bits(&[1, 9, 13, 15, 45])),
            Ok(())
        );
    }
}
