//! The process harness of the end-to-end tests: real `hub` and `watchtower` processes
//! started on 127.0.0.1 with ports chosen at run time (port 0), their addresses read from
//! their stdout, killed when dropped; a REST client; the devnet over JSON-RPC; throw-away
//! PostgreSQL databases. The hub's and the tower's own tests use it too.

use chain::rpc::client::{RpcClient, RpcCredentials};
use chain::ChainControl;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A binary of this workspace (`hub`, `watchtower`, `devnet`), from the target directory
/// of the running test: `cargo test --workspace` builds them; a lone `cargo test -p` may
/// not, so a missing one is built here.
pub fn binary(name: &str) -> PathBuf {
    let package = match name {
        "devnet" => "chain",
        other => other,
    };
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--bin", name, "-p", package]);
        if dir.file_name().is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building {name}");
    }
    path
}

/// Reads a child's stdout lines on a thread.
fn line_reader(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

/// Waits (up to a minute) for the line holding `marker` and returns the word after it;
/// the rest of the output is drained on a thread.
fn address_after(lines: mpsc::Receiver<String>, marker: &str, what: &str) -> String {
    let found = loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{what} prints its address"));
        if let Some(word) = after(&line, marker) {
            break word.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    found
}

/// Where a child's log goes: `$HUB_TEST_LOG_DIR/<name>.log`, or nowhere.
fn log_sink(name: &str) -> Stdio {
    match std::env::var("HUB_TEST_LOG_DIR") {
        Ok(dir) => Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(format!("{dir}/{name}.log"))
                .expect("log file opens"),
        ),
        Err(_) => Stdio::null(),
    }
}

/// A running `hub` process.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub api: String,
    pub peer_addr: String,
    pub node_id: String,
    /// The devnet's RPC URL and password, when this process runs the devnet.
    pub devnet: Option<(String, String)>,
    pub args: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| {
        line[i + marker.len()..]
            .split_whitespace()
            .next()
            .unwrap_or("")
    })
}

/// Starts `hub` with `args` and waits for it to print its addresses.
pub fn spawn(args: &[String]) -> Proc {
    let name = args
        .iter()
        .position(|a| a == "--data-dir")
        .map(|i| args[i + 1].rsplit('/').next().unwrap_or("hub").to_string())
        .unwrap_or_default();
    let mut child = Command::new(binary("hub"))
        .args(args)
        .env("RUST_LOG", "info,hub=debug")
        .stdout(Stdio::piped())
        .stderr(log_sink(&format!("hub-{name}")))
        .spawn()
        .expect("hub starts");
    let lines = line_reader(&mut child);
    let mut p = Proc {
        child,
        lines,
        api: String::new(),
        peer_addr: String::new(),
        node_id: String::new(),
        devnet: None,
        args: args.to_vec(),
    };
    let mut devnet_url = None;
    while p.api.is_empty() {
        let line = p
            .lines
            .recv_timeout(Duration::from_secs(120))
            .expect("hub prints its addresses");
        if let Some(url) = after(&line, "JSON-RPC on ") {
            devnet_url = Some(url.to_string());
        }
        if let Some(path) = after(&line, "password in ") {
            let pw = std::fs::read_to_string(path.trim_end_matches(')'))
                .unwrap()
                .trim()
                .to_string();
            p.devnet = Some((devnet_url.clone().unwrap(), pw));
        }
        if let Some(id) = after(&line, "node id ") {
            p.node_id = id.to_string();
            p.peer_addr = after(&line, "peers on ").unwrap().to_string();
        }
        if let Some(api) = after(&line, "REST API on ") {
            p.api = api.to_string();
        }
    }
    p
}

/// Writes the operator key next to the data directory and returns that file, so the key
/// is passed as --api-key-file and never appears in process arguments.
fn key_file(data_dir: &str, api_key: &str) -> String {
    let path = format!("{}.api-key", data_dir.trim_end_matches('/'));
    std::fs::write(&path, api_key).expect("key file");
    path
}

