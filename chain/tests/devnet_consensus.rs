//! Consensus and mempool rules of the embedded devnet, driven in-process: coinbase
//! maturity, double spends, fees, signatures, BIP65/68/112/113 time locks at mempool and
//! block level, and persistence across restarts.

mod common;

use bitcoin::blockdata::opcodes::all::{OP_CHECKSIG, OP_CLTV, OP_CSV, OP_DROP};
use bitcoin::script::Builder;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, Witness};
use chain::devnet::{BlockStatus, Devnet, DevnetConfig, DevnetError, RejectKind};
use common::{p2wpkh_spend, spend_tx, Key};

const COINBASE: Amount = Amount::from_sat(50 * 100_000_000);
const FEE: Amount = Amount::from_sat(1_000);

/// Mines `n` blocks to `key` and returns the coinbase outpoint of the first one.
fn mine_to(devnet: &Devnet, key: &Key, n: u32) -> anyhow::Result<OutPoint> {
    let hashes = devnet.generate_to_script(n, &key.p2wpkh())?;
    let first = devnet
        .block(&hashes[0])
        .ok_or_else(|| anyhow::anyhow!("mined block missing"))?;
    Ok(OutPoint {
        txid: first.txdata[0].compute_txid(),
        vout: 0,
    })
}

fn rejection(result: Result<bitcoin::Txid, DevnetError>) -> (RejectKind, String) {
    match result {
        Err(DevnetError::TxRejected(r)) => (r.kind, r.message()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn immature_coinbase_spend_is_rejected_until_100_confirmations() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(1);
    let coin = mine_to(&devnet, &key, 1)?;
    // Mined at height 1; spendable in a block at height 101, so with tip 100.
    devnet.generate_to_script(98, &ScriptBuf::new_op_return([0u8; 1]))?;
    let tx = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    let (kind, msg) = rejection(devnet.send_raw_transaction(tx.clone(), None));
    assert_eq!(kind, RejectKind::Consensus);
    assert_eq!(
        msg,
        "bad-txns-premature-spend-of-coinbase, tried to spend coinbase at depth 99"
    );
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    assert_eq!(
        devnet.send_raw_transaction(tx.clone(), None)?,
        tx.compute_txid()
    );
    Ok(())
}

#[test]
fn double_spend_missing_inputs_low_fee_and_bad_signature_are_rejected() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(2);
    let coin = mine_to(&devnet, &key, 101)?;

    // Fee below the minimum relay fee (100 sat/kvB): zero fee.
    let free = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), Amount::ZERO);
    let (kind, msg) = rejection(devnet.send_raw_transaction(free, None));
    assert_eq!(kind, RejectKind::Policy);
    assert!(msg.starts_with("min relay fee not met, 0 < "), "{msg}");

    // Signed by the wrong key: Core's interpreter refuses the script.
    let mut forged = spend_tx(coin, key.p2wpkh(), COINBASE - FEE, Sequence::MAX, 0);
    Key::new(3).sign_p2wpkh(&mut forged, 0, COINBASE);
    forged.input[0].witness = Witness::from_slice(&[
        forged.input[0]
            .witness
            .nth(0)
            .map(<[u8]>::to_vec)
            .unwrap_or_default(),
        key.pk.to_bytes().to_vec(),
    ]);
    let (kind, msg) = rejection(devnet.send_raw_transaction(forged, None));
    assert_eq!(kind, RejectKind::Consensus);
    assert!(
        msg.starts_with("mandatory-script-verify-flag-failed ("),
        "{msg}"
    );

    // First spend accepted; a conflicting one paying no more is refused (full-RBF rules).
    let first = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    devnet.send_raw_transaction(first.clone(), None)?;
    let second = p2wpkh_spend(&key, coin, COINBASE, Key::new(4).p2wpkh(), FEE);
    let (kind, msg) = rejection(devnet.send_raw_transaction(second.clone(), None));
    assert_eq!(kind, RejectKind::ReplacementRejected);
    assert!(
        msg.starts_with("insufficient fee, rejecting replacement"),
        "{msg}"
    );

    // Once the first is mined the coin is gone.
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    let (kind, msg) = rejection(devnet.send_raw_transaction(second, None));
    assert_eq!(kind, RejectKind::MissingInputs);
    assert_eq!(msg, "bad-txns-inputs-missingorspent");

    // The confirmed transaction again: already known.
    let (kind, _) = rejection(devnet.send_raw_transaction(first, None));
    assert_eq!(kind, RejectKind::AlreadyInChain);
    Ok(())
}

