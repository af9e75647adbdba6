//! The channel monitor's rows: each HTLC of the counterparty's revoked commitments once,
//! with the range of commitment numbers it had an output in (`monitor_htlcs`). Also the
//! one-time conversion of the former `revoked_commitments` table (a whole serialized
//! commitment per revocation).

use super::{array32, from_i64, to_i64, Store, StoreError};
use sqlx::{Any, Row, Transaction};

/// An HTLC as the monitor records it, seen from the counterparty (the holder of the
/// commitments it was in).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorHtlc {
    /// The counterparty offered it.
    pub offered: bool,
    /// Its id, given by the side that offered it.
    pub id: u64,
    /// Its payment hash.
    pub payment_hash: [u8; 32],
    /// Its value.
    pub amount_msat: u64,
    /// Its expiry height.
    pub cltv_expiry: u32,
}

/// Records that `htlcs` had outputs on revoked commitment `number`: a new HTLC gets a row
/// whose range is that number, a known one has its range extended to include it (in
/// whatever order revocations are recorded).
pub(super) async fn record(
    tx: &mut Transaction<'_, Any>,
    channel_id: &[u8; 32],
    number: u64,
    htlcs: &[MonitorHtlc],
) -> Result<(), sqlx::Error> {
    for h in htlcs {
        sqlx::query(
            "INSERT INTO monitor_htlcs (channel_id, offered, htlc_id, payment_hash, amount_msat, \
             cltv_expiry, first_number, last_number) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             ON CONFLICT (channel_id, offered, htlc_id, payment_hash) \
             DO UPDATE SET \
             first_number = CASE WHEN excluded.first_number < monitor_htlcs.first_number \
                 THEN excluded.first_number ELSE monitor_htlcs.first_number END, \
             last_number = CASE WHEN excluded.last_number > monitor_htlcs.last_number \
                 THEN excluded.last_number ELSE monitor_htlcs.last_number END",
        )
        .bind(channel_id.to_vec())
        .bind(i64::from(h.offered))
        .bind(to_i64(h.id))
        .bind(h.payment_hash.to_vec())
        .bind(to_i64(h.amount_msat))
        .bind(i64::from(h.cltv_expiry))
        .bind(to_i64(number))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// The HTLCs recorded with an output on the counterparty's revoked commitment
    /// `number` of `channel_id`.
    pub async fn monitor_htlcs(
        &self,
        channel_id: &[u8; 32],
        number: u64,
    ) -> Result<Vec<MonitorHtlc>, StoreError> {
        let rows = sqlx::query(
            "SELECT offered, htlc_id, payment_hash, amount_msat, cltv_expiry FROM monitor_htlcs \
             WHERE channel_id = $1 AND first_number <= $2 AND last_number >= $2 \
             ORDER BY offered, htlc_id",
        )
        .bind(channel_id.to_vec())
        .bind(to_i64(number))
        .fetch_all(&self.pool)
        .await?;
        let htlc = |r: &sqlx::any::AnyRow| -> Result<MonitorHtlc, sqlx::Error> {
            Ok(MonitorHtlc {
                offered: r.try_get::<i64, _>("offered")? != 0,
                id: from_i64(r.try_get("htlc_id")?),
                payment_hash: array32(r.try_get("payment_hash")?)?,
                amount_msat: from_i64(r.try_get("amount_msat")?),
                cltv_expiry: u32::try_from(r.try_get::<i64, _>("cltv_expiry")?).unwrap_or(0),
            })
        };
        Ok(rows.iter().map(htlc).collect::<Result<_, _>>()?)
    }

    /// The monitor's rows of `channel_id`: how many, and the bytes their columns hold
    /// (blobs by length, each integer as 8 bytes). For the storage benchmark.
    pub async fn monitor_footprint(&self, channel_id: &[u8; 32]) -> Result<(u64, u64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(LENGTH(channel_id) + LENGTH(payment_hash)), 0) AS blobs \
             FROM monitor_htlcs WHERE channel_id = $1",
        )
        .bind(channel_id.to_vec())
        .fetch_one(&self.pool)
        .await?;
        let n = from_i64(row.try_get("n")?);
        let blobs = from_i64(row.try_get("blobs")?);
        Ok((n, blobs + n * 6 * 8))
    }

    /// The serialized commitments of the former `revoked_commitments` table, by channel:
    /// converted once at start-up, then removed with [`Store::drop_legacy_revoked`].
    pub async fn legacy_revoked(&self) -> Result<Vec<([u8; 32], Vec<u8>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT channel_id, data FROM revoked_commitments ORDER BY channel_id, commitment_number",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((array32(r.try_get("channel_id")?)?, r.try_get("data")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    /// Empties the former `revoked_commitments` table (after its rows were converted).
    pub async fn drop_legacy_revoked(&self) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM revoked_commitments")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
