//! JSON encodings of scripts, transactions, headers and blocks exactly as Bitcoin Core's
//! RPC prints them (`ScriptToAsmStr`, `ScriptToUniv`, `TxToUniv`, `blockheaderToJSON`,
//! `blockToJSON`), including output descriptors with their BIP380 checksum.

use bitcoin::blockdata::opcodes::all as op;
use bitcoin::hex::DisplayHex;
use bitcoin::pow::Work;
use bitcoin::script::Instruction;
use bitcoin::{
    consensus, Address, Amount, Block, CompactTarget, Network, OutPoint, Script, Transaction,
};

use crate::devnet::utxo::Coin;
use serde_json::{json, Map, Value};

/// Marks a string that [`to_json_text`] turns into a bare JSON number. The control
/// character cannot occur in any other string this server produces.
const AMOUNT_MARK: &str = "\u{1}btc:";

/// Core's `ValueFromAmount`: BTC with exactly eight decimals (`50.00000000`). The value is
/// a marked string until [`to_json_text`] writes it as a number, because a JSON `f64`
/// would print `50.0`.
pub fn btc(amount: Amount) -> Value {
    let sat = amount.to_sat();
    Value::String(format!(
        "{AMOUNT_MARK}{}.{:08}",
        sat / 100_000_000,
        sat % 100_000_000
    ))
}