#[test]
fn a_block_with_a_double_spend_is_invalid_and_the_chain_stays() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(5);
    let coin = mine_to(&devnet, &key, 101)?;
    let a = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    let b = p2wpkh_spend(&key, coin, COINBASE, Key::new(6).p2wpkh(), FEE);
    let (tip, height) = devnet.tip();
    let err = devnet
        .mine_block_on(&tip, vec![a, b], ScriptBuf::new_op_return([1u8; 1]))
        .unwrap_err();
    match err {
        DevnetError::BlockRejected(r) => assert_eq!(r.reason, "bad-txns-inputs-missingorspent"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(devnet.tip(), (tip, height));
    Ok(())
}

/// `<n> OP_CSV OP_DROP <key> OP_CHECKSIG`, the shape of BOLT 3's to_local delay.
fn csv_script(key: &Key, blocks: i64) -> ScriptBuf {
    Builder::new()
        .push_int(blocks)
        .push_opcode(OP_CSV)
        .push_opcode(OP_DROP)
        .push_key(&key.pk.into())
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// `<height> OP_CLTV OP_DROP <key> OP_CHECKSIG`, the shape of an HTLC timeout.
fn cltv_script(key: &Key, height: i64) -> ScriptBuf {
    Builder::new()
        .push_int(height)
        .push_opcode(OP_CLTV)
        .push_opcode(OP_DROP)
        .push_key(&key.pk.into())
        .push_opcode(OP_CHECKSIG)
        .into_script()
}

/// Locks the mature coinbase `coin` of `key` into a P2WSH output of `witness_script`,
/// confirmed in one block. Returns the outpoint and value.
fn lock_into(
    devnet: &Devnet,
    key: &Key,
    coin: OutPoint,
    witness_script: &ScriptBuf,
) -> anyhow::Result<(OutPoint, Amount)> {
    let tx = p2wpkh_spend(
        key,
        coin,
        COINBASE,
        ScriptBuf::new_p2wsh(&witness_script.wscript_hash()),
        FEE,
    );
    let txid = devnet.send_raw_transaction(tx, None)?;
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    Ok((OutPoint { txid, vout: 0 }, COINBASE - FEE))
}

fn p2wsh_spend(
    key: &Key,
    prev: OutPoint,
    value: Amount,
    script: &ScriptBuf,
    sequence: Sequence,
    lock_time: u32,
) -> Transaction {
    let mut tx = spend_tx(prev, key.p2wpkh(), value - FEE, sequence, lock_time);
    let sig = key.sign_p2wsh(&tx, 0, script, value);
    tx.input[0].witness = Witness::from_slice(&[sig, script.to_bytes()]);
    tx
}

#[test]
fn csv_spend_is_rejected_before_maturity_and_accepted_after() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(7);
    let coin = mine_to(&devnet, &key, 101)?;
    let script = csv_script(&key, 10);
    let (locked, value) = lock_into(&devnet, &key, coin, &script)?;
    let (_, lock_height) = devnet.tip();

    // nSequence below what the script demands: the script itself fails (BIP112).
    let short = p2wsh_spend(&key, locked, value, &script, Sequence::from_height(5), 0);
    devnet.generate_to_script(5, &ScriptBuf::new_op_return([0u8; 1]))?;
    let (_, msg) = rejection(devnet.send_raw_transaction(short, None));
    assert!(
        msg.starts_with("mandatory-script-verify-flag-failed"),
        "{msg}"
    );

    // Correct nSequence but only 6 confirmations: BIP68 keeps it out of the mempool...
    let tx = p2wsh_spend(&key, locked, value, &script, Sequence::from_height(10), 0);
    let (kind, msg) = rejection(devnet.send_raw_transaction(tx.clone(), None));
    assert_eq!(
        (kind, msg.as_str()),
        (RejectKind::Premature, "non-BIP68-final")
    );
    // ...and out of blocks.
    let (tip, _) = devnet.tip();
    match devnet.mine_block_on(&tip, vec![tx.clone()], ScriptBuf::new_op_return([2u8; 1])) {
        Err(DevnetError::BlockRejected(r)) => assert_eq!(r.reason, "bad-txns-nonfinal"),
        other => panic!("block with a BIP68-locked tx accepted: {other:?}"),
    }

    // 10 blocks after the locking block's height it may be mined: tip = lock_height + 9.
    devnet.generate_to_script(3, &ScriptBuf::new_op_return([0u8; 1]))?;
    assert_eq!(devnet.tip().1, lock_height + 8);
    let (kind, _) = rejection(devnet.send_raw_transaction(tx.clone(), None));
    assert_eq!(kind, RejectKind::Premature);
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    assert_eq!(
        devnet.send_raw_transaction(tx.clone(), None)?,
        tx.compute_txid()
    );
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    assert!(devnet.read(|s| s.tx_location(&tx.compute_txid())).is_some());
    Ok(())
}

#[test]
fn cltv_spend_is_rejected_before_its_height_and_accepted_after() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(8);
    let coin = mine_to(&devnet, &key, 101)?;
    let (_, h) = devnet.tip();
    let expiry = h + 10;
    let script = cltv_script(&key, i64::from(expiry));
    let (locked, value) = lock_into(&devnet, &key, coin, &script)?;

    // nLockTime = expiry: non-final until the next block's height exceeds it.
    let tx = p2wsh_spend(
        &key,
        locked,
        value,
        &script,
        Sequence::ENABLE_LOCKTIME_NO_RBF,
        expiry,
    );
    let (kind, msg) = rejection(devnet.send_raw_transaction(tx.clone(), None));
    assert_eq!((kind, msg.as_str()), (RejectKind::Premature, "non-final"));
    let (tip, _) = devnet.tip();
    match devnet.mine_block_on(&tip, vec![tx.clone()], ScriptBuf::new_op_return([3u8; 1])) {
        Err(DevnetError::BlockRejected(r)) => assert_eq!(r.reason, "bad-txns-nonfinal"),
        other => panic!("block with a non-final tx accepted: {other:?}"),
    }
    let (_, now) = devnet.tip();
    devnet.generate_to_script(expiry - now - 1, &ScriptBuf::new_op_return([0u8; 1]))?;
    assert_eq!(devnet.tip().1, expiry - 1);
    assert_eq!(
        rejection(devnet.send_raw_transaction(tx.clone(), None)).1,
        "non-final"
    );

    // A final transaction whose nLockTime is below the script's height: BIP65 fails it.
    let early_lock = p2wsh_spend(
        &key,
        locked,
        value,
        &script,
        Sequence::ENABLE_LOCKTIME_NO_RBF,
        expiry - 1,
    );
    let (_, msg) = rejection(devnet.send_raw_transaction(early_lock, None));
    assert!(
        msg.starts_with("mandatory-script-verify-flag-failed"),
        "{msg}"
    );

    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    assert_eq!(
        devnet.send_raw_transaction(tx.clone(), None)?,
        tx.compute_txid()
    );
    Ok(())
}

