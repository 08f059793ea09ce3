//! Least privilege: the grants each doorwatch user needs on servers with
//! SQL access control (ClickHouse 20.x and later), and the pure check of a
//! user's `SHOW GRANTS` against them.
//!
//! The lists here are the one home of "what may the collector and the
//! console do"; `deploy/clickhouse/users.sql` grants exactly them, and a
//! test parses that file with [`parse_grants`] to keep the two equal.
//! 18.16 has no grants: `deploy/clickhouse/users-18.16.xml` does what its
//! users.xml can (see docs/clickhouse.md).

use std::collections::HashMap;

/// One privilege a doorwatch user needs, on the store's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// As ClickHouse names it: `SELECT`, `INSERT`, `ALTER DELETE`, …
    pub privilege: &'static str,
    /// A table of the database, or `None` for all of it (`db.*`).
    pub table: Option<&'static str>,
}

const fn on_all(privilege: &'static str) -> Need {
    Need {
        privilege,
        table: None,
    }
}

const fn on(privilege: &'static str, table: &'static str) -> Need {
    Need {
        privilege,
        table: Some(table),
    }
}

/// The collector: creates and migrates the schema, writes every table,
/// and applies retention (drops partitions and deletes whole campaigns,
/// which both take `ALTER DELETE`).
pub const COLLECTOR: &[Need] = &[
    on_all("SELECT"),
    on_all("INSERT"),
    on_all("CREATE DATABASE"),
    on_all("CREATE TABLE"),
    on_all("ALTER ADD COLUMN"),
    on_all("ALTER MODIFY COLUMN"),
    on_all("ALTER DELETE"),
];

/// The console: reads everything, writes only triage, the audit log,
/// enrollment tokens and revocations.
pub const CONSOLE: &[Need] = &[
    on_all("SELECT"),
    on("INSERT", "campaign_triage"),
    on("INSERT", "audit_log"),
    on("INSERT", "enrollment_tokens"),
    on("INSERT", "agent_revocations"),
];

/// One `GRANT` or `REVOKE` line of `SHOW GRANTS`, on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Upper-case privilege names; a column-restricted one (`SELECT(a)`)
    /// keeps its column list and so never covers a whole table.
    pub privileges: Vec<String>,
    /// `None` for `*`.
    pub database: Option<String>,
    /// `None` for `*`.
    pub table: Option<String>,
    /// A partial revoke (`REVOKE … ON db.t FROM u`).
    pub revoke: bool,
}

/// Parses `SHOW GRANTS` output (or `GRANT` statements). Role grants
/// (`GRANT r TO u`) and lines it cannot read are left out.
pub fn parse_grants<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<Grant> {
    lines.into_iter().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Grant> {
    let line = line.trim().trim_end_matches(';');
    let (revoke, rest) = if let Some(rest) = strip_word(line, "GRANT") {
        (false, rest)
    } else {
        (true, strip_word(line, "REVOKE")?)
    };
    let (privileges, rest) = split_word(rest, " ON ")?;
    let target = rest.split_whitespace().next()?;
    let (database, table) = match target.split_once('.') {
        Some((db, t)) => (db, t),
        None => ("*", target),
    };
    let name = |s: &str| {
        let s = s.trim_matches('`').trim_matches('"');
        (s != "*").then(|| s.to_owned())
    };
    Some(Grant {
        privileges: split_privileges(privileges),
        database: name(database),
        table: name(table),
        revoke,
    })
}

fn strip_word<'a>(line: &'a str, word: &str) -> Option<&'a str> {
    let head = line.get(..word.len())?;
    let rest = &line[word.len()..];
    (head.eq_ignore_ascii_case(word) && rest.starts_with(' ')).then(|| rest.trim_start())
}

