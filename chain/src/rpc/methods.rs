//! The devnet's JSON-RPC methods: Bitcoin Core's names, parameters, result shapes and
//! error codes for the subset the hub and the tower use.

use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::{Address, Amount, Block, BlockHash, FeeRate, OutPoint, Transaction, Txid, Wtxid};
use serde_json::{json, Map, Value};

use super::format::{
    btc, coinbase_summary, difficulty, hex_of, script_pubkey_json, target_hex, tx_json, work_hex,
};
use super::params::{codes, Params, RpcError};
use crate::devnet::chainstate::{BlockEntry, ChainState};
use crate::devnet::params::{DEFAULT_MAX_RAW_TX_FEE_RATE, MAX_TIP_AGE};
use crate::devnet::source::{estimate_fee, locate_tx, tx_out, tx_reject_rpc_error};
use crate::devnet::{Accepted, BlockStatus, Devnet, DevnetError, RejectKind, TxReject};
use crate::source::TxStatus;

/// Every method this server answers.
pub const METHODS: &[&str] = &[
    "getblockchaininfo",
    "getblockcount",
    "getbestblockhash",
    "getblockhash",
    "getblockheader",
    "getblock",
    "getrawtransaction",
    "sendrawtransaction",
    "submitpackage",
    "testmempoolaccept",
    "getrawmempool",
    "getmempoolinfo",
    "getmempoolentry",
    "gettxout",
    "estimatesmartfee",
    "generatetoaddress",
    "getchaintips",
    "invalidateblock",
    "reconsiderblock",
    "submitblock",
    "setmocktime",
    "devnetsetfeespike",
];

/// The transactions of `testmempoolaccept` / `submitpackage`: 1 to 25, hex-encoded.
fn raw_txs(raw: &[Value]) -> Result<Vec<Transaction>, RpcError> {
    if raw.is_empty() || raw.len() > 25 {
        return Err(RpcError::new(
            codes::INVALID_PARAMETER,
            "Array must contain between 1 and 25 transactions.",
        ));
    }
    raw.iter()
        .map(|item| {
            let hex = item.as_str().unwrap_or_default();
            deserialize_hex(hex).map_err(|_| {
                RpcError::new(
                    codes::DESERIALIZATION_ERROR,
                    format!("TX decode failed: {hex} Make sure the tx has at least one input."),
                )
            })
        })
        .collect()
}

fn block_not_found() -> RpcError {
    RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Block not found")
}

fn devnet_err(e: DevnetError) -> RpcError {
    match e {
        DevnetError::BlockNotFound(_) => block_not_found(),
        DevnetError::TxRejected(r) => {
            let (code, message) = tx_reject_rpc_error(&r);
            RpcError::new(code, message)
        }
        DevnetError::GenesisInvalidation => RpcError::new(
            codes::INVALID_PARAMETER,
            "Cannot invalidate the genesis block",
        ),
        other => RpcError::new(codes::MISC_ERROR, other.to_string()),
    }
}

