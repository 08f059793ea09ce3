//! Versioned schema migrations, applied at collector start and recorded in
//! `schema_migrations`.
//!
//! A migration describes each table once ([`Table`]); `crate::layout`
//! turns that into the statements for one server or for a cluster. Every
//! step is idempotent (`IF NOT EXISTS`, a column added only when missing),
//! so several collectors starting at once, or a collector that died
//! half-way, converge on the same schema; on a cluster, each statement runs
//! `ON CLUSTER` (or, for a shared table, on one node and replication
//! carries it), so one collector migrates every node. A migration is never
//! edited once released; changes come as new versions.

use crate::StoreError;
use crate::layout::{Engine, Layout, Placement, Table};

/// One schema step.
#[derive(Debug)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub steps: &'static [Step],
}

/// One step of a migration, in an idempotent form.
#[derive(Debug)]
pub enum Step {
    /// `CREATE TABLE … IF NOT EXISTS`, laid out for one server or a cluster.
    Create(Table),
    /// `ALTER TABLE … ADD COLUMN`, skipped when the column exists (18.16
    /// has no `ADD COLUMN IF NOT EXISTS`).
    AddColumn {
        table: &'static str,
        column: &'static str,
        definition: &'static str,
    },
    /// `ALTER TABLE … MODIFY COLUMN`: idempotent by itself when it only
    /// changes metadata (adding an `Enum8` value).
    ModifyColumn {
        table: &'static str,
        column: &'static str,
        definition: &'static str,
    },
}