#[test]
fn time_based_locks_follow_median_time_past() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(9);
    let start = 1_900_000_000u64;
    devnet.set_mock_time(Some(start));
    let coin = mine_to(&devnet, &key, 101)?;
    let mtp = devnet.read(|s| s.median_time_past(&s.tip().hash));
    // A plain P2WPKH spend with a time lock just above the tip's median time past.
    let lock = mtp + 60;
    let mut tx = spend_tx(
        coin,
        key.p2wpkh(),
        COINBASE - FEE,
        Sequence::ENABLE_LOCKTIME_NO_RBF,
        lock,
    );
    key.sign_p2wpkh(&mut tx, 0, COINBASE);
    assert_eq!(
        rejection(devnet.send_raw_transaction(tx.clone(), None)).1,
        "non-final"
    );
    // Advance the clock: the median of the last 11 blocks must pass `lock` (BIP113).
    let mut t = start;
    while devnet.read(|s| s.median_time_past(&s.tip().hash)) <= lock {
        t += 30;
        devnet.set_mock_time(Some(t));
        devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    }
    assert_eq!(
        devnet.send_raw_transaction(tx.clone(), None)?,
        tx.compute_txid()
    );
    Ok(())
}

#[test]
fn restarted_devnet_keeps_its_chain_and_invalidations() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let key = Key::new(10);
    let (tip, height, spent_txid, invalid) = {
        let devnet = Devnet::open(dir.path())?;
        let coin = mine_to(&devnet, &key, 101)?;
        let tx = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
        let txid = devnet.send_raw_transaction(tx, None)?;
        devnet.generate_to_script(2, &key.p2wpkh())?;
        // A side branch that we invalidate: must stay invalid after restart.
        let extra = devnet.generate_to_script(1, &ScriptBuf::new_op_return([9u8; 1]))?;
        devnet.invalidate_block(&extra[0])?;
        let (tip, height) = devnet.tip();
        (tip, height, txid, extra[0])
    };
    let devnet = Devnet::open(dir.path())?;
    assert_eq!(devnet.tip(), (tip, height));
    assert_eq!(height, 103);
    assert!(devnet.read(|s| s.tx_location(&spent_txid)).is_some());
    assert!(devnet.read(|s| s
        .coin(&OutPoint {
            txid: spent_txid,
            vout: 0
        })
        .is_some()));
    let status = devnet.read(|s| s.entry(&invalid).map(|e| e.status.clone()));
    assert!(matches!(
        status,
        Some(chain::devnet::BlockStatus::Failed(_))
    ));
    // A saved mempool comes back too.
    let pending = p2wpkh_spend(
        &key,
        OutPoint {
            txid: spent_txid,
            vout: 0,
        },
        COINBASE - FEE,
        key.p2wpkh(),
        FEE,
    );
    let pending_txid = devnet.send_raw_transaction(pending, None)?;
    devnet.save_mempool()?;
    drop(devnet);
    let devnet = Devnet::open(dir.path())?;
    assert!(devnet.read(|s| s.mempool().get(&pending_txid).is_some()));
    // And it keeps growing from there.
    devnet.generate_to_script(1, &key.p2wpkh())?;
    assert_eq!(devnet.tip().1, 104);
    Ok(())
}

