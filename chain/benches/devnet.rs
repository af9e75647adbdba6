//! Devnet throughput: blocks/s validated (full validation, scripts included) and
//! transactions/s accepted to the mempool. Short-running: ~10 s in total.
//!
//! Run with `cargo bench -p chain --bench devnet`.

use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, Block, FeeRate, Network, ScriptBuf, Transaction, TxOut};
use chain::devnet::Devnet;
use chain::poller::ChainEvent;
use chain::source::BlockRef;
use chain::wallet::Wallet;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const FAN_OUT: usize = 500;

struct Fixture {
    /// Blocks 1..=102: 101 to the wallet, then the fan-out transaction.
    prefix: Vec<Block>,
    /// 500 independent signed P2WPKH spends valid on top of `prefix`.
    spends: Vec<Transaction>,
    /// A block holding all of `spends`, on top of `prefix`.
    full_block: Block,
}

fn sync(devnet: &Devnet, wallet: &mut Wallet, from: u32) -> u32 {
    let (_, tip) = devnet.tip();
    for height in from..=tip {
        let Some(hash) = devnet.read(|s| s.hash_at(height)) else {
            break;
        };
        let Some(block) = devnet.block(&hash) else {
            break;
        };
        let event = ChainEvent::BlockConnected {
            block_ref: BlockRef { hash, height },
            block,
        };
        wallet.apply(&event).expect("wallet follows the chain");
    }
    tip + 1
}

fn fixture() -> Fixture {
    let devnet = Devnet::in_memory();
    let mut wallet = Wallet::from_seed(&[42u8; 32], Network::Regtest).expect("wallet");
    let address = wallet.new_address().expect("address");
    devnet
        .generate_to_address(101, address.as_unchecked())
        .expect("mine");
    let next = sync(&devnet, &mut wallet, 1);
    let outputs: Vec<TxOut> = (0..FAN_OUT)
        .map(|_| TxOut {
            value: Amount::from_sat(9_000_000),
            script_pubkey: wallet.new_address().expect("address").script_pubkey(),
        })
        .collect();
    let rate = FeeRate::from_sat_per_vb_u32(2);
    let (fan_out, _) = wallet.build_and_sign(outputs, rate).expect("fan-out");
    devnet
        .send_raw_transaction(fan_out, None)
        .expect("fan-out accepted");
    devnet
        .generate_to_script(1, &ScriptBuf::new_op_return([1u8; 1]))
        .expect("mine");
    sync(&devnet, &mut wallet, next);
    let sink = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_raw_hash(
        bitcoin::hashes::Hash::all_zeros(),
    ));
    let spends: Vec<Transaction> = (0..FAN_OUT)
        .map(|_| {
            let out = TxOut {
                value: Amount::from_sat(8_000_000),
                script_pubkey: sink.clone(),
            };
            wallet.build_and_sign(vec![out], rate).expect("spend").0
        })
        .collect();
    let (_, tip) = devnet.tip();
    let prefix: Vec<Block> = (1..=tip)
        .filter_map(|h| {
            devnet
                .read(|s| s.hash_at(h))
                .and_then(|hash| devnet.block(&hash))
        })
        .map(|b| (*b).clone())
        .collect();
    for tx in &spends {
        devnet
            .send_raw_transaction(tx.clone(), None)
            .expect("spend accepted");
    }
    let hashes = devnet
        .generate_to_script(1, &ScriptBuf::new_op_return([2u8; 1]))
        .expect("mine");
    let full_block = devnet
        .block(&hashes[0])
        .map(|b| (*b).clone())
        .expect("block");
    assert_eq!(full_block.txdata.len(), FAN_OUT + 1);
    Fixture {
        prefix,
        spends,
        full_block,
    }
}

fn load(prefix: &[Block]) -> Devnet {
    let devnet = Devnet::in_memory();
    for b in prefix {
        devnet.submit_block(b.clone()).expect("valid block");
    }
    devnet
}

fn benches(c: &mut Criterion) {
    let fx = Arc::new(fixture());
    let mut group = c.benchmark_group("devnet");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    group.throughput(Throughput::Elements(fx.prefix.len() as u64));
    group.bench_function("validate_102_small_blocks", |b| b.iter(|| load(&fx.prefix)));

    group.throughput(Throughput::Elements(FAN_OUT as u64));
    group.bench_function("validate_block_with_500_p2wpkh_txs (txs/s)", |b| {
        b.iter_batched(
            || load(&fx.prefix),
            |devnet| devnet.submit_block(fx.full_block.clone()).expect("valid"),
            BatchSize::PerIteration,
        )
    });

    group.throughput(Throughput::Elements(FAN_OUT as u64));
    group.bench_function("mempool_accept_500_p2wpkh_txs (txs/s)", |b| {
        b.iter_batched(
            || load(&fx.prefix),
            |devnet| {
                for tx in &fx.spends {
                    devnet
                        .send_raw_transaction(tx.clone(), None)
                        .expect("accepted");
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(devnet, benches);
criterion_main!(devnet);
