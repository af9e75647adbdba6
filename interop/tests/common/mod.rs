//! The set-up the LDK scenarios share: a devnet process, a hub process on it, and stock LDK
//! nodes (ldk-node with its default configuration) whose chain source is the devnet's
//! Bitcoin Core-style JSON-RPC. Everything binds 127.0.0.1 on ports chosen at run time.

#![allow(dead_code)]

use chain::ChainControl;
use ldk_node::bitcoin::secp256k1::PublicKey;
use ldk_node::bitcoin::Network;
use ldk_node::config::Config;
use ldk_node::lightning::ln::msgs::SocketAddress;
use ldk_node::lightning_invoice::{Bolt11Invoice, Bolt11InvoiceDescription, Description};
use ldk_node::{Builder, Event, Node};
use scenarios::{rpc, Api, DevnetProc, Proc};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const KEY: &str = "interop-operator-key";

/// A devnet, a hub on it, and a runtime for the hub's REST calls (ldk-node's own calls
/// block, so the tests are plain threads that enter this runtime only for REST).
pub struct World {
    pub rt: tokio::runtime::Runtime,
    pub devnet: DevnetProc,
    pub hub: Proc,
    pub api: Api,
    pub dirs: Vec<tempfile::TempDir>,
}

impl World {
    /// Starts a devnet and a hub, and funds the hub's wallet with one 50 BTC coinbase.
    pub fn new() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dirs: Vec<_> = (0..2)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let devnet = scenarios::spawn_devnet(dirs[0].path());
        let args = scenarios::client_args(
            dirs[1].path().join("hub").to_str().expect("utf-8"),
            KEY,
            &devnet.rpc,
        );
        let hub = scenarios::spawn(&args);
        let w = World {
            rt,
            devnet,
            hub,
            api: Api::default(),
            dirs,
        };
        w.rt.block_on(scenarios::fund(
            &w.api,
            &w.hub.api,
            KEY,
            &rpc(&w.devnet.rpc),
        ));
        w
    }

    /// A REST call on the hub that must succeed.
    pub fn hub(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.rt
            .block_on(self.api.ok(&self.hub.api, KEY, method, path, body))
    }

    /// A REST call on the hub; `Err` carries the status and body.
    pub fn hub_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.rt
            .block_on(self.api.call(&self.hub.api, KEY, method, path, body))
    }

    pub fn hub_id(&self) -> PublicKey {
        PublicKey::from_str(&self.hub.node_id).expect("hub node id")
    }

    pub fn hub_addr(&self) -> SocketAddress {
        SocketAddress::from_str(&self.hub.peer_addr).expect("hub peer address")
    }

    pub fn mine(&self, n: u32) {
        self.rt.block_on(scenarios::mine(&rpc(&self.devnet.rpc), n));
    }

    pub fn mine_to(&self, n: u32, address: &str) {
        let rpc = rpc(&self.devnet.rpc);
        self.rt
            .block_on(rpc.generate_to_address(n, &address.parse().expect("address")))
            .expect("mining");
    }

    pub fn height(&self) -> u64 {
        let rpc = rpc(&self.devnet.rpc);
        self.rt
            .block_on(rpc.call("getblockcount", json!([])))
            .expect("getblockcount")
            .as_u64()
            .expect("a height")
    }

    /// The hub's on-chain wallet balance.
    pub fn hub_onchain_sat(&self) -> u64 {
        self.hub("GET", "/v1/info", None)["onchain_balance_sat"]
            .as_u64()
            .expect("onchain_balance_sat")
    }

    /// The hub's view of one channel.
    pub fn hub_channel(&self, id: &str) -> Value {
        self.hub("GET", &format!("/v1/channels/{id}"), None)
    }

    /// The hub's channels with `peer`.
    pub fn hub_channels_with(&self, peer: &PublicKey) -> Vec<Value> {
        self.hub("GET", "/v1/channels", None)
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c["peer_id"] == peer.to_string())
            .collect()
    }

    /// A BOLT 11 invoice of the hub's.
    pub fn hub_invoice(&self, amount_msat: u64, description: &str) -> Bolt11Invoice {
        let v = self.hub(
            "POST",
            "/v1/invoices",
            Some(json!({"amount_msat": amount_msat, "description": description})),
        );
        Bolt11Invoice::from_str(v["bolt11"].as_str().expect("bolt11"))
            .expect("LDK parses the hub's invoice")
    }

    /// The hub pays a BOLT 11 invoice; returns the payment as the API reports it.
    pub fn hub_pay(&self, invoice: &Bolt11Invoice) -> Value {
        self.hub(
            "POST",
            "/v1/payments",
            Some(json!({"invoice": invoice.to_string(), "wait_secs": 60})),
        )
    }
}

