//! A Bitcoin Core JSON-RPC client implementing [`ChainSource`] and [`ChainControl`]; it
//! speaks to a real `bitcoind` and to the devnet server alike.

use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::address::NetworkUnchecked;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{
    Address, Amount, Block, BlockHash, CompactTarget, FeeRate, OutPoint, ScriptBuf, Transaction,
    TxMerkleNode, TxOut, Txid,
};
use serde_json::{json, Value};

use crate::source::{
    BlockRef, ChainControl, ChainError, ChainSource, HeaderInfo, TxOutInfo, TxStatus,
};

/// Credentials for the node: `rpcuser`/`rpcpassword`, or the `.cookie` file.
#[derive(Clone)]
pub enum RpcCredentials {
    /// User and password.
    UserPass(String, String),
    /// Contents `user:password` read from Bitcoin Core's cookie file.
    Cookie(String),
}

impl std::fmt::Debug for RpcCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RpcCredentials(<redacted>)")
    }
}

impl RpcCredentials {
    /// Reads a Bitcoin Core `.cookie` file.
    pub fn from_cookie_file(path: &Path) -> Result<Self, ChainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ChainError::Transport(format!("{}: {e}", path.display())))?;
        Ok(Self::Cookie(text.trim().to_string()))
    }
}

/// JSON-RPC client for Bitcoin Core's interface.
#[derive(Debug)]
pub struct RpcClient {
    url: String,
    credentials: RpcCredentials,
    http: reqwest::Client,
    next_id: AtomicU64,
}

const RPC_INVALID_ADDRESS_OR_KEY: i64 = -5;
const RPC_INVALID_PARAMETER: i64 = -8;