/// Arguments of a process that runs the devnet itself.
pub fn devnet_args(data_dir: &str, api_key: &str) -> Vec<String> {
    let key_file = key_file(data_dir, api_key);
    [
        "--data-dir",
        data_dir,
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--devnet-rpc",
        "127.0.0.1:0",
        "--api-key-file",
        &key_file,
        // The tests' webhook receivers listen on loopback.
        "--webhook-allow-ip",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Arguments of a process that uses another's devnet.
pub fn client_args(data_dir: &str, api_key: &str, devnet: &(String, String)) -> Vec<String> {
    let key_file = key_file(data_dir, api_key);
    [
        "--data-dir",
        data_dir,
        "--listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--bitcoind-url",
        &devnet.0,
        "--bitcoind-user",
        "devnet",
        "--bitcoind-password",
        &devnet.1,
        "--network",
        "regtest",
        "--api-key-file",
        &key_file,
        // The tests' webhook receivers listen on loopback.
        "--webhook-allow-ip",
        "127.0.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Arguments of a light node (a merchant's or a user's) that uses another's devnet and
/// talks only to the hub `hub_node_id`.
pub fn light_args(
    data_dir: &str,
    api_key: &str,
    devnet: &(String, String),
    hub_node_id: &str,
) -> Vec<String> {
    let mut a = client_args(data_dir, api_key, devnet);
    a.extend(["--role", "light", "--hub-node-id", hub_node_id].map(String::from));
    a
}

/// A REST client.
#[derive(Clone)]
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            http: reqwest::Client::new(),
        }
    }
}

impl Api {
    /// Calls `method path` with `key`; returns the status and the JSON body (Null if none).
    pub async fn raw(
        &self,
        base: &str,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{base}{path}");
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        }
        .timeout(Duration::from_secs(60));
        let req = match key {
            Some(k) => req.header("authorization", format!("Bearer {k}")),
            None => req,
        };
        let req = match body {
            Some(b) => req.json(&b),
            None => req,
        };
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(e) => (0, Value::String(e.to_string())),
        }
    }

    /// Calls and expects a 2xx.
    pub async fn ok(
        &self,
        base: &str,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, v) = self.raw(base, Some(key), method, path, body).await;
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {v}"
        );
        v
    }

    /// Calls; `Ok` on 2xx.
    pub async fn call(
        &self,
        base: &str,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let (status, v) = self.raw(base, Some(key), method, path, body).await;
        if (200..300).contains(&status) {
            Ok(v)
        } else {
            Err(format!("{status} {v}"))
        }
    }
}

impl Api {
    /// Connects the node at `base` to `hub` (its peer address).
    pub async fn connect(&self, base: &str, key: &str, hub: &Proc) {
        self.ok(
            base,
            key,
            "POST",
            "/v1/peers",
            Some(serde_json::json!({"node_id": hub.node_id, "address": hub.peer_addr})),
        )
        .await;
    }

    /// Opens a channel (`body` as `POST /v1/channels` takes it); returns its id.
    pub async fn open_channel(&self, base: &str, key: &str, body: Value) -> String {
        self.ok(base, key, "POST", "/v1/channels", Some(body)).await["channel_id"]
            .as_str()
            .expect("channel_id")
            .to_string()
    }

    /// Waits until channel `id` is normal at `base`, and, with `policy`, until the
    /// peer's channel_update arrived (a light node can then put the hub in invoices).
    pub async fn wait_usable(&self, base: &str, key: &str, id: &str, policy: bool) {
        wait_for(&format!("channel {id} usable at {base}"), async || {
            self.call(base, key, "GET", &format!("/v1/channels/{id}"), None)
                .await
                .map(|c| {
                    c["status"] == "normal"
                        && c["active"] == true
                        && (!policy || c["peer_policy"].is_object())
                })
                .unwrap_or(false)
        })
        .await;
    }
}

