//! The tower's durable copy of everything (users, appointments, penalties in flight, the
//! last block scanned) through sqlx: SQLite (a file, WAL, synchronous=FULL) by default,
//! PostgreSQL for a `postgres://` URL. Schema migrations live in
//! `watchtower/migrations/<dialect>/` and run at start-up. Every write has committed when
//! its method returns.

use crate::appointment::Locator;
use bitcoin::secp256k1::PublicKey;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::time::Duration;

/// Which database the store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// An SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value is not what the schema promises.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

/// Where an appointment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for its breach.
    Watching,
    /// Breach seen, penalty broadcast, fewer than the required confirmations.
    Responding,
    /// The penalty has the required confirmations.
    Confirmed,
    /// The breach appeared but the blob did not give a valid penalty (see `reason`).
    Invalid,
}

impl Status {
    /// The name stored and shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Watching => "watching",
            Status::Responding => "responding",
            Status::Confirmed => "confirmed",
            Status::Invalid => "invalid",
        }
    }

    fn parse(s: &str) -> Result<Status, StoreError> {
        Ok(match s {
            "watching" => Status::Watching,
            "responding" => Status::Responding,
            "confirmed" => Status::Confirmed,
            "invalid" => Status::Invalid,
            other => return Err(StoreError::Corrupt(format!("status {other}"))),
        })
    }
}

/// An appointment as a client sent it (already verified).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAppointment {
    /// Who sent it.
    pub user_id: PublicKey,
    /// Its locator.
    pub locator: Locator,
    /// The encrypted justice transaction.
    pub encrypted_blob: Vec<u8>,
    /// The channel's `to_self_delay` (informational: the deadline the penalty has).
    pub to_self_delay: u32,
    /// Optional client-chosen tag (e.g. derived from the channel id).
    pub tag: Option<Vec<u8>>,
    /// The client's zbase32 signature over the appointment.
    pub user_signature: String,
    /// Tip height when it was accepted.
    pub start_height: u32,
}

/// A stored appointment with its response state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAppointment {
    /// Row id (what the in-memory locator index points at).
    pub id: i64,
    /// What the client sent.
    pub appointment: NewAppointment,
    /// Where it is.
    pub status: Status,
    /// Why it is `Invalid`.
    pub reason: Option<String>,
    /// The breaching commitment's txid, once seen.
    pub breach_txid: Option<bitcoin::Txid>,
    /// Height of the block holding the breach.
    pub breach_height: Option<u32>,
    /// The decrypted penalty, once the breach was seen.
    pub penalty_tx: Option<bitcoin::Transaction>,
    /// Confirmations of the penalty last seen.
    pub confirmations: u32,
}

/// The outcome of [`Store::upsert_appointment`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsert {
    /// A new appointment (takes a slot).
    Created(i64),
    /// The user's appointment with the same locator was replaced.
    Updated(i64),
    /// The user has no free slot for a new appointment.
    NoSlot,
    /// The appointment with this locator has already been triggered; it cannot change.
    Triggered,
}

