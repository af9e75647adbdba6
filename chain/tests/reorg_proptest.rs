//! Property test: random sequences of blocks on random parents (some carrying spends,
//! some invalid), invalidations and reconsiderations. After every step the event stream
//! replayed onto a model chain equals the devnet's active chain, and the active chain is
//! the most-work valid one; at the end, a fresh devnet fed only the active chain's blocks
//! reaches the same tip with the same UTXO set size (disconnects undo connects exactly).

mod common;

use std::sync::Arc;

use bitcoin::{Amount, BlockHash, OutPoint, ScriptBuf};
use chain::devnet::{BlockStatus, Devnet};
use chain::poller::{ChainEvent, ChainPoller};
use chain::source::BlockRef;
use common::{p2wpkh_spend, Key};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Mine a block on the block `back` places before the newest known block, maybe
    /// spending coinbase number `spend` (may be a double spend on that branch).
    Mine { back: usize, spend: Option<usize> },
    /// Mine on the tip with the mempool.
    Generate,
    /// Invalidate the active block `depth` below the tip.
    Invalidate { depth: u32 },
    /// Reconsider the most recently invalidated block.
    Reconsider,
    /// Broadcast a spend of coinbase number `spend`.
    Broadcast { spend: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..4, proptest::option::of(0usize..3)).prop_map(|(back, spend)| Op::Mine { back, spend }),
        2 => Just(Op::Generate),
        1 => (0u32..3).prop_map(|depth| Op::Invalidate { depth }),
        1 => Just(Op::Reconsider),
        1 => (0usize..3).prop_map(|spend| Op::Broadcast { spend }),
    ]
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    rt.block_on(async move {
        let devnet = Arc::new(Devnet::in_memory());
        let key = Key::new(50);
        let premined = devnet
            .generate_to_script(103, &key.p2wpkh())
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let coins: Vec<(OutPoint, Amount)> = premined[..3]
            .iter()
            .filter_map(|h| devnet.block(h))
            .map(|b| {
                (
                    OutPoint {
                        txid: b.txdata[0].compute_txid(),
                        vout: 0,
                    },
                    b.txdata[0].output[0].value,
                )
            })
            .collect();
        let mut known: Vec<BlockHash> = premined.clone();
        let mut invalidated: Vec<BlockHash> = Vec::new();
        let genesis = BlockRef {
            hash: devnet.read(|s| s.hash_at(0)).unwrap_or(premined[0]),
            height: 0,
        };
        let mut poller = ChainPoller::from_block(devnet.clone(), genesis);
        let mut model: Vec<BlockHash> = vec![genesis.hash];
        let mut salt = 0u8;
        for op in ops {
            salt = salt.wrapping_add(1);
            let script = ScriptBuf::new_op_return([salt; 2]);
            match op {
                Op::Mine { back, spend } => {
                    let parent = known[known.len() - 1 - back.min(known.len() - 1)];
                    let txs = spend
                        .map(|i| {
                            let (coin, value) = coins[i];
                            vec![p2wpkh_spend(
                                &key,
                                coin,
                                value,
                                ScriptBuf::new_op_return([salt; 3]),
                                Amount::from_sat(1_000 + u64::from(salt)),
                            )]
                        })
                        .unwrap_or_default();
                    // Invalid blocks (double spends on this branch) are simply rejected.
                    if let Ok(h) = devnet.mine_block_on(&parent, txs, script) {
                        known.push(h);
                    }
                }
                Op::Generate => {
                    if let Ok(hs) = devnet.generate_to_script(1, &script) {
                        known.extend(hs);
                    }
                }
                Op::Invalidate { depth } => {
                    let (_, height) = devnet.tip();
                    if let Some(h) = devnet.read(|s| s.hash_at(height.saturating_sub(depth).max(1)))
                    {
                        if devnet.invalidate_block(&h).is_ok() {
                            invalidated.push(h);
                        }
                    }
                }
                Op::Reconsider => {
                    if let Some(h) = invalidated.pop() {
                        devnet
                            .reconsider_block(&h)
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                }
                Op::Broadcast { spend } => {
                    let (coin, value) = coins[spend];
                    let tx = p2wpkh_spend(
                        &key,
                        coin,
                        value,
                        ScriptBuf::new_op_return([salt; 4]),
                        Amount::from_sat(2_000),
                    );
                    let _ = devnet.send_raw_transaction(tx, None);
                }
            }
            // The event stream, replayed onto a model, equals the active chain.
            loop {
                let events = poller
                    .poll()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if events.is_empty() {
                    break;
                }
                for e in events {
                    match e {
                        ChainEvent::BlockConnected { block_ref, block } => {
                            prop_assert_eq!(block_ref.height as usize, model.len());
                            prop_assert_eq!(block.header.prev_blockhash, model[model.len() - 1]);
                            model.push(block_ref.hash);
                        }
                        ChainEvent::BlockDisconnected { block_ref } => {
                            prop_assert_eq!(model.pop(), Some(block_ref.hash));
                        }
                    }
                }
            }
            let active: Vec<BlockHash> =
                devnet.read(|s| (0..=s.height()).filter_map(|h| s.hash_at(h)).collect());
            prop_assert_eq!(&model, &active);
            // The tip has the most work among blocks not known to be invalid.
            let (best_work, tip_work) = devnet.read(|s| {
                let best = s
                    .entries()
                    .filter(|e| e.status == BlockStatus::Valid)
                    .map(|e| e.chainwork)
                    .max();
                (best, s.tip().chainwork)
            });
            prop_assert_eq!(best_work, Some(tip_work));
        }
        // Disconnects undid connects exactly: a fresh node given only the active chain agrees.
        let fresh = Devnet::in_memory();
        for hash in &model[1..] {
            let block = devnet
                .block(hash)
                .ok_or_else(|| TestCaseError::fail("missing block"))?;
            fresh
                .submit_block((*block).clone())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(fresh.tip(), devnet.tip());
        prop_assert_eq!(
            fresh.read(|s| s.utxo_count()),
            devnet.read(|s| s.utxo_count())
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn event_stream_and_utxo_set_follow_any_sequence_of_reorgs(ops in proptest::collection::vec(op(), 1..16)) {
        run(ops)?;
    }
}
