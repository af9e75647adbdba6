//! The TLV `payload` a hop finds in its frame of the onion (BOLT 4 "payload format").

use crate::wire::{read_tlv_stream, DecodeError, Reader, Writer};

const AMT_TO_FORWARD: u64 = 2;
const OUTGOING_CLTV_VALUE: u64 = 4;
const SHORT_CHANNEL_ID: u64 = 6;
const PAYMENT_DATA: u64 = 8;

/// What the origin tells one hop: how much to forward, with which CLTV, over which
/// channel (intermediate hops) or which payment secret and total to expect (final hop).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HopPayload {
    /// `amt_to_forward`: millisatoshis for the next HTLC (or, at the final hop, the
    /// amount this part of the payment must carry).
    pub amt_to_forward: u64,
    /// `outgoing_cltv_value`: the expiry the next HTLC must have.
    pub outgoing_cltv_value: u32,
    /// `short_channel_id` of the outgoing channel; present for every hop but the last.
    pub short_channel_id: Option<u64>,
    /// `payment_data` for the final hop: the invoice's payment secret and the total of
    /// all parts of the payment, in millisatoshis.
    pub payment_data: Option<([u8; 32], u64)>,
}

/// Why a payload could not be read. The hop answers with `invalid_onion_payload`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not a well-formed TLV stream, or a known record with a bad value.
    #[error("malformed payload: {0}")]
    Malformed(#[from] DecodeError),
    /// A record a hop in this position must have is absent (type given).
    #[error("payload lacks required TLV type {0}")]
    Missing(u64),
}

impl PayloadError {
    /// The TLV type at fault, for the `invalid_onion_payload` failure data.
    pub fn tlv_type(&self) -> u64 {
        match self {
            PayloadError::Missing(t) => *t,
            PayloadError::Malformed(
                DecodeError::UnknownEvenTlv(t)
                | DecodeError::TlvOrder(t)
                | DecodeError::TlvLength(t),
            ) => *t,
            PayloadError::Malformed(_) => 0,
        }
    }
}

/// BOLT 1 truncated integer: big-endian with leading zero bytes dropped.
fn tu64(v: u64) -> Vec<u8> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Reads a truncated integer of at most `max` bytes; a leading zero byte is a
/// non-minimal encoding, which BOLT 1 says a reader must reject.
fn read_tu(ty: u64, bytes: &[u8], max: usize) -> Result<u64, DecodeError> {
    if bytes.len() > max || bytes.first() == Some(&0) {
        return Err(DecodeError::TlvLength(ty));
    }
    Ok(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

impl HopPayload {
    /// The TLV stream, types in increasing order, without the BigSize length prefix.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.tlv(AMT_TO_FORWARD, &tu64(self.amt_to_forward));
        w.tlv(
            OUTGOING_CLTV_VALUE,
            &tu64(u64::from(self.outgoing_cltv_value)),
        );
        if let Some(scid) = self.short_channel_id {
            w.tlv(SHORT_CHANNEL_ID, &scid.to_be_bytes());
        }
        if let Some((secret, total)) = &self.payment_data {
            let mut v = secret.to_vec();
            v.extend_from_slice(&tu64(*total));
            w.tlv(PAYMENT_DATA, &v);
        }
        w.into_bytes()
    }

    /// Parses a TLV payload. Unknown odd types are skipped, unknown even types rejected
    /// (BOLT 1); `amt_to_forward` and `outgoing_cltv_value` are required, and
    /// `short_channel_id` too when `is_final` is false.
    pub fn decode(bytes: &[u8], is_final: bool) -> Result<HopPayload, PayloadError> {
        let mut amt = None;
        let mut cltv = None;
        let mut scid = None;
        let mut payment_data = None;
        read_tlv_stream(&mut Reader::new(bytes), |ty, v| {
            match ty {
                AMT_TO_FORWARD => amt = Some(read_tu(ty, v, 8)?),
                OUTGOING_CLTV_VALUE => cltv = Some(read_tu(ty, v, 4)? as u32),
                SHORT_CHANNEL_ID => {
                    let b: [u8; 8] = v.try_into().map_err(|_| DecodeError::TlvLength(ty))?;
                    scid = Some(u64::from_be_bytes(b));
                }
                PAYMENT_DATA => {
                    if v.len() < 32 {
                        return Err(DecodeError::TlvLength(ty));
                    }
                    let secret: [u8; 32] = v[..32].try_into().expect("32 bytes");
                    payment_data = Some((secret, read_tu(ty, &v[32..], 8)?));
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        let amt_to_forward = amt.ok_or(PayloadError::Missing(AMT_TO_FORWARD))?;
        let outgoing_cltv_value = cltv.ok_or(PayloadError::Missing(OUTGOING_CLTV_VALUE))?;
        if !is_final && scid.is_none() {
            return Err(PayloadError::Missing(SHORT_CHANNEL_ID));
        }
        Ok(HopPayload {
            amt_to_forward,
            outgoing_cltv_value,
            short_channel_id: scid,
            payment_data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_integers_are_minimal() {
        assert_eq!(tu64(0), Vec::<u8>::new());
        assert_eq!(tu64(0x0100), vec![1, 0]);
        assert_eq!(read_tu(2, &[0, 1], 8), Err(DecodeError::TlvLength(2)));
        assert_eq!(
            read_tu(4, &[1, 2, 3, 4, 5], 4),
            Err(DecodeError::TlvLength(4))
        );
        assert_eq!(read_tu(2, &[], 8), Ok(0));
    }

    #[test]
    fn unknown_even_type_is_rejected_odd_skipped() {
        let p = HopPayload {
            amt_to_forward: 1000,
            outgoing_cltv_value: 500,
            short_channel_id: None,
            payment_data: Some(([7; 32], 1000)),
        };
        let mut odd = p.encode();
        odd.extend_from_slice(&[0x0b, 0x01, 0xff]);
        assert_eq!(HopPayload::decode(&odd, true).unwrap(), p);
        let mut even = p.encode();
        even.extend_from_slice(&[0x0c, 0x01, 0xff]);
        assert!(HopPayload::decode(&even, true).is_err());
        assert_eq!(
            HopPayload::decode(&p.encode(), false),
            Err(PayloadError::Missing(SHORT_CHANNEL_ID))
        );
    }
}
