//! Byte-level mutations (bit flips, byte insert/delete/replace, splices, length-field
//! tweaks, truncation) and a JSON-aware mutation for the targets that read JSON.

use serde_json::Value;

use crate::rng::Rng;

/// Inputs are capped so one mutation chain cannot grow them without bound.
pub const MAX_INPUT_LEN: usize = 8192;

/// Byte values that sit on boundaries decoders care about (BigSize markers, signs).
const INTERESTING_BYTES: [u8; 10] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xfc, 0xfd, 0xfe, 0xff, 0x20];

/// Returns a mutated copy of `input`: one to four stacked mutations, with `corpus` as
/// the source of splices and `dictionary` as tokens worth inserting.
pub fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], dictionary: &[&[u8]]) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        mutate_once(rng, &mut out, corpus, dictionary);
    }
    out.truncate(MAX_INPUT_LEN);
    out
}

fn mutate_once(rng: &mut Rng, buf: &mut Vec<u8>, corpus: &[Vec<u8>], dictionary: &[&[u8]]) {
    if buf.is_empty() {
        let n = 1 + rng.below(16);
        buf.extend((0..n).map(|_| rng.byte()));
        return;
    }
    match rng.below(11) {
        0 => {
            let i = rng.below(buf.len());
            buf[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(buf.len());
            buf[i] = rng.byte();
        }
        2 => {
            let i = rng.below(buf.len());
            buf[i] = *rng.pick(&INTERESTING_BYTES);
        }
        3 => {
            let i = rng.below(buf.len() + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
            buf.splice(i..i, bytes);
        }
        4 => {
            let i = rng.below(buf.len());
            let n = 1 + rng.below(buf.len() - i).min(32);
            buf.drain(i..i + n);
        }
        5 => {
            // Truncation: most decoders check lengths at the end of each field.
            let n = rng.below(buf.len());
            buf.truncate(n);
        }
        6 => splice(rng, buf, corpus),
        7 => tweak_length(rng, buf),
        8 => {
            // Duplicate a chunk, which repeats TLV records and JSON members.
            let i = rng.below(buf.len());
            let n = 1 + rng.below(buf.len() - i).min(64);
            let chunk = buf[i..i + n].to_vec();
            let at = rng.below(buf.len() + 1);
            buf.splice(at..at, chunk);
        }
        9 if !dictionary.is_empty() => {
            let token = *rng.pick(dictionary);
            let i = rng.below(buf.len() + 1);
            if rng.one_in(2) {
                buf.splice(i..i, token.iter().copied());
            } else {
                let end = (i + token.len()).min(buf.len());
                buf.splice(i..end, token.iter().copied());
            }
        }
        _ => {
            let i = rng.below(buf.len());
            buf[i] = buf[i].wrapping_add(1 + rng.below(16) as u8);
        }
    }
}

/// Replaces a tail of `buf` with a piece of another corpus entry.
fn splice(rng: &mut Rng, buf: &mut Vec<u8>, corpus: &[Vec<u8>]) {
    if corpus.is_empty() {
        return;
    }
    let other = rng.pick(corpus);
    if other.is_empty() {
        return;
    }
    let from = rng.below(other.len());
    let n = 1 + rng.below(other.len() - from);
    let at = rng.below(buf.len() + 1);
    buf.truncate(at);
    buf.extend_from_slice(&other[from..from + n]);
}

/// Treats a random position as a length field (u8, u16 big-endian or a BigSize) and
/// sets it to a value near a boundary: zero, one off the real remainder, or huge.
fn tweak_length(rng: &mut Rng, buf: &mut [u8]) {
    let i = rng.below(buf.len());
    let rest = (buf.len() - i) as u64;
    let candidates = [
        0,
        1,
        rest.saturating_sub(3),
        rest.saturating_sub(2),
        rest.saturating_sub(1),
        rest,
        rest + 1,
        0xfc,
        0xfd,
        0xffff,
        0x1_0000,
        u64::MAX,
    ];
    let v = *rng.pick(&candidates);
    match rng.below(3) {
        0 => buf[i] = v as u8,
        1 if i + 2 <= buf.len() => buf[i..i + 2].copy_from_slice(&(v as u16).to_be_bytes()),
        _ => {
            // BigSize: 0xfd + u16, 0xfe + u32, 0xff + u64, possibly non-minimal.
            let enc: Vec<u8> = match rng.below(3) {
                0 => [&[0xfd][..], &(v as u16).to_be_bytes()].concat(),
                1 => [&[0xfe][..], &(v as u32).to_be_bytes()].concat(),
                _ => [&[0xff][..], &v.to_be_bytes()].concat(),
            };
            let end = (i + enc.len()).min(buf.len());
            buf[i..end].copy_from_slice(&enc[..end - i]);
        }
    }
}

/// Values that JSON parsers and the code behind them trip over: wrong types, signs,
/// overflow, precision loss, and near-miss hex strings.
fn interesting_json(rng: &mut Rng, old: &Value) -> Value {
    match rng.below(16) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::from(-1),
        3 => Value::from(0),
        4 => Value::from(u64::MAX),
        5 => Value::from(i64::MIN),
        6 => serde_json::json!(1e300),
        7 => serde_json::json!(-0.000_000_01),
        8 => serde_json::json!(21_000_000.000_000_01),
        9 => serde_json::json!(92_233_720_368.547_76),
        10 => Value::String(String::new()),
        11 => Value::Array(vec![]),
        12 => Value::Object(Default::default()),
        13 => Value::from(u32::MAX as u64 + 1),
        14 => match old {
            // A string of the same shape with one character changed (stays hex-like).
            Value::String(s) if !s.is_empty() => {
                let mut b = s.clone().into_bytes();
                let i = rng.below(b.len());
                b[i] = *rng.pick(b"0123456789abcdefABCDEFxz");
                Value::String(String::from_utf8_lossy(&b).into_owned())
            }
            Value::String(_) => Value::String("00".into()),
            Value::Number(n) => match n.as_f64() {
                Some(f) => serde_json::json!(f * (1 + rng.below(1000)) as f64 + 0.5),
                None => Value::from(1),
            },
            _ => Value::from(rng.next_u64()),
        },
        _ => match old {
            // Cut a hex string: odd lengths and short encodings.
            Value::String(s) => {
                let n = rng.below(s.len() + 1);
                Value::String(s.chars().take(n).collect())
            }
            _ => Value::String("ff".into()),
        },
    }
}

/// Parses `input` as JSON and changes one random node (replace it with an interesting
/// value, or drop an object member); `None` if `input` is not JSON.
pub fn mutate_json(rng: &mut Rng, input: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(input).ok()?;
    let count = count_nodes(&v);
    let target = rng.below(count);
    let mut seen = 0;
    mutate_node(rng, &mut v, target, &mut seen);
    serde_json::to_vec(&v).ok()
}

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

fn mutate_node(rng: &mut Rng, v: &mut Value, target: usize, seen: &mut usize) -> bool {
    if *seen == target {
        if let Value::Object(o) = v {
            if !o.is_empty() && rng.one_in(3) {
                let key = o.keys().nth(rng.below(o.len())).cloned();
                if let Some(k) = key {
                    o.remove(&k);
                }
                return true;
            }
        }
        *v = interesting_json(rng, v);
        return true;
    }
    *seen += 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| mutate_node(rng, c, target, seen)),
        Value::Object(o) => o.values_mut().any(|c| mutate_node(rng, c, target, seen)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_stay_bounded_and_change_something() {
        let mut rng = Rng::new(7);
        let seed = b"0123456789abcdef".to_vec();
        let mut changed = 0;
        for _ in 0..1000 {
            let m = mutate(&mut rng, &seed, std::slice::from_ref(&seed), &[b"null"]);
            assert!(m.len() <= MAX_INPUT_LEN);
            changed += usize::from(m != seed);
        }
        assert!(changed > 900);
    }

    #[test]
    fn json_mutation_keeps_json() {
        let mut rng = Rng::new(1);
        let seed = br#"{"result":{"a":[1,"00ff"],"b":null},"error":null}"#;
        for _ in 0..200 {
            let m = mutate_json(&mut rng, seed).expect("seed is JSON");
            serde_json::from_slice::<Value>(&m).expect("still JSON");
        }
    }
}
