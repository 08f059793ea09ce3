//! Where each table lives, on one server or across a ClickHouse cluster,
//! and the DDL that puts it there.
//!
//! A migration describes a table once ([`Table`]): its columns, its
//! engine, its keys, and its [`Placement`]. This module turns that into
//! statements for the [`Layout`] in use:
//!
//! - on one server, the table itself (`ReplacingMergeTree`, …);
//! - on a cluster, event tables as `Replicated…MergeTree` tables named
//!   `<table>_local` on every node, and a `Distributed` table under the
//!   table's own name over them, sharded by agent ([`SHARDING_KEY`]); the
//!   small shared tables as one `Replicated…MergeTree` table whose replicas
//!   are every node, so each node answers for them by itself.
//!
//! Every query elsewhere names the table's own name, which on a cluster is
//! the `Distributed` table (or the shared table), so no query changes.
//! Why the key is the agent and why writes go through the `Distributed`
//! table: `docs/clickhouse.md`.

use crate::quote_identifier;

/// The sharding key of every event table: all rows of one agent, and so
/// every copy of one event and every report of one episode, are on one
/// shard, where `FINAL`, `argMax` and `uniqExact` see all of them.
pub const SHARDING_KEY: &str = "cityHash64(agent_id)";

/// The suffix of a sharded table's per-node part on a cluster.
pub const LOCAL_SUFFIX: &str = "_local";

/// A table, as a migration creates it.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The column list, without the parentheses.
    pub columns: &'static str,
    pub engine: Engine,
    /// `PARTITION BY … ORDER BY …`: what follows the engine.
    pub keys: &'static str,
    pub placement: Placement,
}

/// The MergeTree family member a table uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    MergeTree,
    /// Rows with the same sorting key collapse to one (any of them).
    ReplacingMergeTree,
    /// Rows with the same sorting key collapse to the one with the largest
    /// value of this column.
    ReplacingMergeTreeBy(&'static str),
}

/// Where a table's rows live on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Spread over the shards by [`SHARDING_KEY`]; the table needs an
    /// `agent_id` column.
    ShardedByAgent,
    /// Every row on every node: small tables that every collector and
    /// console reads whole (leases, tokens, revocations, campaigns, …).
    Everywhere,
}

/// One server, or a named cluster of the servers' `remote_servers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    Single,
    Cluster {
        /// The cluster's name in the servers' `remote_servers`.
        cluster: String,
        /// The database, for ZooKeeper paths and `Distributed` tables.
        database: String,
    },
}

/// Statements that change one table, and that table (whose columns tell
/// whether an added column is there yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alter {
    pub table: String,
    pub sql: Vec<String>,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Self::MergeTree => "MergeTree",
            Self::ReplacingMergeTree | Self::ReplacingMergeTreeBy(_) => "ReplacingMergeTree",
        }
    }

    fn version(self) -> Option<&'static str> {
        match self {
            Self::ReplacingMergeTreeBy(column) => Some(column),
            Self::MergeTree | Self::ReplacingMergeTree => None,
        }
    }
}

impl Layout {
    /// ` ON CLUSTER <name>` on a cluster, empty on one server.
    pub fn on_cluster(&self) -> String {
        match self {
            Self::Single => String::new(),
            Self::Cluster { cluster, .. } => format!(" ON CLUSTER {}", quote_identifier(cluster)),
        }
    }

    /// The statements that create `table`, in order.
    pub fn create(&self, table: &Table) -> Vec<String> {
        let Table {
            name,
            columns,
            engine,
            keys,
            placement,
        } = table;
        let (cluster, database) = match self {
            Self::Single => {
                let args = engine.version().unwrap_or_default();
                return vec![format!(
                    "CREATE TABLE IF NOT EXISTS {name} ({columns}) ENGINE = {}({args}) {keys}",
                    engine.name()
                )];
            }
            Self::Cluster { cluster, database } => (cluster, database),
        };
        match placement {
            Placement::Everywhere => vec![self.replicated(table, name, "everywhere", database)],
            Placement::ShardedByAgent => vec![
                self.replicated(table, &local(name), "{shard}", database),
                self.distributed(name, cluster, database),
            ],
        }
    }

