//! Durable storage through sqlx: SQLite (a file, WAL, synchronous=FULL) by default,
//! PostgreSQL for a `postgres://` URL. Schema migrations live in `migrations/<dialect>/`
//! and run at start-up.
//!
//! Writes go through [`GroupCommit`]: the writes of many channels that arrive together
//! share one database transaction, and each caller learns that its writes are durable
//! before it sends anything that depends on them.

mod group;
mod monitor;

pub use group::GroupCommit;
pub use monitor::MonitorHtlc;

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
    /// The SQLite file could not be created or restricted to its owner.
    #[error("database file: {0}")]
    File(std::io::Error),
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database URL (use sqlite://PATH or postgres://...)")]
    UnsupportedUrl,
    /// The database refused or failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored document could not be read back.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The group-commit writer has stopped.
    #[error("storage writer stopped")]
    WriterStopped,
}

/// One row to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Insert or replace a channel's state.
    Channel(StoredChannel),
    /// The HTLCs with an output on a commitment the counterparty revoked (each recorded
    /// once: its range of commitment numbers is extended to this one).
    RevokedHtlcs {
        /// The channel.
        channel_id: [u8; 32],
        /// The revoked commitment's number.
        commitment_number: u64,
        /// Its HTLCs, seen from the counterparty.
        htlcs: Vec<MonitorHtlc>,
    },
    /// A node-wide value.
    Meta {
        /// Its key.
        key: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// Insert or replace a record (invoice, payment, forward, merchant, webhook, ...).
    Record(Record),
    /// Delete a record.
    DeleteRecord {
        /// Its kind.
        kind: String,
        /// Its id.
        id: String,
    },
}

/// A JSON document of some kind, owned by the operator (`owner == ""`) or a merchant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// What it is: "invoice", "payment", "forward", "merchant", "webhook", "delivery".
    pub kind: String,
    /// Its id within the kind.
    pub id: String,
    /// The merchant it belongs to, `""` for the operator.
    pub owner: String,
    /// The document.
    pub data: Vec<u8>,
    /// Unix seconds when first written (kept on update).
    pub created_at: u64,
}

impl Record {
    /// A record holding `value` as JSON.
    pub fn json<T: serde::Serialize>(
        kind: &str,
        id: &str,
        owner: &str,
        created_at: u64,
        value: &T,
    ) -> Record {
        Record {
            kind: kind.into(),
            id: id.into(),
            owner: owner.into(),
            data: serde_json::to_vec(value).expect("records serialize"),
            created_at,
        }
    }

    /// The document, decoded.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_slice(&self.data)
            .map_err(|e| StoreError::Corrupt(format!("{} {}: {e}", self.kind, self.id)))
    }
}

/// A channel row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChannel {
    /// BOLT 2 channel id.
    pub channel_id: [u8; 32],
    /// The peer's node id (33-byte public key).
    pub peer_id: Vec<u8>,
    /// Index of the channel's keys under the node seed.
    pub channel_index: u64,
    /// Life-cycle status ("open", "closing", "closed", ...).
    pub status: String,
    /// The serialized `channel::state::ChannelState`.
    pub state: Vec<u8>,
    /// Unix seconds of the last write.
    pub updated_at: u64,
}

/// The database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

