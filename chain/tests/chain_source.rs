//! One test suite for the [`ChainSource`] / [`ChainControl`] interface, run against
//! every back-end: the in-process devnet, the JSON-RPC client talking to the devnet
//! server over HTTP, and (when `BITCOIND_RPC_URL` is set) a real `bitcoind -regtest`.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, OutPoint, Txid};
use chain::devnet::Devnet;
use chain::poller::{ChainEvent, ChainPoller};
use chain::rpc::client::{RpcClient, RpcCredentials};
use chain::rpc::server::{serve, RpcAuth};
use chain::source::{ChainControl, ChainError, ChainSource, TxStatus};
use common::{p2wpkh_spend, Key};

const FEE: Amount = Amount::from_sat(1_000);

fn reason(r: Result<Txid, ChainError>) -> (i64, String) {
    let e = r.expect_err("expected a rejection");
    match &e {
        ChainError::TxRejected { code, .. } => {
            (*code, e.reject_reason().unwrap_or_default().to_string())
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn events(list: &[ChainEvent]) -> Vec<(char, BlockHash)> {
    list.iter()
        .map(|e| match e {
            ChainEvent::BlockConnected { block_ref, .. } => ('+', block_ref.hash),
            ChainEvent::BlockDisconnected { block_ref } => ('-', block_ref.hash),
        })
        .collect()
}

async fn suite<C: ChainControl + 'static>(chain: Arc<C>) -> anyhow::Result<()> {
    let (key, key2, key3) = (Key::new(31), Key::new(32), Key::new(33));
    let start = chain.tip().await?;
    let mined = chain.generate_to_address(101, &key.address()).await?;
    assert_eq!(mined.len(), 101);
    let tip = chain.tip().await?;
    assert_eq!((tip.hash, tip.height), (mined[100], start.height + 101));
    assert_eq!(chain.block_hash(start.height + 1).await?, Some(mined[0]));
    let header = chain.header(&mined[0]).await?.context("header")?;
    assert_eq!(
        (header.height, header.confirmations),
        (start.height + 1, 101)
    );
    assert_eq!(header.header.block_hash(), mined[0]);
    let first = chain.block(&mined[0]).await?.context("block")?;
    assert!(first.check_merkle_root());
    assert_eq!(first.txdata[0].output[0].script_pubkey, key.p2wpkh());
    let coin = OutPoint {
        txid: first.txdata[0].compute_txid(),
        vout: 0,
    };
    let value = first.txdata[0].output[0].value;

    // Rejections carry Core's codes and reasons.
    let last = chain.block(&mined[100]).await?.context("block")?;
    let young = OutPoint {
        txid: last.txdata[0].compute_txid(),
        vout: 0,
    };
    let premature = p2wpkh_spend(
        &key,
        young,
        last.txdata[0].output[0].value,
        key.p2wpkh(),
        FEE,
    );
    assert_eq!(
        reason(chain.broadcast(&premature).await),
        (-26, "bad-txns-premature-spend-of-coinbase".into())
    );
    let free = p2wpkh_spend(&key, coin, value, key.p2wpkh(), Amount::ZERO);
    assert_eq!(
        reason(chain.broadcast(&free).await),
        (-26, "min relay fee not met".into())
    );

    // A valid spend: test, broadcast (twice is fine), then watch it.
    let tx1 = p2wpkh_spend(&key, coin, value, key2.p2wpkh(), FEE);
    chain.test_accept(&tx1).await?;
    let txid1 = chain.broadcast(&tx1).await?;
    assert_eq!(txid1, tx1.compute_txid());
    assert_eq!(chain.broadcast(&tx1).await?, txid1);
    assert!(chain.mempool_txids().await?.contains(&txid1));
    assert_eq!(chain.tx_status(&txid1).await?, TxStatus::InMempool);
    assert_eq!(chain.confirmations(&txid1).await?, 0);
    assert!(
        chain.tx_out(&coin, true).await?.is_none(),
        "spent in mempool"
    );
    let unspent = chain
        .tx_out(&coin, false)
        .await?
        .context("unspent in chain")?;
    assert!(unspent.coinbase);
    assert_eq!((unspent.output.value, unspent.confirmations), (value, 101));
    assert_eq!(
        chain
            .tx_out(
                &OutPoint {
                    txid: txid1,
                    vout: 0
                },
                true
            )
            .await?
            .map(|o| o.confirmations),
        Some(0)
    );
    let spend = chain
        .find_spend(&coin, start.height)
        .await?
        .context("mempool spend")?;
    assert_eq!(
        (spend.tx.compute_txid(), spend.input_index, spend.block),
        (txid1, 0, None)
    );

    // A conflicting spend: refused (the devnet never replaces; bitcoind v28+ would need a
    // higher fee for full-RBF, so it says "insufficient fee").
    let conflict = p2wpkh_spend(&key, coin, value, key3.p2wpkh(), FEE);
    let (code, why) = reason(chain.broadcast(&conflict).await);
    assert_eq!(code, -26);
    assert!(
        why == "txn-mempool-conflict" || why == "insufficient fee",
        "{why}"
    );

    // Confirmation.
    let conf = chain.generate_to_address(1, &key2.address()).await?;
    match chain.tx_status(&txid1).await? {
        TxStatus::Confirmed {
            block,
            confirmations,
        } => {
            assert_eq!(
                (block.hash, block.height, confirmations),
                (conf[0], start.height + 102, 1)
            );
        }
        other => panic!("not confirmed: {other:?}"),
    }
    let spend = chain
        .find_spend(&coin, start.height)
        .await?
        .context("confirmed spend")?;
    assert_eq!(spend.block.map(|b| b.hash), Some(conf[0]));
    assert_eq!(
        reason(chain.broadcast(&conflict).await),
        (-25, "bad-txns-inputs-missingorspent".into())
    );

    // Reorgs through invalidateblock/reconsiderblock; the event stream follows.
    // The hub holds the source as a trait object; the poller works on that too.
    let dyn_source: Arc<dyn ChainSource> = chain.clone();
    let mut poller = ChainPoller::from_tip(dyn_source).await?;
    let out1 = OutPoint {
        txid: txid1,
        vout: 0,
    };
    let tx2 = p2wpkh_spend(&key2, out1, value - FEE, key3.p2wpkh(), FEE);
    let txid2 = chain.broadcast(&tx2).await?;
    let g = chain.generate_to_address(2, &key.address()).await?;
    assert_eq!(
        events(&poller.poll().await?),
        vec![('+', g[0]), ('+', g[1])]
    );
    assert_eq!(chain.confirmations(&txid2).await?, 2);
    chain.invalidate_block(&g[0]).await?;
    assert_eq!(
        events(&poller.poll().await?),
        vec![('-', g[1]), ('-', g[0])]
    );
    assert_eq!(
        chain.tx_status(&txid2).await?,
        TxStatus::InMempool,
        "back to the mempool"
    );
    let n = chain.generate_to_address(3, &key3.address()).await?;
    assert_eq!(
        events(&poller.poll().await?),
        vec![('+', n[0]), ('+', n[1]), ('+', n[2])]
    );
    assert_eq!(chain.confirmations(&txid2).await?, 3);
    chain.reconsider_block(&g[0]).await?;
    assert!(
        poller.poll().await?.is_empty(),
        "the 2-block branch has less work"
    );
    chain.invalidate_block(&n[0]).await?;
    assert_eq!(
        events(&poller.poll().await?),
        vec![
            ('-', n[2]),
            ('-', n[1]),
            ('-', n[0]),
            ('+', g[0]),
            ('+', g[1])
        ]
    );
    chain.reconsider_block(&n[0]).await?;
    assert_eq!(
        events(&poller.poll().await?),
        vec![
            ('-', g[1]),
            ('-', g[0]),
            ('+', n[0]),
            ('+', n[1]),
            ('+', n[2])
        ]
    );
    assert_eq!(chain.tip().await?.hash, n[2]);

    // Unknown things are `None`, not errors.
    let zero = BlockHash::all_zeros();
    assert!(chain.block(&zero).await?.is_none());
    assert!(chain.header(&zero).await?.is_none());
    assert!(chain.transaction(&Txid::all_zeros()).await?.is_none());
    let (_, genesis) = chain.block_at(0).await?.context("genesis")?;
    let genesis_coinbase = genesis.txdata[0].compute_txid();
    assert!(
        chain.transaction(&genesis_coinbase).await?.is_none(),
        "not an ordinary transaction"
    );
    assert!(chain
        .block_hash(chain.tip().await?.height + 1000)
        .await?
        .is_none());
    chain.estimate_fee_rate(6).await?;
    Ok(())
}

#[tokio::test]
async fn suite_on_in_process_devnet() -> anyhow::Result<()> {
    let devnet = Arc::new(Devnet::in_memory());
    suite(devnet.clone()).await?;
    // The suite's spends paid 1000 sat for ~110 vB: the estimate reflects recent blocks.
    let rate = devnet
        .estimate_fee_rate(6)
        .await?
        .context("an estimate from recent blocks")?;
    let sat_per_vb = rate.to_sat_per_kwu() * 4 / 1000;
    assert!((5..=10).contains(&sat_per_vb), "{sat_per_vb} sat/vB");
    Ok(())
}

#[tokio::test]
async fn suite_on_rpc_client_against_devnet_server() -> anyhow::Result<()> {
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let auth = RpcAuth {
        user: "u".into(),
        password: "p".into(),
    };
    let server = serve(Devnet::in_memory(), addr, auth).await?;
    let client = RpcClient::new(
        format!("http://{}", server.addr),
        RpcCredentials::UserPass("u".into(), "p".into()),
    )?;
    let result = suite(Arc::new(client)).await;
    let wrong = RpcClient::new(
        format!("http://{}", server.addr),
        RpcCredentials::UserPass("u".into(), "x".into()),
    )?;
    assert_eq!(
        chain::source::ChainSource::tip(&wrong).await,
        Err(ChainError::Unauthorized)
    );
    server.shutdown().await?;
    result
}

/// Runs the same suite against a real node: start `bitcoind -regtest -txindex=1` and set
/// `BITCOIND_RPC_URL` (e.g. `http://127.0.0.1:18443`) plus either `BITCOIND_RPC_COOKIE`
/// (path to `.cookie`) or `BITCOIND_RPC_USER` / `BITCOIND_RPC_PASSWORD`.
#[tokio::test]
async fn suite_on_rpc_client_against_real_bitcoind() -> anyhow::Result<()> {
    let Ok(url) = std::env::var("BITCOIND_RPC_URL") else {
        eprintln!("skipped: set BITCOIND_RPC_URL (and BITCOIND_RPC_COOKIE or BITCOIND_RPC_USER/PASSWORD) to run against bitcoind -regtest");
        return Ok(());
    };
    let credentials = match std::env::var("BITCOIND_RPC_COOKIE") {
        Ok(path) => RpcCredentials::from_cookie_file(Path::new(&path))?,
        Err(_) => RpcCredentials::UserPass(
            std::env::var("BITCOIND_RPC_USER").context("BITCOIND_RPC_USER")?,
            std::env::var("BITCOIND_RPC_PASSWORD").context("BITCOIND_RPC_PASSWORD")?,
        ),
    };
    suite(Arc::new(RpcClient::new(url, credentials)?)).await
}
