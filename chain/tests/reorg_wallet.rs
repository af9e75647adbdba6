//! Two competing branches on the devnet: the most-work branch wins, the event stream
//! disconnects and connects exactly the right blocks, the wallet's balance and the
//! watcher's confirmations follow the reorg and roll back, the funding transaction goes
//! back to the mempool, and a 2-of-2 spend of the funding output is noticed (and
//! un-noticed when its block is disconnected).

mod common;

use std::sync::Arc;

use anyhow::Context;
use bitcoin::blockdata::opcodes::all::OP_CHECKMULTISIG;
use bitcoin::script::Builder;
use bitcoin::{Amount, BlockHash, FeeRate, Network, OutPoint, ScriptBuf, Sequence, Witness};
use chain::devnet::Devnet;
use chain::poller::{ChainEvent, ChainPoller};
use chain::source::{BlockRef, ChainSource, TxStatus};
use chain::wallet::Wallet;
use chain::watch::{ChainWatcher, WatchEvent};
use common::{spend_tx, Key};

/// BOLT 3 funding witness script: 2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG.
fn funding_witness_script() -> ScriptBuf {
    let (a, b) = (Key::new(21), Key::new(22));
    Builder::new()
        .push_int(2)
        .push_key(&a.pk.into())
        .push_key(&b.pk.into())
        .push_int(2)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script()
}

fn hashes(events: &[ChainEvent]) -> Vec<(char, BlockHash)> {
    events
        .iter()
        .map(|e| match e {
            ChainEvent::BlockConnected { block_ref, .. } => ('+', block_ref.hash),
            ChainEvent::BlockDisconnected { block_ref } => ('-', block_ref.hash),
        })
        .collect()
}

/// What the hub would run: a poller feeding the wallet and the watcher.
struct Follower {
    poller: ChainPoller<Devnet>,
    wallet: Wallet,
    watcher: ChainWatcher,
    noticed: Vec<WatchEvent>,
}

impl Follower {
    async fn sync(&mut self) -> anyhow::Result<Vec<ChainEvent>> {
        let events = self.poller.poll().await?;
        for e in &events {
            self.wallet.apply(e)?;
            self.noticed.extend(self.watcher.apply(e));
        }
        Ok(events)
    }

    fn take_noticed(&mut self) -> Vec<WatchEvent> {
        std::mem::take(&mut self.noticed)
    }
}

