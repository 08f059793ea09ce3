//! Opening a [`Store`]: the client, the version check, the grants check on
//! servers with SQL users, creating the database and migrating it (the
//! collector), or checking a collector already did (the readers).

use crate::layout::Layout;
use crate::{
    Cluster, MIGRATIONS, ServerInfo, SqlPath, Store, StoreConfig, StoreError, grants, migrations,
    quote_identifier, server,
};

impl Store {
    /// For the collector: connects, detects the server version, checks the
    /// user's grants (servers with SQL access control), creates the
    /// database if needed and applies pending migrations.
    pub async fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let base = Self::client(config).await?;
        let server = Self::detect(&base, config).await?;
        let store = Self::with_database(base.clone(), server, config);
        store.check_grants(grants::COLLECTOR).await?;
        base.with_validation(false)
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS {}{}",
                quote_identifier(&config.database),
                store.layout.on_cluster()
            ))
            .execute()
            .await
            .map_err(StoreError::query("create database"))?;
        migrations::apply(&store.client, &store.layout).await?;
        Ok(store)
    }

    /// For readers (the CLI, the console): connects and detects the server
    /// version, and checks that a collector created and migrated the
    /// schema. Changes nothing, so a read-only user can do it.
    pub async fn connect(config: &StoreConfig) -> Result<Self, StoreError> {
        let base = Self::client(config).await?;
        let server = Self::detect(&base, config).await?;
        let exists: u64 = base
            .clone()
            .with_validation(false)
            .query("SELECT count() FROM system.databases WHERE name = ?")
            .bind(&config.database)
            .fetch_one()
            .await
            .map_err(StoreError::query("look up the database"))?;
        if exists == 0 {
            return Err(StoreError::SchemaNotReady {
                url: config.url.clone(),
                problem: format!("database {} does not exist", config.database),
            });
        }
        let store = Self::with_database(base, server, config);
        let applied = migrations::applied(&store.client).await.unwrap_or_default();
        let missing: Vec<u32> = MIGRATIONS
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::SchemaNotReady {
                url: config.url.clone(),
                problem: format!(
                    "the schema of database {} lacks migrations {missing:?}",
                    config.database
                ),
            });
        }
        Ok(store)
    }

    /// The client, with a cluster's settings when there is one (checked
    /// against the server first: [`Self::check_cluster`]).
    async fn client(config: &StoreConfig) -> Result<clickhouse::Client, StoreError> {
        let compression = if config.compress {
            clickhouse::Compression::Lz4
        } else {
            clickhouse::Compression::None
        };
        let mut base = clickhouse::Client::default()
            .with_url(&config.url)
            .with_user(&config.user)
            .with_compression(compression);
        if let Some(password) = &config.password {
            base = base.with_password(password);
        }
        let Some(cluster) = &config.cluster else {
            return Ok(base);
        };
        Self::check_cluster(&base.clone().with_validation(false), config, cluster).await?;
        // A subquery over a Distributed table runs once and its result goes
        // to every shard (GLOBAL IN), instead of being refused.
        base = base.with_setting("distributed_product_mode", "global");
        // An INSERT into a Distributed table returns only once every
        // shard's replica stored its rows: the collector's ack waits for it.
        base = base.with_setting("insert_distributed_sync", "1");
        if cluster.insert_quorum > 1 {
            base = base
                .with_setting("insert_quorum", cluster.insert_quorum.to_string())
                .with_setting("insert_quorum_parallel", "1");
        }
        Ok(base)
    }

    /// Fails with [`StoreError::Cluster`] unless the server knows the
    /// cluster, has the `shard` and `replica` macros the replicated tables
    /// are named by, reaches ZooKeeper (or Keeper), and can meet the
    /// insert quorum.
    async fn check_cluster(
        base: &clickhouse::Client,
        config: &StoreConfig,
        cluster: &Cluster,
    ) -> Result<(), StoreError> {
        let fail = |problem: String| StoreError::Cluster {
            url: config.url.clone(),
            cluster: cluster.name.clone(),
            problem,
        };
        let replicas: Vec<u64> = base
            .query(
                "SELECT toUInt64(count()) FROM system.clusters WHERE cluster = ? \
                 GROUP BY shard_num ORDER BY shard_num",
            )
            .bind(&cluster.name)
            .fetch_all()
            .await
            .map_err(|e| StoreError::Connect {
                url: config.url.clone(),
                source: e,
            })?;
        let Some(fewest) = replicas.iter().min() else {
            return Err(fail(
                "the server's remote_servers has no such cluster".to_owned(),
            ));
        };
        let macros: Vec<String> = base
            .query("SELECT macro FROM system.macros")
            .fetch_all()
            .await
            .map_err(StoreError::query("read system.macros"))?;
        for needed in ["shard", "replica"] {
            if !macros.iter().any(|m| m == needed) {
                return Err(fail(format!(
                    "the server has no <macros><{needed}> (each node names its shard and a replica name unique in the cluster)"
                )));
            }
        }
        base.query("SELECT count() FROM system.zookeeper WHERE path = '/'")
            .fetch_one::<u64>()
            .await
            .map_err(|e| fail(format!("the server cannot reach ZooKeeper or Keeper: {e}")))?;
        if u64::from(cluster.insert_quorum) > *fewest {
            return Err(fail(format!(
                "clickhouse.insert_quorum = {} but a shard has only {fewest} replicas",
                cluster.insert_quorum
            )));
        }
        if cluster.insert_quorum > 1 {
            let parallel: u64 = base
                .query("SELECT count() FROM system.settings WHERE name = 'insert_quorum_parallel'")
                .fetch_one()
                .await
                .map_err(StoreError::query("read system.settings"))?;
            if parallel == 0 {
                return Err(fail(
                    "clickhouse.insert_quorum above 1 needs parallel quorum inserts (ClickHouse 20.10 or newer); \
                     on this server concurrent quorum inserts fail (docs/clickhouse.md): set it to 0"
                        .to_owned(),
                ));
            }
        }
        Ok(())
    }

    async fn detect(
        base: &clickhouse::Client,
        config: &StoreConfig,
    ) -> Result<ServerInfo, StoreError> {
        // Version detection runs with validation off: it is the step that
        // decides whether validation can be on.
        let server = server::detect(&base.clone().with_validation(false), &config.url).await?;
        tracing::info!(
            version = %server.version,
            path = ?server.path(),
            row_validation = server.path() == SqlPath::Current,
            "connected to clickhouse"
        );
        Ok(server)
    }

    fn with_database(base: clickhouse::Client, server: ServerInfo, config: &StoreConfig) -> Self {
        let validation = server.path() == SqlPath::Current;
        let client = base
            .with_database(&config.database)
            .with_validation(validation);
        let layout = match &config.cluster {
            Some(cluster) => Layout::Cluster {
                cluster: cluster.name.clone(),
                database: config.database.clone(),
            },
            None => Layout::Single,
        };
        Self {
            client,
            layout,
            server,
            url: config.url.clone(),
            user: config.user.clone(),
            database: config.database.clone(),
        }
    }

    /// Fails with [`StoreError::MissingGrants`], naming each one, unless
    /// the user holds every privilege in `needs` on the database. Servers
    /// without SQL access control (18.16) pass: their users.xml cannot
    /// grant per table (see docs/clickhouse.md).
    pub async fn check_grants(&self, needs: &[grants::Need]) -> Result<(), StoreError> {
        if !self.server.has_access_control() {
            return Ok(());
        }
        // In `system`: the store's database may not exist yet.
        let raw = self
            .client
            .clone()
            .with_database("system")
            .with_validation(false);
        // FINAL folds in the grants of the user's roles; servers before it
        // know only the plain form.
        let (lines, with_roles) = match raw.query("SHOW GRANTS FINAL").fetch_all::<String>().await {
            Ok(lines) => (lines, true),
            Err(_) => (
                raw.query("SHOW GRANTS")
                    .fetch_all::<String>()
                    .await
                    .map_err(StoreError::query("show grants"))?,
                false,
            ),
        };
        let parents = self.privilege_hierarchy().await?;
        let found = grants::parse_grants(lines.iter().map(String::as_str));
        let missing = grants::missing(needs, &self.database, &found, &parents);
        if missing.is_empty() {
            return Ok(());
        }
        let missing: Vec<String> = missing
            .iter()
            .map(|n| grants::describe(n, &self.database))
            .collect();
        let roles = lines
            .iter()
            .any(|l| !l.to_ascii_uppercase().contains(" ON "));
        if roles && !with_roles {
            // Privileges may come from roles this server cannot fold in.
            tracing::warn!(user = %self.user, missing = %missing.join(", "), "cannot tell whether roles grant these privileges");
            return Ok(());
        }
        Err(StoreError::MissingGrants {
            user: self.user.clone(),
            url: self.url.clone(),
            missing: missing.join(", "),
        })
    }

    /// Each privilege's parent group, from the server's `system.privileges`.
    pub async fn privilege_hierarchy(&self) -> Result<grants::Parents, StoreError> {
        let rows: Vec<(String, String)> = self
            .client
            .clone()
            .with_database("system")
            .with_validation(false)
            .query(
                "SELECT toString(privilege), ifNull(toString(parent_group), '') \
                 FROM system.privileges",
            )
            .fetch_all()
            .await
            .map_err(StoreError::query("read system.privileges"))?;
        Ok(rows.into_iter().filter(|(_, p)| !p.is_empty()).collect())
    }
}