/// Splits at the first `sep` (matched case-insensitively) outside
/// parentheses.
fn split_word<'a>(text: &'a str, sep: &str) -> Option<(&'a str, &'a str)> {
    let upper = text.to_ascii_uppercase();
    let mut depth = 0i32;
    for (i, c) in upper.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 && upper[i..].starts_with(sep) => {
                return Some((&text[..i], &text[i + sep.len()..]));
            }
            _ => {}
        }
    }
    None
}

fn split_privileges(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut current = String::new();
    for c in list.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(current.trim().to_ascii_uppercase());
                current.clear();
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_ascii_uppercase());
    }
    out
}

/// The privilege hierarchy: each privilege's parent group, as
/// `system.privileges` gives it (`ALTER DELETE` → `ALTER TABLE` → `ALTER`
/// → `ALL`).
pub type Parents = HashMap<String, String>;

/// Whether `granted` is `wanted` or one of its ancestors.
fn implies(granted: &str, wanted: &str, parents: &Parents) -> bool {
    let mut current = Some(wanted);
    // The chain is short; the bound only guards against a cyclic table.
    for _ in 0..16 {
        let Some(name) = current else { return false };
        if name == granted || granted == "ALL" || granted == "ALL PRIVILEGES" {
            return true;
        }
        current = parents.get(name).map(String::as_str);
    }
    false
}

fn covers(grant: &Grant, need: &Need, database: &str, parents: &Parents) -> bool {
    let database_ok = grant.database.as_deref().is_none_or(|d| d == database);
    let table_ok = match (&grant.table, need.table) {
        (None, _) => true,
        (Some(t), Some(wanted)) => t == wanted,
        (Some(_), None) => false,
    };
    database_ok
        && table_ok
        && grant
            .privileges
            .iter()
            .any(|p| implies(p, need.privilege, parents))
}

/// Whether a revoke takes away any part of `need` (a revoke on one table
/// breaks a need on the whole database, too).
fn narrows(revoke: &Grant, need: &Need, database: &str, parents: &Parents) -> bool {
    let database_ok = revoke.database.as_deref().is_none_or(|d| d == database);
    let table_ok = match (&revoke.table, need.table) {
        (Some(t), Some(wanted)) => t == wanted,
        _ => true,
    };
    database_ok
        && table_ok
        && revoke
            .privileges
            .iter()
            .any(|p| implies(p, need.privilege, parents) || implies(need.privilege, p, parents))
}

/// Pure: the needs `grants` do not give on `database`.
pub fn missing(needs: &[Need], database: &str, grants: &[Grant], parents: &Parents) -> Vec<Need> {
    needs
        .iter()
        .filter(|need| {
            let granted = grants
                .iter()
                .any(|g| !g.revoke && covers(g, need, database, parents));
            let revoked = grants
                .iter()
                .any(|g| g.revoke && narrows(g, need, database, parents));
            !granted || revoked
        })
        .copied()
        .collect()
}

