//! `wrenn sandbox create | ls | get | rm | pause | resume | timeout | metrics`.

use std::collections::HashMap;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use wrenn_proto::wrenn::v1::{
    CreateSandboxRequest, ListSandboxesRequest, Sandbox, SandboxRef, SandboxSpec, SetTimeoutRequest,
};

use crate::client::{GlobalArgs, parse_kv};
use crate::json;

#[derive(Subcommand)]
pub enum SandboxCmd {
    /// Create a sandbox and print its id (or its record with --json).
    Create(CreateArgs),
    /// List sandboxes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show one sandbox.
    Get(IdArgs),
    /// Destroy sandboxes.
    #[command(alias = "destroy")]
    Rm(RmArgs),
    /// Freeze every process of a sandbox.
    Pause(IdArgs),
    /// Thaw a paused sandbox.
    Resume(IdArgs),
    /// Set a sandbox's timeout, counted from now.
    Timeout(TimeoutArgs),
    /// CPU, memory and disk use of a sandbox.
    Metrics(IdArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    /// Template (image) to start from.
    #[arg(long, default_value = "base")]
    template: String,
    /// Virtual CPUs (CPU quota for namespace sandboxes).
    #[arg(long)]
    vcpus: Option<u32>,
    /// Memory limit in MiB.
    #[arg(long)]
    memory: Option<u32>,
    /// Disk size in MiB.
    #[arg(long)]
    disk: Option<u32>,
    /// Seconds until the sandbox is destroyed (default 300).
    #[arg(long)]
    timeout: Option<u32>,
    /// Environment variable for every process, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Metadata, KEY=VALUE (repeatable); `sandbox ls --meta` filters on it.
    #[arg(long = "meta", value_parser = parse_kv)]
    meta: Vec<(String, String)>,
    /// No egress to the internet.
    #[arg(long)]
    no_internet: bool,
    /// An IPv4 network (CIDR) the sandbox may reach although the default
    /// refuses it (private and link-local ranges; anything with
    /// --no-internet). Repeatable, or comma-separated.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    allow_out: Vec<wrenn_types::Cidr>,
    /// An IPv4 network (CIDR) the sandbox may never reach, whatever else
    /// allows it. Repeatable, or comma-separated.
    #[arg(long, value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    deny_out: Vec<wrenn_types::Cidr>,
    /// Print the whole record as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct LsArgs {
    /// Only sandboxes with this metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_parser = parse_kv)]
    meta: Vec<(String, String)>,
    /// Include stopped sandboxes.
    #[arg(long, short)]
    all: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct IdArgs {
    id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RmArgs {
    #[arg(required = true)]
    ids: Vec<String>,
}

#[derive(Args)]
pub struct TimeoutArgs {
    id: String,
    /// Seconds from now.
    seconds: u32,
    #[arg(long)]
    json: bool,
}

pub(crate) fn parse_cidr(s: &str) -> Result<wrenn_types::Cidr, String> {
    s.trim()
        .parse()
        .map_err(|e: wrenn_types::InvalidCidr| e.to_string())
}

pub async fn run(g: &GlobalArgs, cmd: SandboxCmd) -> Result<()> {
    let mut c = g.connect().await?;
    match cmd {
        SandboxCmd::Create(a) => {
            let spec = SandboxSpec {
                template: a.template,
                vcpus: a.vcpus.unwrap_or(0),
                memory_mb: a.memory.unwrap_or(0),
                disk_mb: a.disk.unwrap_or(0),
                env: a.env.into_iter().collect(),
                metadata: a.meta.into_iter().collect(),
                internet: Some(!a.no_internet),
                timeout_secs: a.timeout.unwrap_or(0),
                allow_out: a.allow_out.iter().map(ToString::to_string).collect(),
                deny_out: a.deny_out.iter().map(ToString::to_string).collect(),
                // Chosen by the host agent.
                envd_access_token: String::new(),
            };
            let sb = c
                .create(CreateSandboxRequest {
                    sandbox_id: String::new(),
                    spec: Some(spec),
                })
                .await
                .context("create sandbox")?
                .into_inner();
            if a.json {
                json::print(&json::sandbox(&sb));
            } else {
                println!("{}", sb.id);
            }
        }
        SandboxCmd::Ls(a) => {
            let list = c
                .list(ListSandboxesRequest {
                    metadata: a.meta.into_iter().collect::<HashMap<_, _>>(),
                    include_stopped: a.all,
                })
                .await
                .context("list sandboxes")?
                .into_inner()
                .sandboxes;
            if a.json {
                json::print(&serde_json::Value::Array(
                    list.iter().map(json::sandbox).collect(),
                ));
            } else {
                print_table(&list);
            }
        }
        SandboxCmd::Get(a) => {
            let sb = c
                .get(SandboxRef {
                    sandbox_id: a.id.clone(),
                })
                .await
                .with_context(|| format!("get sandbox {}", a.id))?
                .into_inner();
            print_one(&sb, a.json);
        }
        SandboxCmd::Rm(a) => {
            let mut failed = None;
            for id in a.ids {
                match c
                    .destroy(SandboxRef {
                        sandbox_id: id.clone(),
                    })
                    .await
                {
                    Ok(_) => println!("{id}"),
                    Err(e) => {
                        let e = anyhow::Error::new(e).context(format!("destroy sandbox {id}"));
                        crate::exit::print_chain(&e);
                        failed = Some(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e.context("some sandboxes were not destroyed"));
            }
        }
        SandboxCmd::Pause(a) => {
            let sb = c
                .pause(SandboxRef {
                    sandbox_id: a.id.clone(),
                })
                .await
                .with_context(|| format!("pause sandbox {}", a.id))?
                .into_inner();
            print_one(&sb, a.json);
        }
        SandboxCmd::Resume(a) => {
            let sb = c
                .resume(SandboxRef {
                    sandbox_id: a.id.clone(),
                })
                .await
                .with_context(|| format!("resume sandbox {}", a.id))?
                .into_inner();
            print_one(&sb, a.json);
        }
        SandboxCmd::Timeout(a) => {
            let sb = c
                .set_timeout(SetTimeoutRequest {
                    sandbox_id: a.id.clone(),
                    timeout_secs: a.seconds,
                })
                .await
                .with_context(|| format!("set the timeout of sandbox {}", a.id))?
                .into_inner();
            print_one(&sb, a.json);
        }
        SandboxCmd::Metrics(a) => {
            let m = c
                .get_metrics(SandboxRef {
                    sandbox_id: a.id.clone(),
                })
                .await
                .with_context(|| format!("metrics of sandbox {}", a.id))?
                .into_inner();
            if a.json {
                json::print(&json::metrics(&m));
            } else {
                println!("cpu        {:.3} s", m.cpu_usage_usec as f64 / 1e6);
                println!(
                    "memory     {} / {} MiB",
                    m.memory_bytes >> 20,
                    m.memory_limit_bytes >> 20
                );
                println!(
                    "disk       {} / {} MiB",
                    m.disk_used_bytes >> 20,
                    m.disk_limit_bytes >> 20
                );
                println!("processes  {}", m.pids);
            }
        }
    }
    Ok(())
}

fn print_one(sb: &Sandbox, as_json: bool) {
    if as_json {
        json::print(&json::sandbox(sb));
        return;
    }
    let v = json::sandbox(sb);
    for key in [
        "id",
        "state",
        "template",
        "vcpus",
        "memory_mb",
        "disk_mb",
        "internet",
        "address",
        "backend",
        "host_id",
        "created_at",
        "expires_at",
        "stop_reason",
        "unhealthy",
    ] {
        let val = &v[key];
        if !val.is_null() {
            let s = val
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| val.to_string());
            println!("{key:<12} {s}");
        }
    }
    if let Some(spec) = &sb.spec {
        let mut meta: Vec<_> = spec.metadata.iter().collect();
        meta.sort();
        for (k, v) in meta {
            println!("{:<12} {k}={v}", "metadata");
        }
    }
}

fn print_table(list: &[Sandbox]) {
    println!(
        "{:<22} {:<9} {:<10} {:<15} {:<21} METADATA",
        "ID", "STATE", "TEMPLATE", "ADDRESS", "EXPIRES"
    );
    for sb in list {
        let spec = sb.spec.clone().unwrap_or_default();
        let mut meta: Vec<_> = spec
            .metadata
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        meta.sort();
        println!(
            "{:<22} {:<9} {:<10} {:<15} {:<21} {}",
            sb.id,
            if sb.unhealthy.is_empty() {
                json::state(sb.state).to_owned()
            } else {
                "unhealthy".to_owned()
            },
            spec.template,
            sb.address,
            json::time(sb.expires_at.as_ref()).unwrap_or_default(),
            meta.join(",")
        );
    }
}
