//! Watchtower appointments from outside: the REST body, the signature over it, the
//! locator, and the encrypted blob the tower decrypts when a breach appears.

use bitcoin::hashes::Hash;
use bitcoin::Txid;
use watchtower::appointment::{appointment_message, decrypt, request_message, spends, Locator};
use watchtower::msgs::AddAppointmentRequest;
use watchtower::sig::{recover, zbase32_decode};

use super::tag;

/// Reads the input as an `add appointment` request (checking what the tower checks:
/// hex fields, locator length, signature recovery over the request message) and as a raw
/// blob decrypted under a txid taken from its first bytes.
pub fn watchtower_appointment(data: &[u8]) -> u64 {
    let mut label = 0u64;
    if let Ok(req) = serde_json::from_slice::<AddAppointmentRequest>(data) {
        let a = &req.appointment;
        let locator = hex::decode(&a.locator)
            .ok()
            .and_then(|b| Locator::from_slice(&b));
        let blob = hex::decode(&a.encrypted_blob).ok();
        let tag_bytes = a.tag.as_ref().map(hex::decode);
        label ^= tag(&locator) ^ tag(&blob).rotate_left(1) ^ tag(&tag_bytes).rotate_left(2);
        if let (Some(l), Some(b)) = (locator, blob) {
            let t = tag_bytes.and_then(Result::ok);
            let msg = appointment_message(&l, &b, a.to_self_delay, t.as_deref());
            let signed = request_message(&[0u8; 32], req.counter, &msg);
            label ^= tag(&recover(&signed, &req.signature)).rotate_left(3);
        }
        label ^= tag(&zbase32_decode(&req.signature)).rotate_left(4);
    }
    if data.len() >= 32 {
        let txid = Txid::from_byte_array(data[..32].try_into().expect("32 bytes"));
        let decrypted = decrypt(&data[32..], &txid);
        if let Ok(tx) = &decrypted {
            // A blob that decrypts must still be checked against the breach.
            let _ = spends(tx, tx);
        }
        label ^= tag(&decrypted).rotate_left(5);
        let _ = Locator::from_txid(&txid);
    }
    label
}

/// Seeds: a well-formed request (signed by a fixed key) and a real encrypted blob.
pub fn seeds() -> Vec<Vec<u8>> {
    use bitcoin::secp256k1::SecretKey;
    let key = SecretKey::from_slice(&[0x11; 32]).expect("valid key");
    let tx = bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint::new(Txid::from_byte_array([7; 32]), 0),
            ..Default::default()
        }],
        output: vec![bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(1000),
            script_pubkey: bitcoin::ScriptBuf::new(),
        }],
    };
    let breach = Txid::from_byte_array([7; 32]);
    let a = watchtower::client::Appointment::new(breach, &tx, 144).with_tag(vec![1u8; 16]);
    let counter = 1_800_000_000_000u64;
    let signature =
        watchtower::sig::sign(&request_message(&[0u8; 32], counter, &a.message()), &key);
    let user = bitcoin::secp256k1::PublicKey::from_secret_key(watchtower::sig::secp(), &key);
    let body = serde_json::json!({
        "user_id": user.to_string(),
        "appointment": {
            "locator": hex::encode(a.locator.0),
            "encrypted_blob": hex::encode(&a.encrypted_blob),
            "to_self_delay": 144,
            "tag": hex::encode([1u8; 16]),
        },
        "counter": counter,
        "signature": signature,
    });
    let mut raw = breach.to_byte_array().to_vec();
    raw.extend_from_slice(&a.encrypted_blob);
    vec![body.to_string().into_bytes(), raw]
}