/// A need as a person reads it: `INSERT ON doorwatch.audit_log`.
pub fn describe(need: &Need, database: &str) -> String {
    format!(
        "{} ON {database}.{}",
        need.privilege,
        need.table.unwrap_or("*")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parents() -> Parents {
        [
            ("SELECT", "ALL"),
            ("INSERT", "ALL"),
            ("ALTER", "ALL"),
            ("ALTER TABLE", "ALTER"),
            ("ALTER DELETE", "ALTER TABLE"),
            ("ALTER COLUMN", "ALTER TABLE"),
            ("ALTER ADD COLUMN", "ALTER COLUMN"),
            ("ALTER MODIFY COLUMN", "ALTER COLUMN"),
            ("CREATE", "ALL"),
            ("CREATE TABLE", "CREATE"),
            ("CREATE DATABASE", "CREATE"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    }

    fn missing_of(lines: &str, needs: &[Need]) -> Vec<String> {
        missing(needs, "doorwatch", &parse_grants(lines.lines()), &parents())
            .iter()
            .map(|n| describe(n, "doorwatch"))
            .collect()
    }

    #[test]
    fn the_default_user_of_a_current_server_has_everything() {
        let lines = "GRANT SOURCES ON *.* TO default\n\
                     GRANT CHECK, SHOW, SELECT, INSERT, ALTER, CREATE, DROP ON *.* TO default";
        assert!(missing_of(lines, COLLECTOR).is_empty());
        assert!(missing_of("GRANT ALL ON *.* TO admin WITH GRANT OPTION", COLLECTOR).is_empty());
    }

    #[test]
    fn each_missing_grant_is_named() {
        let lines = "GRANT SELECT, INSERT, CREATE TABLE ON doorwatch.* TO c\n\
                     GRANT ALTER ADD COLUMN, ALTER MODIFY COLUMN ON doorwatch.* TO c";
        assert_eq!(
            missing_of(lines, COLLECTOR),
            [
                "CREATE DATABASE ON doorwatch.*",
                "ALTER DELETE ON doorwatch.*"
            ]
        );
    }

    #[test]
    fn grants_on_another_database_or_one_table_do_not_cover_all_of_it() {
        assert_eq!(
            missing_of("GRANT SELECT ON other.* TO c", &[on_all("SELECT")]),
            ["SELECT ON doorwatch.*"]
        );
        assert_eq!(
            missing_of("GRANT SELECT ON doorwatch.agents TO c", &[on_all("SELECT")]),
            ["SELECT ON doorwatch.*"]
        );
        assert_eq!(
            missing_of(
                "GRANT SELECT(agent_id) ON doorwatch.* TO c",
                &[on_all("SELECT")]
            ),
            ["SELECT ON doorwatch.*"],
            "a column grant is not a table grant"
        );
    }

    #[test]
    fn a_partial_revoke_takes_the_grant_away() {
        let lines = "GRANT ALL ON *.* TO c\nREVOKE ALTER ON doorwatch.* FROM c";
        assert_eq!(
            missing_of(lines, &[on_all("SELECT"), on_all("ALTER DELETE")]),
            ["ALTER DELETE ON doorwatch.*"]
        );
        let lines = "GRANT SELECT ON *.* TO c\nREVOKE SELECT ON doorwatch.audit_log FROM c";
        assert_eq!(
            missing_of(lines, &[on_all("SELECT")]),
            ["SELECT ON doorwatch.*"]
        );
    }

    #[test]
    fn role_lines_and_quoting_are_understood() {
        let grants = parse_grants([
            "GRANT doorwatch_reader TO c",
            "GRANT SELECT ON `doorwatch`.`audit_log` TO c;",
        ]);
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].database.as_deref(), Some("doorwatch"));
        assert_eq!(grants[0].table.as_deref(), Some("audit_log"));
    }

    #[test]
    fn the_shipped_users_sql_grants_exactly_what_each_user_needs() {
        let sql = include_str!("../../../deploy/clickhouse/users.sql");
        let of = |user: &str| -> Vec<Grant> {
            parse_grants(sql.lines().filter(|l| {
                l.trim_start().starts_with("GRANT ") && l.contains(&format!(" TO {user}"))
            }))
        };
        let collector = of("doorwatch_collector");
        let console = of("doorwatch_console");
        assert!(!collector.is_empty() && !console.is_empty());
        assert!(missing(COLLECTOR, "doorwatch", &collector, &parents()).is_empty());
        assert!(missing(CONSOLE, "doorwatch", &console, &parents()).is_empty());
        // And the console no more: no write to events, campaigns or schema.
        for table in ["scan_events", "campaigns", "agents", "policies"] {
            assert_eq!(
                missing(&[on("INSERT", table)], "doorwatch", &console, &parents()).len(),
                1,
                "the console must not write {table}"
            );
        }
        for privilege in ["ALTER DELETE", "CREATE TABLE", "ALTER ADD COLUMN"] {
            assert_eq!(
                missing(&[on_all(privilege)], "doorwatch", &console, &parents()).len(),
                1,
                "the console must not {privilege}"
            );
        }
    }
}
