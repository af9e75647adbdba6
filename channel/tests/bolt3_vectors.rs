//! BOLT 3 Appendices B–E, reproduced byte for byte, and every transaction checked by
//! Bitcoin Core's script interpreter (libbitcoinconsensus).

use bitcoin::consensus::encode::{deserialize, serialize_hex};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use channel::commitment::{build_commitment, obscure_factor, CommitmentHtlc, CommitmentParams};
use channel::keys::*;
use channel::script::funding_script;
use channel::secrets::{generate_from_seed, CounterpartySecrets};
use channel::sign::{
    funding_witness, htlc_remote_sighash_type, htlc_tx_witness, sign_input, sign_input_with,
};
use channel::*;
use serde_json::Value;

mod common;
use common::consensus_verify;
use std::str::FromStr;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).expect("vector file")).expect("json")
}

fn bytes(v: &Value) -> Vec<u8> {
    let s = v.as_str().expect("hex string");
    hex::decode(s.trim_start_matches("0x").to_lowercase()).expect("hex")
}

fn b32(v: &Value) -> [u8; 32] {
    bytes(v)[..32].try_into().expect("32 bytes")
}

fn sk(v: &Value) -> SecretKey {
    SecretKey::from_slice(&b32(v)).expect("secret key")
}

fn pk(v: &Value) -> PublicKey {
    PublicKey::from_slice(&bytes(v)).expect("public key")
}