/// Polls `f` every 100 ms for up to two minutes.
pub async fn wait_for(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..1200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The devnet, over RPC.
pub fn rpc(devnet: &(String, String)) -> RpcClient {
    RpcClient::new(
        devnet.0.clone(),
        RpcCredentials::UserPass("devnet".into(), devnet.1.clone()),
    )
    .unwrap()
}

/// An address nobody can spend from, to mine blocks to.
pub fn burn_address() -> String {
    bitcoin::Address::p2wsh(
        &bitcoin::ScriptBuf::from_bytes(vec![0x51]),
        bitcoin::Network::Regtest,
    )
    .to_string()
}

/// Mines `n` blocks to the burn address.
pub async fn mine(rpc: &RpcClient, n: u32) {
    rpc.generate_to_address(n, &burn_address().parse().unwrap())
        .await
        .unwrap();
}

/// Gives the node behind `api` one mature coinbase (50 BTC on regtest).
pub async fn fund(api: &Api, base: &str, key: &str, rpc: &RpcClient) {
    fund_all(api, &[(base, key)], rpc).await;
}

/// Gives each node (REST base, key) one coinbase, then matures them all with 100 blocks:
/// mined together, below regtest's first halving (height 150), each is 50 BTC.
pub async fn fund_all(api: &Api, nodes: &[(&str, &str)], rpc: &RpcClient) {
    for (base, key) in nodes {
        let addr = api.ok(base, key, "POST", "/v1/address", None).await["address"]
            .as_str()
            .expect("an address")
            .to_string();
        rpc.generate_to_address(1, &addr.parse().expect("regtest address"))
            .await
            .expect("mining");
    }
    mine(rpc, 100).await;
    for (base, key) in nodes {
        wait_for("wallet funded", async || {
            api.call(base, key, "GET", "/v1/info", None)
                .await
                .map(|v| v["onchain_balance_sat"].as_u64() > Some(0))
                .unwrap_or(false)
        })
        .await;
    }
}

/// A `devnet` process: the embedded chain on its own, serving Bitcoin Core's JSON-RPC.
pub struct DevnetProc {
    pub child: Child,
    /// RPC URL and password (user `devnet`).
    pub rpc: (String, String),
}

impl Drop for DevnetProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `devnet` on 127.0.0.1:0 with its blocks in `data_dir`.
pub fn spawn_devnet(data_dir: &Path) -> DevnetProc {
    let password = "scenario-devnet";
    let mut child = Command::new(binary("devnet"))
        .args(["--datadir", data_dir.to_str().expect("utf-8 path")])
        .args(["--rpcbind", "127.0.0.1:0", "--rpcpassword", password])
        .stdout(Stdio::piped())
        .stderr(log_sink("devnet"))
        .spawn()
        .expect("devnet starts");
    let url = address_after(line_reader(&mut child), "JSON-RPC on ", "devnet");
    DevnetProc {
        child,
        rpc: (url, password.to_string()),
    }
}

/// A `watchtower` process.
pub struct Tower {
    pub child: Child,
    pub url: String,
}

impl Drop for Tower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `watchtower` on 127.0.0.1:0 with its data in `data_dir`, following the chain at
/// `rpc` (URL, user, password), polling every 50 ms; `extra` arguments come last. Returns
/// once it printed its address.
pub fn spawn_tower(data_dir: &Path, rpc: (&str, &str, &str), extra: &[&str]) -> Tower {
    std::fs::create_dir_all(data_dir).expect("tower data dir");
    let mut child = Command::new(binary("watchtower"))
        .args(["--data-dir", data_dir.to_str().expect("utf-8 path")])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--bitcoind-url", rpc.0, "--bitcoind-user", rpc.1])
        .args(if rpc.2.is_empty() {
            vec![]
        } else {
            vec!["--bitcoind-password", rpc.2]
        })
        .args(["--poll-ms", "50"])
        .args(extra)
        .env("RUST_LOG", "info,watchtower=debug")
        .stdout(Stdio::piped())
        .stderr(log_sink("watchtower"))
        .spawn()
        .expect("watchtower starts");
    let url = address_after(line_reader(&mut child), "listening on ", "watchtower");
    Tower { child, url }
}

/// A throw-away PostgreSQL database on the server `HUB_TEST_POSTGRES_URL` names (`None`
/// when it is unset); dropped with the guard.
#[cfg(feature = "postgres")]
pub async fn postgres_db(tag: &str) -> Option<PgDb> {
    use sqlx::Connection;
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let admin = std::env::var("HUB_TEST_POSTGRES_URL").ok()?;
    let name = format!(
        "t_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL reachable at HUB_TEST_POSTGRES_URL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drop database");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let base = admin
        .rsplit_once('/')
        .expect("URL ends in /DB")
        .0
        .to_string();
    Some(PgDb {
        url: format!("{base}/{name}"),
        admin,
        name,
    })
}

/// A throw-away PostgreSQL database: its URL; dropped (connections forced closed) when
/// the guard is.
#[cfg(feature = "postgres")]
pub struct PgDb {
    pub url: String,
    admin: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl Drop for PgDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: do the async work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut c)
                        .await;
                }
            });
        })
        .join();
    }
}