/// Runs `method` with `params` against `devnet`; `Ok(None)` for an unknown method.
pub fn dispatch(devnet: &Devnet, method: &str, params: &Value) -> Result<Option<Value>, RpcError> {
    let p = |names, required| Params::new(method, params, names, required);
    let result = match method {
        "getblockchaininfo" => {
            p(&[], 0)?;
            let size = devnet.size_on_disk();
            devnet.read(|s| blockchain_info(s, size))
        }
        "getblockcount" => {
            p(&[], 0)?;
            json!(devnet.tip().1)
        }
        "getbestblockhash" => {
            p(&[], 0)?;
            json!(devnet.tip().0.to_string())
        }
        "getblockhash" => {
            let p = p(&["height"], 1)?;
            let height = p.i64(0)?;
            let hash = u32::try_from(height)
                .ok()
                .and_then(|h| devnet.read(|s| s.hash_at(h)));
            json!(hash
                .ok_or_else(|| RpcError::new(
                    codes::INVALID_PARAMETER,
                    "Block height out of range"
                ))?
                .to_string())
        }
        "getblockheader" => {
            let p = p(&["blockhash", "verbose"], 1)?;
            let hash: BlockHash = p.hash(0)?;
            let verbose = p.opt_bool(1)?.unwrap_or(true);
            devnet.read(|s| {
                let e = s.entry(&hash).ok_or_else(block_not_found)?;
                Ok::<_, RpcError>(if verbose {
                    Value::Object(header_json(s, e))
                } else {
                    json!(hex_of(&e.block.header))
                })
            })?
        }
        "getblock" => {
            let p = p(&["blockhash", "verbosity"], 1)?;
            let hash: BlockHash = p.hash(0)?;
            let verbosity = p.verbosity(1, 1)?;
            devnet.read(|s| {
                let e = s.entry(&hash).ok_or_else(block_not_found)?;
                Ok::<_, RpcError>(match verbosity {
                    v if v <= 0 => json!(hex_of(&*e.block)),
                    v => block_json(s, e, v),
                })
            })?
        }
        "getrawtransaction" => {
            let p = p(&["txid", "verbosity", "blockhash"], 1)?;
            let txid: Txid = p.hash(0)?;
            let verbosity = p.verbosity(1, 0)?;
            let in_block: Option<BlockHash> = match p.opt_str(2)? {
                Some(_) => Some(p.hash(2)?),
                None => None,
            };
            devnet.read(|s| raw_transaction(s, &txid, verbosity, in_block))?
        }
        "sendrawtransaction" => {
            let p = p(&["hexstring", "maxfeerate", "maxburnamount"], 1)?;
            let tx: Transaction = deserialize_hex(p.str(0)?).map_err(|_| {
                RpcError::new(
                    codes::DESERIALIZATION_ERROR,
                    "TX decode failed. Make sure the tx has at least one input.",
                )
            })?;
            let max = max_fee_rate(p.opt_f64(1)?)?;
            let max_burn = match p.opt_f64(2)? {
                Some(v) => Amount::from_btc(v)
                    .map_err(|_| RpcError::new(codes::TYPE_ERROR, "Invalid amount"))?,
                None => Amount::ZERO,
            };
            if tx
                .output
                .iter()
                .any(|o| o.script_pubkey.is_op_return() && o.value > max_burn)
            {
                return Err(RpcError::new(
                    codes::VERIFY_ERROR,
                    "Unspendable output exceeds maximum configured by user (maxburnamount)",
                ));
            }
            json!(devnet
                .send_raw_transaction(tx, Some(max))
                .map_err(devnet_err)?
                .to_string())
        }
        "submitpackage" => {
            // Bitcoin Core 28's shape. The devnet has no dynamic minimum fee, so taking
            // the transactions in order is what a package submission would do.
            let p = p(&["package", "maxfeerate", "maxburnamount"], 1)?;
            let txs = raw_txs(p.array(0)?)?;
            let mut results = serde_json::Map::new();
            let mut failed = false;
            for tx in txs {
                let wtxid = tx.compute_wtxid().to_string();
                let mut r = json!({"txid": tx.compute_txid().to_string(), "vsize": tx.vsize()});
                if failed {
                    r["error"] = json!("package-not-validated");
                } else if let Err(e) = devnet.send_raw_transaction(tx, None) {
                    failed = true;
                    r["error"] = json!(devnet_err(e).message);
                }
                results.insert(wtxid, r);
            }
            json!({
                "package_msg": if failed { "transaction failed" } else { "success" },
                "tx-results": results,
                "replaced-transactions": [],
            })
        }
        "testmempoolaccept" => {
            let p = p(&["rawtxs", "maxfeerate"], 1)?;
            let txs = raw_txs(p.array(0)?)?;
            let max = max_fee_rate(p.opt_f64(1)?)?;
            let ids: Vec<_> = txs
                .iter()
                .map(|t| (t.compute_txid(), t.compute_wtxid()))
                .collect();
            let results = devnet.test_mempool_accept_package(txs, Some(max));
            Value::Array(
                ids.into_iter()
                    .zip(results)
                    .map(|((txid, wtxid), r)| test_accept_json(txid, wtxid, r))
                    .collect(),
            )
        }
        "getrawmempool" => {
            let p = p(&["verbose", "mempool_sequence"], 0)?;
            let verbose = p.opt_bool(0)?.unwrap_or(false);
            devnet.read(|s| mempool_json(s, verbose))
        }
        "getmempoolinfo" => {
            p(&[], 0)?;
            devnet.read(mempool_info_json)
        }
        "getmempoolentry" => {
            let p = p(&["txid"], 1)?;
            let txid: Txid = p.hash(0)?;
            devnet
                .read(|s| s.mempool().get(&txid).map(|e| mempool_entry_json(s, e)))
                .ok_or_else(|| {
                    RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Transaction not in mempool")
                })?
        }
        "gettxout" => {
            let p = p(&["txid", "n", "include_mempool"], 2)?;
            let txid: Txid = p.hash(0)?;
            let vout = u32::try_from(p.i64(1)?)
                .map_err(|_| RpcError::new(codes::INVALID_PARAMETER, "Invalid n"))?;
            let include_mempool = p.opt_bool(2)?.unwrap_or(true);
            devnet.read(|s| tx_out_json(s, OutPoint { txid, vout }, include_mempool))
        }
        "estimatesmartfee" => {
            let p = p(&["conf_target", "estimate_mode"], 1)?;
            let target = p.i64(0)?;
            if !(1..=1008).contains(&target) {
                return Err(RpcError::new(
                    codes::INVALID_PARAMETER,
                    "Invalid conf_target, must be between 1 and 1008",
                ));
            }
            match devnet.read(|s| estimate_fee(s, target as u16)) {
                Some(rate) => {
                    json!({"feerate": btc(Amount::from_sat(rate.to_sat_per_kwu() * 4)) , "blocks": target})
                }
                None => json!({"errors": ["Insufficient data or no feerate found"], "blocks": 0}),
            }
        }
        "generatetoaddress" => {
            let p = p(&["nblocks", "address", "maxtries"], 2)?;
            let count = u32::try_from(p.i64(0)?)
                .map_err(|_| RpcError::new(codes::INVALID_PARAMETER, "Invalid nblocks"))?;
            let address = Address::<NetworkUnchecked>::from_str(p.str(1)?).map_err(|_| {
                RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Error: Invalid address")
            })?;
            let hashes = devnet
                .generate_to_address(count, &address)
                .map_err(devnet_err)?;
            json!(hashes.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        }
        "getchaintips" => {
            p(&[], 0)?;
            let tips = devnet.read(|s| s.chain_tips());
            json!(tips
                .iter()
                .map(|t| json!({"height": t.height, "hash": t.hash.to_string(), "branchlen": t.branch_len, "status": t.status}))
                .collect::<Vec<_>>())
        }
        "invalidateblock" | "reconsiderblock" => {
            let p = p(&["blockhash"], 1)?;
            let hash: BlockHash = p.hash(0)?;
            let r = if method == "invalidateblock" {
                devnet.invalidate_block(&hash)
            } else {
                devnet.reconsider_block(&hash)
            };
            r.map_err(devnet_err)?;
            Value::Null
        }
        "submitblock" => {
            let p = p(&["hexdata", "dummy"], 1)?;
            let block: Block = deserialize_hex(p.str(0)?)
                .map_err(|_| RpcError::new(codes::DESERIALIZATION_ERROR, "Block decode failed"))?;
            match devnet.submit_block(block) {
                Ok(_) => Value::Null,
                Err(DevnetError::BlockRejected(r)) => json!(r.reason),
                Err(e) => return Err(devnet_err(e)),
            }
        }
        "setmocktime" => {
            let p = p(&["timestamp"], 1)?;
            let t = p.i64(0)?;
            if t < 0 {
                return Err(RpcError::new(
                    codes::INVALID_PARAMETER,
                    "Mocktime cannot be negative: -1.",
                ));
            }
            devnet.set_mock_time(if t == 0 { None } else { Some(t as u64) });
            Value::Null
        }
        // Not Core's: starts (a positive rate in sat/kvB) or ends (0) a fee spike on the
        // devnet, for tests of fee bumping across processes (see
        // `Devnet::set_competing_fee_rate`).
        "devnetsetfeespike" => {
            let p = p(&["sat_per_kvb"], 1)?;
            let rate = u64::try_from(p.i64(0)?)
                .map_err(|_| RpcError::new(codes::INVALID_PARAMETER, "negative rate"))?;
            devnet.set_competing_fee_rate((rate > 0).then(|| FeeRate::from_sat_per_kwu(rate / 4)));
            Value::Null
        }
        _ => return Ok(None),
    };
    Ok(Some(result))
}

fn max_fee_rate(btc_per_kvb: Option<f64>) -> Result<FeeRate, RpcError> {
    match btc_per_kvb {
        None => Ok(DEFAULT_MAX_RAW_TX_FEE_RATE),
        Some(v) if v < 0.0 || !v.is_finite() => {
            Err(RpcError::new(codes::TYPE_ERROR, "Amount out of range"))
        }
        Some(v) => {
            let sat_per_kvb = Amount::from_btc(v)
                .map_err(|_| RpcError::new(codes::TYPE_ERROR, "Invalid amount"))?
                .to_sat();
            Ok(FeeRate::from_sat_per_kwu(sat_per_kvb / 4))
        }
    }
}

fn blockchain_info(s: &ChainState, size_on_disk: u64) -> Value {
    let tip = s.tip();
    let header = tip.block.header;
    let mtp = s.median_time_past(&tip.hash);
    json!({
        "chain": "regtest",
        "blocks": tip.height,
        "headers": s.entries().filter(|e| e.status == BlockStatus::Valid).map(|e| e.height).max().unwrap_or(0),
        "bestblockhash": tip.hash.to_string(),
        "bits": format!("{:08x}", header.bits.to_consensus()),
        "target": target_hex(header.bits),
        "difficulty": difficulty(header.bits),
        "time": header.time,
        "mediantime": mtp,
        "verificationprogress": 1,
        "initialblockdownload": u64::from(header.time) + MAX_TIP_AGE < s.now(),
        "chainwork": work_hex(tip.chainwork),
        "size_on_disk": size_on_disk,
        "pruned": false,
        "warnings": [],
    })
}

fn header_json(s: &ChainState, e: &BlockEntry) -> Map<String, Value> {
    let h = &e.block.header;
    let active = s.is_active(&e.hash);
    let confirmations = if active {
        i64::from(s.height() - e.height + 1)
    } else {
        -1
    };
    let mut m = Map::new();
    m.insert("hash".into(), json!(e.hash.to_string()));
    m.insert("confirmations".into(), json!(confirmations));
    m.insert("height".into(), json!(e.height));
    m.insert("version".into(), json!(h.version.to_consensus()));
    m.insert(
        "versionHex".into(),
        json!(format!("{:08x}", h.version.to_consensus())),
    );
    m.insert("merkleroot".into(), json!(h.merkle_root.to_string()));
    m.insert("time".into(), json!(h.time));
    m.insert("mediantime".into(), json!(s.median_time_past(&e.hash)));
    m.insert("nonce".into(), json!(h.nonce));
    m.insert(
        "bits".into(),
        json!(format!("{:08x}", h.bits.to_consensus())),
    );
    m.insert("target".into(), json!(target_hex(h.bits)));
    m.insert("difficulty".into(), json!(difficulty(h.bits)));
    m.insert("chainwork".into(), json!(work_hex(e.chainwork)));
    m.insert("nTx".into(), json!(e.block.txdata.len()));
    if e.height > 0 {
        m.insert(
            "previousblockhash".into(),
            json!(h.prev_blockhash.to_string()),
        );
    }
    if active {
        if let Some(next) = s.hash_at(e.height + 1) {
            m.insert("nextblockhash".into(), json!(next.to_string()));
        }
    }
    m
}

fn block_json(s: &ChainState, e: &BlockEntry, verbosity: i64) -> Value {
    let mut m = header_json(s, e);
    let block = &e.block;
    m.insert(
        "strippedsize".into(),
        json!(
            block.txdata.iter().map(|t| t.base_size()).sum::<usize>()
                + 80
                + varint_len(block.txdata.len())
        ),
    );
    m.insert("size".into(), json!(block.total_size()));
    m.insert("weight".into(), json!(block.weight().to_wu()));
    m.insert("coinbase_tx".into(), coinbase_summary(block));
    let txs: Vec<Value> = block
        .txdata
        .iter()
        .enumerate()
        .map(|(pos, tx)| {
            if verbosity == 1 {
                json!(tx.compute_txid().to_string())
            } else {
                // Fees and prevouts need undo data, which exists for active blocks.
                let fee = s.confirmed_fee(&e.hash, pos);
                let prevouts = if verbosity >= 3 {
                    s.spent_coins(&e.hash, pos)
                } else {
                    None
                };
                let mut t = tx_json(tx, fee, prevouts);
                t.insert("hex".into(), json!(hex_of(tx)));
                Value::Object(t)
            }
        })
        .collect();
    m.insert("tx".into(), Value::Array(txs));
    Value::Object(m)
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x10000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn raw_transaction(
    s: &ChainState,
    txid: &Txid,
    verbosity: i64,
    in_block: Option<BlockHash>,
) -> Result<Value, RpcError> {
    if s.hash_at(0)
        .and_then(|g| s.entry(&g))
        .map(|e| e.block.header.merkle_root.to_raw_hash())
        == Some(txid.to_raw_hash())
    {
        return Err(RpcError::new(
            codes::INVALID_ADDRESS_OR_KEY,
            "The genesis block coinbase is not considered an ordinary transaction and cannot be retrieved",
        ));
    }
    let found: Option<(Transaction, Option<&BlockEntry>)> = match in_block {
        Some(bh) => {
            let e = s.entry(&bh).ok_or_else(|| {
                RpcError::new(codes::INVALID_ADDRESS_OR_KEY, "Block hash not found")
            })?;
            e.block
                .txdata
                .iter()
                .find(|t| t.compute_txid() == *txid)
                .map(|t| (t.clone(), Some(e)))
        }
        None => locate_tx(s, txid).map(|(tx, status)| match status {
            TxStatus::Confirmed { block, .. } => (tx, s.entry(&block.hash)),
            _ => (tx, None),
        }),
    };
    let Some((tx, block)) = found else {
        let msg = if in_block.is_some() {
            "No such transaction found in the provided block. Use gettransaction for wallet transactions."
        } else {
            "No such mempool or blockchain transaction. Use gettransaction for wallet transactions."
        };
        return Err(RpcError::new(codes::INVALID_ADDRESS_OR_KEY, msg));
    };
    if verbosity <= 0 {
        return Ok(json!(hex_of(&tx)));
    }
    // Verbosity 2 adds fee and prevouts, known for active-chain transactions.
    let position = block.and_then(|e| {
        e.block
            .txdata
            .iter()
            .position(|t| t.compute_txid() == *txid)
    });
    let undo = match (verbosity >= 2, block, position) {
        (true, Some(e), Some(pos)) => {
            Some((s.confirmed_fee(&e.hash, pos), s.spent_coins(&e.hash, pos)))
        }
        _ => None,
    };
    let mut m = tx_json(&tx, undo.and_then(|u| u.0), undo.and_then(|u| u.1));
    m.insert("hex".into(), json!(hex_of(&tx)));
    if let Some(e) = block {
        let active = s.is_active(&e.hash);
        if in_block.is_some() {
            m.insert("in_active_chain".into(), json!(active));
        }
        m.insert("blockhash".into(), json!(e.hash.to_string()));
        if active {
            m.insert("confirmations".into(), json!(s.height() - e.height + 1));
            m.insert("time".into(), json!(e.block.header.time));
            m.insert("blocktime".into(), json!(e.block.header.time));
        } else {
            m.insert("confirmations".into(), json!(0));
        }
    }
    Ok(Value::Object(m))
}

fn test_accept_json(txid: Txid, wtxid: Wtxid, result: Result<Accepted, TxReject>) -> Value {
    match result {
        Ok(a) => json!({
            "txid": txid.to_string(),
            "wtxid": wtxid.to_string(),
            "allowed": true,
            "vsize": a.vsize,
            "fees": {
                "base": btc(a.fee),
                "effective-feerate": btc(Amount::from_sat(a.fee.to_sat() * 1000 / a.vsize.max(1))),
                "effective-includes": [wtxid.to_string()],
            },
        }),
        Err(e) => {
            let reason = match e.kind {
                RejectKind::MissingInputs => "missing-inputs".to_string(),
                _ => e.reason.clone(),
            };
            json!({
                "txid": txid.to_string(),
                "wtxid": wtxid.to_string(),
                "allowed": false,
                "reject-reason": reason,
                "reject-details": e.message(),
            })
        }
    }
}

fn mempool_json(s: &ChainState, verbose: bool) -> Value {
    if !verbose {
        return json!(s
            .mempool()
            .iter_ordered()
            .map(|e| e.txid.to_string())
            .collect::<Vec<_>>());
    }
    let mut m = Map::new();
    for e in s.mempool().iter_ordered() {
        m.insert(e.txid.to_string(), mempool_entry_json(s, e));
    }
    Value::Object(m)
}

/// The in-mempool transactions reachable from `txid` by `next` (parents or children),
/// `txid` included, as Core counts ancestors and descendants.
fn mempool_closure(s: &ChainState, txid: Txid, next: impl Fn(&Txid) -> Vec<Txid>) -> Vec<Txid> {
    let mut seen = vec![txid];
    let mut stack = vec![txid];
    while let Some(t) = stack.pop() {
        for n in next(&t) {
            if !seen.contains(&n) && s.mempool().get(&n).is_some() {
                seen.push(n);
                stack.push(n);
            }
        }
    }
    seen
}

fn parents_in_mempool(s: &ChainState, txid: &Txid) -> Vec<Txid> {
    let Some(e) = s.mempool().get(txid) else {
        return Vec::new();
    };
    let mut v: Vec<Txid> = Vec::new();
    for i in &e.tx.input {
        let t = i.previous_output.txid;
        if s.mempool().get(&t).is_some() && !v.contains(&t) {
            v.push(t);
        }
    }
    v
}

/// One entry as `getmempoolentry` and `getrawmempool true` give it (Bitcoin Core's fields;
/// sizes in virtual bytes, fees in BTC).
fn mempool_entry_json(s: &ChainState, e: &crate::devnet::mempool::MempoolEntry) -> Value {
    let depends = parents_in_mempool(s, &e.txid);
    let spentby = s.mempool().children(&e.txid);
    let ancestors = mempool_closure(s, e.txid, |t| parents_in_mempool(s, t));
    let descendants = mempool_closure(s, e.txid, |t| s.mempool().children(t));
    let total = |ids: &[Txid]| {
        ids.iter()
            .filter_map(|t| s.mempool().get(t))
            .fold((0u64, Amount::ZERO), |(size, fee), m| {
                (size + m.vsize(), fee + m.fee)
            })
    };
    let (ancestor_size, ancestor_fee) = total(&ancestors);
    let (descendant_size, descendant_fee) = total(&descendants);
    json!({
        "vsize": e.vsize(),
        "weight": e.weight.to_wu(),
        "time": e.time,
        "height": e.height,
        "descendantcount": descendants.len(),
        "descendantsize": descendant_size,
        "ancestorcount": ancestors.len(),
        "ancestorsize": ancestor_size,
        "wtxid": e.wtxid.to_string(),
        "fees": {
            "base": btc(e.fee),
            "modified": btc(e.fee),
            "ancestor": btc(ancestor_fee),
            "descendant": btc(descendant_fee),
        },
        "depends": depends.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "spentby": spentby.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
        "bip125-replaceable": e.tx.is_explicitly_rbf(),
        "unbroadcast": false,
    })
}

/// `getmempoolinfo`: Bitcoin Core's fields. The devnet's mempool never fills, so
/// `mempoolminfee` is the minimum relay fee; fee rates are BTC per kvB.
fn mempool_info_json(s: &ChainState) -> Value {
    let entries: Vec<_> = s.mempool().iter_ordered().collect();
    let bytes: u64 = entries.iter().map(|e| e.vsize()).sum();
    let total_fee = entries.iter().fold(Amount::ZERO, |a, e| a + e.fee);
    let per_kvb = |r: FeeRate| btc(Amount::from_sat(r.to_sat_per_kwu() * 4));
    json!({
        "loaded": true,
        "size": entries.len(),
        "bytes": bytes,
        "usage": entries.iter().map(|e| e.weight.to_wu()).sum::<u64>(),
        "total_fee": btc(total_fee),
        "maxmempool": 300_000_000u64,
        "mempoolminfee": per_kvb(s.min_relay_fee()),
        "minrelaytxfee": per_kvb(s.min_relay_fee()),
        "incrementalrelayfee": per_kvb(s.min_relay_fee()),
        "unbroadcastcount": 0,
        "fullrbf": true,
    })
}

fn tx_out_json(s: &ChainState, outpoint: OutPoint, include_mempool: bool) -> Value {
    match tx_out(s, &outpoint, include_mempool) {
        Some(o) => json!({
            "bestblock": s.tip().hash.to_string(),
            "confirmations": o.confirmations,
            "value": btc(o.output.value),
            "scriptPubKey": script_pubkey_json(&o.output.script_pubkey),
            "coinbase": o.coinbase,
        }),
        None => Value::Null,
    }
}
