//! `hub demo`: the whole system in one process, narrated.
//!
//! A devnet chain, a hub, a merchant's light node, two users' light nodes (Alice and
//! Bob) and a watchtower run in this process; they talk to each other as separate
//! parties would, over BOLT 8 peer links and the tower's REST API on 127.0.0.1, and each
//! keeps its own SQLite file. The demo opens channels, pays invoices, closes one channel
//! cooperatively, force-closes another, and lets Bob broadcast a revoked commitment
//! while the hub is offline, so the tower punishes him. Every step prints the balances
//! of every party in satoshis and checks them against what the step must produce; the
//! last check is that no satoshi appeared or vanished: the wallets plus the fees paid to
//! miners equal the coins mined to the parties.

use crate::node::{ChannelStatus, ChannelSummary, Node, NodeConfig, Role};
use anyhow::{bail, ensure, Context};
use bitcoin::hashes::Hash;
use bitcoin::{Amount, OutPoint, Transaction, Txid};
use chain::{ChainSource, Devnet};
use channel::ChannelId;
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where the demo keeps its files, and whether to leave them behind.
pub struct DemoOptions {
    /// Data directory (a fresh one under the system's temporary directory if `None`).
    pub data_dir: Option<PathBuf>,
    /// Keep the data directory afterwards.
    pub keep: bool,
}

const COINBASE: u64 = 5_000_000_000;
const MERCHANT_CAPACITY: u64 = 1_000_000;
const ALICE_CAPACITY: u64 = 400_000;
const BOB_CAPACITY: u64 = 300_000;

struct Party {
    name: &'static str,
    node: Arc<Node>,
}

struct Demo {
    devnet: Arc<Devnet>,
    dir: PathBuf,
    tower_url: String,
    hub: Party,
    merchant: Party,
    alice: Party,
    bob: Party,
    /// Fees paid to miners by the transactions of the demo, in satoshis.
    fees: Cell<u64>,
    /// Satoshis left in the anchor outputs of commitments that went to chain (330 each,
    /// anyone's after 16 blocks; not worth sweeping).
    anchors: Cell<u64>,
    checks: Cell<u32>,
    step: Cell<u32>,
}

