//! The responder: gets penalties confirmed. For every penalty in flight it looks at the
//! chain once per block and decides: done, keep waiting, broadcast again (it fell out of
//! the mempool), or give the appointment back to the watcher (a reorg took the breach
//! away; the watcher finds it again if it comes back).

use bitcoin::Transaction;
use chain::{ChainError, ChainSource, TxStatus};

/// What to do with a penalty in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The breach is no longer in the active chain: watch for it again.
    BackToWatching,
    /// The penalty has the required confirmations.
    Confirmed(u32),
    /// Confirmed fewer times than required, or waiting in the mempool (0).
    Waiting(u32),
    /// Neither confirmed nor in the mempool: it was broadcast again.
    Rebroadcast,
}

/// Broadcasts `penalty`; a rejection is logged and returned (the next block retries).
pub async fn broadcast(chain: &dyn ChainSource, penalty: &Transaction) -> Result<(), ChainError> {
    let txid = penalty.compute_txid();
    match chain.broadcast(penalty).await {
        Ok(_) => {
            tracing::info!(penalty = %txid, "penalty broadcast");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(penalty = %txid, error = %e, "penalty broadcast refused; retrying next block");
            Err(e)
        }
    }
}

/// Looks at a penalty in flight and acts: rebroadcasts it when it is nowhere.
pub async fn step(
    chain: &dyn ChainSource,
    breach_txid: &bitcoin::Txid,
    penalty: &Transaction,
    required: u32,
) -> Result<Step, ChainError> {
    if !matches!(
        chain.tx_status(breach_txid).await?,
        TxStatus::Confirmed { .. }
    ) {
        return Ok(Step::BackToWatching);
    }
    Ok(match chain.tx_status(&penalty.compute_txid()).await? {
        TxStatus::Confirmed { confirmations, .. } if confirmations >= required => {
            Step::Confirmed(confirmations)
        }
        TxStatus::Confirmed { confirmations, .. } => Step::Waiting(confirmations),
        TxStatus::InMempool => Step::Waiting(0),
        TxStatus::Unknown => {
            let _ = broadcast(chain, penalty).await;
            Step::Rebroadcast
        }
    })
}
