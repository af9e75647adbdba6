//! The one interface the hub and the watchtower use to talk to a chain, whatever is
//! behind it: the in-process [`crate::devnet::Devnet`] or a Bitcoin Core node over
//! JSON-RPC ([`crate::rpc::client::RpcClient`]).

use async_trait::async_trait;
use bitcoin::address::NetworkUnchecked;
use bitcoin::block::Header;
use bitcoin::{Address, Block, BlockHash, FeeRate, OutPoint, Transaction, TxOut, Txid};

/// A block identified by hash and height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Block hash.
    pub hash: BlockHash,
    /// Height in its chain.
    pub height: u32,
}

/// A block header with its position, as `getblockheader` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    /// The header.
    pub header: Header,
    /// Height of the block.
    pub height: u32,
    /// Confirmations: 1 for the tip, -1 when the block is not on the active chain.
    pub confirmations: i64,
}

/// Where a transaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxStatus {
    /// Neither in the mempool nor (as far as the source can tell) in the active chain.
    Unknown,
    /// Waiting in the mempool.
    InMempool,
    /// In a block of the active chain.
    Confirmed {
        /// The block.
        block: BlockRef,
        /// 1 when the block is the tip.
        confirmations: u32,
    },
}

impl TxStatus {
    /// Number of confirmations (0 unless confirmed).
    pub fn confirmations(&self) -> u32 {
        match self {
            TxStatus::Confirmed { confirmations, .. } => *confirmations,
            _ => 0,
        }
    }
}

/// An unspent output as `gettxout` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutInfo {
    /// The output.
    pub output: TxOut,
    /// Confirmations (0 for a mempool output).
    pub confirmations: u32,
    /// Whether it is a coinbase output.
    pub coinbase: bool,
}

/// A transaction that spends a watched outpoint (e.g. a channel's funding output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spend {
    /// The spending transaction.
    pub tx: Transaction,
    /// Index of the input that spends the outpoint.
    pub input_index: usize,
    /// The block holding it, `None` while in the mempool.
    pub block: Option<BlockRef>,
}

/// Errors from any chain back-end. Rejections keep Bitcoin Core's JSON-RPC error code and
/// message so that callers see the same thing from the devnet and from `bitcoind`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The node refused a transaction (`sendrawtransaction` codes -25, -26, -27).
    #[error("transaction rejected ({code}): {message}")]
    TxRejected {
        /// Core's RPC error code.
        code: i64,
        /// Core's message, `reason[, debug]`.
        message: String,
    },
    /// Any other JSON-RPC error.
    #[error("RPC error {code}: {message}")]
    Rpc {
        /// JSON-RPC error code.
        code: i64,
        /// Message.
        message: String,
    },
    /// Bad credentials (HTTP 401).
    #[error("RPC authentication failed")]
    Unauthorized,
    /// The node could not be reached or the connection broke.
    #[error("transport error: {0}")]
    Transport(String),
    /// The node answered something that is not what the protocol says.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The in-process devnet failed (e.g. its data directory).
    #[error("devnet: {0}")]
    Devnet(String),
}

impl ChainError {
    /// For a rejection, Core's reject reason (the message up to the first `", "`), e.g.
    /// `txn-mempool-conflict`.
    pub fn reject_reason(&self) -> Option<&str> {
        match self {
            ChainError::TxRejected { message, .. } => {
                Some(message.split(", ").next().unwrap_or(message))
            }
            _ => None,
        }
    }
}

