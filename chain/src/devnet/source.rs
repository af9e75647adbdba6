//! [`ChainSource`] and [`ChainControl`] for the in-process [`Devnet`], with errors mapped
//! to the same JSON-RPC codes and messages that the devnet server (and Bitcoin Core) use.

use async_trait::async_trait;
use bitcoin::address::NetworkUnchecked;
use bitcoin::{Address, Block, BlockHash, FeeRate, OutPoint, Transaction, Txid};

use super::chainstate::ChainState;
use super::{Devnet, DevnetError, RejectKind, TxReject};
use crate::source::{
    BlockRef, ChainControl, ChainError, ChainSource, HeaderInfo, Spend, TxOutInfo, TxStatus,
};

/// `sendrawtransaction`'s error code and message for a mempool rejection, as Bitcoin Core
/// returns them (`RPC_TRANSACTION_ERROR` -25, `RPC_TRANSACTION_REJECTED` -26,
/// `RPC_TRANSACTION_ALREADY_IN_UTXO_SET` -27).
pub fn tx_reject_rpc_error(e: &TxReject) -> (i64, String) {
    match e.kind {
        RejectKind::MissingInputs => (-25, "bad-txns-inputs-missingorspent".into()),
        RejectKind::AlreadyInChain => (-27, "Transaction outputs already in utxo set".into()),
        RejectKind::MaxFeeExceeded => (
            -25,
            "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)".into(),
        ),
        _ => (-26, e.message()),
    }
}

impl From<DevnetError> for ChainError {
    fn from(e: DevnetError) -> Self {
        match e {
            DevnetError::TxRejected(r) => {
                let (code, message) = tx_reject_rpc_error(&r);
                ChainError::TxRejected { code, message }
            }
            DevnetError::BlockNotFound(_) => ChainError::Rpc {
                code: -5,
                message: "Block not found".into(),
            },
            DevnetError::WrongNetwork => ChainError::Rpc {
                code: -5,
                message: "Error: Invalid address".into(),
            },
            other => ChainError::Devnet(other.to_string()),
        }
    }
}

/// Where `txid` is in this chain state, with the transaction.
pub fn locate_tx(s: &ChainState, txid: &Txid) -> Option<(Transaction, TxStatus)> {
    if let Some(e) = s.mempool().get(txid) {
        return Some((e.tx.clone(), TxStatus::InMempool));
    }
    let (hash, pos) = s.tx_location(txid)?;
    let entry = s.entry(&hash)?;
    let tx = entry.block.txdata.get(pos)?.clone();
    let confirmations = s.height() - entry.height + 1;
    Some((
        tx,
        TxStatus::Confirmed {
            block: BlockRef {
                hash,
                height: entry.height,
            },
            confirmations,
        },
    ))
}

/// `gettxout`: the unspent output at `outpoint`; with `include_mempool`, outputs spent
/// by the mempool are gone and outputs of mempool transactions count (0 confirmations).
pub fn tx_out(s: &ChainState, outpoint: &OutPoint, include_mempool: bool) -> Option<TxOutInfo> {
    if include_mempool && s.mempool().spender(outpoint).is_some() {
        return None;
    }
    if let Some(c) = s.coin(outpoint) {
        return Some(TxOutInfo {
            output: c.output.clone(),
            confirmations: s.height() - c.height + 1,
            coinbase: c.is_coinbase,
        });
    }
    if !include_mempool {
        return None;
    }
    s.mempool().output(outpoint).map(|o| TxOutInfo {
        output: o.clone(),
        confirmations: 0,
        coinbase: false,
    })
}

/// The longest confirmation target a fee spike ([`super::Devnet::set_competing_fee_rate`])
/// moves the estimate for: Core's short and medium horizons follow a spike within hours
/// (and its conservative estimate for a day's target with them); the long horizon, with
/// a half-life of about a week, does not.
pub const SPIKE_HORIZON_BLOCKS: u16 = 144;

