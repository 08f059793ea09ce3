//! `policy show|set`: the detection policy pushed to agents.

use super::{PolicyCommand, load_config, os_user};
use crate::cli::output::Format;
use crate::policy::{self, PolicyChange};
use anyhow::Context;
use doorwatch_process::clock;
use doorwatch_store::Store;

pub(crate) async fn run_policy(command: PolicyCommand) -> anyhow::Result<()> {
    let (config, group) = match &command {
        PolicyCommand::Show { config, group, .. } | PolicyCommand::Set { config, group, .. } => {
            (load_config(config)?, group.clone())
        }
    };
    if group != policy::DEFAULT_GROUP {
        anyhow::bail!(
            "agent groups other than {:?} arrive with enrollment; use --group {0}",
            policy::DEFAULT_GROUP
        );
    }
    let store = Store::open(&config.clickhouse.store_config()?)
        .await
        .context("connecting to ClickHouse")?;
    let current = store
        .latest_policy(&group)
        .await
        .context("cannot read the stored policy")?
        .unwrap_or_else(|| policy::from_config(&config.policy));
    let shown = match command {
        PolicyCommand::Show { format, .. } => {
            print_policy(&current, format);
            return Ok(());
        }
        PolicyCommand::Set {
            scan_min_ports,
            episode_idle_seconds,
            allow,
            disallow,
            clear_allowlist,
            ..
        } => {
            let change = PolicyChange {
                scan_min_ports,
                episode_idle_seconds,
                allow,
                disallow,
                clear_allowlist,
            };
            let next = policy::apply_change(&current, &change, clock::unix_now_u32(), &os_user());
            store
                .insert_policy(&next)
                .await
                .context("cannot store the new policy")?;
            next
        }
    };
    println!(
        "stored policy version {}; connected agents apply it within seconds",
        shown.version
    );
    print_policy(&shown, Format::Table);
    Ok(())
}

pub(crate) fn print_policy(row: &doorwatch_store::PolicyRow, format: Format) {
    let allow: Vec<String> = row
        .allowlisted_sources
        .iter()
        .map(|b| doorwatch_store::ip::from_fixed16(*b).to_string())
        .collect();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "group": row.policy_group,
                "version": row.version,
                "scan_min_ports": row.scan_min_ports,
                "episode_idle_seconds": row.episode_idle_seconds,
                "allowlisted_sources": allow,
                "updated_at": clock::rfc3339(row.updated_at),
                "updated_by": row.updated_by,
            })
        ),
        Format::Table => {
            let or_agent = |n: u32| {
                if n == 0 {
                    "agent's own".to_owned()
                } else {
                    n.to_string()
                }
            };
            println!("group:                {}", row.policy_group);
            println!("version:              {}", row.version);
            println!("scan_min_ports:       {}", or_agent(row.scan_min_ports));
            println!(
                "episode_idle_seconds: {}",
                or_agent(row.episode_idle_seconds)
            );
            println!(
                "allowlisted_sources:  {}",
                if allow.is_empty() {
                    "none".to_owned()
                } else {
                    allow.join(", ")
                }
            );
            println!(
                "updated:              {} by {}",
                clock::rfc3339(row.updated_at),
                row.updated_by
            );
        }
    }
}
