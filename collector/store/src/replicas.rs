//! Making this node current with the other replicas of a shared table
//! before a read that decides a once-per-campus action (see
//! [`Store::catch_up`]).

use crate::{Store, StoreError, migrations};

/// Longest wait for a node to take in a shared table's rows from the
/// others ([`Store::catch_up`]); past it the read fails as transient.
const CATCH_UP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Store {
    /// On a cluster, makes this node take in every row of the shared table
    /// `table` that any node had stored (`SYSTEM SYNC REPLICA`): a read
    /// that decides a once-per-campus action (who holds a lease, what was
    /// alerted) must see what other collectors wrote through other nodes.
    /// Fails as transient while the node has no ZooKeeper session (just
    /// restarted, ZooKeeper away). A sync still waiting after
    /// [`CATCH_UP_TIMEOUT`] (a part whose only copy is on a node that is
    /// down) is logged and the read goes on: an alert may then repeat,
    /// which is better than none. Nothing on one
    /// server.
    pub(crate) async fn catch_up(&self, table: &'static str) -> Result<(), StoreError> {
        let step = "catch up a shared table";
        let placement = migrations::placement(table, step)?;
        let Some(sql) = self.layout.catch_up(table, placement) else {
            return Ok(());
        };
        match tokio::time::timeout(CATCH_UP_TIMEOUT, self.client.query(&sql).execute()).await {
            Ok(done) => done.map_err(StoreError::query(step))?,
            Err(_) => tracing::warn!(
                table,
                "this node is still fetching rows of a shared table from other replicas; reading what it has"
            ),
        }
        // SYNC REPLICA reads the replication log before it waits; on a
        // replica without a session it cannot have.
        let state: Option<(u8, u8)> = self
            .client
            .query(
                "SELECT toUInt8(is_readonly) AS readonly, toUInt8(is_session_expired) AS expired \
                 FROM system.replicas WHERE database = currentDatabase() AND table = ?",
            )
            .bind(table)
            .fetch_optional()
            .await
            .map_err(StoreError::query(step))?;
        let problem = match state {
            None => "it is not a replica of it",
            Some((0, 0)) => return Ok(()),
            Some(_) => "it has no ZooKeeper session",
        };
        Err(StoreError::Lagging {
            table,
            problem: problem.to_owned(),
        })
    }
}