/// All migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "scan_events",
        steps: &[            // One row per report of a scan episode. Reports of one episode share
            // `episode_id`; the newest report carries the largest counts.
            //
            // ReplacingMergeTree over a key that ends in `event_id` collapses
            // retried inserts of the same event. Queries use FINAL (or count
            // distinct ids), so they are correct before background merges too.
            // Every key column comes from the agent's event, never from the
            // collector's clock, so a resent event lands in the same partition
            // with the same key.
            Step::Create(Table {
            name: "scan_events",
            columns: "
                event_id UUID,
                episode_id UUID,
                agent_id String,
                received_at DateTime,
                created_at DateTime,
                state Enum8('detected' = 1, 'active' = 2, 'closed' = 3),
                scanner FixedString(16),
                target FixedString(16),
                scan_types Array(String),
                ports_probed UInt32,
                port_sample Array(UInt16),
                open_ports Array(UInt16),
                probes UInt64,
                first_seen DateTime,
                last_seen DateTime,
                confidence UInt8,
                explanation String",
            engine: Engine::ReplacingMergeTree,
            keys: "PARTITION BY toYYYYMMDD(first_seen) ORDER BY (scanner, target, first_seen, event_id)",
            placement: Placement::ShardedByAgent,
        })],
    },
    Migration {
        version: 2,
        name: "decoys_fragments_floods",
        steps: &[
            Step::AddColumn {
                table: "scan_events",
                column: "companions",
                definition: "Array(FixedString(16))",
            },
            Step::AddColumn {
                table: "scan_events",
                column: "fragmented",
                definition: "UInt8",
            },
            // One row per report of a flood against one address of a PC.
            // Same dedup design as scan_events.
            Step::Create(Table {
            name: "flood_events",
            columns: "
                event_id UUID,
                episode_id UUID,
                agent_id String,
                received_at DateTime,
                created_at DateTime,
                state Enum8('detected' = 1, 'active' = 2, 'closed' = 3),
                target FixedString(16),
                ports Array(UInt16),
                sources UInt64,
                first_seen DateTime,
                last_seen DateTime,
                explanation String",
            engine: Engine::ReplacingMergeTree,
            keys: "PARTITION BY toYYYYMMDD(first_seen) ORDER BY (target, first_seen, event_id)",
            placement: Placement::ShardedByAgent,
        }),
        ],
    },
    Migration {
        version: 3,
        name: "policies",
        steps: &[
            // Small and rarely written: no partitions. Versions only grow,
            // and readers take the highest, so concurrent writers of the
            // same version agree on content or the next change wins.
            Step::Create(Table {
            name: "policies",
            columns: "
                policy_group String,
                version UInt64,
                scan_min_ports UInt32,
                episode_idle_seconds UInt32,
                allowlisted_sources Array(FixedString(16)),
                updated_at DateTime,
                updated_by String",
            engine: Engine::ReplacingMergeTreeBy("version"),
            keys: "ORDER BY (policy_group, version)",
            placement: Placement::Everywhere,
        }),
        ],
    },
    Migration {
        version: 4,
        name: "agent_heartbeats",
        steps: &[
            // Health is the newest heartbeat per agent (argMax), so plain
            // MergeTree: a duplicate heartbeat changes nothing.
            Step::Create(Table {
            name: "agent_heartbeats",
            columns: "
                agent_id String,
                received_at DateTime,
                agent_version String,
                claimed_hostname String,
                packets_seen UInt64,
                kernel_drops UInt64,
                pending_events UInt64,
                spool_bytes UInt64,
                events_dropped UInt64,
                dropped_spool_cap UInt64,
                dropped_spool_error UInt64,
                dropped_invalid UInt64,
                dropped_queue_full UInt64,
                policy_version UInt64,
                uptime_seconds UInt64",
            engine: Engine::MergeTree,
            keys: "PARTITION BY toYYYYMMDD(received_at) ORDER BY (agent_id, received_at)",
            placement: Placement::ShardedByAgent,
        }),
        ],
    },
    Migration {
        version: 5,
        name: "heartbeat_events_created",
        steps: &[Step::AddColumn {
            table: "agent_heartbeats",
            column: "events_created",
            definition: "UInt64",
        }],
    },
    Migration {
        version: 6,
        name: "enrollment",
        steps: &[
            // Bootstrap tokens. Only a SHA-256 of the secret is kept. A
            // change (revocation) is a new row with a higher version; reads
            // use FINAL.
            Step::Create(Table {
            name: "enrollment_tokens",
            columns: "
                token_id String,
                secret_sha256 String,
                agent_group String,
                created_at DateTime,
                expires_at DateTime,
                max_uses UInt32,
                revoked UInt8,
                revoked_at DateTime,
                changed_by String,
                version UInt64",
            engine: Engine::ReplacingMergeTreeBy("version"),
            keys: "ORDER BY token_id",
            placement: Placement::Everywhere,
        }),
            // Enrolled agents. Enrollment and each renewal write a row;
            // the newest (highest version) is the agent's current state.
            Step::Create(Table {
            name: "agents",
            columns: "
                agent_id String,
                hostname String,
                os String,
                agent_version String,
                agent_group String,
                token_id String,
                enrolled_at DateTime,
                cert_serial String,
                cert_not_after DateTime,
                key_sha256 String,
                remote String,
                version UInt64",
            engine: Engine::ReplacingMergeTreeBy("version"),
            keys: "ORDER BY agent_id",
            placement: Placement::Everywhere,
        }),
            // Revoked agent ids; append-only, every collector polls it.
            Step::Create(Table {
            name: "agent_revocations",
            columns: "
                agent_id String,
                revoked_at DateTime,
                reason String,
                revoked_by String",
            engine: Engine::MergeTree,
            keys: "ORDER BY agent_id",
            placement: Placement::Everywhere,
        }),
        ],
    },
    Migration {
        version: 7,
        name: "campaigns",
        steps: &[
            // Campus-wide campaigns found by the correlator. Ids are
            // deterministic, so collectors correlating at once write the
            // same rows; the highest version (later activity, broader
            // membership, later state) wins. Reads use FINAL.
            Step::Create(Table {
            name: "campaigns",
            columns: "
                campaign_id UUID,
                kind Enum8('sweep' = 1, 'distributed' = 2, 'internal' = 3),
                campaign_key String,
                state Enum8('open' = 1, 'quiet' = 2, 'closed' = 3),
                severity UInt8,
                first_seen DateTime,
                last_seen DateTime,
                pcs UInt32,
                sources UInt32,
                ports UInt32,
                open_ports UInt32,
                explanation String,
                updated_at DateTime,
                version UInt64",
            engine: Engine::ReplacingMergeTreeBy("version"),
            keys: "ORDER BY campaign_id",
            placement: Placement::Everywhere,
        }),
            // Who and what took part: sources, PCs (agent ids), ports.
            Step::Create(Table {
            name: "campaign_members",
            columns: "
                campaign_id UUID,
                member Enum8('source' = 1, 'pc' = 2, 'port' = 3),
                value String,
                first_seen DateTime,
                last_seen DateTime",
            engine: Engine::ReplacingMergeTreeBy("last_seen"),
            keys: "ORDER BY (campaign_id, member, value)",
            placement: Placement::Everywhere,
        }),
        ],
    },
    Migration {
        version: 8,
        name: "alerts",
        steps: &[            // Every alert sent or given up, per channel. A campaign is
            // alerted again on a channel only above the highest severity
            // recorded there.
            Step::Create(Table {
            name: "alerts",
            columns: "
                campaign_id UUID,
                severity UInt8,
                channel String,
                status Enum8('sent' = 1, 'gave_up' = 2),
                attempts UInt32,
                at DateTime,
                error String,
                text String",
            engine: Engine::MergeTree,
            keys: "ORDER BY (campaign_id, channel, severity)",
            placement: Placement::Everywhere,
        })],
    },
    Migration {
        version: 9,
        name: "leases",
        steps: &[            // Who does a job that only one collector may do (sending
            // alerts). Every live collector claims each term; the smallest
            // holder id among a term's claims holds it.
            Step::Create(Table {
            name: "leases",
            columns: "
                name String,
                term UInt64,
                holder String,
                claimed_at DateTime",
            engine: Engine::MergeTree,
            keys: "ORDER BY (name, term, holder)",
            placement: Placement::Everywhere,
        })],
    },
    Migration {
        version: 10,
        name: "knock_events",
        steps: &[            // One row per knock. An event lists many knocks, each with its
            // own (source, target, port, protocol), so the key ending in
            // event_id collapses a resent event and nothing else. Same
            // partitioning as scan_events, so a correlation pass reads
            // the last two days only.
            Step::Create(Table {
            name: "knock_events",
            columns: "
                event_id UUID,
                agent_id String,
                received_at DateTime,
                source FixedString(16),
                target FixedString(16),
                port UInt16,
                protocol UInt8,
                refused UInt8,
                probes UInt32,
                first_seen DateTime,
                last_seen DateTime,
                explanation String",
            engine: Engine::ReplacingMergeTree,
            keys: "PARTITION BY toYYYYMMDD(first_seen) ORDER BY (source, first_seen, target, port, protocol, event_id)",
            placement: Placement::ShardedByAgent,
        })],
    },
    Migration {
        version: 11,
        name: "outbound",
        steps: &[
            // One row per process x destination x minute of one PC. The
            // key holds everything that tells two rows of one event apart,
            // then event_id, so a resent event collapses.
            Step::Create(Table {
            name: "flow_minutes",
            columns: "
                event_id UUID,
                agent_id String,
                received_at DateTime,
                minute DateTime,
                pid UInt32,
                process String,
                exe String,
                user_name String,
                local_ip FixedString(16),
                remote FixedString(16),
                remote_port UInt16,
                protocol UInt8,
                bytes_out UInt64,
                bytes_in UInt64,
                packets_out UInt64,
                packets_in UInt64,
                connections UInt32",
            engine: Engine::ReplacingMergeTree,
            keys: "PARTITION BY toYYYYMMDD(minute) ORDER BY (agent_id, minute, remote, remote_port, protocol, pid, local_ip, event_id)",
            placement: Placement::ShardedByAgent,
        }),
            Step::Create(Table {
            name: "outbound_anomalies",
            columns: "
                event_id UUID,
                episode_id UUID,
                agent_id String,
                received_at DateTime,
                created_at DateTime,
                state Enum8('detected' = 1, 'active' = 2, 'closed' = 3),
                kind Enum8('upload_volume' = 1, 'scan' = 2, 'smtp_fanout' = 3, 'failed_connections' = 4),
                pid UInt32,
                process String,
                exe String,
                user_name String,
                remote FixedString(16),
                remote_port UInt16,
                hosts UInt32,
                ports UInt32,
                bytes_out UInt64,
                baseline_bytes_per_hour UInt64,
                attempts UInt32,
                failed UInt32,
                first_seen DateTime,
                last_seen DateTime,
                host_sample Array(FixedString(16)),
                port_sample Array(UInt16),
                explanation String",
            engine: Engine::ReplacingMergeTree,
            keys: "PARTITION BY toYYYYMMDD(first_seen) ORDER BY (agent_id, first_seen, event_id)",
            placement: Placement::ShardedByAgent,
        }),
            // Small: one report per PC when its open ports change.
            Step::Create(Table {
            name: "listening_ports",
            columns: "
                event_id UUID,
                agent_id String,
                received_at DateTime,
                created_at DateTime,
                protocol UInt8,
                local_ip FixedString(16),
                port UInt16,
                pid UInt32,
                process String,
                exe String,
                user_name String,
                risk String",
            engine: Engine::ReplacingMergeTree,
            keys: "ORDER BY (agent_id, created_at, protocol, port, local_ip, event_id)",
            placement: Placement::ShardedByAgent,
        }),
        ],
    },
    Migration {
        version: 12,
        name: "outbound_campaigns",
        // Adding an Enum8 value changes metadata only; running it twice
        // (two collectors starting at once) is harmless.
        steps: &[Step::ModifyColumn {
            table: "campaigns",
            column: "kind",
            definition: "Enum8('sweep' = 1, 'distributed' = 2, 'internal' = 3, 'outbound' = 4)",
        }],
    },
    Migration {
        version: 13,
        name: "risky_exposures",
        // Scans that reached a risky open port (from the PC's listening
        // inventory), and the campaigns that did.
        steps: &[
            Step::AddColumn {
                table: "scan_events",
                column: "exposed_ports",
                definition: "Array(UInt16)",
            },
            Step::AddColumn {
                table: "scan_events",
                column: "severity",
                definition: "UInt8 DEFAULT 1",
            },
            Step::AddColumn {
                table: "campaigns",
                column: "exposed_ports",
                definition: "UInt32 DEFAULT 0",
            },
        ],
    },
    Migration {
        version: 14,
        name: "console",
        steps: &[
            // Each triage change of a campaign is a row: the newest is its
            // state, all of them its history.
            Step::Create(Table {
            name: "campaign_triage",
            columns: "
                campaign_id UUID,
                state Enum8('new' = 1, 'acknowledged' = 2, 'resolved' = 3, 'false_positive' = 4),
                note String,
                actor String,
                at DateTime",
            engine: Engine::MergeTree,
            keys: "ORDER BY (campaign_id, at)",
            placement: Placement::Everywhere,
        }),
            // Every change made through the console or its API. The key
            // ends in audit_id, so a retried write is one entry.
            Step::Create(Table {
            name: "audit_log",
            columns: "
                audit_id UUID,
                at DateTime,
                actor String,
                role String,
                action String,
                target String,
                detail String,
                source_ip String,
                user_agent String",
            engine: Engine::ReplacingMergeTree,
            keys: "PARTITION BY toYYYYMM(at) ORDER BY (at, audit_id)",
            placement: Placement::Everywhere,
        }),
        ],
    },
    Migration {
        version: 15,
        name: "correlation_allowlist",
        // The collectors' correlation allowlist, recorded at start so the
        // console can tell staff that a source is allowlisted.
        steps: &[Step::Create(Table {
            name: "correlation_allowlist",
            columns: "
                networks Array(String),
                updated_at DateTime",
            engine: Engine::MergeTree,
            keys: "ORDER BY updated_at",
            placement: Placement::Everywhere,
        })],
    },
    Migration {
        version: 16,
        name: "verified_scanners",
        // Whether the scanner completed a TCP handshake with the PC, which
        // a forged source address cannot: the feed's evidence.
        steps: &[Step::AddColumn {
            table: "scan_events",
            column: "handshake_verified",
            definition: "UInt8 DEFAULT 0",
        }],
    },
    Migration {
        version: 17,
        name: "revoked_returns",
        steps: &[
            // Enrollments that claimed the hostname, or presented the key,
            // of a revoked agent: one row per (attempt, revoked agent),
            // written by the collector that took the attempt. The holder
            // of the alerts lease alerts each once; `agent_id` is empty
            // when the attempt was refused. The key ending in return_id
            // collapses a resent row.
            Step::Create(Table {
            name: "revoked_returns",
            columns: "
                return_id UUID,
                at DateTime,
                revoked_agent_id String,
                revoked_hostname String,
                revoked_at DateTime,
                revoked_reason String,
                hostname_matched UInt8,
                key_matched UInt8,
                agent_id String,
                claimed_hostname String,
                token_id String,
                remote String,
                key_sha256 String",
            engine: Engine::ReplacingMergeTree,
            keys: "ORDER BY (at, return_id)",
            placement: Placement::Everywhere,
        }),
            // Alerts are about a campaign or about a return, whose id
            // the campaign_id column then holds (18.16 cannot rename a
            // column). Rows from before are campaign alerts.
            Step::AddColumn {
                table: "alerts",
                column: "subject",
                definition: "Enum8('campaign' = 1, 'revoked_pc_returned' = 2) DEFAULT 'campaign'",
            },
        ],
    },
];