    /// `CREATE` of `table` as the replicated table `created_as`, whose
    /// replicas share the ZooKeeper path under `group` (`{shard}`: the
    /// node's shard; `everywhere`: every node). Names are qualified: ON
    /// CLUSTER, each node runs the statement in its own default database
    /// otherwise.
    fn replicated(&self, table: &Table, created_as: &str, group: &str, database: &str) -> String {
        let Table {
            name,
            columns,
            engine,
            keys,
            ..
        } = table;
        let version = engine
            .version()
            .map(|v| format!(", {v}"))
            .unwrap_or_default();
        format!(
            "CREATE TABLE IF NOT EXISTS {}.{created_as}{} ({columns}) \
             ENGINE = Replicated{}('/clickhouse/tables/{group}/{database}/{name}', \
             '{{replica}}'{version}) {keys}",
            quote_identifier(database),
            self.on_cluster(),
            engine.name()
        )
    }

    /// `CREATE` of the `Distributed` table `name` over `name_local`.
    fn distributed(&self, name: &str, cluster: &str, database: &str) -> String {
        let db = quote_identifier(database);
        let local = local(name);
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{name}{} AS {db}.{local} \
             ENGINE = Distributed({}, {db}, {local}, {SHARDING_KEY})",
            self.on_cluster(),
            quote_identifier(cluster),
        )
    }

    /// What changes `table` with `action` (`ADD COLUMN …`, `MODIFY COLUMN
    /// …`), in order. A shared table is altered on one node and ZooKeeper
    /// carries the change to every replica. A sharded one is altered on
    /// every shard; then its `Distributed` table, which holds no rows, is
    /// made again over the changed tables (18.16 refuses an `ALTER … ON
    /// CLUSTER` of a table that is not replicated on a replicated cluster).
    pub fn alter(&self, table: &str, placement: Placement, action: &str) -> Vec<Alter> {
        let (cluster, database) = match (self, placement) {
            (Self::Single, _) | (Self::Cluster { .. }, Placement::Everywhere) => {
                return vec![Alter {
                    table: table.to_owned(),
                    sql: vec![format!("ALTER TABLE {}{table} {action}", self.qualifier())],
                }];
            }
            (Self::Cluster { cluster, database }, Placement::ShardedByAgent) => (cluster, database),
        };
        let on = self.on_cluster();
        let db = quote_identifier(database);
        vec![
            Alter {
                table: local(table),
                sql: vec![format!("ALTER TABLE {db}.{}{on} {action}", local(table))],
            },
            Alter {
                table: table.to_owned(),
                sql: vec![
                    format!("DROP TABLE IF EXISTS {db}.{table}{on}"),
                    self.distributed(table, cluster, database),
                ],
            },
        ]
    }

    /// The table that holds `table`'s parts on this node (for
    /// `system.parts` and `DROP PARTITION`).
    pub fn local_name(&self, table: &str, placement: Placement) -> String {
        match (self, placement) {
            (Self::Cluster { .. }, Placement::ShardedByAgent) => local(table),
            _ => table.to_owned(),
        }
    }

    /// The statement that drops `partition` of `table` everywhere: on a
    /// cluster, a sharded table's part on every shard (a `Distributed`
    /// table has no partitions); a shared one on this node, which
    /// replication carries to the rest.
    pub fn drop_partition(&self, table: &str, placement: Placement, partition: &str) -> String {
        let on = match placement {
            Placement::ShardedByAgent => self.on_cluster(),
            Placement::Everywhere => String::new(),
        };
        format!(
            "ALTER TABLE {}{}{on} DROP PARTITION {partition}",
            self.qualifier(),
            self.local_name(table, placement)
        )
    }

    /// `` `database`. `` on a cluster (names there are qualified), empty on
    /// one server (the client's database applies).
    fn qualifier(&self) -> String {
        match self {
            Self::Single => String::new(),
            Self::Cluster { database, .. } => format!("{}.", quote_identifier(database)),
        }
    }

    /// On a cluster, the statement that makes this node take in every row
    /// of the shared table `table` that other replicas hold; `None` on one
    /// server or for a sharded table (read through its Distributed table).
    pub fn catch_up(&self, table: &str, placement: Placement) -> Option<String> {
        match placement {
            Placement::Everywhere if self.is_cluster() => {
                Some(format!("SYSTEM SYNC REPLICA {}{table}", self.qualifier()))
            }
            _ => None,
        }
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }
}