/// A free port on 127.0.0.1 for an LDK listener.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A stock LDK node (default configuration: anchors enabled, as LDK ships) on the devnet.
pub fn ldk_node(w: &World, name: &str) -> Arc<Node> {
    ldk_node_with_alias(w, name, None)
}

/// [`ldk_node`] with a node alias: with one (and its listening address) LDK may open and
/// accept announced channels, as a routing node does.
pub fn ldk_node_with_alias(w: &World, name: &str, alias: Option<&str>) -> Arc<Node> {
    let dir = w.dirs[1].path().join(format!("ldk-{name}"));
    let node_alias = alias.map(|a| {
        let mut bytes = [0u8; 32];
        bytes[..a.len()].copy_from_slice(a.as_bytes());
        ldk_node::lightning::routing::gossip::NodeAlias(bytes)
    });
    let config = Config {
        storage_dir_path: dir.to_str().expect("utf-8").to_string(),
        network: Network::Regtest,
        listening_addresses: Some(vec![SocketAddress::from_str(&format!(
            "127.0.0.1:{}",
            free_port()
        ))
        .expect("addr")]),
        node_alias,
        ..Config::default()
    };
    let mut builder = Builder::from_config(config);
    let url = w.devnet.rpc.0.trim_start_matches("http://").to_string();
    let (host, port) = url
        .trim_end_matches('/')
        .rsplit_once(':')
        .expect("host:port");
    builder.set_chain_source_bitcoind_rpc(
        host.to_string(),
        port.parse().expect("port"),
        "devnet".to_string(),
        w.devnet.rpc.1.clone(),
    );
    builder.set_entropy_seed_bytes([name.len() as u8 + 7; 64]);
    // Like the hub's logs: kept in $HUB_TEST_LOG_DIR when it is set.
    let log = match std::env::var("HUB_TEST_LOG_DIR") {
        Ok(d) => std::path::PathBuf::from(d).join(format!("ldk-{name}.log")),
        Err(_) => dir.join("ldk.log"),
    };
    builder.set_filesystem_logger(
        Some(log.to_str().expect("utf-8").to_string()),
        Some(ldk_node::logger::LogLevel::Debug),
    );
    let node = Arc::new(builder.build().expect("ldk-node builds"));
    node.start().expect("ldk-node starts");
    node
}

/// Funds an LDK node's on-chain wallet with one mature coinbase.
pub fn fund_ldk(w: &World, node: &Node) {
    let addr = node.onchain_payment().new_address().expect("address");
    w.mine_to(1, &addr.to_string());
    w.mine(100);
    wait("LDK wallet funded", || {
        node.sync_wallets().ok();
        node.list_balances().spendable_onchain_balance_sats > 0
    });
}