/// A registered client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredUser {
    /// Compressed public key.
    pub user_id: PublicKey,
    /// Height from which its appointments are no longer watched.
    pub expiry_height: u32,
    /// Number of appointments it has stored.
    pub appointments: u32,
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u32(v: i64) -> u32 {
    u32::try_from(v).unwrap_or(0)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

const COLUMNS: &str = "id, user_id, locator, encrypted_blob, to_self_delay, tag, user_signature, \
     start_height, status, reason, breach_txid, breach_height, penalty_tx, confirmations";

impl Store {
    /// Opens (creating if needed) the database at `url` and applies the migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(30));
        if dialect == Dialect::Sqlite {
            // One connection: SQLite has one writer anyway, and this keeps the pragmas
            // (WAL, full fsync, foreign keys) on the connection that writes.
            options = options.max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            });
        } else {
            options = options.max_connections(8);
        }
        let url = if dialect == Dialect::Sqlite && !url.contains("mode=") {
            format!("{url}{}mode=rwc", if url.contains('?') { "&" } else { "?" })
        } else {
            url.to_string()
        };
        let pool = options.connect(&url).await?;
        match dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await?,
            Dialect::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, dialect })
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// A tower-wide value.
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM tower_meta WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Sets a tower-wide value.
    pub async fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO tower_meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key.to_string())
        .bind(value.to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Registers a user or moves its expiry.
    pub async fn upsert_user(
        &self,
        user_id: &PublicKey,
        expiry_height: u32,
        now: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO users (user_id, expiry_height, registered_at) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET expiry_height = excluded.expiry_height",
        )
        .bind(user_id.serialize().to_vec())
        .bind(i64::from(expiry_height))
        .bind(to_i64(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every user with its number of appointments.
    pub async fn users(&self) -> Result<Vec<StoredUser>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.user_id, u.expiry_height, \
             (SELECT COUNT(*) FROM appointments a WHERE a.user_id = u.user_id) AS n \
             FROM users u",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let key: Vec<u8> = r.try_get("user_id")?;
                Ok(StoredUser {
                    user_id: PublicKey::from_slice(&key).map_err(|_| corrupt("user id"))?,
                    expiry_height: to_u32(r.try_get("expiry_height")?),
                    appointments: to_u32(r.try_get("n")?),
                })
            })
            .collect()
    }

    /// Stores a new appointment or replaces the user's one with the same locator, in one
    /// transaction. A new one is stored only when `slot_reserved`.
    pub async fn upsert_appointment(
        &self,
        a: &NewAppointment,
        slot_reserved: bool,
    ) -> Result<Upsert, StoreError> {
        Ok(self
            .upsert_appointments(&[(a.clone(), slot_reserved)])
            .await?
            .remove(0))
    }

    /// [`Self::upsert_appointment`] for many appointments sharing one transaction (one
    /// fsync): all are durable, or none, when this returns.
    pub async fn upsert_appointments(
        &self,
        batch: &[(NewAppointment, bool)],
    ) -> Result<Vec<Upsert>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.len());
        for (a, slot_reserved) in batch {
            outcomes.push(Self::upsert_in(&mut tx, a, *slot_reserved).await?);
        }
        tx.commit().await?;
        Ok(outcomes)
    }

    async fn upsert_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        a: &NewAppointment,
        slot_reserved: bool,
    ) -> Result<Upsert, StoreError> {
        let user = a.user_id.serialize().to_vec();
        let existing =
            sqlx::query("SELECT id, status FROM appointments WHERE user_id = $1 AND locator = $2")
                .bind(user.clone())
                .bind(a.locator.0.to_vec())
                .fetch_optional(&mut **tx)
                .await?;
        Ok(match existing {
            Some(row) => {
                let id: i64 = row.try_get("id")?;
                let status: String = row.try_get("status")?;
                if Status::parse(&status)? != Status::Watching {
                    return Ok(Upsert::Triggered);
                }
                sqlx::query(
                    "UPDATE appointments SET encrypted_blob = $1, to_self_delay = $2, tag = $3, \
                     user_signature = $4, start_height = $5 WHERE id = $6",
                )
                .bind(a.encrypted_blob.clone())
                .bind(i64::from(a.to_self_delay))
                .bind(a.tag.clone())
                .bind(a.user_signature.clone())
                .bind(i64::from(a.start_height))
                .bind(id)
                .execute(&mut **tx)
                .await?;
                Upsert::Updated(id)
            }
            None if !slot_reserved => Upsert::NoSlot,
            None => {
                let row = sqlx::query(
                    "INSERT INTO appointments (user_id, locator, encrypted_blob, to_self_delay, tag, \
                     user_signature, start_height, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'watching') \
                     RETURNING id",
                )
                .bind(user)
                .bind(a.locator.0.to_vec())
                .bind(a.encrypted_blob.clone())
                .bind(i64::from(a.to_self_delay))
                .bind(a.tag.clone())
                .bind(a.user_signature.clone())
                .bind(i64::from(a.start_height))
                .fetch_one(&mut **tx)
                .await?;
                Upsert::Created(row.try_get("id")?)
            }
        })
    }

    /// Stores many new appointments in one transaction (for filling a tower in benchmarks
    /// and imports); existing (user, locator) pairs are left alone.
    pub async fn insert_many(&self, batch: &[NewAppointment]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for a in batch {
            sqlx::query(
                "INSERT INTO appointments (user_id, locator, encrypted_blob, to_self_delay, tag, \
                 user_signature, start_height, status) VALUES ($1, $2, $3, $4, $5, $6, $7, 'watching') \
                 ON CONFLICT (user_id, locator) DO NOTHING",
            )
            .bind(a.user_id.serialize().to_vec())
            .bind(a.locator.0.to_vec())
            .bind(a.encrypted_blob.clone())
            .bind(i64::from(a.to_self_delay))
            .bind(a.tag.clone())
            .bind(a.user_signature.clone())
            .bind(i64::from(a.start_height))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    fn from_row(r: &AnyRow) -> Result<StoredAppointment, StoreError> {
        let user: Vec<u8> = r.try_get("user_id")?;
        let locator: Vec<u8> = r.try_get("locator")?;
        let status: String = r.try_get("status")?;
        let breach: Option<Vec<u8>> = r.try_get("breach_txid")?;
        let penalty: Option<Vec<u8>> = r.try_get("penalty_tx")?;
        let breach_height: Option<i64> = r.try_get("breach_height")?;
        Ok(StoredAppointment {
            id: r.try_get("id")?,
            appointment: NewAppointment {
                user_id: PublicKey::from_slice(&user).map_err(|_| corrupt("user id"))?,
                locator: Locator::from_slice(&locator).ok_or_else(|| corrupt("locator"))?,
                encrypted_blob: r.try_get("encrypted_blob")?,
                to_self_delay: to_u32(r.try_get("to_self_delay")?),
                tag: r.try_get("tag")?,
                user_signature: r.try_get("user_signature")?,
                start_height: to_u32(r.try_get("start_height")?),
            },
            status: Status::parse(&status)?,
            reason: r.try_get("reason")?,
            breach_txid: breach
                .map(|b| {
                    <[u8; 32]>::try_from(b.as_slice())
                        .map(bitcoin::Txid::from_byte_array)
                        .map_err(|_| corrupt("breach txid"))
                })
                .transpose()?,
            breach_height: breach_height.map(to_u32),
            penalty_tx: penalty
                .map(|p| {
                    bitcoin::consensus::encode::deserialize(&p).map_err(|_| corrupt("penalty"))
                })
                .transpose()?,
            confirmations: to_u32(r.try_get("confirmations")?),
        })
    }

    /// One appointment by row id.
    pub async fn appointment(&self, id: i64) -> Result<Option<StoredAppointment>, StoreError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM appointments WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::from_row).transpose()
    }

    /// A user's appointment by locator.
    pub async fn user_appointment(
        &self,
        user_id: &PublicKey,
        locator: &Locator,
    ) -> Result<Option<StoredAppointment>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM appointments WHERE user_id = $1 AND locator = $2"
        ))
        .bind(user_id.serialize().to_vec())
        .bind(locator.0.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Self::from_row).transpose()
    }

    /// `(id, locator)` of every appointment being watched: what the in-memory index holds.
    pub async fn watching(&self) -> Result<Vec<(i64, Locator)>, StoreError> {
        let rows = sqlx::query("SELECT id, locator FROM appointments WHERE status = 'watching'")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let l: Vec<u8> = r.try_get("locator")?;
                Ok((
                    r.try_get("id")?,
                    Locator::from_slice(&l).ok_or_else(|| corrupt("locator"))?,
                ))
            })
            .collect()
    }

    /// Every appointment whose penalty is in flight.
    pub async fn responding(&self) -> Result<Vec<StoredAppointment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM appointments WHERE status = 'responding'"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::from_row).collect()
    }

    /// Records that the breach appeared and the penalty was handed to the responder.
    pub async fn set_responding(
        &self,
        id: i64,
        breach_txid: &bitcoin::Txid,
        breach_height: u32,
        penalty: &bitcoin::Transaction,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE appointments SET status = 'responding', reason = NULL, breach_txid = $1, \
             breach_height = $2, penalty_tx = $3, penalty_txid = $4, confirmations = 0 WHERE id = $5",
        )
        .bind(breach_txid.to_byte_array().to_vec())
        .bind(i64::from(breach_height))
        .bind(bitcoin::consensus::encode::serialize(penalty))
        .bind(penalty.compute_txid().to_byte_array().to_vec())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records the penalty's confirmations (and `Confirmed` once it has enough).
    pub async fn set_confirmations(
        &self,
        id: i64,
        confirmations: u32,
        status: Status,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE appointments SET confirmations = $1, status = $2 WHERE id = $3")
            .bind(i64::from(confirmations))
            .bind(status.as_str().to_string())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Marks an appointment whose blob did not give a valid penalty.
    pub async fn set_invalid(
        &self,
        id: i64,
        breach_txid: &bitcoin::Txid,
        reason: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE appointments SET status = 'invalid', reason = $1, breach_txid = $2 WHERE id = $3",
        )
        .bind(reason.to_string())
        .bind(breach_txid.to_byte_array().to_vec())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts an appointment back to watching (its breach left the chain in a reorg).
    pub async fn reset_to_watching(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE appointments SET status = 'watching', reason = NULL, breach_txid = NULL, \
             breach_height = NULL, penalty_tx = NULL, penalty_txid = NULL, confirmations = 0 \
             WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    fn ids_and_locators(rows: &[AnyRow]) -> Result<Vec<(i64, Locator)>, StoreError> {
        rows.iter()
            .map(|r| {
                let l: Vec<u8> = r.try_get("locator")?;
                Ok((
                    r.try_get("id")?,
                    Locator::from_slice(&l).ok_or_else(|| corrupt("locator"))?,
                ))
            })
            .collect()
    }

    /// Deletes a user's appointments carrying `tag` that are not in flight; returns them.
    pub async fn delete_by_tag(
        &self,
        user_id: &PublicKey,
        tag: &[u8],
    ) -> Result<Vec<(i64, Locator)>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM appointments WHERE user_id = $1 AND tag = $2 AND status <> 'responding' \
             RETURNING id, locator",
        )
        .bind(user_id.serialize().to_vec())
        .bind(tag.to_vec())
        .fetch_all(&self.pool)
        .await?;
        Self::ids_and_locators(&rows)
    }

    /// Deletes a user's appointments with these locators that are not in flight; returns
    /// them.
    pub async fn delete_by_locators(
        &self,
        user_id: &PublicKey,
        locators: &[Locator],
    ) -> Result<Vec<(i64, Locator)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut deleted = Vec::new();
        for l in locators {
            let rows = sqlx::query(
                "DELETE FROM appointments WHERE user_id = $1 AND locator = $2 \
                 AND status <> 'responding' RETURNING id, locator",
            )
            .bind(user_id.serialize().to_vec())
            .bind(l.0.to_vec())
            .fetch_all(&mut *tx)
            .await?;
            deleted.extend(Self::ids_and_locators(&rows)?);
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes the appointments (not in flight) of users whose subscription ended at or
    /// before `height`; returns `(id, locator, user)` of each.
    pub async fn prune_expired(
        &self,
        height: u32,
    ) -> Result<Vec<(i64, Locator, PublicKey)>, StoreError> {
        let rows = sqlx::query(
            "DELETE FROM appointments WHERE status <> 'responding' AND user_id IN \
             (SELECT user_id FROM users WHERE expiry_height <= $1) RETURNING id, locator, user_id",
        )
        .bind(i64::from(height))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let l: Vec<u8> = r.try_get("locator")?;
                let u: Vec<u8> = r.try_get("user_id")?;
                Ok((
                    r.try_get("id")?,
                    Locator::from_slice(&l).ok_or_else(|| corrupt("locator"))?,
                    PublicKey::from_slice(&u).map_err(|_| corrupt("user id"))?,
                ))
            })
            .collect()
    }

    /// Number of stored appointments.
    pub async fn count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM appointments")
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

use bitcoin::hashes::Hash as _;
