//! Two competing branches on the devnet: the most-work branch wins, the event stream
//! disconnects and connects exactly the right blocks, the wallet's balance follows the
//! reorg and rolls back, and the funding transaction goes back to the mempool.

mod common;

use std::sync::Arc;

use bitcoin::blockdata::opcodes::all::OP_CHECKMULTISIG;
use bitcoin::script::Builder;
use bitcoin::{Amount, BlockHash, FeeRate, Network, OutPoint, ScriptBuf};
use chain::devnet::Devnet;
use chain::poller::{ChainEvent, ChainPoller};
use chain::source::{BlockRef, ChainSource, TxStatus};
use chain::wallet::Wallet;
use common::Key;

fn funding_script() -> ScriptBuf {
    // BOLT 3 funding witness script: 2 <pubkey1> <pubkey2> 2 OP_CHECKMULTISIG.
    let (a, b) = (Key::new(21), Key::new(22));
    let ws = Builder::new()
        .push_int(2)
        .push_key(&a.pk.into())
        .push_key(&b.pk.into())
        .push_int(2)
        .push_opcode(OP_CHECKMULTISIG)
        .into_script();
    ScriptBuf::new_p2wsh(&ws.wscript_hash())
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

async fn sync(
    poller: &mut ChainPoller<Devnet>,
    wallet: &mut Wallet,
) -> anyhow::Result<Vec<ChainEvent>> {
    let events = poller.poll().await?;
    for e in &events {
        wallet.apply(e)?;
    }
    Ok(events)
}

#[tokio::test]
async fn most_work_branch_wins_and_wallet_and_events_follow_the_reorg() -> anyhow::Result<()> {
    let devnet = Arc::new(Devnet::in_memory());
    let mut wallet = Wallet::from_seed(&[7u8; 32], Network::Regtest)?;
    let genesis = BlockRef {
        hash: devnet.tip().0,
        height: 0,
    };
    let mut poller = ChainPoller::from_block(devnet.clone(), genesis);

    let address = wallet.new_address()?;
    devnet.generate_to_address(101, address.as_unchecked())?;
    let events = sync(&mut poller, &mut wallet).await?;
    assert_eq!(events.len(), 101);
    let before = wallet.balance();
    // Coinbases of heights 1 and 2 may be spent in block 102 (depth 100, as consensus says).
    assert_eq!(before.spendable, Amount::from_btc(100.0)?);
    assert_eq!(before.immature, Amount::from_btc(4950.0)?);

    // Fund a channel: 2-of-2 P2WSH output, signed by the wallet.
    let funding = wallet.build_funding_tx(
        funding_script(),
        Amount::from_sat(1_000_000),
        FeeRate::from_sat_per_vb_u32(2),
    )?;
    let funding_txid = devnet.broadcast(&funding.tx).await?;
    let fork = devnet.tip().0;
    let other = ScriptBuf::new_op_return([0xbb; 1]);

    // Branch A: one block with the funding transaction (mined to an outside script).
    let a1 = devnet.mine_block_on(&fork, vec![funding.tx.clone()], other.clone())?;
    assert_eq!(
        hashes(&sync(&mut poller, &mut wallet).await?),
        vec![('+', a1)]
    );
    assert_eq!(devnet.confirmations(&funding_txid).await?, 1);
    let funded = wallet.balance();
    assert_eq!(
        funded.total(),
        before.total() - Amount::from_sat(1_000_000) - funding.fee
    );
    assert_eq!(
        funded.locked,
        Amount::ZERO,
        "the spent coin is gone, change is ours"
    );

    // Branch B: same height first (tie: the first-seen tip stays), then one more block.
    let b1 = devnet.mine_block_on(&fork, vec![], other.clone())?;
    assert_eq!(devnet.tip().0, a1, "equal work keeps the first-seen tip");
    assert!(sync(&mut poller, &mut wallet).await?.is_empty());
    let b2 = devnet.mine_block_on(&b1, vec![], other.clone())?;
    assert_eq!(devnet.tip(), (b2, 103));
    assert_eq!(
        hashes(&sync(&mut poller, &mut wallet).await?),
        vec![('-', a1), ('+', b1), ('+', b2)]
    );
    // The funding tx is unconfirmed again and waits in the mempool.
    assert_eq!(devnet.tx_status(&funding_txid).await?, TxStatus::InMempool);
    let rolled_back = wallet.balance();
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
        hashes(&sync(&mut poller, &mut wallet).await?),
        vec![('-', b2), ('-', b1), ('+', a1), ('+', a2), ('+', a3)]
    );
    assert_eq!(devnet.confirmations(&funding_txid).await?, 3);
    assert!(devnet.read(|s| s.mempool().is_empty()));
    assert_eq!(wallet.balance().total(), funded.total());
    assert_eq!(wallet.balance().locked, Amount::ZERO);

    // The channel's funding outpoint: unspent, with a spender once someone spends it.
    let funding_outpoint = OutPoint {
        txid: funding_txid,
        vout: funding.funding_output_index,
    };
    assert_eq!(devnet.find_spend(&funding_outpoint, 101).await?, None);
    assert!(devnet.tx_out(&funding_outpoint, true).await?.is_some());
    Ok(())
}