/// A simple fee estimate from recent blocks: the median fee rate of the non-coinbase
/// transactions without a parent in their block in the last `2 * target` blocks, `None`
/// if there were none; in a fee spike (other users' transactions filling blocks,
/// [`ChainState::competing_fee_rate`]) at least their rate for targets up to
/// [`SPIKE_HORIZON_BLOCKS`].
pub fn estimate_fee(s: &ChainState, target_blocks: u16) -> Option<FeeRate> {
    let span = u32::from(target_blocks.max(1)) * 2;
    let mut rates = Vec::new();
    for height in s.height().saturating_sub(span - 1)..=s.height() {
        let hash = s.hash_at(height)?;
        let block = &s.entry(&hash)?.block;
        for pos in 1..block.txdata.len() {
            // Like Core's estimator, a transaction that had an unconfirmed parent (here:
            // one in the same block, a CPFP child) is not counted: its own rate says
            // nothing about what confirms.
            let in_block = |txid: &bitcoin::Txid| {
                block.txdata[..pos]
                    .iter()
                    .any(|t| t.compute_txid() == *txid)
            };
            if block.txdata[pos]
                .input
                .iter()
                .any(|i| in_block(&i.previous_output.txid))
            {
                continue;
            }
            if let Some(fee) = s.confirmed_fee(&hash, pos) {
                let vsize = block.txdata[pos].vsize() as u64;
                rates.push(fee.to_sat() * 1000 / vsize.max(1));
            }
        }
    }
    let competing = s
        .competing_fee_rate()
        .filter(|_| target_blocks <= SPIKE_HORIZON_BLOCKS);
    if rates.is_empty() {
        return competing;
    }
    rates.sort_unstable();
    let median = FeeRate::from_sat_per_kwu(rates[rates.len() / 2] / 4);
    Some(competing.map_or(median, |c| c.max(median)))
}

#[async_trait]
impl ChainSource for Devnet {
    async fn tip(&self) -> Result<BlockRef, ChainError> {
        let (hash, height) = Devnet::tip(self);
        Ok(BlockRef { hash, height })
    }

    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError> {
        Ok(self.read(|s| s.hash_at(height)))
    }

    async fn header(&self, hash: &BlockHash) -> Result<Option<HeaderInfo>, ChainError> {
        Ok(self.read(|s| {
            s.entry(hash).map(|e| HeaderInfo {
                header: e.block.header,
                height: e.height,
                confirmations: if s.is_active(hash) {
                    i64::from(s.height() - e.height + 1)
                } else {
                    -1
                },
            })
        }))
    }

    async fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError> {
        Ok(Devnet::block(self, hash).map(|b| (*b).clone()))
    }

    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError> {
        Ok(self.send_raw_transaction(tx.clone(), None)?)
    }

    async fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError> {
        self.test_mempool_accept(tx.clone(), None)
            .map(|_| ())
            .map_err(|e| DevnetError::from(e).into())
    }

    async fn tx_out(
        &self,
        outpoint: &OutPoint,
        include_mempool: bool,
    ) -> Result<Option<TxOutInfo>, ChainError> {
        Ok(self.read(|s| tx_out(s, outpoint, include_mempool)))
    }

    async fn transaction(
        &self,
        txid: &Txid,
    ) -> Result<Option<(Transaction, TxStatus)>, ChainError> {
        Ok(self.read(|s| locate_tx(s, txid)))
    }

    async fn mempool_txids(&self) -> Result<Vec<Txid>, ChainError> {
        Ok(self.read(|s| s.mempool().iter_ordered().map(|e| e.txid).collect()))
    }

    async fn estimate_fee_rate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError> {
        Ok(self.read(|s| estimate_fee(s, target_blocks)))
    }

    /// Uses the devnet's spend index instead of scanning blocks.
    async fn find_spend(
        &self,
        outpoint: &OutPoint,
        _from_height: u32,
    ) -> Result<Option<Spend>, ChainError> {
        Ok(self.read(|s| {
            let txid = s
                .spender_in_chain(outpoint)
                .or_else(|| s.mempool().spender(outpoint))?;
            let (tx, status) = locate_tx(s, &txid)?;
            let input_index = tx
                .input
                .iter()
                .position(|i| i.previous_output == *outpoint)?;
            let block = match status {
                TxStatus::Confirmed { block, .. } => Some(block),
                _ => None,
            };
            Some(Spend {
                tx,
                input_index,
                block,
            })
        }))
    }
}

#[async_trait]
impl ChainControl for Devnet {
    async fn generate_to_address(
        &self,
        count: u32,
        address: &Address<NetworkUnchecked>,
    ) -> Result<Vec<BlockHash>, ChainError> {
        Ok(Devnet::generate_to_address(self, count, address)?)
    }

    async fn invalidate_block(&self, hash: &BlockHash) -> Result<(), ChainError> {
        Ok(Devnet::invalidate_block(self, hash)?)
    }

    async fn reconsider_block(&self, hash: &BlockHash) -> Result<(), ChainError> {
        Ok(Devnet::reconsider_block(self, hash)?)
    }
}