/// Read and broadcast access to a chain: what the hub and the tower need.
///
/// Everything here maps to a Bitcoin Core RPC call, so a `bitcoind` (with `-txindex=1` for
/// [`ChainSource::transaction`] on confirmed transactions) and the devnet behave alike.
#[async_trait]
pub trait ChainSource: Send + Sync {
    /// The active tip.
    async fn tip(&self) -> Result<BlockRef, ChainError>;
    /// The active-chain block hash at `height`, `None` above the tip.
    async fn block_hash(&self, height: u32) -> Result<Option<BlockHash>, ChainError>;
    /// A block header by hash (any branch), `None` if unknown.
    async fn header(&self, hash: &BlockHash) -> Result<Option<HeaderInfo>, ChainError>;
    /// A full block by hash (any branch), `None` if unknown.
    async fn block(&self, hash: &BlockHash) -> Result<Option<Block>, ChainError>;
    /// Broadcasts a transaction; returns its txid. Already-in-mempool is success.
    async fn broadcast(&self, tx: &Transaction) -> Result<Txid, ChainError>;
    /// Broadcasts `parent` and `child` (which spends it) as one package, so that a parent
    /// paying less than the mempool's minimum is taken with the child paying for it
    /// (Bitcoin Core's `submitpackage`, one parent and one child). Already-in-mempool is
    /// success. This default sends them one after the other.
    async fn broadcast_package(
        &self,
        parent: &Transaction,
        child: &Transaction,
    ) -> Result<(), ChainError> {
        self.broadcast(parent).await?;
        self.broadcast(child).await.map(|_| ())
    }
    /// Checks a transaction against the mempool rules without broadcasting it.
    async fn test_accept(&self, tx: &Transaction) -> Result<(), ChainError>;
    /// An unspent output; with `include_mempool` mempool spends and outputs count.
    async fn tx_out(
        &self,
        outpoint: &OutPoint,
        include_mempool: bool,
    ) -> Result<Option<TxOutInfo>, ChainError>;
    /// A transaction and where it is, `None` if unknown.
    async fn transaction(&self, txid: &Txid)
        -> Result<Option<(Transaction, TxStatus)>, ChainError>;
    /// Txids in the mempool.
    async fn mempool_txids(&self) -> Result<Vec<Txid>, ChainError>;
    /// A fee rate likely to confirm within `target_blocks`, `None` without enough data.
    async fn estimate_fee_rate(&self, target_blocks: u16) -> Result<Option<FeeRate>, ChainError>;

    /// The active-chain block at `height`.
    async fn block_at(&self, height: u32) -> Result<Option<(BlockHash, Block)>, ChainError> {
        let Some(hash) = self.block_hash(height).await? else {
            return Ok(None);
        };
        Ok(self.block(&hash).await?.map(|b| (hash, b)))
    }

    /// Where `txid` is.
    async fn tx_status(&self, txid: &Txid) -> Result<TxStatus, ChainError> {
        Ok(self
            .transaction(txid)
            .await?
            .map(|(_, s)| s)
            .unwrap_or(TxStatus::Unknown))
    }

    /// Confirmations of `txid` (0 while unconfirmed or unknown).
    async fn confirmations(&self, txid: &Txid) -> Result<u32, ChainError> {
        Ok(self.tx_status(txid).await?.confirmations())
    }

    /// Who spent `outpoint`: looks in the mempool, then scans active-chain blocks from
    /// `from_height` (e.g. the funding height) to the tip. `None` while unspent.
    async fn find_spend(
        &self,
        outpoint: &OutPoint,
        from_height: u32,
    ) -> Result<Option<Spend>, ChainError> {
        if self.tx_out(outpoint, true).await?.is_some() {
            return Ok(None);
        }
        if self.tx_out(outpoint, false).await?.is_none() {
            // Spent (or never created) in the chain: scan the blocks.
            let tip = self.tip().await?;
            for height in from_height..=tip.height {
                let Some((hash, block)) = self.block_at(height).await? else {
                    break;
                };
                for tx in block.txdata {
                    if let Some(i) = tx.input.iter().position(|i| i.previous_output == *outpoint) {
                        return Ok(Some(Spend {
                            tx,
                            input_index: i,
                            block: Some(BlockRef { hash, height }),
                        }));
                    }
                }
            }
        }
        for txid in self.mempool_txids().await? {
            if let Some((tx, _)) = self.transaction(&txid).await? {
                if let Some(i) = tx.input.iter().position(|i| i.previous_output == *outpoint) {
                    return Ok(Some(Spend {
                        tx,
                        input_index: i,
                        block: None,
                    }));
                }
            }
        }
        Ok(None)
    }
}

/// Regtest-only controls used by tests: mining and `invalidateblock`. Both the devnet and
/// a `bitcoind -regtest` provide them.
#[async_trait]
pub trait ChainControl: ChainSource {
    /// Mines `count` blocks paying to `address` (`generatetoaddress`).
    async fn generate_to_address(
        &self,
        count: u32,
        address: &Address<NetworkUnchecked>,
    ) -> Result<Vec<BlockHash>, ChainError>;
    /// `invalidateblock`.
    async fn invalidate_block(&self, hash: &BlockHash) -> Result<(), ChainError>;
    /// `reconsiderblock`.
    async fn reconsider_block(&self, hash: &BlockHash) -> Result<(), ChainError>;
}