fn to_i64(v: u64) -> i64 {
    // Values stored here (indices, commitment numbers < 2^48, seconds) fit in i64.
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn from_i64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn array32(v: Vec<u8>) -> Result<[u8; 32], sqlx::Error> {
    v.try_into()
        .map_err(|_| sqlx::Error::Decode("expected 32 bytes".into()))
}

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
            // (WAL, full fsync) on the connection that writes.
            options = options.max_connections(1).after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA synchronous = FULL").await?;
                    conn.execute("PRAGMA busy_timeout = 5000").await?;
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
        if dialect == Dialect::Sqlite {
            restrict_sqlite_file(&url)?;
        }
        let pool = options.connect(&url).await?;
        match dialect {
            Dialect::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            Dialect::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, dialect })
    }

    /// Which database this is.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Writes everything in one transaction: all or nothing, durable when this returns.
    pub async fn write(&self, writes: &[Write]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            match w {
                Write::Channel(c) => {
                    sqlx::query(
                        "INSERT INTO channels (channel_id, peer_id, channel_index, status, state, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (channel_id) DO UPDATE SET status = excluded.status, \
                         state = excluded.state, updated_at = excluded.updated_at",
                    )
                    .bind(c.channel_id.to_vec())
                    .bind(c.peer_id.clone())
                    .bind(to_i64(c.channel_index))
                    .bind(c.status.clone())
                    .bind(c.state.clone())
                    .bind(to_i64(c.updated_at))
                    .execute(&mut *tx)
                    .await?;
                }
                Write::RevokedHtlcs {
                    channel_id,
                    commitment_number,
                    htlcs,
                } => monitor::record(&mut tx, channel_id, *commitment_number, htlcs).await?,
                Write::Meta { key, value } => {
                    sqlx::query(
                        "INSERT INTO node_meta (key, value) VALUES ($1, $2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(key.clone())
                    .bind(value.clone())
                    .execute(&mut *tx)
                    .await?;
                }
                Write::Record(r) => {
                    sqlx::query(
                        "INSERT INTO records (kind, id, owner, data, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) \
                         ON CONFLICT (kind, id) DO UPDATE SET owner = excluded.owner, \
                         data = excluded.data, updated_at = excluded.updated_at",
                    )
                    .bind(r.kind.clone())
                    .bind(r.id.clone())
                    .bind(r.owner.clone())
                    .bind(r.data.clone())
                    .bind(to_i64(r.created_at))
                    .bind(to_i64(unix_now()))
                    .execute(&mut *tx)
                    .await?;
                }
                Write::DeleteRecord { kind, id } => {
                    sqlx::query("DELETE FROM records WHERE kind = $1 AND id = $2")
                        .bind(kind.clone())
                        .bind(id.clone())
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    fn channel_from_row(row: &AnyRow) -> Result<StoredChannel, sqlx::Error> {
        Ok(StoredChannel {
            channel_id: array32(row.try_get("channel_id")?)?,
            peer_id: row.try_get("peer_id")?,
            channel_index: from_i64(row.try_get("channel_index")?),
            status: row.try_get("status")?,
            state: row.try_get("state")?,
            updated_at: from_i64(row.try_get("updated_at")?),
        })
    }

    /// Every stored channel.
    pub async fn channels(&self) -> Result<Vec<StoredChannel>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel_id, peer_id, channel_index, status, state, updated_at FROM channels ORDER BY channel_index",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(Self::channel_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// One channel.
    pub async fn channel(
        &self,
        channel_id: &[u8; 32],
    ) -> Result<Option<StoredChannel>, StoreError> {
        let row = sqlx::query(
            "SELECT channel_id, peer_id, channel_index, status, state, updated_at FROM channels WHERE channel_id = $1",
        )
        .bind(channel_id.to_vec())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(Self::channel_from_row).transpose()?)
    }

    /// A node-wide value.
    pub async fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM node_meta WHERE key = $1")
            .bind(key.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    /// Every node-wide value whose key starts with `prefix`.
    pub async fn metas_with_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let rows = sqlx::query("SELECT key, value FROM node_meta WHERE key LIKE $1")
            .bind(format!("{prefix}%"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("key")?, r.try_get("value")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    fn record_from_row(row: &AnyRow) -> Result<Record, sqlx::Error> {
        Ok(Record {
            kind: row.try_get("kind")?,
            id: row.try_get("id")?,
            owner: row.try_get("owner")?,
            data: row.try_get("data")?,
            created_at: from_i64(row.try_get("created_at")?),
        })
    }

    /// One record.
    pub async fn record(&self, kind: &str, id: &str) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(
            "SELECT kind, id, owner, data, created_at FROM records WHERE kind = $1 AND id = $2",
        )
        .bind(kind.to_string())
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(Self::record_from_row).transpose()?)
    }

    /// Records of one kind, oldest first; only `owner`'s when it is given.
    pub async fn records(
        &self,
        kind: &str,
        owner: Option<&str>,
    ) -> Result<Vec<Record>, StoreError> {
        let rows = match owner {
            Some(owner) => {
                sqlx::query(
                    "SELECT kind, id, owner, data, created_at FROM records \
                     WHERE kind = $1 AND owner = $2 ORDER BY created_at, id",
                )
                .bind(kind.to_string())
                .bind(owner.to_string())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(
                    "SELECT kind, id, owner, data, created_at FROM records \
                     WHERE kind = $1 ORDER BY created_at, id",
                )
                .bind(kind.to_string())
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows
            .iter()
            .map(Self::record_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Closes the pool (waits for connections to finish).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The SQLite file holds preimages, payment secrets and webhook secrets: it is created
/// with mode 0600 before SQLite opens it (its -wal and -shm files take the same mode),
/// and an existing one is brought to 0600.
fn restrict_sqlite_file(url: &str) -> Result<(), StoreError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::File)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(StoreError::File)?;
    }
    Ok(())
}
