//! Two nodes on 127.0.0.1 over the BOLT 8 link, on the embedded devnet chain, with SQLite
//! storage: open a channel, pay 100 times both ways, close cooperatively, and check every
//! satoshi in both on-chain wallets.

use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{Address, Amount, CompressedPublicKey, Network};
use chain::Devnet;
use hub::node::{ChannelStatus, Node, NodeConfig};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

async fn wait_until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn elsewhere() -> Address {
    let key = SecretKey::from_slice(&[0x77; 32]).unwrap();
    let pk = CompressedPublicKey(PublicKey::from_secret_key(channel::keys::secp(), &key));
    Address::p2wpkh(&pk, Network::Regtest)
}

async fn start(devnet: &Arc<Devnet>, dir: &std::path::Path, db: Option<String>) -> Arc<Node> {
    Node::start(NodeConfig {
        data_dir: dir.to_path_buf(),
        database_url: db,
        listen: "127.0.0.1:0".parse().unwrap(),
        chain: devnet.clone(),
        network: Network::Regtest,
        minimum_depth: 3,
        chain_poll: Duration::from_millis(50),
    })
    .await
    .expect("node starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_pay_both_ways_and_close_cooperatively() {
    let devnet = Arc::new(Devnet::in_memory());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start(&devnet, dir_a.path(), None).await;
    let b = start(&devnet, dir_b.path(), None).await;

    // Fund Alice: one mature coinbase of 50 BTC.
    let addr = a.new_address().await.unwrap();
    devnet.generate_to_script(1, &addr.script_pubkey()).unwrap();
    devnet
        .generate_to_script(100, &elsewhere().script_pubkey())
        .unwrap();
    wait_until("alice's coinbase", || async {
        a.wallet_balance().await == Amount::from_sat(5_000_000_000)
    })
    .await;

    a.connect_peer(b.node_id(), b.listen_addr()).await.unwrap();
    let capacity = 1_000_000u64;
    let id = a
        .open_channel(b.node_id(), capacity, channel::Msat(0))
        .await
        .expect("open");
    devnet
        .generate_to_script(3, &elsewhere().script_pubkey())
        .unwrap();
    for n in [&a, &b] {
        wait_until("channel normal", || async {
            n.channel(&id)
                .await
                .map(|c| c.status == ChannelStatus::Normal)
                .unwrap_or(false)
        })
        .await;
    }
    let wallet_after_funding = a.wallet_balance().await;
    assert!(wallet_after_funding < Amount::from_sat(5_000_000_000 - capacity));

    // 100 payments, alternating: Alice 20,000 sat to Bob, Bob 5,000 sat back.
    let (mut to_bob, mut to_alice) = (0u64, 0u64);
    for i in 0..100u32 {
        let (payer, payee, amount) = if i % 2 == 0 {
            (&a, &b, 20_000_000u64)
        } else {
            (&b, &a, 5_000_000u64)
        };
        let mut p = [0u8; 32];
        p[..4].copy_from_slice(&i.to_be_bytes());
        p[31] = 1;
        let preimage = channel::PaymentPreimage(p);
        let hash = payee.add_preimage(preimage).await.unwrap();
        let got = payer
            .pay(&id, channel::Msat(amount), hash, 500)
            .await
            .expect("payment");
        assert_eq!(got, preimage);
        if i % 2 == 0 {
            to_bob += amount;
        } else {
            to_alice += amount;
        }
    }
    for n in [&a, &b] {
        wait_until("quiescent", || async {
            n.channel(&id).await.unwrap().quiescent
        })
        .await;
    }
    let alice_msat = capacity * 1000 - to_bob + to_alice;
    let bob_msat = to_bob - to_alice;
    let ca = a.channel(&id).await.unwrap();
    let cb = b.channel(&id).await.unwrap();
    assert_eq!(
        (ca.local.0, ca.remote.0, ca.htlcs),
        (alice_msat, bob_msat, 0)
    );
    assert_eq!(
        (cb.local.0, cb.remote.0, cb.htlcs),
        (bob_msat, alice_msat, 0)
    );

    // Cooperative close.
    a.close_channel(&id).await.unwrap();
    wait_until("closing tx", || async {
        a.channel(&id).await.unwrap().closing_tx.is_some()
    })
    .await;
    wait_until("closing tx on bob", || async {
        b.channel(&id).await.unwrap().closing_tx.is_some()
    })
    .await;
    let closing = a.channel(&id).await.unwrap().closing_tx.unwrap();
    assert_eq!(
        Some(closing.clone()),
        b.channel(&id).await.unwrap().closing_tx
    );
    devnet
        .generate_to_script(1, &elsewhere().script_pubkey())
        .unwrap();
    for n in [&a, &b] {
        wait_until("closed", || async {
            n.channel(&id).await.unwrap().status == ChannelStatus::Closed
        })
        .await;
    }
    let paid: u64 = closing.output.iter().map(|o| o.value.to_sat()).sum();
    let fee = capacity - paid;
    assert!(fee > 0 && fee < 2_000, "closing fee {fee}");
    // Bob (not the funder) gets exactly his balance; Alice gets hers minus the fee.
    wait_until("bob's wallet", || async {
        b.wallet_balance().await == Amount::from_sat(bob_msat / 1000)
    })
    .await;
    let alice_expected = wallet_after_funding + Amount::from_sat(alice_msat / 1000 - fee);
    wait_until("alice's wallet", || async {
        a.wallet_balance().await == alice_expected
    })
    .await;
}
