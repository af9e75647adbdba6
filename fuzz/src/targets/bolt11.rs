//! BOLT 11 invoice strings.

use channel::invoice::Invoice;

use super::tag;

const CHARSET: &[u8; 32] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";

/// BIP 173 checksum arithmetic, so mutated invoices can be given a valid checksum and
/// reach the field decoding and signature recovery behind it.
fn polymod(values: impl Iterator<Item = u8>) -> u32 {
    const GEN: [u32; 5] = [
        0x3b6a_57b2,
        0x2650_8e6d,
        0x1ea1_19fa,
        0x3d42_33dd,
        0x2a14_62b3,
    ];
    values.fold(1u32, |chk, v| {
        let top = chk >> 25;
        let mut chk = ((chk & 0x01ff_ffff) << 5) ^ u32::from(v);
        for (i, g) in GEN.iter().enumerate() {
            if (top >> i) & 1 == 1 {
                chk ^= g;
            }
        }
        chk
    })
}

/// `s` with its last six characters replaced by the checksum of the rest; `None` when
/// `s` has no separator or characters outside the alphabet.
pub fn fix_checksum(s: &str) -> Option<String> {
    if !s.is_ascii() {
        return None;
    }
    let s = s.to_ascii_lowercase();
    let (hrp, data) = s.rsplit_once('1')?;
    if data.len() < 6 || !hrp.bytes().all(|b| (33..=126).contains(&b)) {
        return None;
    }
    let body = &data[..data.len() - 6];
    let groups: Vec<u8> = body
        .bytes()
        .map(|c| CHARSET.iter().position(|&x| x == c).map(|p| p as u8))
        .collect::<Option<_>>()?;
    let expanded = hrp
        .bytes()
        .map(|b| b >> 5)
        .chain([0])
        .chain(hrp.bytes().map(|b| b & 31))
        .chain(groups.iter().copied())
        .chain([0; 6]);
    let pm = polymod(expanded) ^ 1;
    let mut out = format!("{hrp}1{body}");
    out.extend((0..6).map(|i| CHARSET[((pm >> (5 * (5 - i))) & 31) as usize] as char));
    Some(out)
}

fn parse_and_roundtrip(s: &str) -> u64 {
    match s.parse::<Invoice>() {
        Ok(inv) => {
            let again: Invoice = inv
                .to_string()
                .parse()
                .unwrap_or_else(|e| panic!("Display of a parsed invoice fails to parse: {e}"));
            assert_eq!(again, inv, "Display→parse changed the invoice");
            1 + inv.field_order().len() as u64
        }
        Err(e) => tag(&e),
    }
}

/// Parses the input as an invoice string (lossily as UTF-8), and again with its checksum
/// repaired; an invoice that parses must print to a string that parses to the same.
pub fn bolt11(data: &[u8]) -> u64 {
    let s = String::from_utf8_lossy(data);
    let mut label = parse_and_roundtrip(&s);
    if let Some(fixed) = fix_checksum(&s) {
        label = label.rotate_left(5) ^ parse_and_roundtrip(&fixed);
    }
    label
}

/// The BOLT 11 vectors' invoices.
pub fn seeds() -> Vec<Vec<u8>> {
    crate::seeds::invoices()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_repair_is_identity_on_valid_invoices() {
        let seeds = seeds();
        let valid = seeds
            .iter()
            .filter_map(|s| std::str::from_utf8(s).ok())
            .filter(|s| s.parse::<Invoice>().is_ok())
            .collect::<Vec<_>>();
        assert!(!valid.is_empty());
        for s in valid {
            assert_eq!(
                fix_checksum(s).as_deref(),
                Some(s.to_ascii_lowercase().as_str())
            );
        }
    }
}