#[tokio::test]
async fn most_work_branch_wins_and_wallet_and_events_follow_the_reorg() -> anyhow::Result<()> {
    let devnet = Arc::new(Devnet::in_memory());
    let genesis = BlockRef {
        hash: devnet.tip().0,
        height: 0,
    };
    let mut f = Follower {
        poller: ChainPoller::from_block(devnet.clone(), genesis),
        wallet: Wallet::from_seed(&[7u8; 32], Network::Regtest)?,
        watcher: ChainWatcher::new(),
        noticed: Vec::new(),
    };

    let address = f.wallet.new_address()?;
    devnet.generate_to_address(101, address.as_unchecked())?;
    assert_eq!(f.sync().await?.len(), 101);
    let before = f.wallet.balance();
    // Coinbases of heights 1 and 2 may be spent in block 102 (depth 100, as consensus says).
    assert_eq!(before.spendable, Amount::from_btc(100.0)?);
    assert_eq!(before.immature, Amount::from_btc(4950.0)?);

    // Fund a channel: 2-of-2 P2WSH output, signed by the wallet.
    let ws = funding_witness_script();
    let capacity = Amount::from_sat(1_000_000);
    let funding = f.wallet.build_funding_tx(
        ScriptBuf::new_p2wsh(&ws.wscript_hash()),
        capacity,
        FeeRate::from_sat_per_vb_u32(2),
    )?;
    let funding_txid = devnet.broadcast(&funding.tx).await?;
    let funding_outpoint = OutPoint {
        txid: funding_txid,
        vout: funding.funding_output_index,
    };
    f.watcher.watch_tx(funding_txid);
    f.watcher.watch_outpoint(funding_outpoint);
    let fork = devnet.tip().0;
    let other = ScriptBuf::new_op_return([0xbb; 1]);

    // Branch A: one block with the funding transaction (mined to an outside script).
    let a1 = devnet.mine_block_on(&fork, vec![funding.tx.clone()], other.clone())?;
    let a1_ref = BlockRef {
        hash: a1,
        height: 102,
    };
    assert_eq!(hashes(&f.sync().await?), vec![('+', a1)]);
    assert_eq!(devnet.confirmations(&funding_txid).await?, 1);
    assert_eq!(f.watcher.confirmations(&funding_txid), 1);
    assert_eq!(
        f.take_noticed(),
        vec![WatchEvent::TxConfirmed {
            txid: funding_txid,
            block: a1_ref
        }]
    );
    let funded = f.wallet.balance();
    assert_eq!(funded.total(), before.total() - capacity - funding.fee);
    assert_eq!(
        funded.locked,
        Amount::ZERO,
        "the spent coin is gone, change is ours"
    );

    // Branch B: same height first (tie: the first-seen tip stays), then one more block.
    let b1 = devnet.mine_block_on(&fork, vec![], other.clone())?;
    assert_eq!(devnet.tip().0, a1, "equal work keeps the first-seen tip");
    assert!(f.sync().await?.is_empty());
    let b2 = devnet.mine_block_on(&b1, vec![], other.clone())?;
    assert_eq!(devnet.tip(), (b2, 103));
    assert_eq!(
        hashes(&f.sync().await?),
        vec![('-', a1), ('+', b1), ('+', b2)]
    );
    // The funding tx is unconfirmed again and waits in the mempool.
    assert_eq!(devnet.tx_status(&funding_txid).await?, TxStatus::InMempool);
    assert_eq!(
        f.take_noticed(),
        vec![WatchEvent::TxUnconfirmed { txid: funding_txid }]
    );
    assert_eq!(f.watcher.confirmations(&funding_txid), 0);
    let rolled_back = f.wallet.balance();
    assert_eq!(
        rolled_back.total(),
        before.total(),
        "back to the balance before funding"
    );
    assert_eq!(
        rolled_back.locked,
        Amount::from_btc(50.0)?,
        "the coin is reserved by our unconfirmed funding tx"
    );
    let tips = devnet.read(|s| s.chain_tips());
    assert!(tips
        .iter()
        .any(|t| t.hash == a1 && t.status == "valid-fork" && t.branch_len == 1));

    // Branch A comes back with more work: A1 A2 A3 beats B1 B2.
    let a2 = devnet.mine_block_on(&a1, vec![], other.clone())?;
    assert_eq!(devnet.tip().0, b2);
    let a3 = devnet.mine_block_on(&a2, vec![], other.clone())?;
    assert_eq!(devnet.tip(), (a3, 104));
    assert_eq!(
        hashes(&f.sync().await?),
        vec![('-', b2), ('-', b1), ('+', a1), ('+', a2), ('+', a3)]
    );
    assert_eq!(devnet.confirmations(&funding_txid).await?, 3);
    assert_eq!(f.watcher.confirmations(&funding_txid), 3);
    assert_eq!(
        f.take_noticed(),
        vec![WatchEvent::TxConfirmed {
            txid: funding_txid,
            block: a1_ref
        }]
    );
    assert!(devnet.read(|s| s.mempool().is_empty()));
    assert_eq!(f.wallet.balance().total(), funded.total());
    assert_eq!(f.wallet.balance().locked, Amount::ZERO);

    // The funding outpoint: unspent, then spent by a close signed by both parties.
    assert_eq!(devnet.find_spend(&funding_outpoint, 101).await?, None);
    assert!(devnet.tx_out(&funding_outpoint, true).await?.is_some());
    let mut close = spend_tx(
        funding_outpoint,
        Key::new(23).p2wpkh(),
        capacity - Amount::from_sat(500),
        Sequence::MAX,
        0,
    );
    let sig_a = Key::new(21).sign_p2wsh(&close, 0, &ws, capacity);
    let sig_b = Key::new(22).sign_p2wsh(&close, 0, &ws, capacity);
    close.input[0].witness = Witness::from_slice(&[Vec::new(), sig_a, sig_b, ws.to_bytes()]);
    let close_txid = devnet.broadcast(&close).await?;
    let spend = devnet
        .find_spend(&funding_outpoint, 101)
        .await?
        .context("mempool spend")?;
    assert_eq!((spend.tx.compute_txid(), spend.block), (close_txid, None));
    let c1 = devnet.mine_block_on(&a3, vec![close.clone()], other.clone())?;
    f.sync().await?;
    let c1_ref = BlockRef {
        hash: c1,
        height: 105,
    };
    assert_eq!(f.watcher.spent_in(&funding_outpoint), Some(c1_ref));
    assert_eq!(
        f.take_noticed(),
        vec![WatchEvent::OutpointSpent {
            outpoint: funding_outpoint,
            tx: close,
            input_index: 0,
            block: c1_ref
        }]
    );
    devnet.invalidate_block(&c1)?;
    f.sync().await?;
    assert_eq!(
        f.take_noticed(),
        vec![WatchEvent::OutpointUnspent {
            outpoint: funding_outpoint
        }]
    );
    assert_eq!(
        devnet
            .find_spend(&funding_outpoint, 101)
            .await?
            .map(|s| s.block),
        Some(None),
        "back in the mempool"
    );
    Ok(())
}
