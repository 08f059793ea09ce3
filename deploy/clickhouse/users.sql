-- doorwatch's ClickHouse users on servers with SQL access control
-- (ClickHouse 20.x and later; tested engine: 26.9). Run once as an admin:
--
--   clickhouse-client --multiquery < users.sql
--
-- after replacing both CHANGE-ME passwords (or use IDENTIFIED WITH
-- sha256_hash BY '<hex>', see docs/clickhouse.md). The database name is
-- `doorwatch`, as in collector.toml and console.toml; change it in every
-- line if yours differs. The collector checks these grants at start and names
-- any that is missing; collector/store/src/grants.rs is the list it checks,
-- and a unit test keeps this file equal to it.

-- The collector: creates and migrates the schema, writes every table, and
-- applies retention (ALTER DELETE covers DROP PARTITION and the deletion of
-- whole campaigns).
CREATE USER IF NOT EXISTS doorwatch_collector IDENTIFIED WITH sha256_password BY 'CHANGE-ME-collector';
GRANT SELECT, INSERT, CREATE DATABASE, CREATE TABLE ON doorwatch.* TO doorwatch_collector;
GRANT ALTER ADD COLUMN, ALTER MODIFY COLUMN, ALTER DELETE ON doorwatch.* TO doorwatch_collector;

-- The console: reads everything; writes only triage, the audit log,
-- enrollment tokens and revocations. No DDL, no deletes, no other table.
CREATE USER IF NOT EXISTS doorwatch_console IDENTIFIED WITH sha256_password BY 'CHANGE-ME-console';
GRANT SELECT ON doorwatch.* TO doorwatch_console;
GRANT INSERT ON doorwatch.campaign_triage TO doorwatch_console;
GRANT INSERT ON doorwatch.audit_log TO doorwatch_console;
GRANT INSERT ON doorwatch.enrollment_tokens TO doorwatch_console;
GRANT INSERT ON doorwatch.agent_revocations TO doorwatch_console;