/// Which migrations are applied: shared by every node of a cluster.
const MIGRATIONS_TABLE: Table = Table {
    name: "schema_migrations",
    columns: "version UInt32, name String, applied_at DateTime DEFAULT now()",
    engine: Engine::MergeTree,
    keys: "ORDER BY version",
    placement: Placement::Everywhere,
};

#[derive(clickhouse::Row, serde::Serialize)]
struct MigrationRecord<'a> {
    version: u32,
    name: &'a str,
    applied_at: u32,
}

pub(crate) async fn applied(client: &clickhouse::Client) -> Result<Vec<u32>, StoreError> {
    client
        .query("SELECT DISTINCT version FROM schema_migrations ORDER BY version")
        .fetch_all::<u32>()
        .await
        .map_err(StoreError::query("read schema_migrations"))
}

pub(crate) async fn apply(client: &clickhouse::Client, layout: &Layout) -> Result<(), StoreError> {
    for sql in layout.create(&MIGRATIONS_TABLE) {
        execute(client, &sql, "create schema_migrations").await?;
    }
    let done = applied(client).await?;
    for migration in MIGRATIONS {
        if done.contains(&migration.version) {
            continue;
        }
        for step in migration.steps {
            run_step(client, layout, step, migration.name).await?;
        }
        let mut insert = client
            .insert::<MigrationRecord<'_>>("schema_migrations")
            .await
            .map_err(StoreError::query("record migration"))?;
        insert
            .write(&MigrationRecord {
                version: migration.version,
                name: migration.name,
                applied_at: unix_now(),
            })
            .await
            .map_err(StoreError::query("record migration"))?;
        insert
            .end()
            .await
            .map_err(StoreError::query("record migration"))?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied schema migration"
        );
    }
    Ok(())
}