#[test]
fn invalidate_and_reconsider_return_transactions_to_the_mempool() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(11);
    let coin = mine_to(&devnet, &key, 101)?;
    let tx = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    let txid = devnet.send_raw_transaction(tx, None)?;
    let mined = devnet.generate_to_script(1, &key.p2wpkh())?;
    assert!(devnet.read(|s| s.mempool().is_empty()));
    devnet.invalidate_block(&mined[0])?;
    assert_eq!(devnet.tip().1, 101);
    assert!(
        devnet.read(|s| s.mempool().get(&txid).is_some()),
        "tx back in mempool"
    );
    let tips = devnet.read(|s| s.chain_tips());
    assert!(tips
        .iter()
        .any(|t| t.hash == mined[0] && t.status == "invalid"));
    devnet.reconsider_block(&mined[0])?;
    assert_eq!(devnet.tip(), (mined[0], 102));
    assert!(devnet.read(|s| s.mempool().is_empty()), "confirmed again");
    Ok(())
}

#[test]
fn without_rbf_every_conflict_is_txn_mempool_conflict() -> anyhow::Result<()> {
    let devnet = Devnet::with_config(DevnetConfig {
        full_rbf: false,
        ..DevnetConfig::default()
    })?;
    let key = Key::new(12);
    let coin = mine_to(&devnet, &key, 101)?;
    devnet.send_raw_transaction(p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE), None)?;
    // Even a much higher fee does not replace.
    let richer = p2wpkh_spend(&key, coin, COINBASE, Key::new(13).p2wpkh(), FEE * 100);
    let (kind, msg) = rejection(devnet.send_raw_transaction(richer, None));
    assert_eq!(kind, RejectKind::MempoolConflict);
    assert!(
        msg.starts_with("txn-mempool-conflict, conflicts with "),
        "{msg}"
    );
    Ok(())
}

