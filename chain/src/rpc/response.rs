//! Pure parsers for the JSON that Bitcoin Core sends back, split from [`super::client`]
//! so that they can be tested and fuzzed without a node: every function takes what the
//! node sent and returns a typed value or [`ChainError::InvalidResponse`], never panics.

use std::str::FromStr;

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, FeeRate, ScriptBuf, Transaction, TxMerkleNode, TxOut,
    Txid,
};
use serde_json::Value;

use crate::source::{BlockRef, ChainError, HeaderInfo, TxOutInfo};

/// Reads a JSON-RPC reply body: its `result` (`null` when absent), or its `error` as
/// [`ChainError::Rpc`]. `http_status` only labels the error for a body that is not JSON.
pub fn reply(http_status: impl std::fmt::Display, text: &str) -> Result<Value, ChainError> {
    let reply: Value = serde_json::from_str(text).map_err(|_| {
        ChainError::InvalidResponse(format!(
            "HTTP {http_status}: {}",
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

/// `getblockchaininfo`: the tip, read from one result so hash and height agree.
pub fn tip(info: &Value) -> Result<BlockRef, ChainError> {
    Ok(BlockRef {
        hash: parse(str_field(info, "bestblockhash")?, "bestblockhash")?,
        height: u64_field(info, "blocks")? as u32,
    })
}

/// `getblockhash`: a block hash string.
pub fn block_hash(v: &Value) -> Result<BlockHash, ChainError> {
    parse(v.as_str().ok_or_else(|| bad("block hash"))?, "block hash")
}

/// `getblockheader <hash> true`: rebuilds the header from its verbose fields and checks
/// that it hashes to `hash`, so a node cannot hand back another block's header.
pub fn header(v: &Value, hash: &BlockHash) -> Result<HeaderInfo, ChainError> {
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

/// `getblock <hash> 0`: the block's consensus encoding in hex.
pub fn block(v: &Value) -> Result<Block, ChainError> {
    decode(v, "block")
}

/// `sendrawtransaction`: the txid.
pub fn txid(v: &Value) -> Result<Txid, ChainError> {
    parse(v.as_str().ok_or_else(|| bad("txid"))?, "txid")
}

/// `gettxout` (a non-null result): the output, its confirmations and coinbase flag.
pub fn tx_out(v: &Value) -> Result<TxOutInfo, ChainError> {
    let spk = field(v, "scriptPubKey")?;
    let script =
        ScriptBuf::from_hex(str_field(spk, "hex")?).map_err(|_| bad("scriptPubKey hex"))?;
    Ok(TxOutInfo {
        output: TxOut {
            value: btc_amount(field(v, "value")?)?,
            script_pubkey: script,
        },
        confirmations: u64_field(v, "confirmations")? as u32,
        coinbase: field(v, "coinbase")?.as_bool().unwrap_or(false),
    })
}

/// Where `getrawtransaction <txid> true` places a transaction, before the client looks
/// up the height of its block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawTxPlace {
    /// In block `hash` with `confirmations` > 0.
    InBlock {
        /// The block the node names.
        hash: BlockHash,
        /// Its confirmations.
        confirmations: u32,
    },
    /// A block hash with no confirmations: the block left the active chain.
    Unknown,
    /// No block hash: in the mempool.
    InMempool,
}

/// `getrawtransaction <txid> true`: the decoded transaction and where it is.
pub fn raw_transaction(v: &Value) -> Result<(Transaction, RawTxPlace), ChainError> {
    let tx: Transaction = decode(field(v, "hex")?, "transaction")?;
    let confirmations = v.get("confirmations").and_then(Value::as_u64).unwrap_or(0) as u32;
    let place = match v.get("blockhash").and_then(Value::as_str) {
        Some(bh) if confirmations > 0 => RawTxPlace::InBlock {
            hash: parse(bh, "blockhash")?,
            confirmations,
        },
        Some(_) => RawTxPlace::Unknown,
        None => RawTxPlace::InMempool,
    };
    Ok((tx, place))
}

/// `getrawmempool false`: the txids.
pub fn txids(v: &Value) -> Result<Vec<Txid>, ChainError> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad("getrawmempool is not an array"))?;
    arr.iter()
        .map(|t| parse(t.as_str().unwrap_or_default(), "txid"))
        .collect()
}

/// `generatetoaddress`: the new blocks' hashes.
pub fn block_hashes(v: &Value) -> Result<Vec<BlockHash>, ChainError> {
    let arr = v
        .as_array()
        .ok_or_else(|| bad("generatetoaddress result is not an array"))?;
    arr.iter()
        .map(|h| parse(h.as_str().unwrap_or_default(), "block hash"))
        .collect()
}

/// `estimatesmartfee`: BTC per kvB turned into a [`FeeRate`]; `None` when the node has
/// no estimate (no `feerate` field).
pub fn fee_rate(v: &Value) -> Result<Option<FeeRate>, ChainError> {
    match v.get("feerate") {
        Some(rate) => {
            let sat_per_kvb = btc_amount(rate)?.to_sat();
            Ok(Some(FeeRate::from_sat_per_kwu(sat_per_kvb.div_ceil(4))))
        }
        None => Ok(None),
    }
}

pub(crate) fn bad(what: &str) -> ChainError {
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
