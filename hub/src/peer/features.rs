//! BOLT 9 feature bits this node sets in `init`, and the check of the peer's.

/// var_onion_optin (required).
const VAR_ONION: usize = 8;
/// option_static_remotekey (required: this node only builds static-remotekey channels).
const STATIC_REMOTEKEY: usize = 12;
/// payment_secret (required).
const PAYMENT_SECRET: usize = 14;

/// Odd/even pairs of the features this node understands.
const KNOWN: &[usize] = &[VAR_ONION, STATIC_REMOTEKEY, PAYMENT_SECRET];

/// A peer's init that this node cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// The peer requires a feature this node does not know (BOLT 1: fail the connection).
    #[error("peer requires unknown feature bit {0}")]
    UnknownRequired(usize),
    /// The peer lacks a feature this node requires.
    #[error("peer lacks required feature bit {0}")]
    Missing(usize),
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

fn is_set(bits: &[u8], bit: usize) -> bool {
    let byte = bit / 8;
    byte < bits.len() && bits[bits.len() - 1 - byte] & (1 << (bit % 8)) != 0
}

/// This node's feature vector (big-endian bitfield, as in init).
pub fn local_features() -> Vec<u8> {
    let mut bits = Vec::new();
    for b in KNOWN {
        set(&mut bits, *b);
    }
    bits
}

/// Checks the peer's `features` (and legacy `globalfeatures`, ORed in as BOLT 1 says).
pub fn check_remote_features(global: &[u8], features: &[u8]) -> Result<(), FeatureError> {
    let max = global.len().max(features.len()) * 8;
    for bit in 0..max {
        let on = is_set(global, bit) || is_set(features, bit);
        if on && bit % 2 == 0 && !KNOWN.contains(&bit) {
            return Err(FeatureError::UnknownRequired(bit));
        }
    }
    for b in KNOWN {
        if !is_set(features, *b)
            && !is_set(features, b + 1)
            && !is_set(global, *b)
            && !is_set(global, b + 1)
        {
            return Err(FeatureError::Missing(*b));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features() {
        let ours = local_features();
        assert_eq!(ours, vec![0x51, 0x00]); // bits 8, 12, 14
        assert_eq!(check_remote_features(&[], &ours), Ok(()));
        let mut odd = vec![0xa2, 0x00]; // bits 9, 13, 15: optional is enough
        assert_eq!(check_remote_features(&[], &odd), Ok(()));
        set(&mut odd, 101); // unknown odd: fine
        assert_eq!(check_remote_features(&[], &odd), Ok(()));
        set(&mut odd, 100); // unknown even: refused
        assert_eq!(
            check_remote_features(&[], &odd),
            Err(FeatureError::UnknownRequired(100))
        );
        assert_eq!(
            check_remote_features(&[], &[0x41, 0x00]),
            Err(FeatureError::Missing(12))
        );
    }
}
