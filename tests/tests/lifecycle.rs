//! The demo's story with real processes: a `devnet` chain, a `watchtower`, a `hub`, and
//! three light nodes (a merchant, Alice and Bob), each a `hub` process with its own SQLite
//! file, all on 127.0.0.1 with ports chosen at run time. Every step asserts exact
//! balances, in satoshis on chain and in millisatoshis in channels:
//! channels open (the merchant's through the merchant API), invoices are paid through
//! the hub, the merchant closes cooperatively, Alice force-closes, and Bob broadcasts a
//! revoked commitment while the hub is down (SIGKILL): the tower's penalty gives the hub
//! the whole channel. Finally the wallets plus the fees paid to miners equal the coins
//! mined to the parties.

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{OutPoint, Transaction};
use chain::rpc::client::RpcClient;
use chain::ChainSource;
use scenarios::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The two tests each run several nodes; on a 2-core machine they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const COINBASE: u64 = 5_000_000_000;
/// BOLT 3 option_anchors: the value of each anchor output.
const ANCHOR_SAT: u64 = 330;
const MERCHANT_CAP: u64 = 1_000_000;
const ALICE_CAP: u64 = 400_000;
const BOB_CAP: u64 = 300_000;
/// The hub's default forwarding fee: 1,000 msat + 100 ppm.
fn hub_fee(amount_msat: u64) -> u64 {
    1000 + amount_msat * 100 / 1_000_000
}

/// Waits until the hub's tower has acknowledged every appointment the hub queued.
async fn tower_acknowledged(api: &Api, hub: &Proc) {
    wait_for(
        "the hub's appointments acknowledged by the tower",
        async || {
            api.ok(&hub.api, "op-hub", "GET", "/v1/info", None).await["tower_appointments_pending"]
                == 0
        },
    )
    .await;
}

/// Waits until the tower holds fewer appointments than `before` (a closed channel's are
/// gone), and checks the open channels' are still there.
async fn tower_forgot_one_channel(url: &str, before: u64) {
    wait_for("a closed channel's appointments deleted", async || {
        tower_appointments(url).await < before
    })
    .await;
    assert!(tower_appointments(url).await > 0);
}

