//! BOLT 2 `channel_type`: the set of BOLT 9 channel features that fixes a channel's
//! commitment format, proposed in `open_channel` and echoed in `accept_channel`.

/// `option_static_remotekey` in a channel type.
const STATIC_REMOTEKEY: usize = 12;
/// `option_anchors_zero_fee_htlc_tx` in a channel type.
const ANCHORS_ZERO_FEE_HTLC_TX: usize = 22;

/// A channel type this node can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChannelType {
    /// `option_static_remotekey` alone: to_remote pays the peer's payment basepoint
    /// directly, HTLC transactions carry their own fee.
    StaticRemoteKey,
    /// `option_anchors_zero_fee_htlc_tx` (with static_remotekey): two anchor outputs,
    /// a 1-block CSV on to_remote and zero-fee HTLC transactions.
    AnchorsZeroFeeHtlcTx,
}

/// A `channel_type` this node will not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelTypeError {
    /// The peer proposed a type this node does not implement (or no type at all).
    #[error("unsupported channel_type {0}")]
    Unsupported(String),
    /// accept_channel answered with a type other than the one proposed.
    #[error("accept_channel has channel_type {got}, open_channel proposed {proposed}")]
    Mismatch {
        /// What we proposed.
        proposed: String,
        /// What came back.
        got: String,
    },
}

fn set_bits(bytes: &[u8]) -> Vec<usize> {
    let mut bits = Vec::new();
    for (i, byte) in bytes.iter().rev().enumerate() {
        for b in 0..8 {
            if byte & (1 << b) != 0 {
                bits.push(i * 8 + b);
            }
        }
    }
    bits
}

fn describe(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "(none)".into(),
        Some(b) => format!("{:?}", set_bits(b)),
    }
}

impl ChannelType {
    /// The feature bits of the type.
    fn bit_list(self) -> &'static [usize] {
        match self {
            ChannelType::StaticRemoteKey => &[STATIC_REMOTEKEY],
            ChannelType::AnchorsZeroFeeHtlcTx => &[STATIC_REMOTEKEY, ANCHORS_ZERO_FEE_HTLC_TX],
        }
    }

    /// The type as the `channel_type` TLV carries it: a minimal big-endian bitfield.
    pub fn to_bytes(self) -> Vec<u8> {
        let top = *self.bit_list().iter().max().expect("a type has bits");
        let mut bytes = vec![0u8; top / 8 + 1];
        let n = bytes.len();
        for bit in self.bit_list() {
            bytes[n - 1 - bit / 8] |= 1 << (bit % 8);
        }
        bytes
    }

    /// The type a `channel_type` TLV names, if it is one of ours. The bits must match
    /// exactly: a type is a set, not a list of options.
    pub fn from_bytes(bytes: &[u8]) -> Option<ChannelType> {
        let bits = set_bits(bytes);
        [
            ChannelType::AnchorsZeroFeeHtlcTx,
            ChannelType::StaticRemoteKey,
        ]
        .into_iter()
        .find(|t| t.bit_list() == bits.as_slice())
    }

    /// Whether to_remote, the HTLC outputs and the HTLC transactions follow
    /// `option_anchors_zero_fee_htlc_tx`.
    pub fn has_anchors(self) -> bool {
        self == ChannelType::AnchorsZeroFeeHtlcTx
    }
}

/// The fundee's choice (BOLT 2, receiver of `open_channel`): the proposed type if it is one
/// of `supported`. A missing `channel_type` is refused: both sides require
/// `option_channel_type` (BOLT 9 lists it as ASSUMED), as Core Lightning and LDK do.
pub fn accept_proposed(
    proposed: Option<&[u8]>,
    supported: &[ChannelType],
) -> Result<ChannelType, ChannelTypeError> {
    proposed
        .and_then(ChannelType::from_bytes)
        .filter(|t| supported.contains(t))
        .ok_or_else(|| ChannelTypeError::Unsupported(describe(proposed)))
}

/// The funder's check of `accept_channel` (BOLT 2): it must echo the proposed type.
pub fn check_echo(proposed: ChannelType, got: Option<&[u8]>) -> Result<(), ChannelTypeError> {
    if got.and_then(ChannelType::from_bytes) == Some(proposed) {
        Ok(())
    } else {
        Err(ChannelTypeError::Mismatch {
            proposed: describe(Some(&proposed.to_bytes())),
            got: describe(got),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(ChannelType::StaticRemoteKey.to_bytes(), vec![0x10, 0x00]);
        assert_eq!(
            ChannelType::AnchorsZeroFeeHtlcTx.to_bytes(),
            vec![0x40, 0x10, 0x00]
        );
        for t in [
            ChannelType::StaticRemoteKey,
            ChannelType::AnchorsZeroFeeHtlcTx,
        ] {
            assert_eq!(ChannelType::from_bytes(&t.to_bytes()), Some(t));
        }
        // Leading zero bytes do not change the set.
        assert_eq!(
            ChannelType::from_bytes(&[0, 0x10, 0x00]),
            Some(ChannelType::StaticRemoteKey)
        );
        assert_eq!(ChannelType::from_bytes(&[]), None);
    }

    #[test]
    fn negotiation() {
        let ours = [ChannelType::StaticRemoteKey];
        assert_eq!(
            accept_proposed(Some(&[0x10, 0x00]), &ours),
            Ok(ChannelType::StaticRemoteKey)
        );
        // anchors not offered by us, scid_alias (46) and zero-conf (50) unknown.
        assert!(accept_proposed(Some(&[0x40, 0x10, 0x00]), &ours).is_err());
        let scid_alias = [0x40, 0, 0, 0, 0x10, 0x00];
        assert!(accept_proposed(Some(&scid_alias), &ours).is_err());
        assert!(accept_proposed(None, &ours).is_err());
        assert!(accept_proposed(Some(&[0x00]), &ours).is_err());
        assert_eq!(
            check_echo(ChannelType::StaticRemoteKey, Some(&[0x10, 0x00])),
            Ok(())
        );
        assert!(check_echo(ChannelType::StaticRemoteKey, None).is_err());
        assert!(check_echo(ChannelType::StaticRemoteKey, Some(&[0x40, 0x10, 0x00])).is_err());
    }
}
