//! BOLT 3 output scripts: the funding output, to_local, to_remote, and the offered and
//! received HTLC outputs.

use crate::keys::CommitmentKeys;
use crate::types::PaymentHash;
use bitcoin::hashes::{hash160, ripemd160, Hash};
use bitcoin::opcodes::all::*;
use bitcoin::script::Builder;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{CompressedPublicKey, ScriptBuf};

fn push_key(b: Builder, key: &PublicKey) -> Builder {
    b.push_slice(key.serialize())
}

/// BOLT 3 funding output witness script: `2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG`,
/// the two funding pubkeys in lexicographic order of their compressed encoding.
pub fn funding_script(a: &PublicKey, b: &PublicKey) -> ScriptBuf {
    let (first, second) = if a.serialize() <= b.serialize() {
        (a, b)
    } else {
        (b, a)
    };
    let builder = Builder::new().push_opcode(OP_PUSHNUM_2);
    let builder = push_key(builder, first);
    push_key(builder, second)
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script()
}

/// BOLT 3 to_local witness script: the revocation key at once, or the holder's delayed key
/// after `to_self_delay` blocks. HTLC-success/timeout outputs use the same script.
pub fn to_local_script(
    revocation_key: &PublicKey,
    to_self_delay: u16,
    local_delayed_key: &PublicKey,
) -> ScriptBuf {
    let b = Builder::new().push_opcode(OP_IF);
    let b = push_key(b, revocation_key)
        .push_opcode(OP_ELSE)
        .push_int(i64::from(to_self_delay))
        .push_opcode(OP_CSV)
        .push_opcode(OP_DROP);
    push_key(b, local_delayed_key)
        .push_opcode(OP_ENDIF)
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// BOLT 3 to_remote output script: P2WPKH to the to_remote key, or under option_anchors
/// P2WSH of [`to_remote_anchor_script`].
pub fn to_remote_script_pubkey(to_remote_key: &PublicKey, anchors: bool) -> ScriptBuf {
    if anchors {
        ScriptBuf::new_p2wsh(&to_remote_anchor_script(to_remote_key).wscript_hash())
    } else {
        ScriptBuf::new_p2wpkh(&CompressedPublicKey(*to_remote_key).wpubkey_hash())
    }
}

/// BOLT 3 option_anchors to_remote witness script: `<remotepubkey> OP_CHECKSIGVERIFY 1
/// OP_CHECKSEQUENCEVERIFY` (spendable one block after the commitment confirms).
pub fn to_remote_anchor_script(to_remote_key: &PublicKey) -> ScriptBuf {
    push_key(Builder::new(), to_remote_key)
        .push_opcode(OP_CHECKSIGVERIFY)
        .push_int(1)
        .push_opcode(OP_CSV)
        .into_script()
}

/// BOLT 3 anchor output witness script: `<funding_pubkey> OP_CHECKSIG OP_IFDUP OP_NOTIF
/// OP_16 OP_CHECKSEQUENCEVERIFY OP_ENDIF` (its owner at once, anyone after 16 blocks).
pub fn anchor_script(funding_pubkey: &PublicKey) -> ScriptBuf {
    push_key(Builder::new(), funding_pubkey)
        .push_opcode(OP_CHECKSIG)
        .push_opcode(OP_IFDUP)
        .push_opcode(OP_NOTIF)
        .push_opcode(OP_PUSHNUM_16)
        .push_opcode(OP_CSV)
        .push_opcode(OP_ENDIF)
        .into_script()
}

/// Under option_anchors the HTLC scripts' last branch gains `1 OP_CHECKSEQUENCEVERIFY
/// OP_DROP`, so that only a transaction with nSequence 1 can spend them (no pinning by
/// unconfirmed descendants).
fn end_htlc_script(b: Builder, anchors: bool) -> ScriptBuf {
    let b = b.push_opcode(OP_ENDIF);
    let b = if anchors {
        b.push_int(1).push_opcode(OP_CSV).push_opcode(OP_DROP)
    } else {
        b
    };
    b.push_opcode(OP_ENDIF).into_script()
}

fn revocation_hash(revocation_key: &PublicKey) -> [u8; 20] {
    hash160::Hash::hash(&revocation_key.serialize()).to_byte_array()
}

fn payment_ripemd(payment_hash: &PaymentHash) -> [u8; 20] {
    ripemd160::Hash::hash(&payment_hash.0).to_byte_array()
}

/// BOLT 3 offered HTLC output witness script (an HTLC the holder pays out).
pub fn offered_htlc_script(
    keys: &CommitmentKeys,
    payment_hash: &PaymentHash,
    anchors: bool,
) -> ScriptBuf {
    let b = Builder::new()
        .push_opcode(OP_DUP)
        .push_opcode(OP_HASH160)
        .push_slice(revocation_hash(&keys.revocation_key))
        .push_opcode(OP_EQUAL)
        .push_opcode(OP_IF)
        .push_opcode(OP_CHECKSIG)
        .push_opcode(OP_ELSE);
    let b = push_key(b, &keys.remote_htlc_key)
        .push_opcode(OP_SWAP)
        .push_opcode(OP_SIZE)
        .push_int(32)
        .push_opcode(OP_EQUAL)
        .push_opcode(OP_NOTIF)
        .push_opcode(OP_DROP)
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_SWAP);
    let b = push_key(b, &keys.local_htlc_key)
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_CHECKMULTISIG)
        .push_opcode(OP_ELSE)
        .push_opcode(OP_HASH160)
        .push_slice(payment_ripemd(payment_hash))
        .push_opcode(OP_EQUALVERIFY)
        .push_opcode(OP_CHECKSIG);
    end_htlc_script(b, anchors)
}

/// BOLT 3 received HTLC output witness script (an HTLC paid to the holder).
pub fn received_htlc_script(
    keys: &CommitmentKeys,
    payment_hash: &PaymentHash,
    cltv_expiry: u32,
    anchors: bool,
) -> ScriptBuf {
    let b = Builder::new()
        .push_opcode(OP_DUP)
        .push_opcode(OP_HASH160)
        .push_slice(revocation_hash(&keys.revocation_key))
        .push_opcode(OP_EQUAL)
        .push_opcode(OP_IF)
        .push_opcode(OP_CHECKSIG)
        .push_opcode(OP_ELSE);
    let b = push_key(b, &keys.remote_htlc_key)
        .push_opcode(OP_SWAP)
        .push_opcode(OP_SIZE)
        .push_int(32)
        .push_opcode(OP_EQUAL)
        .push_opcode(OP_IF)
        .push_opcode(OP_HASH160)
        .push_slice(payment_ripemd(payment_hash))
        .push_opcode(OP_EQUALVERIFY)
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_SWAP);
    let b = push_key(b, &keys.local_htlc_key)
        .push_opcode(OP_PUSHNUM_2)
        .push_opcode(OP_CHECKMULTISIG)
        .push_opcode(OP_ELSE)
        .push_opcode(OP_DROP)
        .push_int(i64::from(cltv_expiry))
        .push_opcode(OP_CLTV)
        .push_opcode(OP_DROP)
        .push_opcode(OP_CHECKSIG);
    end_htlc_script(b, anchors)
}