/// Runs the demo; an error means a check failed (or a part did not start).
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let dir = match &opts.data_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("hub-demo-{}", std::process::id())),
    };
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} is not empty: the demo starts from nothing",
            dir.display()
        );
    }
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&dir).await;
    if opts.keep || result.is_err() {
        println!("\nfiles of every party kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(dir: &Path) -> anyhow::Result<()> {
    println!("Payment-channel hub demo: a devnet chain, a hub, a merchant, two users (Alice and");
    println!("Bob) and a watchtower, all on 127.0.0.1. Amounts are in satoshis.");
    let devnet = Arc::new(Devnet::in_memory());
    let tower_url = start_tower(&devnet, &dir.join("tower")).await?;
    println!("watchtower on {tower_url}");
    let hub = start_node(&devnet, &dir.join("hub"), Role::Hub, &tower_url).await?;
    let light = Role::Light {
        hub: Some(hub.node_id()),
    };
    let merchant = start_node(&devnet, &dir.join("merchant"), light, &tower_url).await?;
    let alice = start_node(&devnet, &dir.join("alice"), light, &tower_url).await?;
    let bob = start_node(&devnet, &dir.join("bob"), light, &tower_url).await?;
    println!("hub {} listening on {}", hub.node_id(), hub.listen_addr());
    let mut d = Demo {
        devnet,
        dir: dir.to_path_buf(),
        tower_url,
        hub: Party {
            name: "hub",
            node: hub,
        },
        merchant: Party {
            name: "merchant",
            node: merchant,
        },
        alice: Party {
            name: "alice",
            node: alice,
        },
        bob: Party {
            name: "bob",
            node: bob,
        },
        fees: Cell::new(0),
        anchors: Cell::new(0),
        checks: Cell::new(0),
        step: Cell::new(0),
    };
    let outcome = d.story().await;
    for p in d.parties() {
        p.node.shutdown().await;
    }
    outcome?;
    println!(
        "\ndemo finished: {} checks passed; the cheater lost his channel to the tower.",
        d.checks.get()
    );
    Ok(())
}

async fn start_tower(devnet: &Arc<Devnet>, dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir)?;
    let store =
        watchtower::store::Store::open(&format!("sqlite://{}", dir.join("tower.sqlite").display()))
            .await?;
    let tower = watchtower::tower::Tower::open(
        store,
        devnet.clone(),
        watchtower::tower::TowerConfig {
            confirmations: 3,
            poll_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await?;
    tokio::spawn(tower.clone().run(std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, watchtower::api::router(tower)).await;
    });
    Ok(url)
}

async fn start_node(
    devnet: &Arc<Devnet>,
    dir: &Path,
    role: Role,
    tower_url: &str,
) -> anyhow::Result<Arc<Node>> {
    let mut c = NodeConfig::new(
        role,
        dir.to_path_buf(),
        devnet.clone(),
        bitcoin::Network::Regtest,
    );
    c.chain_poll = Duration::from_millis(50);
    c.towers = vec![tower_url.to_string()];
    Ok(Node::start(c).await?)
}

/// Polls `f` every 50 ms for up to two minutes.
async fn wait<F, Fut>(what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2400 {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

fn sat(msat: channel::Msat) -> u64 {
    msat.0 / 1000
}

impl Demo {
    fn parties(&self) -> [&Party; 4] {
        [&self.hub, &self.merchant, &self.alice, &self.bob]
    }

    fn heading(&self, text: &str) {
        self.step.set(self.step.get() + 1);
        println!("\n== {}. {text}", self.step.get());
    }

    fn paid(&self, fee: u64) {
        self.fees.set(self.fees.get() + fee);
    }

    /// Counts the anchor outputs of commitment `tx` (on chain) and returns their value.
    fn anchored(&self, tx: &bitcoin::Transaction) -> u64 {
        let v: u64 = anchor_vouts(tx)
            .into_iter()
            .map(|i| tx.output[i].value.to_sat())
            .sum();
        self.anchors.set(self.anchors.get() + v);
        v
    }

    fn check(&self, ok: bool, what: impl std::fmt::Display) -> anyhow::Result<()> {
        ensure!(ok, "check failed: {what}");
        self.checks.set(self.checks.get() + 1);
        println!("   ok  {what}");
        Ok(())
    }

    fn mine(&self, n: u32) -> anyhow::Result<()> {
        // Blocks go to an address nobody can spend, so the parties' coins stay countable.
        let burn =
            bitcoin::ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::from_byte_array([0x42; 32]));
        self.devnet.generate_to_script(n, &burn)?;
        Ok(())
    }

    /// Every node has seen the devnet's tip.
    async fn synced(&self) -> anyhow::Result<()> {
        let height = u64::from(self.devnet.tip().1);
        for p in self.parties() {
            wait("nodes synced", || async {
                p.node.synced_blocks() >= height
            })
            .await?;
        }
        Ok(())
    }

    async fn wallet(&self, p: &Party) -> u64 {
        p.node.wallet_balance().await.to_sat()
    }

    async fn channel(&self, p: &Party, id: &ChannelId) -> anyhow::Result<ChannelSummary> {
        Ok(p.node.channel(id).await?)
    }

    /// Prints every party's on-chain wallet, its balances in open channels, and the sum.
    async fn balances(&self) {
        println!(
            "   {:<9} {:>15} {:>15} {:>15}",
            "party", "on-chain", "in channels", "total"
        );
        for p in self.parties() {
            let wallet = self.wallet(p).await;
            let channels: u64 = p
                .node
                .list_channels()
                .await
                .iter()
                .filter(|c| !matches!(c.status, ChannelStatus::Closed | ChannelStatus::ForceClosed))
                .map(|c| sat(c.local))
                .sum();
            println!(
                "   {:<9} {:>15} {:>15} {:>15}",
                p.name,
                group(wallet),
                group(channels),
                group(wallet + channels)
            );
        }
    }

    /// The fee a transaction on the devnet paid: its inputs less its outputs.
    async fn fee_of(&self, tx: &Transaction) -> anyhow::Result<u64> {
        let mut spent = 0;
        for input in &tx.input {
            let (prev, _) = self
                .devnet
                .transaction(&input.previous_output.txid)
                .await?
                .context("spent transaction on chain")?;
            spent += prev.output[input.previous_output.vout as usize]
                .value
                .to_sat();
        }
        Ok(spent - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>())
    }

    async fn tx(&self, txid: &Txid) -> anyhow::Result<Transaction> {
        Ok(self
            .devnet
            .transaction(txid)
            .await?
            .context("transaction on chain")?
            .0)
    }

    async fn spender(&self, outpoint: OutPoint) -> anyhow::Result<Option<Transaction>> {
        Ok(self.devnet.find_spend(&outpoint, 0).await?.map(|s| s.tx))
    }

    /// Once both `parties` have had the tower prune a closed channel, checks that the
    /// tower holds fewer appointments than `before`, and still some.
    async fn forgotten(
        &self,
        parties: [&Party; 2],
        before: u64,
        what: &str,
        why: &str,
    ) -> anyhow::Result<()> {
        for p in parties {
            wait("a closed channel forgotten at the tower", || async {
                p.node.pending_prunes() == 0
            })
            .await?;
        }
        let left = tower_appointments(&self.tower_url).await?;
        self.check(
            left < before && left > 0,
            format!("the tower deleted {what} ({before} -> {left}); {why}"),
        )
    }

    /// Every channel end of `ids` holds no HTLC and has nothing in flight.
    async fn settled(&self, ids: &[(&Party, &Party, ChannelId)]) -> anyhow::Result<()> {
        for (a, b, id) in ids {
            for p in [a, b] {
                wait("payments settled", || async {
                    p.node
                        .channel(id)
                        .await
                        .map(|c| c.htlcs == 0 && c.quiescent)
                        .unwrap_or(false)
                })
                .await?;
            }
        }
        Ok(())
    }

    async fn story(&mut self) -> anyhow::Result<()> {
        // 1. Coins.
        self.heading("the devnet mines one block each to the hub, Alice and Bob (50 BTC each)");
        for p in [&self.hub, &self.alice, &self.bob] {
            let addr = p.node.new_address().await?;
            self.devnet.generate_to_script(1, &addr.script_pubkey())?;
        }
        self.mine(100)?;
        println!("   100 more blocks make the coinbases spendable");
        for p in [&self.hub, &self.alice, &self.bob] {
            wait("coinbase in the wallet", || async {
                p.node.wallet_balance().await == Amount::from_sat(COINBASE)
            })
            .await?;
        }
        self.balances().await;
        for p in [&self.hub, &self.alice, &self.bob] {
            let w = self.wallet(p).await;
            self.check(
                w == COINBASE,
                format!("{} holds {} on chain", p.name, group(w)),
            )?;
        }

        // 2. Channels.
        self.heading(
            "channels: the hub opens 1,000,000 to the merchant (inbound liquidity); \
             Alice opens 400,000 and Bob 300,000 to the hub",
        );
        let hub_id = self.hub.node.node_id();
        let hub_addr = self.hub.node.listen_addr();
        for p in [&self.merchant, &self.alice, &self.bob] {
            p.node.connect_peer(hub_id, hub_addr).await?;
        }
        let mchan = self
            .hub
            .node
            .open_channel(
                self.merchant.node.node_id(),
                MERCHANT_CAPACITY,
                channel::Msat(0),
            )
            .await?;
        let achan = self
            .alice
            .node
            .open_channel(hub_id, ALICE_CAPACITY, channel::Msat(0))
            .await?;
        let bchan = self
            .bob
            .node
            .open_channel(hub_id, BOB_CAPACITY, channel::Msat(0))
            .await?;
        println!("   funding transactions broadcast; mining 3 blocks (the minimum depth)");
        self.mine(3)?;
        for (light, id) in [
            (&self.merchant, mchan),
            (&self.alice, achan),
            (&self.bob, bchan),
        ] {
            wait("channel usable, hub's policy known", || async {
                light
                    .node
                    .channel(&id)
                    .await
                    .map(|c| c.status == ChannelStatus::Normal && c.peer_policy.is_some())
                    .unwrap_or(false)
            })
            .await?;
            wait("channel usable at the hub", || async {
                self.hub
                    .node
                    .channel(&id)
                    .await
                    .map(|c| c.status == ChannelStatus::Normal)
                    .unwrap_or(false)
            })
            .await?;
        }
        self.balances().await;
        for (funder, id, cap) in [
            (&self.hub, mchan, MERCHANT_CAPACITY),
            (&self.alice, achan, ALICE_CAPACITY),
            (&self.bob, bchan, BOB_CAPACITY),
        ] {
            let c = self.channel(funder, &id).await?;
            let funding = self.tx(&c.funding_outpoint.txid).await?;
            let fee = self.fee_of(&funding).await?;
            let w = self.wallet(funder).await;
            self.paid(fee);
            let ok = w + cap + fee == COINBASE && sat(c.local) == cap && c.remote.0 == 0;
            self.check(
                ok,
                format!(
                    "{}: wallet {} = 50 BTC - capacity {} - funding fee {}; the channel is all its",
                    funder.name,
                    group(w),
                    group(cap),
                    fee
                ),
            )?;
        }

        // 3. Payments.
        self.heading(
            "the merchant invoices 150,000 to Alice and 80,000 to Bob; both pay through the hub",
        );
        let before = [
            self.channel(&self.alice, &achan).await?,
            self.channel(&self.bob, &bchan).await?,
            self.channel(&self.hub, &mchan).await?,
            self.channel(&self.merchant, &mchan).await?,
        ];
        // Bob keeps a copy of his commitment as it is now, fully signed. Once he has paid,
        // it is revoked: broadcasting it later is cheating.
        let revoked = self.bob.node.signed_commitment(&bchan).await?;
        let mut fee_total = 0;
        for (payer, amount, what) in [
            (&self.alice, 150_000_000u64, "a bag of coffee beans"),
            (&self.bob, 80_000_000, "a grinder"),
        ] {
            let inv = self
                .merchant
                .node
                .create_invoice(Some(amount), what, 3600, "")
                .await?;
            println!("   merchant's invoice for {what}: {}...", &inv.bolt11[..40]);
            let p = payer
                .node
                .pay_invoice(&inv.bolt11, None, Duration::from_secs(60))
                .await?;
            ensure!(
                p.status == "succeeded",
                "{} could not pay: {:?}",
                payer.name,
                p.failure
            );
            let fee = crate::node::ForwardingPolicy::default()
                .fee_msat(amount)
                .unwrap_or(0);
            println!(
                "   {} paid {} sat + {} msat hub fee; preimage received",
                payer.name,
                group(amount / 1000),
                group(fee)
            );
            self.check(
                p.fee_msat == fee,
                format!(
                    "{}'s payment records the hub's fee of {} msat (1,000 + 100 ppm)",
                    payer.name,
                    group(fee)
                ),
            )?;
            fee_total += fee;
        }
        self.settled(&[
            (&self.alice, &self.hub, achan),
            (&self.bob, &self.hub, bchan),
            (&self.hub, &self.merchant, mchan),
        ])
        .await?;
        self.balances().await;
        let fee_a = crate::node::ForwardingPolicy::default()
            .fee_msat(150_000_000)
            .unwrap_or(0);
        let fee_b = crate::node::ForwardingPolicy::default()
            .fee_msat(80_000_000)
            .unwrap_or(0);
        let after = [
            self.channel(&self.alice, &achan).await?,
            self.channel(&self.bob, &bchan).await?,
            self.channel(&self.hub, &mchan).await?,
            self.channel(&self.merchant, &mchan).await?,
        ];
        self.check(
            after[0].local.0 == before[0].local.0 - 150_000_000 - fee_a,
            format!(
                "alice's channel: {} msat less (amount and fee)",
                group(150_000_000 + fee_a)
            ),
        )?;
        self.check(
            after[1].local.0 == before[1].local.0 - 80_000_000 - fee_b,
            format!("bob's channel: {} msat less", group(80_000_000 + fee_b)),
        )?;
        self.check(
            after[3].local.0 == before[3].local.0 + 230_000_000
                && after[2].local.0 == before[2].local.0 - 230_000_000,
            "merchant's channel: 230,000 sat more, exactly what it invoiced",
        )?;
        let hub_total = |cs: &[ChannelSummary]| cs.iter().map(|c| c.local.0).sum::<u64>();
        let hub_now = hub_total(&self.hub.node.list_channels().await);
        let hub_then = before[2].local.0;
        self.check(
            hub_now == hub_then + fee_total,
            format!(
                "the hub's channels together hold its fees more: {} msat",
                group(fee_total)
            ),
        )?;

        // 4. Cooperative close.
        self.heading("the merchant closes its channel cooperatively");
        for p in [&self.hub, &self.merchant] {
            wait("appointments delivered to the tower", || async {
                p.node.pending_appointments() == 0
            })
            .await?;
        }
        let at_tower = tower_appointments(&self.tower_url).await?;
        let merchant_sat = sat(self.channel(&self.merchant, &mchan).await?.local);
        let hub_sat = sat(self.channel(&self.hub, &mchan).await?.local);
        let hub_wallet = self.wallet(&self.hub).await;
        self.merchant.node.close_channel(&mchan).await?;
        wait("closing transaction broadcast", || async {
            self.merchant
                .node
                .channel(&mchan)
                .await
                .map(|c| c.closing_tx.is_some())
                .unwrap_or(false)
        })
        .await?;
        let funding = self.channel(&self.hub, &mchan).await?.funding_outpoint;
        wait("closing transaction in the mempool", || async {
            matches!(self.spender(funding).await, Ok(Some(_)))
        })
        .await?;
        self.mine(1)?;
        for p in [&self.merchant, &self.hub] {
            wait("channel closed", || async {
                p.node
                    .channel(&mchan)
                    .await
                    .map(|c| c.status == ChannelStatus::Closed)
                    .unwrap_or(false)
            })
            .await?;
        }
        let closing = self
            .spender(funding)
            .await?
            .context("closing transaction on chain")?;
        let close_fee = self.fee_of(&closing).await?;
        self.paid(close_fee);
        wait("merchant's wallet", || async {
            self.merchant.node.wallet_balance().await == Amount::from_sat(merchant_sat)
        })
        .await?;
        wait("hub's wallet", || async {
            self.hub.node.wallet_balance().await
                == Amount::from_sat(hub_wallet + hub_sat - close_fee)
        })
        .await?;
        self.balances().await;
        self.check(
            self.wallet(&self.merchant).await == merchant_sat,
            format!(
                "merchant: {} on chain, its whole channel balance (the hub, as funder, pays the fee)",
                group(merchant_sat)
            ),
        )?;
        self.check(
            self.wallet(&self.hub).await == hub_wallet + hub_sat - close_fee,
            format!(
                "hub: {} back on chain, less the closing fee of {close_fee}",
                group(hub_sat)
            ),
        )?;
        let deep = crate::node::PRUNE_CONFIRMATIONS;
        println!("   {deep} blocks later, both parties ask the tower to forget the closed channel");
        self.mine(deep)?;
        self.forgotten(
            [&self.hub, &self.merchant],
            at_tower,
            "the closed channel's appointments",
            "the open channels' stay",
        )
        .await?;

        // 5. Force close.
        self.heading("Alice force-closes: she broadcasts her latest commitment");
        let at_tower = tower_appointments(&self.tower_url).await?;
        let alice_sat = sat(self.channel(&self.alice, &achan).await?.local);
        let hub_in_alice = sat(self.channel(&self.hub, &achan).await?.local);
        let alice_wallet = self.wallet(&self.alice).await;
        let hub_wallet = self.wallet(&self.hub).await;
        let txid = self.alice.node.force_close(&achan).await?;
        wait("commitment in the mempool", || async {
            self.devnet
                .mempool_txids()
                .await
                .map(|m| m.contains(&txid))
                .unwrap_or(false)
        })
        .await?;
        self.mine(1)?;
        let commitment = self.tx(&txid).await?;
        let commit_fee = self.fee_of(&commitment).await?;
        self.paid(commit_fee);
        let anchors = self.anchored(&commitment);
        self.check(
            anchor_vouts(&commitment).len() == 2,
            format!(
                "an anchor channel: two anchor outputs of {}",
                group(anchors / 2)
            ),
        )?;
        let to_remote = commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == hub_in_alice)
            .context("the hub's output")?;
        let to_local = commitment
            .output
            .iter()
            .position(|o| o.value.to_sat() == alice_sat - commit_fee - anchors)
            .context("Alice's output")?;
        self.check(
            to_local != to_remote,
            format!(
                "the commitment pays the hub {} and Alice {} (her balance less the commitment fee {commit_fee} and the anchors, she funded)",
                group(hub_in_alice),
                group(alice_sat - commit_fee - anchors)
            ),
        )?;
        println!("   the hub sweeps its output after one block (its CSV of 1); Alice's waits out her CSV delay");
        wait("the hub's sweep in the mempool", || async {
            matches!(
                self.spender(OutPoint::new(txid, to_remote as u32)).await,
                Ok(Some(_))
            )
        })
        .await?;
        self.mine(1)?;
        let hub_sweep = self
            .spender(OutPoint::new(txid, to_remote as u32))
            .await?
            .context("hub's sweep")?;
        let hub_sweep_fee = self.fee_of(&hub_sweep).await?;
        self.paid(hub_sweep_fee);
        wait("hub's wallet", || async {
            self.hub.node.wallet_balance().await
                == Amount::from_sat(hub_wallet + hub_in_alice - hub_sweep_fee)
        })
        .await?;
        let mut mined = 0;
        while self
            .spender(OutPoint::new(txid, to_local as u32))
            .await?
            .is_none()
        {
            ensure!(mined < 300, "Alice never swept her output");
            self.mine(1)?;
            mined += 1;
            self.synced().await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("   Alice's node swept her output as soon as her CSV delay allowed");
        self.mine(1)?;
        let alice_sweep = self
            .spender(OutPoint::new(txid, to_local as u32))
            .await?
            .context("Alice's sweep")?;
        let alice_sweep_fee = self.fee_of(&alice_sweep).await?;
        self.paid(alice_sweep_fee);
        let alice_expected = alice_wallet + alice_sat - commit_fee - anchors - alice_sweep_fee;
        wait("Alice's wallet", || async {
            self.alice.node.wallet_balance().await == Amount::from_sat(alice_expected)
        })
        .await?;
        self.balances().await;
        self.check(
            self.wallet(&self.hub).await == hub_wallet + hub_in_alice - hub_sweep_fee,
            format!(
                "hub: +{} (its output less the sweep fee {hub_sweep_fee})",
                group(hub_in_alice - hub_sweep_fee)
            ),
        )?;
        self.check(
            self.wallet(&self.alice).await == alice_expected,
            format!(
                "alice: +{} (her balance less the commitment fee, the anchors and the sweep fee {alice_sweep_fee})",
                group(alice_sat - commit_fee - anchors - alice_sweep_fee)
            ),
        )?;
        // Her commitment is long past 6 blocks deep: no revoked state can replace it.
        self.forgotten(
            [&self.hub, &self.alice],
            at_tower,
            "the appointments of Alice's channel too",
            "a current commitment closed it",
        )
        .await?;

        // 6. The cheater.
        self.heading(
            "the hub goes offline for maintenance; Bob broadcasts the commitment he kept \
             from before his payment (it is revoked)",
        );
        wait("appointments delivered to the tower", || async {
            self.hub.node.pending_appointments() == 0
        })
        .await?;
        let appointments = tower_appointments(&self.tower_url).await?;
        println!("   the tower holds {appointments} appointments, none of which it can read");
        let bob_wallet = self.wallet(&self.bob).await;
        let bob_honest = sat(self.channel(&self.bob, &bchan).await?.local);
        let hub_wallet = self.wallet(&self.hub).await;
        self.hub.node.shutdown().await;
        println!("   hub stopped");
        let revoked_txid = self.devnet.broadcast(&revoked).await?;
        let revoked_fee = self.fee_of(&revoked).await?;
        let revoked_value: u64 = revoked.output.iter().map(|o| o.value.to_sat()).sum();
        println!(
            "   Bob broadcasts {revoked_txid}: it gives him {} instead of his {}",
            group(revoked_value),
            group(bob_honest)
        );
        self.mine(1)?;
        self.paid(revoked_fee);
        self.anchored(&revoked);
        let anchor_outs = anchor_vouts(&revoked);
        let punished = (0..revoked.output.len())
            .find(|v| !anchor_outs.contains(v))
            .context("an output to punish")? as u32;
        let penalty = {
            let mut found = None;
            for _ in 0..1200 {
                if let Some(tx) = self.spender(OutPoint::new(revoked_txid, punished)).await? {
                    found = Some(tx);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            found.context("the tower's penalty")?
        };
        println!(
            "   the tower saw the breach and broadcast penalty {}",
            penalty.compute_txid()
        );
        self.mine(1)?;
        let penalty_fee = self.fee_of(&penalty).await?;
        self.paid(penalty_fee);
        let spends_all = penalty.input.len() == revoked.output.len() - anchor_outs.len()
            && penalty
                .input
                .iter()
                .all(|i| i.previous_output.txid == revoked_txid);
        self.check(
            spends_all && penalty.output.len() == 1,
            "the penalty takes every output of the revoked commitment but its anchor(s)",
        )?;
        let broadcast =
            tower_metric(&self.tower_url, "watchtower_penalties_broadcast_total").await?;
        self.check(
            broadcast == 1,
            "the tower broadcast it (its metrics count one penalty); the hub was down",
        )?;
        println!("   the hub comes back");
        let hub = start_node(
            &self.devnet,
            &self.dir.join("hub"),
            Role::Hub,
            &self.tower_url,
        )
        .await?;
        self.hub.node = hub;
        let hub_expected = hub_wallet + penalty.output[0].value.to_sat();
        wait("the penalty in the hub's wallet", || async {
            self.hub.node.wallet_balance().await == Amount::from_sat(hub_expected)
        })
        .await?;
        self.synced().await?;
        self.balances().await;
        self.check(
            self.wallet(&self.hub).await == hub_expected,
            format!(
                "hub: +{}, the whole channel less the fees of the revoked commitment ({revoked_fee}) and the penalty ({penalty_fee})",
                group(penalty.output[0].value.to_sat())
            ),
        )?;
        self.check(
            self.wallet(&self.bob).await == bob_wallet,
            format!(
                "bob: nothing back from the channel; he lost his {} for cheating",
                group(bob_honest)
            ),
        )?;

        // 7. Every satoshi.
        self.heading("every satoshi accounted for");
        let mut wallets = 0;
        for p in self.parties() {
            wallets += self.wallet(p).await;
        }
        self.balances().await;
        self.check(
            wallets + self.fees.get() + self.anchors.get() == 3 * COINBASE,
            format!(
                "wallets {} + miners' fees {} + anchors left on chain {} = the 3 coinbases of {}",
                group(wallets),
                group(self.fees.get()),
                group(self.anchors.get()),
                group(COINBASE)
            ),
        )?;
        Ok(())
    }
}

/// The anchor outputs of a commitment (BOLT 3 option_anchors: 330 sat, P2WSH).
fn anchor_vouts(tx: &bitcoin::Transaction) -> Vec<usize> {
    (0..tx.output.len())
        .filter(|i| {
            let o = &tx.output[*i];
            o.value.to_sat() == channel::commitment::ANCHOR_OUTPUT_SAT && o.script_pubkey.is_p2wsh()
        })
        .collect()
}

async fn tower_appointments(url: &str) -> anyhow::Result<u64> {
    let v: serde_json::Value = reqwest::get(format!("{url}/v1/info")).await?.json().await?;
    Ok(v["appointments"].as_u64().unwrap_or(0))
}

/// A counter of the tower's Prometheus metrics.
async fn tower_metric(url: &str, name: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("{name} in the tower's metrics"))
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn groups_thousands() {
        assert_eq!(super::group(0), "0");
        assert_eq!(super::group(999), "999");
        assert_eq!(super::group(1000), "1,000");
        assert_eq!(super::group(5_000_000_000), "5,000,000,000");
    }
}