#[test]
fn a_higher_fee_conflict_replaces_the_original_and_its_descendants() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(14);
    let coin = mine_to(&devnet, &key, 101)?;
    let original = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    let original_txid = devnet.send_raw_transaction(original, None)?;
    let child = p2wpkh_spend(
        &key,
        OutPoint {
            txid: original_txid,
            vout: 0,
        },
        COINBASE - FEE,
        key.p2wpkh(),
        FEE,
    );
    let child_txid = devnet.send_raw_transaction(child, None)?;

    // Higher fee rate but less than original + child: rule 3.
    let cheap = p2wpkh_spend(
        &key,
        coin,
        COINBASE,
        Key::new(15).p2wpkh(),
        FEE + Amount::from_sat(500),
    );
    let (kind, msg) = rejection(devnet.send_raw_transaction(cheap, None));
    assert_eq!(kind, RejectKind::ReplacementRejected);
    assert!(msg.contains("less fees than conflicting txs"), "{msg}");

    // Enough to pay for both and the relay of itself: replaces both.
    let bump = p2wpkh_spend(&key, coin, COINBASE, Key::new(15).p2wpkh(), FEE * 3);
    let bump_txid = devnet.send_raw_transaction(bump, None)?;
    devnet.read(|s| {
        assert!(s.mempool().get(&bump_txid).is_some());
        assert!(s.mempool().get(&original_txid).is_none());
        assert!(s.mempool().get(&child_txid).is_none(), "descendant evicted");
    });
    Ok(())
}

#[test]
fn blocks_take_packages_by_fee_rate_so_a_child_pays_for_its_parent() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(16);
    let hashes = devnet.generate_to_script(102, &key.p2wpkh())?;
    let coinbase = |i: usize| -> anyhow::Result<OutPoint> {
        let b = devnet
            .block(&hashes[i])
            .ok_or_else(|| anyhow::anyhow!("block"))?;
        Ok(OutPoint {
            txid: b.txdata[0].compute_txid(),
            vout: 0,
        })
    };
    // Arrival order: a cheap parent, an unrelated medium-fee tx, then a rich child.
    let parent = p2wpkh_spend(
        &key,
        coinbase(0)?,
        COINBASE,
        key.p2wpkh(),
        Amount::from_sat(100),
    );
    let parent_txid = devnet.send_raw_transaction(parent, None)?;
    let unrelated = p2wpkh_spend(
        &key,
        coinbase(1)?,
        COINBASE,
        key.p2wpkh(),
        Amount::from_sat(1_000),
    );
    let unrelated_txid = devnet.send_raw_transaction(unrelated, None)?;
    let child = p2wpkh_spend(
        &key,
        OutPoint {
            txid: parent_txid,
            vout: 0,
        },
        COINBASE - Amount::from_sat(100),
        key.p2wpkh(),
        Amount::from_sat(20_000),
    );
    let child_txid = devnet.send_raw_transaction(child, None)?;
    let mined = devnet.generate_to_script(1, &key.p2wpkh())?;
    let block = devnet
        .block(&mined[0])
        .ok_or_else(|| anyhow::anyhow!("block"))?;
    let order: Vec<_> = block.txdata[1..].iter().map(|t| t.compute_txid()).collect();
    assert_eq!(order, vec![parent_txid, child_txid, unrelated_txid]);
    // The coinbase collects every fee.
    let paid: Amount = block.txdata[0].output.iter().map(|o| o.value).sum();
    assert_eq!(
        paid,
        chain::devnet::params::block_subsidy(103) + Amount::from_sat(21_100)
    );
    Ok(())
}

