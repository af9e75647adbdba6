//! A Bitcoin Core JSON-RPC client implementing [`ChainSource`] and [`ChainControl`]; it
//! speaks to a real `bitcoind` and to the devnet server alike.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::address::NetworkUnchecked;
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::{Address, Block, BlockHash, FeeRate, OutPoint, Transaction, Txid};
use serde_json::{json, Value};

use super::response::{self, RawTxPlace};
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
        response::reply(status, &text)
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

#[async_trait]
impl ChainSource for RpcClient {
    async fn tip(&self) -> Result<BlockRef, ChainError> {
        // One call for both values, so they are consistent.
        let info = self.call("getblockchaininfo", json!([])).await?;
        response::tip(&info)
    }

    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        match self
            .call_opt("getblockhash", json!([height]), RPC_INVALID_PARAMETER)
            .await?
        {
            Some(v) => Ok(Some(response::block_hash(&v)?)),
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
            Some(v) => Ok(Some(response::header(&v, hash)?)),
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
            Some(v) => Ok(Some(response::block(&v)?)),
            None => Ok(None),
        }
    }

    async fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(), ChainError> {
        let package = json!([[serialize_hex(parent), serialize_hex(child)]]);
        match self.call("submitpackage", package).await {
            // Core 28 and later say "success" when every transaction was accepted or was
            // in the mempool already; Core 26 and 27 answer an error instead.
            Ok(v) => match v.get("package_msg").and_then(Value::as_str) {
                None | Some("success") => Ok(()),
                Some(msg) => {
                    let errors: Vec<&str> = v
                        .get("tx-results")
                        .and_then(Value::as_object)
                        .map(|m| {
                            m.values()
                                .filter_map(|r| r.get("error").and_then(Value::as_str))
                                .collect()
                        })
                        .unwrap_or_default();
                    Err(ChainError::TxRejected {
                        code: -26,
                        message: format!("{msg}: {}", errors.join("; ")),
                    })
                }
            },
            // Before Core 26 there is no submitpackage: one after the other.
            Err(ChainError::Rpc { code: -32601, .. }) => {
                self.broadcast(parent).await?;
                self.broadcast(child).await.map(|_| ())
            }
            Err(ChainError::Rpc { code, message }) if (-27..=-25).contains(&code) => {
                Err(ChainError::TxRejected { code, message })
            }
            Err(e) => Err(e),
        }
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        match self
            .call("sendrawtransaction", json!([serialize_hex(tx)]))
            .await
        {
            Ok(v) => response::txid(&v),
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
            .ok_or_else(|| response::bad("empty testmempoolaccept result"))?;
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
        Ok(Some(response::tx_out(&v)?))
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
        let (tx, place) = response::raw_transaction(&v)?;
        let status = match place {
            RawTxPlace::InBlock {
                hash,
                confirmations,
            } => {
                let height = self.header(&hash).await?.map(|h| h.height).ok_or_else(|| {
                    response::bad("the block of a confirmed transaction is unknown")
                })?;
                TxStatus::Confirmed {
                    block: BlockRef { hash, height },
                    confirmations,
                }
            }
            RawTxPlace::Unknown => TxStatus::Unknown,
            RawTxPlace::InMempool => TxStatus::InMempool,
        };
        Ok(Some((tx, status)))
    }

    async fn mempool_txids(&self) -> Result<Vec<Txid>, ChainError> {
        let v = self.call("getrawmempool", json!([false])).await?;
        response::txids(&v)
    }

    async fn estimate_fee_rate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError> {
        let v = self
            .call("estimatesmartfee", json!([target_blocks]))
            .await?;
        response::fee_rate(&v)
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
        response::block_hashes(&v)
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