/// Polls `f` every 100 ms for up to three minutes.
pub fn wait(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Waits for the next LDK event that `f` accepts, marking each event handled; events `f`
/// returns `None` for are skipped.
pub fn next_event<T>(node: &Node, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(180) {
        if let Some(e) = node.next_event() {
            let got = f(&e);
            node.event_handled().expect("event handled");
            if let Some(t) = got {
                return t;
            }
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for LDK event: {what}");
}

/// An LDK invoice.
pub fn ldk_invoice(node: &Node, amount_msat: u64, text: &str) -> Bolt11Invoice {
    let desc =
        Bolt11InvoiceDescription::Direct(Description::new(text.to_string()).expect("description"));
    node.bolt11_payment()
        .receive(amount_msat, &desc, 3600)
        .expect("LDK makes an invoice")
}

/// Waits until the channel is usable on both sides: the hub reports `normal` and LDK
/// `is_usable`. Returns the hub's channel id.
pub fn wait_channel_usable(w: &World, node: &Node) -> String {
    let mut id = String::new();
    wait("channel usable at the hub and at LDK", || {
        let hub_side = w
            .hub_channels_with(&node.node_id())
            .into_iter()
            .find(|c| c["status"] == "normal");
        let ldk_side = node
            .list_channels()
            .iter()
            .any(|c| c.counterparty_node_id == w.hub_id() && c.is_usable);
        if let (Some(c), true) = (hub_side, ldk_side) {
            id = c["channel_id"].as_str().expect("id").to_string();
            true
        } else {
            false
        }
    });
    id
}

/// LDK pays `invoice`; waits for the outcome. Returns the fee LDK paid (msat).
pub fn ldk_pay(node: &Node, invoice: &Bolt11Invoice) -> u64 {
    // LDK routes only over capacity its channel state already counts: right after it
    // received a payment, the balance is there once the commitment dance has finished.
    let amount = invoice.amount_milli_satoshis().unwrap_or(0);
    wait("LDK has outbound capacity for the payment", || {
        node.list_channels()
            .iter()
            .any(|c| c.is_usable && c.outbound_capacity_msat >= amount)
    });
    let id = node
        .bolt11_payment()
        .send(invoice, None)
        .expect("LDK sends");
    payment_outcome(node, id).unwrap_or_else(|e| panic!("LDK payment failed: {e}"))
}

/// Waits for the outcome of LDK's payment `id`: the fee it paid (msat), or why it failed.
pub fn payment_outcome(
    node: &Node,
    id: ldk_node::lightning::ln::channelmanager::PaymentId,
) -> Result<u64, String> {
    next_event(node, "payment outcome", |e| match e {
        Event::PaymentSuccessful {
            payment_id,
            fee_paid_msat,
            ..
        } if *payment_id == Some(id) => Some(Ok(fee_paid_msat.unwrap_or(0))),
        Event::PaymentFailed {
            payment_id, reason, ..
        } if *payment_id == Some(id) => Some(Err(format!("{reason:?}"))),
        _ => None,
    })
}

/// Satoshis of a JSON-RPC amount (BTC).
pub fn sat(v: &Value) -> u64 {
    (v.as_f64().expect("an amount") * 1e8).round() as u64
}

impl World {
    /// A devnet JSON-RPC call that must succeed.
    pub fn rpc(&self, method: &str, params: Value) -> Value {
        let rpc = rpc(&self.devnet.rpc);
        self.rt
            .block_on(rpc.call(method, params))
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// The transaction in the mempool that spends an output of `txid`, decoded.
    pub fn mempool_spender(&self, txid: &str) -> Option<Value> {
        let pool = self.rpc("getrawmempool", json!([]));
        pool.as_array()?.iter().find_map(|t| {
            let tx = self.rpc("getrawtransaction", json!([t, true]));
            tx["vin"]
                .as_array()?
                .iter()
                .any(|i| i["txid"] == txid)
                .then_some(tx)
        })
    }

    /// The confirmed transactions, from `from_height` to the tip, that spend output `vout`
    /// of `txid`, decoded.
    pub fn chain_spenders(&self, txid: &str, vout: u64, from_height: u64) -> Vec<Value> {
        let mut found = Vec::new();
        for h in from_height..=self.height() {
            let hash = self.rpc("getblockhash", json!([h]));
            let block = self.rpc("getblock", json!([hash, 2]));
            for tx in block["tx"].as_array().cloned().unwrap_or_default() {
                let spends = tx["vin"].as_array().is_some_and(|ins| {
                    ins.iter()
                        .any(|i| i["txid"] == txid && i["vout"].as_u64() == Some(vout))
                });
                if spends {
                    found.push(tx);
                }
            }
        }
        found
    }

    /// The value of the output a decoded input (`vin` entry) spends.
    pub fn prevout_sat(&self, vin: &Value) -> u64 {
        let parent = self.rpc("getrawtransaction", json!([vin["txid"], true]));
        let vout = vin["vout"].as_u64().expect("vout") as usize;
        sat(&parent["vout"][vout]["value"])
    }

    /// Whether output `vout` of `txid` is spent in the chain (not just the mempool).
    pub fn spent(&self, txid: &str, vout: u64) -> bool {
        self.rpc("gettxout", json!([txid, vout, false])).is_null()
    }
}

/// The sum of a decoded transaction's outputs.
pub fn outputs_sat(tx: &Value) -> u64 {
    tx["vout"]
        .as_array()
        .expect("vout")
        .iter()
        .map(|o| sat(&o["value"]))
        .sum()
}