/// Where `table`'s rows live, from the migration that created it; an
/// error naming `step` for a table no migration creates.
pub(crate) fn placement(table: &str, step: &'static str) -> Result<Placement, StoreError> {
    std::iter::once(&MIGRATIONS_TABLE)
        .chain(
            MIGRATIONS
                .iter()
                .flat_map(|m| m.steps)
                .filter_map(|step| match step {
                    Step::Create(t) => Some(t),
                    Step::AddColumn { .. } | Step::ModifyColumn { .. } => None,
                }),
        )
        .find(|t| t.name == table)
        .map(|t| t.placement)
        .ok_or_else(|| StoreError::Unexpected {
            step,
            detail: format!("no migration creates table {table}"),
        })
}

async fn run_step(
    client: &clickhouse::Client,
    layout: &Layout,
    step: &Step,
    name: &'static str,
) -> Result<(), StoreError> {
    let (table, column, action) = match step {
        Step::Create(table) => {
            for sql in layout.create(table) {
                execute(client, &sql, name).await?;
            }
            return Ok(());
        }
        Step::AddColumn {
            table,
            column,
            definition,
        } => (
            *table,
            Some(*column),
            format!("ADD COLUMN {column} {definition}"),
        ),
        Step::ModifyColumn {
            table,
            column,
            definition,
        } => (*table, None, format!("MODIFY COLUMN {column} {definition}")),
    };
    let placement = placement(table, name)?;
    for alter in layout.alter(table, placement, &action) {
        if let Some(column) = column
            && has_column(client, &alter.table, column, name).await?
        {
            continue;
        }
        for sql in &alter.sql {
            if let Err(e) = execute(client, sql, name).await {
                // Another collector may have added it meanwhile.
                let added = match column {
                    Some(column) => has_column(client, &alter.table, column, name).await?,
                    None => false,
                };
                if !added {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

async fn has_column(
    client: &clickhouse::Client,
    table: &str,
    column: &str,
    step: &'static str,
) -> Result<bool, StoreError> {
    let found: u64 = client
        .query(
            "SELECT count() FROM system.columns \
             WHERE database = currentDatabase() AND table = ? AND name = ?",
        )
        .bind(table)
        .bind(column)
        .fetch_one()
        .await
        .map_err(StoreError::query(step))?;
    Ok(found > 0)
}

async fn execute(
    client: &clickhouse::Client,
    sql: &str,
    step: &'static str,
) -> Result<(), StoreError> {
    client
        .query(sql)
        .execute()
        .await
        .map_err(StoreError::query(step))
}

fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_altered_table_is_created_by_a_migration() {
        for step in MIGRATIONS.iter().flat_map(|m| m.steps) {
            if let Step::AddColumn { table, .. } | Step::ModifyColumn { table, .. } = step {
                assert!(placement(table, "test").is_ok(), "{table}");
            }
        }
    }

    #[test]
    fn only_tables_with_an_agent_are_sharded() {
        for step in MIGRATIONS.iter().flat_map(|m| m.steps) {
            if let Step::Create(t) = step
                && t.placement == Placement::ShardedByAgent
            {
                assert!(t.columns.contains("agent_id String"), "{}", t.name);
            }
        }
    }
}