/// Serializes a reply, writing amounts from [`btc`] as JSON numbers with eight decimals.
pub fn to_json_text(value: &Value) -> String {
    let text = value.to_string();
    // serde_json escapes the mark's control character as \u0001.
    let marker = "\"\\u0001btc:";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(marker) {
        out.push_str(&rest[..start]);
        let after = &rest[start + marker.len()..];
        let Some(end) = after.find('"') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let number = &after[..end];
        // Only what `btc` writes (digits, a point, eight digits) is unquoted, so a client
        // string that happens to start with the mark cannot change the JSON structure.
        let well_formed = number.split_once('.').is_some_and(|(int, frac)| {
            !int.is_empty()
                && frac.len() == 8
                && (int.chars().chain(frac.chars())).all(|c| c.is_ascii_digit())
        });
        if well_formed {
            out.push_str(number);
        } else {
            out.push_str(&rest[start..start + marker.len() + end + 1]);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Core's `ScriptToAsmStr`. With `sighash_decode`, pushes that are DER signatures are
/// printed with their sighash type (`…[ALL]`), as for scriptSigs.
pub fn script_asm(script: &Script, sighash_decode: bool) -> String {
    let mut parts = Vec::new();
    for ins in script.instructions() {
        match ins {
            Ok(Instruction::PushBytes(bytes)) => {
                let b = bytes.as_bytes();
                if b.len() <= 4 {
                    parts.push(script_num(b).to_string());
                } else if sighash_decode && is_signature(b) {
                    let (sig, ty) = b.split_at(b.len() - 1);
                    parts.push(format!(
                        "{}[{}]",
                        sig.to_lower_hex_string(),
                        sighash_name(ty[0])
                    ));
                } else {
                    parts.push(b.to_lower_hex_string());
                }
            }
            Ok(Instruction::Op(o)) => parts.push(op_name(o)),
            Err(_) => {
                parts.push("[error]".into());
                break;
            }
        }
    }
    parts.join(" ")
}

fn is_signature(b: &[u8]) -> bool {
    bitcoin::ecdsa::Signature::from_slice(b).is_ok()
}

fn sighash_name(t: u8) -> &'static str {
    match t {
        0x01 => "ALL",
        0x02 => "NONE",
        0x03 => "SINGLE",
        0x81 => "ALL|ANYONECANPAY",
        0x82 => "NONE|ANYONECANPAY",
        0x83 => "SINGLE|ANYONECANPAY",
        _ => "UNKNOWN",
    }
}

/// `CScriptNum` of up to 4 bytes (little-endian, sign bit in the last byte).
fn script_num(b: &[u8]) -> i64 {
    let Some(&last) = b.last() else { return 0 };
    let mut v: i64 = 0;
    for (i, byte) in b.iter().enumerate() {
        v |= i64::from(*byte) << (8 * i);
    }
    if last & 0x80 != 0 {
        -(v & !(0x80i64 << (8 * (b.len() - 1))))
    } else {
        v
    }
}

fn op_name(o: bitcoin::Opcode) -> String {
    let code = o.to_u8();
    if o == op::OP_PUSHNUM_NEG1 {
        return "-1".into();
    }
    if (op::OP_PUSHNUM_1.to_u8()..=op::OP_PUSHNUM_16.to_u8()).contains(&code) {
        return (code - op::OP_PUSHNUM_1.to_u8() + 1).to_string();
    }
    match o {
        op::OP_CLTV => "OP_CHECKLOCKTIMEVERIFY".into(),
        op::OP_CSV => "OP_CHECKSEQUENCEVERIFY".into(),
        op::OP_INVALIDOPCODE => "OP_INVALIDOPCODE".into(),
        _ if code > op::OP_CHECKSIGADD.to_u8() => "OP_UNKNOWN".into(),
        _ => o.to_string(),
    }
}

/// Core's `TxoutType` name for an output script (`GetTxnOutputType`).
pub fn script_type(script: &Script) -> &'static str {
    let b = script.as_bytes();
    if script.is_p2pkh() {
        "pubkeyhash"
    } else if script.is_p2sh() {
        "scripthash"
    } else if script.is_p2wpkh() {
        "witness_v0_keyhash"
    } else if script.is_p2wsh() {
        "witness_v0_scripthash"
    } else if script.is_p2tr() {
        "witness_v1_taproot"
    } else if b == [0x51, 0x02, 0x4e, 0x73] {
        "anchor"
    } else if script.is_witness_program() {
        "witness_unknown"
    } else if script.is_p2pk() {
        "pubkey"
    } else if script.is_multisig() {
        "multisig"
    } else if script.is_op_return()
        && script
            .instructions()
            .skip(1)
            .all(|i| matches!(i, Ok(Instruction::PushBytes(_))))
    {
        "nulldata"
    } else {
        "nonstandard"
    }
}

/// BIP380 descriptor checksum (`GetDescriptorChecksum`), `None` for characters outside
/// the descriptor character set.
pub fn descriptor_checksum(desc: &str) -> Option<String> {
    const INPUT: &str = "0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ";
    const CHECKSUM: &[u8] = b"qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    fn polymod(c: u64, val: u64) -> u64 {
        let c0 = c >> 35;
        let mut c = ((c & 0x7_ffff_ffff) << 5) ^ val;
        for (i, g) in [
            0xf5dee51989,
            0xa9fdca3312,
            0x1bab10e32d,
            0x3706b1677a,
            0x644d626ffd,
        ]
        .iter()
        .enumerate()
        {
            if c0 & (1 << i) != 0 {
                c ^= g;
            }
        }
        c
    }
    let (mut c, mut cls, mut clscount) = (1u64, 0u64, 0);
    for ch in desc.chars() {
        let pos = INPUT.find(ch)? as u64;
        c = polymod(c, pos & 31);
        cls = cls * 3 + (pos >> 5);
        clscount += 1;
        if clscount == 3 {
            c = polymod(c, cls);
            cls = 0;
            clscount = 0;
        }
    }
    if clscount > 0 {
        c = polymod(c, cls);
    }
    for _ in 0..8 {
        c = polymod(c, 0);
    }
    c ^= 1;
    Some(
        (0..8)
            .map(|j| CHECKSUM[((c >> (5 * (7 - j))) & 31) as usize] as char)
            .collect(),
    )
}

/// The inferred descriptor of an output script: `addr(…)`, `pk(…)` or `raw(…)`, with checksum.
fn descriptor(script: &Script, address: Option<&Address>) -> String {
    let body = match address {
        Some(a) => format!("addr({a})"),
        None if script.is_p2pk() => {
            let key = script
                .instructions()
                .next()
                .and_then(|i| i.ok())
                .and_then(|i| i.push_bytes().map(|p| p.as_bytes().to_lower_hex_string()));
            format!("pk({})", key.unwrap_or_default())
        }
        None => format!("raw({})", script.as_bytes().to_lower_hex_string()),
    };
    match descriptor_checksum(&body) {
        Some(sum) => format!("{body}#{sum}"),
        None => body,
    }
}

