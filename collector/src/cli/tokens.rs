//! `token create|list|revoke`: bootstrap tokens for enrollment.

use super::{TokenCommand, connect_store, load_config, os_user};
use crate::cli::output::Format;
use anyhow::Context;
use doorwatch_process::clock;
use doorwatch_store::Token;
use doorwatch_store::TokenUse;

pub(crate) async fn run_token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            config,
            group,
            expires,
            max_uses,
        } => {
            if !crate::trust::identity::is_valid_agent_id(&group) {
                anyhow::bail!("--group {group:?}: use 1 to 128 of A-Z a-z 0-9 . _ -");
            }
            if max_uses == 0 {
                anyhow::bail!("--max-uses must be at least 1");
            }
            let store = connect_store(&load_config(&config)?).await?;
            let token = Token::generate().context("cannot make a token")?;
            let now = clock::unix_now();
            let expires_at = now.saturating_add(expires.as_secs());
            store
                .insert_token(&doorwatch_store::TokenRow {
                    token_id: token.id.clone(),
                    secret_sha256: token.secret_sha256(),
                    agent_group: group.clone(),
                    created_at: clock::seconds(now),
                    expires_at: clock::seconds(expires_at),
                    max_uses,
                    revoked: 0,
                    revoked_at: 0,
                    changed_by: os_user(),
                    version: 1,
                })
                .await
                .context("cannot store the token")?;
            tracing::info!(token_id = %token.id, group = %group, max_uses, "enrollment token created");
            println!("{}", token.reveal());
            eprintln!(
                "token {} for group {group:?}: up to {max_uses} PCs until {}. It is shown only now.",
                token.id,
                clock::rfc3339(clock::seconds(expires_at))
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
            let mut row = found.token;
            row.revoked = 1;
            row.revoked_at = clock::unix_now_u32();
            row.changed_by = os_user();
            row.version += 1;
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