/// Appointments the tower holds.
async fn tower_appointments(url: &str) -> u64 {
    let v: Value = reqwest::get(format!("{url}/v1/info"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["appointments"].as_u64().expect("appointments")
}

struct World {
    api: Api,
    rpc: RpcClient,
    /// Fees paid to miners by the transactions of the scenario.
    fees: u64,
    /// Satoshis left in the anchor outputs of commitments on chain.
    anchors: u64,
}

/// A node and the key its owner calls it with.
struct Node<'a> {
    proc: &'a Proc,
    key: &'a str,
}

impl World {
    async fn wallet(&self, n: &Node<'_>) -> u64 {
        self.api
            .ok(&n.proc.api, n.key, "GET", "/v1/info", None)
            .await["onchain_balance_sat"]
            .as_u64()
            .expect("on-chain balance")
    }

    async fn chan(&self, n: &Node<'_>, id: &str) -> Value {
        self.api
            .ok(
                &n.proc.api,
                n.key,
                "GET",
                &format!("/v1/channels/{id}"),
                None,
            )
            .await
    }

    async fn msat(&self, n: &Node<'_>, id: &str) -> u64 {
        self.chan(n, id).await["local_balance_msat"]
            .as_u64()
            .expect("balance")
    }

    async fn wait_wallet(&self, n: &Node<'_>, sat: u64) {
        wait_for(&format!("wallet of {} at {sat}", n.key), async || {
            self.api
                .call(&n.proc.api, n.key, "GET", "/v1/info", None)
                .await
                .map(|v| v["onchain_balance_sat"].as_u64() == Some(sat))
                .unwrap_or(false)
        })
        .await;
    }

    async fn wait_status(&self, n: &Node<'_>, id: &str, status: &str) {
        wait_for(&format!("{id} {status} at {}", n.key), async || {
            self.api
                .call(
                    &n.proc.api,
                    n.key,
                    "GET",
                    &format!("/v1/channels/{id}"),
                    None,
                )
                .await
                .map(|c| c["status"] == status)
                .unwrap_or(false)
        })
        .await;
    }

    async fn tx(&self, txid: &bitcoin::Txid) -> Transaction {
        self.rpc
            .transaction(txid)
            .await
            .unwrap()
            .expect("transaction known")
            .0
    }

    /// Inputs less outputs, from the chain; added to the miners' fees.
    async fn paid_fee(&mut self, tx: &Transaction) -> u64 {
        let mut spent = 0;
        for i in &tx.input {
            let prev = self.tx(&i.previous_output.txid).await;
            spent += prev.output[i.previous_output.vout as usize].value.to_sat();
        }
        let fee = spent - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>();
        self.fees += fee;
        fee
    }

    async fn spender(&self, outpoint: OutPoint) -> Option<Transaction> {
        self.rpc
            .find_spend(&outpoint, 0)
            .await
            .unwrap()
            .map(|s| s.tx)
    }

    async fn wait_spender(&self, outpoint: OutPoint) -> Transaction {
        wait_for("spent", async || self.spender(outpoint).await.is_some()).await;
        self.spender(outpoint).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_payments_closes_and_a_punished_cheater() {
    let _turn = SERIAL.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n).to_str().unwrap().to_string();
    let devnet = spawn_devnet(&tmp.path().join("devnet"));
    let rpc_url = devnet.rpc.clone();
    let tower = spawn_tower(
        &tmp.path().join("tower"),
        (&rpc_url.0, "devnet", &rpc_url.1),
        &["--confirmations", "3"],
    );
    let mut hub_args = client_args(&dir("hub"), "op-hub", &rpc_url);
    hub_args.extend(["--tower-url".to_string(), tower.url.clone()]);
    let mut hub_proc = spawn(&hub_args);
    let merchant_proc = spawn(&light_args(
        &dir("merchant"),
        "op-m",
        &rpc_url,
        &hub_proc.node_id,
    ));
    let alice_proc = spawn(&light_args(
        &dir("alice"),
        "op-a",
        &rpc_url,
        &hub_proc.node_id,
    ));
    let bob_proc = spawn(&light_args(
        &dir("bob"),
        "op-b",
        &rpc_url,
        &hub_proc.node_id,
    ));
    let mut w = World {
        api: Api::default(),
        rpc: rpc(&rpc_url),
        fees: 0,
        anchors: 0,
    };
    let merchant = Node {
        proc: &merchant_proc,
        key: "op-m",
    };
    let alice = Node {
        proc: &alice_proc,
        key: "op-a",
    };
    let bob = Node {
        proc: &bob_proc,
        key: "op-b",
    };
    let hub_id = hub_proc.node_id.clone();

    // 1. One coinbase each for the hub, Alice and Bob.
    let funded = [
        (&hub_proc, "op-hub"),
        (&alice_proc, "op-a"),
        (&bob_proc, "op-b"),
    ];
    let bases: Vec<_> = funded.iter().map(|(p, k)| (p.api.as_str(), *k)).collect();
    fund_all(&w.api, &bases, &w.rpc).await;
    for (p, key) in funded {
        assert_eq!(w.wallet(&Node { proc: p, key }).await, COINBASE);
    }

    // 2. Channels: the merchant asks the hub for inbound liquidity with its own key;
    //    Alice and Bob open channels to the hub from their wallets.
    for n in [&merchant, &alice, &bob] {
        w.api.connect(&n.proc.api, n.key, &hub_proc).await;
    }
    let mkey = w
        .api
        .ok(
            &hub_proc.api,
            "op-hub",
            "POST",
            "/v1/merchants",
            Some(json!({"name": "Coffee shop", "node_id": merchant_proc.node_id})),
        )
        .await["api_key"]
        .as_str()
        .unwrap()
        .to_string();
    let mchan = w
        .api
        .open_channel(&hub_proc.api, &mkey, json!({"capacity_sat": MERCHANT_CAP}))
        .await;
    let mut user_chans = Vec::new();
    for (n, cap) in [(&alice, ALICE_CAP), (&bob, BOB_CAP)] {
        let body = json!({"peer_id": hub_id, "capacity_sat": cap});
        user_chans.push(w.api.open_channel(&n.proc.api, n.key, body).await);
    }
    let [achan, bchan] = <[String; 2]>::try_from(user_chans).unwrap();
    mine(&w.rpc, 3).await;
    for (n, id) in [(&merchant, &mchan), (&alice, &achan), (&bob, &bchan)] {
        w.api.wait_usable(&n.proc.api, n.key, id, true).await;
    }
    let hub = Node {
        proc: &hub_proc,
        key: "op-hub",
    };
    for id in [&mchan, &achan, &bchan] {
        w.wait_status(&hub, id, "normal").await;
    }
    for (funder, id, cap) in [
        (&hub, &mchan, MERCHANT_CAP),
        (&alice, &achan, ALICE_CAP),
        (&bob, &bchan, BOB_CAP),
    ] {
        let c = w.chan(funder, id).await;
        let funding = w
            .tx(&c["funding_txid"].as_str().unwrap().parse().unwrap())
            .await;
        let fee = w.paid_fee(&funding).await;
        assert_eq!(w.wallet(funder).await, COINBASE - cap - fee);
        assert_eq!(c["local_balance_msat"], cap * 1000);
        assert_eq!(c["remote_balance_msat"], 0);
    }
    // The merchant's key sees its channel at the hub; the merchant's node sees it too.
    assert_eq!(
        w.api
            .ok(&hub_proc.api, &mkey, "GET", "/v1/channels", None)
            .await[0]["channel_id"],
        mchan.as_str()
    );
    assert_eq!(w.msat(&merchant, &mchan).await, 0);

    // 3. Payments: Bob first keeps his current commitment (it will be revoked).
    let revoked: Transaction = deserialize_hex(
        w.api
            .ok(
                &bob_proc.api,
                "op-b",
                "GET",
                &format!("/v1/channels/{bchan}/commitment"),
                None,
            )
            .await["hex"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    for (payer, amount) in [(&alice, 150_000_000u64), (&bob, 80_000_000)] {
        let inv = w
            .api
            .ok(
                &merchant_proc.api,
                "op-m",
                "POST",
                "/v1/invoices",
                Some(json!({"amount_msat": amount, "description": "coffee"})),
            )
            .await;
        let p = w
            .api
            .ok(
                &payer.proc.api,
                payer.key,
                "POST",
                "/v1/payments",
                Some(json!({"invoice": inv["bolt11"]})),
            )
            .await;
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["fee_msat"], hub_fee(amount));
    }
    for (a, b, id) in [
        (&alice, &hub, &achan),
        (&bob, &hub, &bchan),
        (&hub, &merchant, &mchan),
    ] {
        wait_for("settled at both ends", async || {
            w.chan(a, id).await["htlcs"] == 0 && w.chan(b, id).await["htlcs"] == 0
        })
        .await;
    }
    let (fa, fb) = (hub_fee(150_000_000), hub_fee(80_000_000));
    assert_eq!(
        w.msat(&alice, &achan).await,
        ALICE_CAP * 1000 - 150_000_000 - fa
    );
    assert_eq!(w.msat(&hub, &achan).await, 150_000_000 + fa);
    assert_eq!(w.msat(&bob, &bchan).await, BOB_CAP * 1000 - 80_000_000 - fb);
    assert_eq!(w.msat(&hub, &bchan).await, 80_000_000 + fb);
    assert_eq!(w.msat(&merchant, &mchan).await, 230_000_000);
    assert_eq!(
        w.msat(&hub, &mchan).await,
        MERCHANT_CAP * 1000 - 230_000_000
    );
    // Both ends agree on every channel.
    for (a, b, id) in [
        (&alice, &hub, &achan),
        (&bob, &hub, &bchan),
        (&hub, &merchant, &mchan),
    ] {
        let (ca, cb) = (w.chan(a, id).await, w.chan(b, id).await);
        assert_eq!(ca["local_balance_msat"], cb["remote_balance_msat"]);
        assert_eq!(ca["remote_balance_msat"], cb["local_balance_msat"]);
    }

    // 4. The merchant closes cooperatively: all of its 230,000 sat reach its wallet; the
    //    hub, funder, pays the closing fee.
    tower_acknowledged(&w.api, &hub_proc).await;
    let at_tower = tower_appointments(&tower.url).await;
    let hub_wallet = w.wallet(&hub).await;
    w.api
        .ok(
            &merchant_proc.api,
            "op-m",
            "POST",
            &format!("/v1/channels/{mchan}/close"),
            Some(json!({})),
        )
        .await;
    wait_for("closing transaction", async || {
        w.chan(&merchant, &mchan).await["closing_txid"].is_string()
    })
    .await;
    let funding: OutPoint = {
        let c = w.chan(&hub, &mchan).await;
        OutPoint::new(
            c["funding_txid"].as_str().unwrap().parse().unwrap(),
            c["funding_output_index"].as_u64().unwrap() as u32,
        )
    };
    let closing = w.wait_spender(funding).await;
    mine(&w.rpc, 1).await;
    let close_fee = w.paid_fee(&closing).await;
    w.wait_wallet(&merchant, 230_000).await;
    w.wait_wallet(&hub, hub_wallet + 770_000 - close_fee).await;
    w.wait_status(&merchant, &mchan, "closed").await;
    w.wait_status(&hub, &mchan, "closed").await;
    // Six blocks deep, the hub has the tower delete the closed channel's appointments;
    // the other channels' stay.
    mine(&w.rpc, 6).await;
    tower_forgot_one_channel(&tower.url, at_tower).await;

    // 5. Alice force-closes. The hub's output pays it at once; Alice's waits out the CSV
    //    delay the hub asked of her (144 blocks).
    let at_tower = tower_appointments(&tower.url).await;
    let alice_wallet = w.wallet(&alice).await;
    let hub_wallet = w.wallet(&hub).await;
    let alice_sat = (ALICE_CAP * 1000 - 150_000_000 - fa) / 1000;
    let hub_sat = (150_000_000 + fa) / 1000;
    let txid: bitcoin::Txid = w
        .api
        .ok(
            &alice_proc.api,
            "op-a",
            "POST",
            &format!("/v1/channels/{achan}/close"),
            Some(json!({"force": true})),
        )
        .await["commitment_txid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    wait_for("commitment in the mempool", async || {
        w.rpc.mempool_txids().await.unwrap().contains(&txid)
    })
    .await;
    mine(&w.rpc, 1).await;
    let commitment = w.tx(&txid).await;
    let commit_fee = w.paid_fee(&commitment).await;
    // An anchor channel: two anchors, to_local, and the hub's to_remote behind a CSV of 1.
    let anchors = anchor_vouts(&commitment);
    assert_eq!(anchors.len(), 2);
    let anchors_sat = 2 * ANCHOR_SAT;
    w.anchors += anchors_sat;
    let pos = |sat: u64| {
        commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == sat)
            .unwrap() as u32
    };
    let to_remote = pos(hub_sat);
    let to_local = pos(alice_sat - commit_fee - anchors_sat);
    assert_eq!(commitment.output.len(), 4);
    assert!(commitment.output[to_remote as usize]
        .script_pubkey
        .is_p2wsh());
    assert!(
        to_local != to_remote,
        "Alice funded the channel: she pays the commitment fee and the anchors"
    );
    let hub_sweep = w.wait_spender(OutPoint::new(txid, to_remote)).await;
    mine(&w.rpc, 1).await;
    let hub_sweep_fee = w.paid_fee(&hub_sweep).await;
    w.wait_wallet(&hub, hub_wallet + hub_sat - hub_sweep_fee)
        .await;
    mine(&w.rpc, 140).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        w.spender(OutPoint::new(txid, to_local)).await.is_none(),
        "nothing before the CSV delay"
    );
    assert_eq!(w.wallet(&alice).await, alice_wallet);
    let mut blocks = 0;
    while w.spender(OutPoint::new(txid, to_local)).await.is_none() {
        assert!(blocks < 20, "Alice's sweep after the CSV delay");
        mine(&w.rpc, 1).await;
        blocks += 1;
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    mine(&w.rpc, 1).await;
    let alice_sweep = w.spender(OutPoint::new(txid, to_local)).await.unwrap();
    assert_eq!(
        alice_sweep.input[0].sequence.0, 144,
        "spent with the CSV delay"
    );
    let alice_sweep_fee = w.paid_fee(&alice_sweep).await;
    w.wait_wallet(
        &alice,
        alice_wallet + alice_sat - commit_fee - anchors_sat - alice_sweep_fee,
    )
    .await;
    // Alice's current commitment is deep: the hub has the tower forget her channel too,
    // while Bob's stays protected.
    tower_forgot_one_channel(&tower.url, at_tower).await;

    // 6. The hub is killed; Bob broadcasts his revoked commitment; the tower punishes.
    tower_acknowledged(&w.api, &hub_proc).await;
    let bob_wallet = w.wallet(&bob).await;
    let hub_wallet = w.wallet(&hub).await;
    drop(hub_proc); // SIGKILL
    let revoked_txid = w.rpc.broadcast(&revoked).await.expect("valid, if revoked");
    mine(&w.rpc, 1).await;
    let revoked_fee = w.paid_fee(&revoked).await;
    // Before Bob paid, the hub had nothing in this commitment: no to_remote, so only
    // Bob's anchor (BOLT 3: an anchor exists for a side with an output or with HTLCs; the
    // funder gives up two anchors' value either way, the missing one goes to fees).
    let revoked_anchors = anchor_vouts(&revoked);
    assert_eq!(revoked_anchors.len(), 1);
    let anchored = ANCHOR_SAT * revoked_anchors.len() as u64;
    w.anchors += anchored;
    let punished = (0..revoked.output.len())
        .find(|v| !revoked_anchors.contains(v))
        .unwrap() as u32;
    let penalty = w.wait_spender(OutPoint::new(revoked_txid, punished)).await;
    mine(&w.rpc, 1).await;
    let penalty_fee = w.paid_fee(&penalty).await;
    assert_eq!(penalty.input.len(), revoked.output.len() - 1);
    assert_eq!(penalty.output.len(), 1);
    assert_eq!(
        penalty.output[0].value.to_sat(),
        BOB_CAP - revoked_fee - anchored - penalty_fee,
        "the whole channel, less the two fees and the anchor"
    );
    let metrics = reqwest::get(format!("{}/metrics", tower.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "watchtower_penalties_broadcast_total 1"),
        "{metrics}"
    );
    hub_proc = spawn(&hub_args);
    let hub = Node {
        proc: &hub_proc,
        key: "op-hub",
    };
    w.wait_wallet(&hub, hub_wallet + penalty.output[0].value.to_sat())
        .await;
    assert_eq!(w.wallet(&bob).await, bob_wallet, "Bob gets nothing back");

    // 7. Every satoshi: wallets plus miners' fees plus the anchors left on chain equal the
    //    three coinbases.
    let mut wallets = 0;
    for n in [&hub, &merchant, &alice, &bob] {
        wallets += w.wallet(n).await;
    }
    assert_eq!(wallets + w.fees + w.anchors, 3 * COINBASE);
    drop((merchant_proc, alice_proc, bob_proc, tower, devnet));
}

/// `hub demo` runs to the end and checks its own balances.
#[test]
fn the_demo_finishes_with_every_check_passed() {
    let _turn = SERIAL.blocking_lock();
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(binary("hub"))
        .args(["demo", "--data-dir"])
        .arg(tmp.path().join("demo"))
        .output()
        .expect("hub demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with("demo finished:") && last.contains("checks passed"),
        "{stdout}"
    );
    assert!(stdout.contains("the tower broadcast it"), "{stdout}");
    assert!(!tmp.path().join("demo").exists(), "cleaned up");
}

/// The anchor outputs of a commitment (330 sat, P2WSH); left on chain (anyone's after 16
/// blocks, not worth their sweep's fee).
fn anchor_vouts(tx: &Transaction) -> Vec<usize> {
    (0..tx.output.len())
        .filter(|i| {
            tx.output[*i].value.to_sat() == ANCHOR_SAT && tx.output[*i].script_pubkey.is_p2wsh()
        })
        .collect()
}
