//! What retention needs of ClickHouse: the active partitions of doorwatch's
//! tables, dropping one, and deleting whole campaigns and old lease claims.
//!
//! Deciding *what* goes is not done here: the collector's retention module
//! is a pure plan over these rows. This module only reads `system.parts`
//! and runs the statements, with every interpolated value checked first.

use crate::StoreError;
use crate::layout::Layout;

/// The rows and bytes of one active partition of a table.
#[derive(Debug, Clone, PartialEq, Eq, clickhouse::Row, serde::Deserialize)]
pub struct PartitionRow {
    /// The table, in the store's database.
    pub table_name: String,
    /// The partition's value as ClickHouse prints it: `20261203` for a
    /// daily `toYYYYMMDD` partition, `202612` for a monthly one.
    pub partition_value: String,
    pub rows: u64,
    pub bytes_on_disk: u64,
}

/// A partition value that is not the digits of a date: refused before it
/// could reach SQL.
fn checked_partition(value: &str) -> Result<&str, StoreError> {
    if (value.len() == 6 || value.len() == 8) && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value)
    } else {
        Err(StoreError::Unexpected {
            step: "drop partition",
            detail: format!("partition {value:?} is not YYYYMM or YYYYMMDD"),
        })
    }
}

/// On a cluster, the partitions of this node's part of each table (its
/// shard's, for a sharded one), under the table's own name: every shard
/// holds the same days, and this node's disk is what fills.
pub(crate) async fn partitions(
    client: &clickhouse::Client,
    layout: &Layout,
    tables: &[&str],
) -> Result<Vec<PartitionRow>, StoreError> {
    // A table no migration creates has no parts: it is listed as named,
    // and nothing is found.
    let local: Vec<String> = tables
        .iter()
        .map(
            |t| match crate::migrations::placement(t, "list partitions") {
                Ok(placement) => layout.local_name(t, placement),
                Err(_) => (*t).to_owned(),
            },
        )
        .collect();
    let mut rows = client
        .query(
            "SELECT table AS table_name, partition AS partition_value, \
             sum(rows) AS rows, sum(bytes_on_disk) AS bytes_on_disk \
             FROM system.parts \
             WHERE database = currentDatabase() AND active AND has(?, table) \
             GROUP BY table, partition ORDER BY table, partition",
        )
        .bind(&local)
        .fetch_all::<PartitionRow>()
        .await
        .map_err(StoreError::query("list partitions"))?;
    for row in &mut rows {
        if let Some(i) = local.iter().position(|l| *l == row.table_name) {
            row.table_name = tables[i].to_owned();
        }
    }
    Ok(rows)
}

/// On a cluster, drops the partition on every shard (each shard's
/// replicas follow through ZooKeeper).
pub(crate) async fn drop_partition(
    client: &clickhouse::Client,
    layout: &Layout,
    table: &'static str,
    partition: &str,
) -> Result<(), StoreError> {
    let partition = checked_partition(partition)?;
    let placement = crate::migrations::placement(table, "drop partition")?;
    client
        .query(&layout.drop_partition(table, placement, partition))
        .execute()
        .await
        .map_err(StoreError::query("drop partition"))
}

pub(crate) async fn campaigns_last_seen_before(
    client: &clickhouse::Client,
    cutoff: u32,
) -> Result<Vec<uuid::Uuid>, StoreError> {
    let ids: Vec<crate::campaigns::CampaignIdRow> = client
        .query(
            "SELECT campaign_id FROM campaigns GROUP BY campaign_id \
             HAVING max(last_seen) < toDateTime(?) ORDER BY campaign_id",
        )
        .bind(cutoff)
        .fetch_all()
        .await
        .map_err(StoreError::query("find expired campaigns"))?;
    Ok(ids.into_iter().map(|i| i.campaign_id).collect())
}

/// The tables that hold a campaign's rows, each keyed by `campaign_id`.
const CAMPAIGN_TABLES: [&str; 4] = ["campaigns", "campaign_members", "alerts", "campaign_triage"];

pub(crate) async fn delete_campaigns(
    client: &clickhouse::Client,
    ids: &[uuid::Uuid],
) -> Result<(), StoreError> {
    // In chunks, so one statement stays small however many campaigns went.
    for chunk in ids.chunks(500) {
        let list: Vec<String> = chunk.iter().map(|id| format!("toUUID('{id}')")).collect();
        let list = list.join(", ");
        for table in CAMPAIGN_TABLES {
            client
                .query(&format!(
                    "ALTER TABLE {table} DELETE WHERE campaign_id IN ({list})"
                ))
                .execute()
                .await
                .map_err(StoreError::query("delete expired campaigns"))?;
        }
    }
    Ok(())
}

pub(crate) async fn delete_leases_before(
    client: &clickhouse::Client,
    cutoff: u32,
) -> Result<u64, StoreError> {
    let old: u64 = client
        .query("SELECT count() FROM leases WHERE claimed_at < toDateTime(?)")
        .bind(cutoff)
        .fetch_one()
        .await
        .map_err(StoreError::query("count old lease claims"))?;
    if old > 0 {
        client
            .query("ALTER TABLE leases DELETE WHERE claimed_at < toDateTime(?)")
            .bind(cutoff)
            .execute()
            .await
            .map_err(StoreError::query("delete old lease claims"))?;
    }
    Ok(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_date_digits_reach_sql() {
        assert!(checked_partition("20261203").is_ok());
        assert!(checked_partition("202612").is_ok());
        for bad in [
            "",
            "2026",
            "20261203; DROP TABLE x",
            "2026120a",
            "'20261203'",
        ] {
            assert!(checked_partition(bad).is_err(), "{bad:?}");
        }
    }
}