/// Core's `ScriptToUniv` for an output script (asm, desc, hex, address, type).
pub fn script_pubkey_json(script: &Script) -> Value {
    let address = Address::from_script(script, Network::Regtest).ok();
    let mut m = Map::new();
    m.insert("asm".into(), json!(script_asm(script, false)));
    m.insert("desc".into(), json!(descriptor(script, address.as_ref())));
    m.insert("hex".into(), json!(script.as_bytes().to_lower_hex_string()));
    if let Some(a) = &address {
        m.insert("address".into(), json!(a.to_string()));
    }
    m.insert("type".into(), json!(script_type(script)));
    Value::Object(m)
}

/// Core's `TxToUniv` without the hex; `fee` is added for block transactions with undo
/// data, and `prevouts` (the spent coins, one per input) as `vin[].prevout` for
/// `getblock` verbosity 3 and `getrawtransaction` verbosity 2.
pub fn tx_json(
    tx: &Transaction,
    fee: Option<Amount>,
    prevouts: Option<&[(OutPoint, Coin)]>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("txid".into(), json!(tx.compute_txid().to_string()));
    m.insert("hash".into(), json!(tx.compute_wtxid().to_string()));
    m.insert("version".into(), json!(tx.version.0));
    m.insert("size".into(), json!(tx.total_size()));
    m.insert("vsize".into(), json!(tx.vsize()));
    m.insert("weight".into(), json!(tx.weight().to_wu()));
    m.insert("locktime".into(), json!(tx.lock_time.to_consensus_u32()));
    let vin: Vec<Value> = tx
        .input
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let mut i = Map::new();
            if tx.is_coinbase() {
                i.insert("coinbase".into(), json!(input.script_sig.as_bytes().to_lower_hex_string()));
            } else {
                i.insert("txid".into(), json!(input.previous_output.txid.to_string()));
                i.insert("vout".into(), json!(input.previous_output.vout));
                i.insert(
                    "scriptSig".into(),
                    json!({"asm": script_asm(&input.script_sig, true), "hex": input.script_sig.as_bytes().to_lower_hex_string()}),
                );
            }
            if !input.witness.is_empty() {
                let items: Vec<String> = input.witness.iter().map(|w| w.to_lower_hex_string()).collect();
                i.insert("txinwitness".into(), json!(items));
            }
            if let Some((_, coin)) = prevouts.and_then(|p| p.get(index)) {
                i.insert(
                    "prevout".into(),
                    json!({
                        "generated": coin.is_coinbase,
                        "height": coin.height,
                        "value": btc(coin.output.value),
                        "scriptPubKey": script_pubkey_json(&coin.output.script_pubkey),
                    }),
                );
            }
            i.insert("sequence".into(), json!(input.sequence.to_consensus_u32()));
            Value::Object(i)
        })
        .collect();
    m.insert("vin".into(), Value::Array(vin));
    let vout: Vec<Value> = tx
        .output
        .iter()
        .enumerate()
        .map(|(n, o)| json!({"value": btc(o.value), "n": n, "scriptPubKey": script_pubkey_json(&o.script_pubkey)}))
        .collect();
    m.insert("vout".into(), Value::Array(vout));
    if let Some(fee) = fee {
        m.insert("fee".into(), btc(fee));
    }
    m
}

/// Consensus-serialized hex of anything encodable.
pub fn hex_of<T: consensus::Encodable>(v: &T) -> String {
    consensus::serialize(v).to_lower_hex_string()
}

/// Core's `GetDifficulty` for compact bits.
pub fn difficulty(bits: CompactTarget) -> f64 {
    let bits = bits.to_consensus();
    let mut shift = (bits >> 24) & 0xff;
    let mut diff = f64::from(0x0000_ffff) / f64::from(bits & 0x00ff_ffff);
    while shift < 29 {
        diff *= 256.0;
        shift += 1;
    }
    while shift > 29 {
        diff /= 256.0;
        shift -= 1;
    }
    diff
}