#[test]
fn appendix_e_key_derivation() {
    let v = load("bolt3-key-derivation.json");
    let c = &v["common_inputs"];
    let base_secret = sk(&c["base_secret"]);
    let per_commitment_secret = sk(&c["per_commitment_secret"]);
    let base_point = pk(&c["base_point"]);
    let per_commitment_point = pk(&c["per_commitment_point"]);
    assert_eq!(PublicKey::from_secret_key(secp(), &base_secret), base_point);
    assert_eq!(
        PublicKey::from_secret_key(secp(), &per_commitment_secret),
        per_commitment_point
    );
    let mut checked = 0;
    for case in v["test_cases"].as_array().unwrap() {
        let field = case["output_field"].as_str().unwrap();
        let expected = bytes(&case[field]);
        let got = match field {
            "localpubkey" => derive_pubkey(&base_point, &per_commitment_point)
                .serialize()
                .to_vec(),
            "localprivkey" => derive_privkey(&base_secret, &per_commitment_point)
                .secret_bytes()
                .to_vec(),
            "revocationpubkey" => derive_revocation_pubkey(&base_point, &per_commitment_point)
                .serialize()
                .to_vec(),
            "revocationprivkey" => derive_revocation_privkey(&base_secret, &per_commitment_secret)
                .secret_bytes()
                .to_vec(),
            other => panic!("unknown case {other}"),
        };
        assert_eq!(hex::encode(got), hex::encode(expected), "{field}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn appendix_d_generation() {
    let v = load("bolt3-per-commitment-secrets.json");
    let cases = v["generation_tests"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let got = generate_from_seed(&b32(&case["seed"]), case["I"].as_u64().unwrap());
        assert_eq!(got, b32(&case["output"]), "{}", case["name"]);
    }
}

#[test]
fn appendix_d_storage() {
    let v = load("bolt3-per-commitment-secrets.json");
    let cases = v["storage_tests"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 9);
    let mut failures = 0;
    for case in cases {
        let mut store = CounterpartySecrets::new();
        let steps = case["steps"].as_array().unwrap();
        for (i, step) in steps.iter().enumerate() {
            let index = step["I"].as_u64().unwrap();
            let secret = b32(&step["secret"]);
            let before = store.clone();
            let result = store.insert(secret, index);
            if step["output"] == "OK" {
                assert!(result.is_ok(), "{} step {i}", case["name"]);
                assert_eq!(store.get(index), Some(secret));
            } else {
                assert!(result.is_err(), "{} step {i} must fail", case["name"]);
                assert!(
                    store == before,
                    "a refused secret leaves the store unchanged"
                );
                assert_eq!(case["fails_at_step"].as_u64(), Some(i as u64));
                failures += 1;
            }
        }
    }
    assert_eq!(failures, 8);
}

#[test]
fn secret_store_derives_every_revealed_secret() {
    let seed = [7u8; 32];
    let mut store = CounterpartySecrets::new();
    for n in 0..300u64 {
        let index = CommitmentNumber(n).secret_index();
        store
            .insert(generate_from_seed(&seed, index), index)
            .unwrap();
    }
    for n in 0..300u64 {
        let index = CommitmentNumber(n).secret_index();
        assert_eq!(store.get(index), Some(generate_from_seed(&seed, index)));
    }
    assert_eq!(store.get(CommitmentNumber(300).secret_index()), None);
    // A secret from another seed is caught as soon as it must derive an earlier one.
    let index = CommitmentNumber(300).secret_index();
    let mut wrong = store.clone();
    let mut caught = wrong
        .insert(generate_from_seed(&[8u8; 32], index), index)
        .is_err();
    let mut n = 301;
    while !caught {
        let index = CommitmentNumber(n).secret_index();
        caught = wrong
            .insert(generate_from_seed(&[8u8; 32], index), index)
            .is_err();
        n += 1;
    }
    // Out of order is refused.
    assert!(store.insert(generate_from_seed(&seed, 5), 5).is_err());
}

/// The Appendix C setting: local is the funder and holds the commitment.
struct Setting {
    v: Value,
    params: CommitmentParams,
    keys: CommitmentKeys,
    local_funding_key: SecretKey,
    remote_funding_key: SecretKey,
    local_htlc_key: SecretKey,
    remote_htlc_key: SecretKey,
    funding_script: ScriptBuf,
    funding_txout: TxOut,
}

fn setting() -> Setting {
    let v = load("bolt3-commitment-tx.json");
    let c = &v["commitment_tx"]["common_parameters"];
    let hidden = &v["commitment_tx"]["internal_values_from_html_comment"];
    let local_funding_key = sk(&c["local_funding_privkey"]);
    let remote_funding_key = sk(&hidden["remote_funding_privkey"]);
    let local_funding_pubkey = pk(&c["local_funding_pubkey"]);
    let remote_funding_pubkey = pk(&c["remote_funding_pubkey"]);
    assert!(secret_matches(&local_funding_key, &local_funding_pubkey));
    assert!(secret_matches(&remote_funding_key, &remote_funding_pubkey));

    let point = point_from_secret(&b32(&hidden["x_local_per_commitment_secret"]));
    assert_eq!(point, pk(&hidden["local_per_commitment_point"]));
    let local_payment_secret = sk(&hidden["local_payment_basepoint_secret"]);
    let remote_payment_secret = sk(&hidden["remote_payment_basepoint_secret"]);
    let holder = Basepoints {
        funding_pubkey: local_funding_pubkey,
        revocation_basepoint: point, // unused for the holder's own commitment
        payment_basepoint: pk(&c["local_payment_basepoint"]),
        delayed_payment_basepoint: pk(&hidden["local_delayed_payment_basepoint"]),
        htlc_basepoint: pk(&c["local_htlc_basepoint"]),
    };
    let counterparty = Basepoints {
        funding_pubkey: remote_funding_pubkey,
        revocation_basepoint: pk(&hidden["remote_revocation_basepoint"]),
        payment_basepoint: pk(&c["remote_payment_basepoint"]),
        delayed_payment_basepoint: point,
        htlc_basepoint: pk(&c["remote_htlc_basepoint"]),
    };
    let keys = CommitmentKeys::derive(&point, &holder, &counterparty, true);
    assert_eq!(keys.local_htlc_key, pk(&c["local_htlcpubkey"]));
    assert_eq!(keys.remote_htlc_key, pk(&c["remote_htlcpubkey"]));
    assert_eq!(keys.local_delayed_key, pk(&c["local_delayedpubkey"]));
    assert_eq!(keys.revocation_key, pk(&c["local_revocation_pubkey"]));
    assert_eq!(
        derive_privkey(&local_payment_secret, &point),
        sk(&c["local_privkey"])
    );

    let funding_script = funding_script(&local_funding_pubkey, &remote_funding_pubkey);
    assert_eq!(
        funding_script.as_bytes(),
        &bytes(&c["funding_wscript_from_comment"])[..]
    );
    let funding_txid = Txid::from_str(c["funding_tx_id"].as_str().unwrap()).unwrap();
    let funding_amount = c["funding_amount_satoshi"].as_u64().unwrap();
    let factor = obscure_factor(&holder.payment_basepoint, &counterparty.payment_basepoint);
    assert_eq!(factor, 0x2bb038521914);
    let params = CommitmentParams {
        funding_outpoint: OutPoint::new(
            funding_txid,
            c["funding_output_index"].as_u64().unwrap() as u32,
        ),
        funding_pubkeys: (local_funding_pubkey, remote_funding_pubkey),
        number: CommitmentNumber(c["commitment_number"].as_u64().unwrap()),
        obscure_factor: factor,
        to_self_delay: c["local_delay"].as_u64().unwrap() as u16,
        dust_limit_sat: c["local_dust_limit_satoshi"].as_u64().unwrap(),
        feerate: FeeratePerKw(0),
        holder_is_funder: true,
        anchors: false,
    };
    let funding_txout = TxOut {
        value: Amount::from_sat(funding_amount),
        script_pubkey: ScriptBuf::new_p2wsh(&funding_script.wscript_hash()),
    };
    Setting {
        local_htlc_key: derive_privkey(&local_payment_secret, &point),
        remote_htlc_key: derive_privkey(&remote_payment_secret, &point),
        v,
        params,
        keys,
        local_funding_key,
        remote_funding_key,
        funding_script,
        funding_txout,
    }
}

fn spec_htlcs(v: &Value) -> Vec<CommitmentHtlc> {
    v["commitment_tx"]["htlcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let preimage = PaymentPreimage(b32(&h["payment_preimage"]));
            CommitmentHtlc {
                id: HtlcId(h["id"].as_u64().unwrap()),
                offered: h["direction"] == "local->remote",
                amount: Msat(h["amount_msat"].as_u64().unwrap()),
                payment_hash: preimage.payment_hash(),
                cltv_expiry: h["expiry"].as_u64().unwrap() as u32,
            }
        })
        .collect()
}

fn preimage_of(v: &Value, id: u64) -> [u8; 32] {
    b32(&v["commitment_tx"]["htlcs"][id as usize]["payment_preimage"])
}

#[test]
fn appendix_b_funding_output() {
    let s = setting();
    let f = &s.v["funding_tx"]["values"];
    let funding_tx: Transaction = deserialize(&bytes(&f["funding_tx"])).unwrap();
    assert_eq!(funding_tx.compute_txid(), s.params.funding_outpoint.txid);
    let vout = f["funding_output"].as_u64().unwrap() as usize;
    assert_eq!(funding_tx.output[vout], s.funding_txout);
    assert_eq!(
        funding_tx.output[vout].value.to_sat(),
        f["funding_satoshis"].as_u64().unwrap()
    );
    // The spec's funding transaction itself passes the interpreter against the coinbase
    // output it spends.
    let coinbase: Transaction = deserialize(&bytes(&f["block_1_coinbase_transaction"])).unwrap();
    let spent = (
        OutPoint::new(coinbase.compute_txid(), 0),
        coinbase.output[0].clone(),
    );
    consensus_verify(&funding_tx, &[spent]).expect("funding tx is valid");
}

#[test]
fn appendix_c_commitment_and_htlc_transactions() {
    let s = setting();
    let all_htlcs = spec_htlcs(&s.v);
    let mut commitments = 0;
    let mut htlc_txs = 0;
    for case in s.v["commitment_tx"]["test_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let htlcs: Vec<CommitmentHtlc> = case["htlcs_used"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| all_htlcs[id.as_u64().unwrap() as usize])
            .collect();
        let params = CommitmentParams {
            feerate: FeeratePerKw(case["local_feerate_per_kw"].as_u64().unwrap() as u32),
            ..s.params
        };
        let built = build_commitment(
            &params,
            &s.keys,
            Msat(case["to_local_msat"].as_u64().unwrap()),
            Msat(case["to_remote_msat"].as_u64().unwrap()),
            &htlcs,
        );
        assert_eq!(
            built.htlcs.len() as u64,
            case["num_htlcs"].as_u64().unwrap(),
            "{name}"
        );

        let value = s.funding_txout.value;
        let local_sig = sign_input(&built.tx, 0, &s.funding_script, value, &s.local_funding_key);
        let remote_sig = sign_input(
            &built.tx,
            0,
            &s.funding_script,
            value,
            &s.remote_funding_key,
        );
        assert_eq!(
            hex::encode(local_sig.serialize_der()),
            case["local_signature"].as_str().unwrap(),
            "{name}: local signature"
        );
        assert_eq!(
            hex::encode(remote_sig.serialize_der()),
            case["remote_signature"].as_str().unwrap(),
            "{name}: remote signature"
        );
        let mut signed = built.tx.clone();
        signed.input[0].witness = funding_witness(
            &s.funding_script,
            (&s.params.funding_pubkeys.0, &local_sig),
            (&s.params.funding_pubkeys.1, &remote_sig),
        );
        assert_eq!(
            serialize_hex(&signed),
            case["output_commit_tx"].as_str().unwrap(),
            "{name}: commitment tx"
        );
        consensus_verify(
            &signed,
            &[(s.params.funding_outpoint, s.funding_txout.clone())],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        commitments += 1;

        let expected = case["htlc_txs"].as_array().unwrap();
        assert_eq!(expected.len(), built.htlcs.len(), "{name}");
        for (i, (out, exp)) in built.htlcs.iter().zip(expected).enumerate() {
            assert_eq!(u64::from(out.vout), exp["output_index"].as_u64().unwrap());
            assert_eq!(out.htlc.id.0, exp["htlc"].as_u64().unwrap());
            let mut tx = built.htlc_tx(i);
            let amount = built.output_value(out.vout);
            let remote = sign_input(&tx, 0, &out.witness_script, amount, &s.remote_htlc_key);
            let local = sign_input(&tx, 0, &out.witness_script, amount, &s.local_htlc_key);
            assert_eq!(
                hex::encode(remote.serialize_der()),
                exp["remote_htlc_signature"].as_str().unwrap()
            );
            assert_eq!(
                hex::encode(local.serialize_der()),
                exp["local_htlc_signature"].as_str().unwrap()
            );
            let preimage = (!out.htlc.offered).then(|| preimage_of(&s.v, out.htlc.id.0));
            tx.input[0].witness = htlc_tx_witness(
                &out.witness_script,
                &remote,
                &local,
                bitcoin::EcdsaSighashType::All,
                preimage.as_ref(),
                false,
            );
            assert_eq!(
                serialize_hex(&tx),
                exp["tx"].as_str().unwrap(),
                "{name}: htlc tx {i}"
            );
            let spent = (
                OutPoint::new(signed.compute_txid(), out.vout),
                signed.output[out.vout as usize].clone(),
            );
            consensus_verify(&tx, &[spent]).unwrap_or_else(|e| panic!("{name}: htlc {i}: {e}"));
            htlc_txs += 1;
        }
    }
    assert_eq!(commitments, 16);
    assert_eq!(htlc_txs, 33);
}

#[test]
fn interpreter_rejects_tampered_transactions() {
    let s = setting();
    let built = build_commitment(
        &s.params,
        &s.keys,
        Msat(7_000_000_000),
        Msat(3_000_000_000),
        &[],
    );
    let value = s.funding_txout.value;
    let local_sig = sign_input(&built.tx, 0, &s.funding_script, value, &s.local_funding_key);
    let remote_sig = sign_input(
        &built.tx,
        0,
        &s.funding_script,
        value,
        &s.remote_funding_key,
    );
    let mut signed = built.tx.clone();
    signed.input[0].witness = funding_witness(
        &s.funding_script,
        (&s.params.funding_pubkeys.0, &local_sig),
        (&s.params.funding_pubkeys.1, &remote_sig),
    );
    let spent = [(s.params.funding_outpoint, s.funding_txout.clone())];
    consensus_verify(&signed, &spent).expect("untampered commitment is valid");

    // One satoshi moved between outputs invalidates both signatures.
    let mut tampered = signed.clone();
    tampered.output[0].value += Amount::from_sat(1);
    tampered.output[1].value -= Amount::from_sat(1);
    assert!(consensus_verify(&tampered, &spent).is_err());

    // Signatures swapped out of key order fail CHECKMULTISIG.
    let mut swapped = signed.clone();
    let w: Vec<Vec<u8>> = signed.input[0].witness.iter().map(|e| e.to_vec()).collect();
    swapped.input[0].witness = bitcoin::Witness::from_slice(&[&w[0], &w[2], &w[1], &w[3]]);
    assert!(consensus_verify(&swapped, &spent).is_err());

    // A signature by the wrong key fails.
    let wrong = sign_input(&built.tx, 0, &s.funding_script, value, &s.local_htlc_key);
    let mut forged = built.tx.clone();
    forged.input[0].witness = funding_witness(
        &s.funding_script,
        (&s.params.funding_pubkeys.0, &wrong),
        (&s.params.funding_pubkeys.1, &remote_sig),
    );
    assert!(consensus_verify(&forged, &spent).is_err());
}

/// One Appendix F case rebuilt: the commitment and each HTLC resolution, compared with the
/// vector's hex (every mismatch named), each checked by the interpreter.
fn check_anchor_case(s: &Setting, case: &Value) -> Result<usize, String> {
    let name = case["Name"].as_str().unwrap();
    let all_htlcs = spec_htlcs(&s.v);
    let local_msat = case["LocalBalance"].as_u64().unwrap();
    // As in Appendix C: the same-amount case uses HTLCs 1, 5 and 6, the others 0 to 4.
    let ids: Vec<usize> = match (case["UseTestHtlcs"].as_bool().unwrap(), local_msat) {
        (false, _) => vec![],
        (true, 6_987_999_999) => vec![1, 5, 6],
        (true, _) => vec![0, 1, 2, 3, 4],
    };
    let htlcs: Vec<CommitmentHtlc> = ids.iter().map(|i| all_htlcs[*i]).collect();
    let params = CommitmentParams {
        feerate: FeeratePerKw(case["FeePerKw"].as_u64().unwrap() as u32),
        dust_limit_sat: case["DustLimitSatoshis"].as_u64().unwrap(),
        anchors: true,
        ..s.params
    };
    let built = build_commitment(
        &params,
        &s.keys,
        Msat(local_msat),
        Msat(case["RemoteBalance"].as_u64().unwrap()),
        &htlcs,
    );
    let value = s.funding_txout.value;
    let local_sig = sign_input(&built.tx, 0, &s.funding_script, value, &s.local_funding_key);
    let remote_sig = sign_input(
        &built.tx,
        0,
        &s.funding_script,
        value,
        &s.remote_funding_key,
    );
    if hex::encode(remote_sig.serialize_der()) != case["RemoteSigHex"].as_str().unwrap() {
        return Err(format!("{name}: remote commitment signature"));
    }
    let mut signed = built.tx.clone();
    signed.input[0].witness = funding_witness(
        &s.funding_script,
        (&s.params.funding_pubkeys.0, &local_sig),
        (&s.params.funding_pubkeys.1, &remote_sig),
    );
    if serialize_hex(&signed) != case["ExpectedCommitmentTxHex"].as_str().unwrap() {
        return Err(format!("{name}: commitment tx"));
    }
    consensus_verify(
        &signed,
        &[(s.params.funding_outpoint, s.funding_txout.clone())],
    )
    .map_err(|e| format!("{name}: interpreter: {e}"))?;
    let expected = case["HtlcDescs"].as_array().unwrap();
    if expected.len() != built.htlcs.len() {
        return Err(format!("{name}: {} HTLC outputs", built.htlcs.len()));
    }
    for (i, (out, exp)) in built.htlcs.iter().zip(expected).enumerate() {
        let mut tx = built.htlc_tx(i);
        let amount = built.output_value(out.vout);
        let remote = sign_input_with(
            &tx,
            0,
            &out.witness_script,
            amount,
            &s.remote_htlc_key,
            htlc_remote_sighash_type(true),
        );
        if hex::encode(remote.serialize_der()) != exp["RemoteSigHex"].as_str().unwrap() {
            return Err(format!("{name}: htlc {i}: remote signature"));
        }
        let local = sign_input(&tx, 0, &out.witness_script, amount, &s.local_htlc_key);
        let preimage = (!out.htlc.offered).then(|| preimage_of(&s.v, out.htlc.id.0));
        tx.input[0].witness = htlc_tx_witness(
            &out.witness_script,
            &remote,
            &local,
            bitcoin::EcdsaSighashType::All,
            preimage.as_ref(),
            true,
        );
        if serialize_hex(&tx) != exp["ResolutionTxHex"].as_str().unwrap() {
            return Err(format!("{name}: htlc {i}: resolution tx"));
        }
        let spent = (
            OutPoint::new(signed.compute_txid(), out.vout),
            signed.output[out.vout as usize].clone(),
        );
        consensus_verify(&tx, &[spent]).map_err(|e| format!("{name}: htlc {i}: {e}"))?;
    }
    Ok(built.htlcs.len())
}

/// Appendix F, option_anchors_zero_fee_htlc_tx: the 9 commitments and 15 zero-fee HTLC
/// transactions (counterparty signatures SIGHASH_SINGLE|ANYONECANPAY) byte for byte.
#[test]
fn appendix_f_anchor_commitments_and_htlc_transactions() {
    let s = setting();
    let cases = s.v["anchors"]["test_cases"].as_array().unwrap();
    let mut htlc_txs = 0;
    for case in cases {
        htlc_txs += check_anchor_case(&s, case).unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!((cases.len(), htlc_txs), (9, 15));
}

/// The check above can fail: one changed byte in a vector's commitment, or in an HTLC
/// resolution, is caught.
#[test]
fn appendix_f_check_catches_a_corrupted_vector() {
    let s = setting();
    let cases = s.v["anchors"]["test_cases"].as_array().unwrap();
    let mut bad = cases[2].clone();
    let hex = bad["ExpectedCommitmentTxHex"].as_str().unwrap().to_string();
    let flipped = format!(
        "{}{}",
        &hex[..100],
        if &hex[100..101] == "0" { "1" } else { "0" }
    );
    bad["ExpectedCommitmentTxHex"] = Value::String(flipped + &hex[101..]);
    assert!(check_anchor_case(&s, &bad)
        .unwrap_err()
        .contains("commitment tx"));
    let mut bad = cases[2].clone();
    let hex = bad["HtlcDescs"][0]["ResolutionTxHex"]
        .as_str()
        .unwrap()
        .to_string();
    bad["HtlcDescs"][0]["ResolutionTxHex"] = Value::String(hex.replacen("01", "02", 1));
    assert!(check_anchor_case(&s, &bad)
        .unwrap_err()
        .contains("resolution tx"));
}