#[test]
fn taproot_spends_are_refused_rather_than_accepted_unchecked() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(17);
    let coin = mine_to(&devnet, &key, 101)?;
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let (xonly, _) = key.pk.0.x_only_public_key();
    let p2tr = ScriptBuf::new_p2tr(&secp, xonly, None);
    let txid = devnet.send_raw_transaction(p2wpkh_spend(&key, coin, COINBASE, p2tr, FEE), None)?;
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    // An empty witness would pass libbitcoinconsensus without the taproot flag.
    let tx = spend_tx(
        OutPoint { txid, vout: 0 },
        key.p2wpkh(),
        COINBASE - FEE - FEE,
        Sequence::MAX,
        0,
    );
    let (_, msg) = rejection(devnet.send_raw_transaction(tx, None));
    assert!(
        msg.starts_with("mandatory-script-verify-flag-failed (witness v1+"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn an_invalid_side_branch_is_only_found_out_when_it_would_win() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(18);
    let hashes = devnet.generate_to_script(3, &key.p2wpkh())?;
    let (tip, height) = devnet.tip();
    let young = devnet
        .block(&hashes[0])
        .ok_or_else(|| anyhow::anyhow!("block"))?;
    let coin = OutPoint {
        txid: young.txdata[0].compute_txid(),
        vout: 0,
    };
    let bad = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    // Same work as the tip: stored, not connected, so not yet known to be invalid.
    let x1 = devnet.mine_block_on(&hashes[1], vec![bad], ScriptBuf::new_op_return([5u8; 1]))?;
    let tips = devnet.read(|s| s.chain_tips());
    assert!(
        tips.iter()
            .any(|t| t.hash == x1 && t.status == "valid-headers"),
        "{tips:?}"
    );
    // A child makes the branch the most-work one: connecting X1 fails, the tip stays.
    match devnet.mine_block_on(&x1, vec![], ScriptBuf::new_op_return([6u8; 1])) {
        Err(DevnetError::BlockRejected(r)) => assert_eq!(r.reason, "bad-prevblk"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(devnet.tip(), (tip, height));
    let status = devnet.read(|s| s.entry(&x1).map(|e| e.status.clone()));
    assert_eq!(
        status,
        Some(BlockStatus::Failed(
            "bad-txns-premature-spend-of-coinbase".into()
        ))
    );
    Ok(())
}

#[test]
fn test_accept_of_a_parent_and_child_leaves_the_mempool_untouched() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(19);
    let coin = mine_to(&devnet, &key, 101)?;
    let parent = p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE);
    let child = p2wpkh_spend(
        &key,
        OutPoint {
            txid: parent.compute_txid(),
            vout: 0,
        },
        COINBASE - FEE,
        key.p2wpkh(),
        FEE,
    );
    let results = devnet.test_mempool_accept_package(vec![parent.clone(), child.clone()], None);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(devnet.read(|s| s.mempool().is_empty()));
    // The child alone has no parent to spend.
    let alone = devnet.test_mempool_accept_package(vec![child], None);
    assert!(matches!(&alone[0], Err(r) if r.kind == RejectKind::MissingInputs));
    Ok(())
}

/// A transaction with a dummy input and one OP_RETURN output of `size` bytes of data.
fn bulky_tx(n: u8, size: usize) -> anyhow::Result<Transaction> {
    let data = bitcoin::script::PushBytesBuf::try_from(vec![n; size])?;
    let mut script = ScriptBuf::new();
    script.push_opcode(bitcoin::opcodes::all::OP_RETURN);
    script.push_slice(data);
    let prev = OutPoint {
        txid: bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::from_byte_array([n; 32])),
        vout: 0,
    };
    Ok(spend_tx(prev, script, Amount::ZERO, Sequence::MAX, 0))
}