impl RpcClient {
    /// A client for `url` (e.g. `http://127.0.0.1:18443`).
    pub fn new(url: impl Into<String>, credentials: RpcCredentials) -> Result<Self, ChainError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        Ok(Self {
            url: url.into(),
            credentials,
            http,
            next_id: AtomicU64::new(1),
        })
    }

    /// Calls `method` with positional `params`; returns the `result` or the node's error.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ChainError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params});
        let req = self.http.post(&self.url).json(&body);
        let req = match &self.credentials {
            RpcCredentials::UserPass(u, p) => req.basic_auth(u, Some(p)),
            RpcCredentials::Cookie(c) => {
                let (u, p) = c.split_once(':').unwrap_or((c.as_str(), ""));
                req.basic_auth(u, Some(p))
            }
        };
        let resp = req
            .send()
            .await
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ChainError::Unauthorized);
        }
        let text = resp
            .text()
            .await
            .map_err(|e| ChainError::Transport(e.to_string()))?;
        let reply: Value = serde_json::from_str(&text).map_err(|_| {
            ChainError::InvalidResponse(format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ))
        })?;
        match reply.get("error") {
            Some(Value::Null) | None => Ok(reply.get("result").cloned().unwrap_or(Value::Null)),
            Some(err) => {
                let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
                let message = err
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Err(ChainError::Rpc { code, message })
            }
        }
    }

    /// Like [`Self::call`], but a `null` result or the "not found" error `not_found`
    /// (-5 for unknown blocks and transactions, -8 for heights above the tip) is `None`.
    async fn call_opt(
        &self,
        method: &str,
        params: Value,
        not_found: i64,
    ) -> Result<Option<Value>, ChainError> {
        match self.call(method, params).await {
            Ok(Value::Null) => Ok(None),
            Ok(v) => Ok(Some(v)),
            Err(ChainError::Rpc { code, .. }) if code == not_found => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn bad(what: &str) -> ChainError {
    ChainError::InvalidResponse(what.to_string())
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, ChainError> {
    v.get(key)
        .ok_or_else(|| bad(&format!("missing field {key}")))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str, ChainError> {
    field(v, key)?
        .as_str()
        .ok_or_else(|| bad(&format!("field {key} is not a string")))
}

fn u64_field(v: &Value, key: &str) -> Result<u64, ChainError> {
    field(v, key)?
        .as_u64()
        .ok_or_else(|| bad(&format!("field {key} is not an unsigned integer")))
}

fn parse<T: FromStr>(s: &str, what: &str) -> Result<T, ChainError> {
    s.parse().map_err(|_| bad(&format!("invalid {what}: {s}")))
}

fn decode<T: bitcoin::consensus::Decodable>(v: &Value, what: &str) -> Result<T, ChainError> {
    let hex = v
        .as_str()
        .ok_or_else(|| bad(&format!("{what} is not a hex string")))?;
    deserialize_hex(hex).map_err(|e| bad(&format!("undecodable {what}: {e}")))
}

fn btc_amount(v: &Value) -> Result<Amount, ChainError> {
    let f = v.as_f64().ok_or_else(|| bad("amount is not a number"))?;
    Amount::from_btc(f).map_err(|e| bad(&format!("amount: {e}")))
}

/// Rebuilds a header from `getblockheader`'s verbose fields and checks it hashes to `hash`.
fn header_from_json(v: &Value, hash: &BlockHash) -> Result<HeaderInfo, ChainError> {
    let prev = match v.get("previousblockhash").and_then(Value::as_str) {
        Some(p) => parse(p, "previousblockhash")?,
        None => BlockHash::from_raw_hash(bitcoin::hashes::Hash::all_zeros()),
    };
    let version = field(v, "version")?
        .as_i64()
        .ok_or_else(|| bad("version"))?;
    let header = Header {
        version: BlockVersion::from_consensus(version as i32),
        prev_blockhash: prev,
        merkle_root: parse::<TxMerkleNode>(str_field(v, "merkleroot")?, "merkleroot")?,
        time: u64_field(v, "time")? as u32,
        bits: CompactTarget::from_consensus(
            u32::from_str_radix(str_field(v, "bits")?, 16).map_err(|_| bad("bits"))?,
        ),
        nonce: u64_field(v, "nonce")? as u32,
    };
    if header.block_hash() != *hash {
        return Err(bad("header fields do not hash to the block hash"));
    }
    Ok(HeaderInfo {
        header,
        height: u64_field(v, "height")? as u32,
        confirmations: field(v, "confirmations")?
            .as_i64()
            .ok_or_else(|| bad("confirmations"))?,
    })
}

#[async_trait]
impl ChainSource for RpcClient {
    async fn tip(&self) -> Result<BlockRef, ChainError> {
        // One call for both values, so they are consistent.
        let info = self.call("getblockchaininfo", json!([])).await?;
        Ok(BlockRef {
            hash: parse(str_field(&info, "bestblockhash")?, "bestblockhash")?,
            height: u64_field(&info, "blocks")? as u32,
        })
    }

    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        match self
            .call_opt("getblockhash", json!([height]), RPC_INVALID_PARAMETER)
            .await?
        {
            Some(v) => Ok(Some(parse(
                v.as_str().ok_or_else(|| bad("block hash"))?,
                "block hash",
            )?)),
            None => Ok(None),
        }
    }

    async fn header(&self, hash: &BlockHash) -> Result<Option<HeaderInfo>, ChainError> {
        match self
            .call_opt(
                "getblockheader",
                json!([hash.to_string(), true]),
                RPC_INVALID_ADDRESS_OR_KEY,
            )
            .await?
        {
            Some(v) => Ok(Some(header_from_json(&v, hash)?)),
            None => Ok(None),
        }
    }

    async fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
        match self
            .call_opt(
                "getblock",
                json!([hash.to_string(), 0]),
                RPC_INVALID_ADDRESS_OR_KEY,
            )
            .await?
        {
            Some(v) => Ok(Some(decode(&v, "block")?)),
            None => Ok(None),
        }
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        match self
            .call("sendrawtransaction", json!([serialize_hex(tx)]))
            .await
        {
            Ok(v) => parse(v.as_str().ok_or_else(|| bad("txid"))?, "txid"),
            Err(ChainError::Rpc { code, message }) if (-27..=-25).contains(&code) => {
                Err(ChainError::TxRejected { code, message })
            }
            Err(e) => Err(e),
        }
    }

    async fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError> {
        let v = self
            .call("testmempoolaccept", json!([[serialize_hex(tx)]]))
            .await?;
        let r = v
            .get(0)
            .ok_or_else(|| bad("empty testmempoolaccept result"))?;
        if r.get("allowed").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let message = r
            .get("reject-details")
            .or_else(|| r.get("reject-reason"))
            .and_then(Value::as_str)
            .unwrap_or("rejected")
            .to_string();
        Err(ChainError::TxRejected { code: -26, message })
    }

    async fn tx_out(
        &self,
        outpoint: &OutPoint,
        include_mempool: bool,
    ) -> Result<Option<TxOutInfo>, ChainError> {
        let Some(v) = self
            .call_opt(
                "gettxout",
                json!([outpoint.txid.to_string(), outpoint.vout, include_mempool]),
                RPC_INVALID_ADDRESS_OR_KEY,
            )
            .await?
        else {
            return Ok(None);
        };
        let spk = field(&v, "scriptPubKey")?;
        let script =
            ScriptBuf::from_hex(str_field(spk, "hex")?).map_err(|_| bad("scriptPubKey hex"))?;
        Ok(Some(TxOutInfo {
            output: TxOut {
                value: btc_amount(field(&v, "value")?)?,
                script_pubkey: script,
            },
            confirmations: u64_field(&v, "confirmations")? as u32,
            coinbase: field(&v, "coinbase")?.as_bool().unwrap_or(false),
        }))
    }

    async fn transaction(
        &self,
        txid: &Txid,
    ) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
        let Some(v) = self
            .call_opt(
                "getrawtransaction",
                json!([txid.to_string(), true]),
                RPC_INVALID_ADDRESS_OR_KEY,
            )
            .await?
        else {
            return Ok(None);
        };
        let tx: Transaction = decode(field(&v, "hex")?, "transaction")?;
        let confirmations = v.get("confirmations").and_then(Value::as_u64).unwrap_or(0) as u32;
        let status = match v.get("blockhash").and_then(Value::as_str) {
            Some(bh) if confirmations > 0 => {
                let hash: BlockHash = parse(bh, "blockhash")?;
                let height = self
                    .header(&hash)
                    .await?
                    .map(|h| h.height)
                    .ok_or_else(|| bad("the block of a confirmed transaction is unknown"))?;
                TxStatus::Confirmed {
                    block: BlockRef { hash, height },
                    confirmations,
                }
            }
            Some(_) => TxStatus::Unknown,
            None => TxStatus::InMempool,
        };
        Ok(Some((tx, status)))
    }

    async fn mempool_txids(&self) -> Result<Vec<Txid>, ChainError> {
        let v = self.call("getrawmempool", json!([false])).await?;
        let arr = v
            .as_array()
            .ok_or_else(|| bad("getrawmempool is not an array"))?;
        arr.iter()
            .map(|t| parse(t.as_str().unwrap_or_default(), "txid"))
            .collect()
    }

    async fn estimate_fee_rate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError> {
        let v = self
            .call("estimatesmartfee", json!([target_blocks]))
            .await?;
        match v.get("feerate") {
            Some(rate) => {
                let sat_per_kvb = btc_amount(rate)?.to_sat();
                Ok(Some(FeeRate::from_sat_per_kwu(sat_per_kvb.div_ceil(4))))
            }
            None => Ok(None),
        }
    }
}

#[async_trait]
impl ChainControl for RpcClient {
    async fn generate_to_address(
        &self,
        count: u32,
        address: &Address<NetworkUnchecked>,
    ) -> Result<Vec<BlockHash>, ChainError> {
        let address = address.clone().assume_checked().to_string();
        let v = self
            .call("generatetoaddress", json!([count, address]))
            .await?;
        let arr = v
            .as_array()
            .ok_or_else(|| bad("generatetoaddress result is not an array"))?;
        arr.iter()
            .map(|h| parse(h.as_str().unwrap_or_default(), "block hash"))
            .collect()
    }

    async fn invalidate_block(&self, hash: &BlockHash) -> Result<(), ChainError> {
        self.call("invalidateblock", json!([hash.to_string()]))
            .await
            .map(|_| ())
    }

    async fn reconsider_block(&self, hash: &BlockHash) -> Result<(), ChainError> {
        self.call("reconsiderblock", json!([hash.to_string()]))
            .await
            .map(|_| ())
    }
}