/// Hex of a 256-bit chain work, big-endian as Core prints it.
pub fn work_hex(work: Work) -> String {
    work.to_be_bytes().to_lower_hex_string()
}

/// Hex of the target of compact `bits`, big-endian.
pub fn target_hex(bits: CompactTarget) -> String {
    bitcoin::Target::from_compact(bits)
        .to_be_bytes()
        .to_lower_hex_string()
}

/// Core's `coinbase_tx` summary in `getblock` (v29+).
pub fn coinbase_summary(block: &Block) -> Value {
    let Some(cb) = block.txdata.first() else {
        return Value::Null;
    };
    let Some(input) = cb.input.first() else {
        return Value::Null;
    };
    let mut m = Map::new();
    m.insert("version".into(), json!(cb.version.0));
    m.insert("locktime".into(), json!(cb.lock_time.to_consensus_u32()));
    m.insert("sequence".into(), json!(input.sequence.to_consensus_u32()));
    m.insert(
        "coinbase".into(),
        json!(input.script_sig.as_bytes().to_lower_hex_string()),
    );
    if let Some(w) = input.witness.iter().next() {
        m.insert("witness".into(), json!(w.to_lower_hex_string()));
    }
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::ScriptBuf;

    #[test]
    fn descriptor_checksum_matches_core_transcript() {
        assert_eq!(
            descriptor_checksum("addr(bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080)").as_deref(),
            Some("8pk5s7ya")
        );
        assert_eq!(
            descriptor_checksum(
                "raw(6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9)"
            )
            .as_deref(),
            Some("cav96mf3")
        );
    }

    #[test]
    fn asm_matches_core() {
        let p2wpkh = ScriptBuf::from_hex("0014751e76e8199196d454941c45d1b3a323f1433bd6").unwrap();
        assert_eq!(
            script_asm(&p2wpkh, false),
            "0 751e76e8199196d454941c45d1b3a323f1433bd6"
        );
        let ret = ScriptBuf::from_hex(
            "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
        )
        .unwrap();
        assert_eq!(
            script_asm(&ret, false),
            "OP_RETURN aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
        );
        assert_eq!(script_type(&ret), "nulldata");
        // 2 <key> <key> 2 CHECKMULTISIG-like numbers and CSV.
        let s = ScriptBuf::from_hex("52b27660b2").unwrap();
        assert_eq!(
            script_asm(&s, false),
            "2 OP_CHECKSEQUENCEVERIFY OP_DUP 16 OP_CHECKSEQUENCEVERIFY"
        );
        let neg = ScriptBuf::from_hex("0181").unwrap();
        assert_eq!(script_asm(&neg, false), "-1");
    }

    #[test]
    fn amounts_are_written_with_eight_decimals_like_core() {
        let v = json!({"value": btc(Amount::from_sat(5_000_000_000)), "fee": btc(Amount::from_sat(1_000)), "zero": btc(Amount::ZERO), "s": "x"});
        assert_eq!(
            to_json_text(&v),
            r#"{"value":50.00000000,"fee":0.00001000,"zero":0.00000000,"s":"x"}"#
        );
        let parsed: Value = serde_json::from_str(&to_json_text(&v)).unwrap();
        assert_eq!(parsed["value"], json!(50.0));
        // A client-chosen string with the mark stays a (valid) string.
        let sneaky = json!({"id": "\u{1}btc:1,\"x\":{", "v": btc(Amount::ONE_SAT)});
        let text = to_json_text(&sneaky);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["id"], sneaky["id"]);
        assert_eq!(back["v"], json!(0.00000001));
    }

    #[test]
    fn regtest_difficulty_matches_core() {
        let d = difficulty(CompactTarget::from_consensus(0x207fffff));
        assert!((d - 4.656542373906925e-10).abs() < 1e-24);
        assert_eq!(
            target_hex(CompactTarget::from_consensus(0x207fffff)),
            format!("7fffff{}", "0".repeat(58))
        );
    }
}