/// The name of a sharded table's per-node part.
fn local(table: &str) -> String {
    format!("{table}{LOCAL_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENTS: Table = Table {
        name: "scan_events",
        columns: "event_id UUID, agent_id String",
        engine: Engine::ReplacingMergeTree,
        keys: "ORDER BY event_id",
        placement: Placement::ShardedByAgent,
    };
    const LEASES: Table = Table {
        name: "leases",
        columns: "name String, term UInt64",
        engine: Engine::ReplacingMergeTreeBy("term"),
        keys: "ORDER BY name",
        placement: Placement::Everywhere,
    };

    fn cluster() -> Layout {
        Layout::Cluster {
            cluster: "campus".into(),
            database: "doorwatch".into(),
        }
    }

    #[test]
    fn one_server_gets_the_plain_engine() {
        assert_eq!(
            Layout::Single.create(&EVENTS),
            [
                "CREATE TABLE IF NOT EXISTS scan_events (event_id UUID, agent_id String) \
              ENGINE = ReplacingMergeTree() ORDER BY event_id"
            ]
        );
        assert_eq!(
            Layout::Single.create(&LEASES)[0],
            "CREATE TABLE IF NOT EXISTS leases (name String, term UInt64) \
             ENGINE = ReplacingMergeTree(term) ORDER BY name"
        );
    }

    #[test]
    fn a_cluster_shards_events_by_agent_under_a_distributed_table() {
        let sql = cluster().create(&EVENTS);
        assert_eq!(sql.len(), 2);
        assert!(
            sql[0].starts_with(
                "CREATE TABLE IF NOT EXISTS `doorwatch`.scan_events_local ON CLUSTER `campus`"
            ),
            "{}",
            sql[0]
        );
        assert!(
            sql[0].contains(
                "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/doorwatch/scan_events', '{replica}')"
            ),
            "{}",
            sql[0]
        );
        assert!(
            sql[1].ends_with(
                "AS `doorwatch`.scan_events_local ENGINE = Distributed(`campus`, `doorwatch`, scan_events_local, cityHash64(agent_id))"
            ),
            "{}",
            sql[1]
        );
    }

    #[test]
    fn a_cluster_replicates_shared_tables_to_every_node() {
        let sql = cluster().create(&LEASES);
        assert_eq!(sql.len(), 1);
        assert!(
            sql[0].contains(
                "ReplicatedReplacingMergeTree('/clickhouse/tables/everywhere/doorwatch/leases', '{replica}', term)"
            ),
            "{}",
            sql[0]
        );
    }

    #[test]
    fn only_shared_tables_on_a_cluster_are_caught_up() {
        assert_eq!(
            cluster()
                .catch_up("leases", Placement::Everywhere)
                .as_deref(),
            Some("SYSTEM SYNC REPLICA `doorwatch`.leases")
        );
        assert_eq!(
            cluster().catch_up("scan_events", Placement::ShardedByAgent),
            None
        );
        assert_eq!(
            Layout::Single.catch_up("leases", Placement::Everywhere),
            None
        );
    }

    #[test]
    fn alters_reach_every_shard_and_the_distributed_table() {
        let sharded = cluster().alter(
            "scan_events",
            Placement::ShardedByAgent,
            "ADD COLUMN x UInt8",
        );
        let tables: Vec<&str> = sharded.iter().map(|a| a.table.as_str()).collect();
        assert_eq!(tables, ["scan_events_local", "scan_events"]);
        assert_eq!(
            sharded[0].sql,
            ["ALTER TABLE `doorwatch`.scan_events_local ON CLUSTER `campus` ADD COLUMN x UInt8"]
        );
        assert_eq!(
            sharded[1].sql[0],
            "DROP TABLE IF EXISTS `doorwatch`.scan_events ON CLUSTER `campus`"
        );
        assert!(
            sharded[1].sql[1].contains("AS `doorwatch`.scan_events_local ENGINE = Distributed")
        );
        // A shared table is altered once; replication carries it.
        let shared = cluster().alter("leases", Placement::Everywhere, "ADD COLUMN x UInt8");
        assert_eq!(
            shared[0].sql,
            ["ALTER TABLE `doorwatch`.leases ADD COLUMN x UInt8"]
        );
        assert_eq!(
            Layout::Single.alter(
                "scan_events",
                Placement::ShardedByAgent,
                "ADD COLUMN x UInt8"
            )[0]
            .sql,
            ["ALTER TABLE scan_events ADD COLUMN x UInt8"]
        );
    }
}
