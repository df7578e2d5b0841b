//! `wrenn key create | ls | rm`: the API keys of the control plane.
//!
//! Every key can do everything (there are no scopes): run sandboxes, and
//! create and revoke keys. A key works for the gRPC API (this CLI,
//! `--api-key` or `WRENN_API_KEY`) and for E2B's REST API (`E2B_API_KEY`).
//! `create` prints the whole key on stdout, alone, so it can be captured;
//! the line saying it is shown only this once goes to stderr.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use wrenn_proto::wrenn::v1::{ApiKey, CreateKeyRequest, ListKeysRequest, RevokeKeyRequest};

use crate::client::GlobalArgs;
use crate::json;

#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create an API key and print it (shown this once only).
    Create(CreateArgs),
    /// List API keys (never the keys themselves), revoked ones included.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Revoke an API key by id or name; refused for the key in use unless --force.
    #[command(alias = "revoke", alias = "delete")]
    Rm(RmArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// A name to tell the key by (1-64 letters, digits, '-', '_', '.').
    #[arg(long)]
    name: Option<String>,
    /// The key and its record as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LsArgs {
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RmArgs {
    /// The key's id, its name (when one active key has it), or the key itself.
    key: String,
    /// Revoke it although it is the key this command uses (even the last one).
    #[arg(long)]
    force: bool,
}

pub async fn run(g: &GlobalArgs, cmd: KeyCmd) -> Result<()> {
    let mut c = g.connect_keys().await?;
    match cmd {
        KeyCmd::Create(a) => {
            let res = c
                .create(CreateKeyRequest { name: a.name })
                .await
                .context("create an API key")?
                .into_inner();
            let key = res.key.unwrap_or_default();
            if a.json {
                let mut v = key_json(&key);
                v["key"] = json!(res.secret);
                json::print(&v);
            } else {
                println!("{}", res.secret);
            }
            eprintln!(
                "created API key {}: the key is shown only now; store it, it cannot be shown again",
                describe(&key)
            );
        }
        KeyCmd::Ls(a) => {
            let keys = c
                .list(ListKeysRequest {})
                .await
                .context("list API keys")?
                .into_inner()
                .keys;
            if a.json {
                json::print(&Value::Array(keys.iter().map(key_json).collect()));
            } else {
                print_table(&keys);
            }
        }
        KeyCmd::Rm(a) => {
            // A whole key is never repeated in messages.
            let what = if a.key.starts_with(wrenn_control::auth::API_KEY_PREFIX) {
                "revoke the API key given".to_owned()
            } else {
                format!("revoke API key {}", a.key)
            };
            let key = c
                .revoke(RevokeKeyRequest {
                    key: a.key,
                    force: a.force,
                })
                .await
                .context(what)?
                .into_inner();
            println!("{}", key.id);
        }
    }
    Ok(())
}

/// `key_x (ci)`, or the id alone.
fn describe(k: &ApiKey) -> String {
    if k.name.is_empty() {
        k.id.clone()
    } else {
        format!("{} ({})", k.id, k.name)
    }
}

fn key_json(k: &ApiKey) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "created_at": json::time(k.created_at.as_ref()),
        "last_used_at": json::time(k.last_used_at.as_ref()),
        "revoked_at": json::time(k.revoked_at.as_ref()),
        "revoked": k.revoked_at.is_some(),
        "current": k.current,
    })
}

/// One line per key; `*` marks the key this command used.
fn print_table(keys: &[ApiKey]) {
    println!(
        "  {:<17} {:<20} {:<20} {:<20} STATE",
        "ID", "NAME", "CREATED", "LAST USED"
    );
    for k in keys {
        let state = match json::time(k.revoked_at.as_ref()) {
            Some(at) => format!("revoked {at}"),
            None => "active".to_owned(),
        };
        println!(
            "{} {:<17} {:<20} {:<20} {:<20} {state}",
            if k.current { "*" } else { " " },
            k.id,
            if k.name.is_empty() { "-" } else { &k.name },
            json::time(k.created_at.as_ref()).unwrap_or_default(),
            json::time(k.last_used_at.as_ref()).unwrap_or_else(|| "never".to_owned()),
        );
    }
}
