//! Group commit for appointments: the appointments that arrive while a transaction is
//! being committed wait and share the next one, so that many clients pay for one fsync
//! together. Each caller still gets its answer only once its appointment is durable.

use crate::store::{NewAppointment, Store, StoreError, Upsert};
use tokio::sync::{mpsc, oneshot};

type Request = (
    NewAppointment,
    bool,
    oneshot::Sender<Result<Upsert, String>>,
);

/// Most appointments folded into one transaction.
const MAX_BATCH: usize = 256;

/// A handle to the writer task; the task ends when every handle is dropped.
#[derive(Clone, Debug)]
pub struct AppointmentWriter {
    tx: mpsc::Sender<Request>,
}

impl AppointmentWriter {
    /// Starts the writer task on `store`.
    pub fn start(store: Store) -> AppointmentWriter {
        let (tx, mut rx) = mpsc::channel::<Request>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                let items: Vec<(NewAppointment, bool)> =
                    batch.iter().map(|(a, r, _)| (a.clone(), *r)).collect();
                match store.upsert_appointments(&items).await {
                    Ok(outcomes) => {
                        for ((_, _, reply), outcome) in batch.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    // One bad appointment must not sink the others: write them one by one.
                    Err(_) if batch.len() > 1 => {
                        for (a, reserved, reply) in batch {
                            let r = store.upsert_appointment(&a, reserved).await;
                            let _ = reply.send(r.map_err(|e| e.to_string()));
                        }
                    }
                    Err(e) => {
                        for (_, _, reply) in batch {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            }
        });
        AppointmentWriter { tx }
    }

    /// [`Store::upsert_appointment`] through the group commit: returns once durable.
    pub async fn upsert(
        &self,
        a: NewAppointment,
        slot_reserved: bool,
    ) -> Result<Upsert, StoreError> {
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Corrupt("appointment writer stopped".into());
        self.tx
            .send((a, slot_reserved, reply))
            .await
            .map_err(|_| stopped())?;
        match done.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(StoreError::Database(sqlx::Error::Protocol(e))),
            Err(_) => Err(stopped()),
        }
    }
}
