//! Bech32 (BIP 173) as BOLT 11 uses it: the same alphabet and checksum, but without the
//! 90-character limit, which every invoice with a route hint or long description exceeds.

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
const GENERATOR: [u32; 5] = [
    0x3b6a_57b2,
    0x2650_8e6d,
    0x1ea1_19fa,
    0x3d42_33dd,
    0x2a14_62b3,
];

fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    let mut chk: u32 = 1;
    for v in values {
        let top = chk >> 25;
        chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GENERATOR.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
    }
    chk
}

fn hrp_expand(hrp: &str) -> impl Iterator<Item = u8> + '_ {
    hrp.bytes()
        .map(|b| b >> 5)
        .chain(std::iter::once(0))
        .chain(hrp.bytes().map(|b| b & 31))
}

/// The six checksum groups for `hrp` and the 5-bit `data`.
pub(crate) fn checksum(hrp: &str, data: &[u8]) -> [u8; 6] {
    let pm = polymod(hrp_expand(hrp).chain(data.iter().copied()).chain([0u8; 6])) ^ 1;
    std::array::from_fn(|i| ((pm >> (5 * (5 - i))) & 31) as u8)
}

/// True if `data` (checksum included) checks out under `hrp`.
pub(crate) fn verify(hrp: &str, data: &[u8]) -> bool {
    polymod(hrp_expand(hrp).chain(data.iter().copied())) == 1
}

/// The 5-bit value of a lower-case Bech32 character.
pub(crate) fn value_of(c: u8) -> Option<u8> {
    CHARSET.iter().position(|x| *x == c).map(|p| p as u8)
}

/// The character for a 5-bit value.
pub(crate) fn char_of(v: u8) -> char {
    CHARSET[usize::from(v & 31)] as char
}

/// Regroups bytes into 5-bit groups, padding the last group with zero bits.
pub(crate) fn to_groups(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() * 8 / 5 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in bytes {
        acc = (acc << 8) | u32::from(*b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(((acc >> bits) & 31) as u8);
        }
    }
    if bits > 0 {
        out.push(((acc << (5 - bits)) & 31) as u8);
    }
    out
}

/// Regroups 5-bit groups into bytes, dropping a trailing partial byte (BOLT 11 pads
/// fields to a multiple of 5 bits).
pub(crate) fn from_groups(groups: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(groups.len() * 5 / 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for g in groups {
        acc = ((acc << 5) | u32::from(*g)) & 0xfff;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// A big-endian number written in 5-bit groups.
pub(crate) fn groups_to_u64(groups: &[u8]) -> Option<u64> {
    groups.iter().try_fold(0u64, |acc, g| {
        if acc >> 59 != 0 {
            None
        } else {
            Some((acc << 5) | u64::from(*g))
        }
    })
}

/// `v` in the fewest 5-bit groups (at least one).
pub(crate) fn u64_to_groups(mut v: u64) -> Vec<u8> {
    let mut out = vec![(v & 31) as u8];
    v >>= 5;
    while v > 0 {
        out.push((v & 31) as u8);
        v >>= 5;
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip173_valid_strings() {
        for s in ["a12uel5l", "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw"] {
            let (hrp, data) = s.rsplit_once('1').unwrap();
            let v: Vec<u8> = data.bytes().map(|c| value_of(c).unwrap()).collect();
            assert!(verify(hrp, &v));
            assert_eq!(checksum(hrp, &v[..v.len() - 6]), v[v.len() - 6..]);
        }
    }

    #[test]
    fn regrouping() {
        let bytes = [0xff, 0x00, 0xab, 0x12];
        assert_eq!(from_groups(&to_groups(&bytes)), bytes);
        assert_eq!(groups_to_u64(&u64_to_groups(604_800)), Some(604_800));
        assert_eq!(u64_to_groups(60), vec![1, 28]);
        assert_eq!(groups_to_u64(&[31; 14]), None);
    }
}
