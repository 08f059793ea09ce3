//! `token create|list|revoke`: bootstrap tokens for enrollment.

use super::{TokenCommand, connect_store, load_config, os_user};
use crate::cli::output::Format;
use anyhow::Context;
use doorwatch_process::clock;
use doorwatch_store::TokenUse;
use doorwatch_store::rules;

pub(crate) async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            config,
            group,
            expires,
            max_uses,
        } => {
            let now = clock::unix_now();
            let expires_at = clock::seconds(now.saturating_add(expires.as_secs()));
            let (token, row) = rules::new_token(
                &group,
                expires_at,
                max_uses,
                &os_user(),
                clock::seconds(now),
            )
            .context("cannot make the token")?;
            let store = connect_store(&load_config(&config)?).await?;
            store
                .insert_token(&row)
                .await
                .context("cannot store the token")?;
            tracing::info!(token_id = %token.id, group = %group, max_uses, "enrollment token created");
            println!("{}", token.reveal());
            eprintln!(
                "token {} for group {group:?}: up to {max_uses} PCs until {}. It is shown only now.",
                token.id,
                clock::rfc3339(expires_at)
            );
        }
        TokenCommand::List { config, format } => {
            let store = connect_store(&load_config(&config)?).await?;
            let tokens = store.tokens().await.context("cannot read tokens")?;
            let now = clock::unix_now();
            if format == Format::Table {
                println!(
                    "{:<16}  {:<16}  {:<9}  {:>11}  {:<20}  CREATED BY",
                    "TOKEN ID", "GROUP", "STATUS", "USES", "EXPIRES"
                );
            }
            for found in tokens {
                let status = found.state(now).label();
                let TokenUse { token, uses } = found;
                match format {
                    Format::Json => println!(
                        "{}",
                        serde_json::json!({
                            "token_id": token.token_id,
                            "group": token.agent_group,
                            "status": status,
                            "uses": uses,
                            "max_uses": token.max_uses,
                            "created_at": clock::rfc3339(token.created_at),
                            "expires_at": clock::rfc3339(token.expires_at),
                            "changed_by": token.changed_by,
                        })
                    ),
                    Format::Table => println!(
                        "{:<16}  {:<16}  {:<9}  {:>11}  {:<20}  {}",
                        token.token_id,
                        token.agent_group,
                        status,
                        format!("{uses}/{}", token.max_uses),
                        clock::rfc3339(token.expires_at),
                        token.changed_by
                    ),
                }
            }
        }
        TokenCommand::Revoke { config, id } => {
            let store = connect_store(&load_config(&config)?).await?;
            let Some(found) = store.token(&id).await.context("cannot read the token")? else {
                anyhow::bail!("no token with id {id:?} (see `token list`)");
            };
            let row = rules::revoke_token(found.token, &os_user(), clock::unix_now_u32());
            store
                .insert_token(&row)
                .await
                .context("cannot store the revocation")?;
            tracing::info!(token_id = %id, "enrollment token revoked");
            println!("token {id} revoked: no more PCs can enroll with it");
        }
    }
    Ok(())
}