#[test]
fn weight_limits_apply_to_blocks_and_to_relayed_transactions() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let (tip, _) = devnet.tip();
    // Two transactions of ~2.4 MWU each: each is fine alone, the block is not.
    let txs = vec![bulky_tx(1, 600_000)?, bulky_tx(2, 600_000)?];
    match devnet.mine_block_on(&tip, txs, ScriptBuf::new_op_return([7u8; 1])) {
        Err(DevnetError::BlockRejected(r)) => assert_eq!(r.reason, "bad-blk-weight"),
        other => panic!("overweight block accepted: {other:?}"),
    }
    // Above 400,000 WU a transaction is not relayed (policy), before its inputs are looked up.
    let (kind, msg) = rejection(devnet.send_raw_transaction(bulky_tx(3, 100_001)?, None));
    assert_eq!((kind, msg.as_str()), (RejectKind::Policy, "tx-size"));
    Ok(())
}

#[test]
fn time_based_relative_locks_follow_median_time_past() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(20);
    let mut t = 1_900_000_000u64;
    devnet.set_mock_time(Some(t));
    let coin = mine_to(&devnet, &key, 101)?;
    // Confirm a fresh coin, then spend it with a BIP68 time lock of 2 × 512 s.
    let txid =
        devnet.send_raw_transaction(p2wpkh_spend(&key, coin, COINBASE, key.p2wpkh(), FEE), None)?;
    devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    let (_, coin_height) = devnet.tip();
    let coin_time = devnet.read(|s| s.mtp_at_height(coin_height - 1));
    let mut tx = spend_tx(
        OutPoint { txid, vout: 0 },
        key.p2wpkh(),
        COINBASE - FEE - FEE,
        Sequence::from_512_second_intervals(2),
        0,
    );
    key.sign_p2wpkh(&mut tx, 0, COINBASE - FEE);
    let unlock = coin_time + 1024 - 1; // the tip's median time past must exceed this
    let mut refused = 0;
    while devnet.read(|s| s.median_time_past(&s.tip().hash)) <= unlock {
        refused += 1;
        let (kind, msg) = rejection(devnet.send_raw_transaction(tx.clone(), None));
        assert_eq!(
            (kind, msg.as_str()),
            (RejectKind::Premature, "non-BIP68-final")
        );
        t += 100;
        devnet.set_mock_time(Some(t));
        devnet.generate_to_script(1, &ScriptBuf::new_op_return([0u8; 1]))?;
    }
    assert!(refused > 5, "locked for several blocks, got {refused}");
    assert_eq!(
        devnet.send_raw_transaction(tx.clone(), None)?,
        tx.compute_txid()
    );
    Ok(())
}

#[test]
fn a_mempool_cluster_holds_at_most_64_transactions() -> anyhow::Result<()> {
    let devnet = Devnet::in_memory();
    let key = Key::new(24);
    let mut prev = mine_to(&devnet, &key, 101)?;
    let mut value = COINBASE;
    for n in 1..=65 {
        let tx = p2wpkh_spend(&key, prev, value, key.p2wpkh(), FEE);
        let result = devnet.send_raw_transaction(tx.clone(), None);
        if n <= 64 {
            result?;
        } else {
            let (kind, msg) = rejection(result);
            assert_eq!(
                (kind, msg.as_str()),
                (RejectKind::Policy, "too-large-cluster")
            );
        }
        prev = OutPoint {
            txid: tx.compute_txid(),
            vout: 0,
        };
        value -= FEE;
    }
    assert_eq!(devnet.read(|s| s.mempool().len()), 64);
    Ok(())
}
