//! Group commit: writes that arrive while a transaction is being committed wait and then
//! share the next one, so that many channels pay for one fsync together.

use super::{Store, StoreError, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

type Request = (Vec<Write>, oneshot::Sender<Result<(), String>>);

/// A handle to the writer task. Cloneable; the task ends when every handle is dropped.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    tx: mpsc::Sender<Request>,
    transactions: Arc<AtomicU64>,
}

/// Most requests folded into one transaction.
const MAX_BATCH: usize = 512;

impl GroupCommit {
    /// Starts the writer task on `store`.
    pub fn start(store: Store) -> GroupCommit {
        let (tx, mut rx) = mpsc::channel::<Request>(4096);
        let transactions = Arc::new(AtomicU64::new(0));
        let counter = transactions.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let writes: Vec<Write> =
                    batch.iter().flat_map(|(w, _)| w.iter().cloned()).collect();
                let result = store.write(&writes).await.map_err(|e| e.to_string());
                counter.fetch_add(1, Ordering::Relaxed);
                for (_, reply) in batch {
                    let _ = reply.send(result.clone());
                }
            }
        });
        GroupCommit { tx, transactions }
    }

    /// Writes `writes` atomically; returns once they are durable.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send((writes, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Database(sqlx::Error::Protocol(e))),
            Err(_) => Err(StoreError::WriterStopped),
        }
    }

    /// Database transactions committed so far.
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }
}
