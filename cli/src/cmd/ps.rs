//! `wrenn ps <id>` and `wrenn kill <id> <pid|tag>`.

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use wrenn_proto::process::{ProcessSelector, Signal, process_selector};
use wrenn_proto::wrenn::v1::{KillProcessRequest, SandboxRef};

use crate::client::GlobalArgs;
use crate::json;

#[derive(Args)]
pub struct PsArgs {
    id: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct KillArgs {
    id: String,
    /// A pid (digits) or a tag.
    target: String,
    /// Signal to send.
    #[arg(long, short, value_enum, default_value = "kill")]
    signal: SignalArg,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SignalArg {
    Term,
    Kill,
    Int,
    Hup,
}

impl From<SignalArg> for Signal {
    fn from(s: SignalArg) -> Self {
        match s {
            SignalArg::Term => Signal::Sigterm,
            SignalArg::Kill => Signal::Sigkill,
            SignalArg::Int => Signal::Sigint,
            SignalArg::Hup => Signal::Sighup,
        }
    }
}

/// Digits select a pid; anything else is a tag.
pub fn selector(target: &str) -> ProcessSelector {
    let sel = match target.parse::<u32>() {
        Ok(pid) => process_selector::Selector::Pid(pid),
        Err(_) => process_selector::Selector::Tag(target.to_owned()),
    };
    ProcessSelector {
        selector: Some(sel),
    }
}

pub async fn ps(g: &GlobalArgs, a: PsArgs) -> Result<()> {
    let mut c = g.connect().await?;
    let list = c
        .list_processes(SandboxRef {
            sandbox_id: a.id.clone(),
        })
        .await
        .with_context(|| format!("list processes in sandbox {}", a.id))?
        .into_inner()
        .processes;
    if a.json {
        json::print(&serde_json::Value::Array(
            list.iter().map(json::process).collect(),
        ));
        return Ok(());
    }
    println!("{:>7}  {:<16} COMMAND", "PID", "TAG");
    for p in list {
        let cfg = p.config.unwrap_or_default();
        let mut cmd = vec![cfg.cmd];
        cmd.extend(cfg.args);
        println!(
            "{:>7}  {:<16} {}",
            p.pid,
            p.tag.unwrap_or_default(),
            cmd.join(" ")
        );
    }
    Ok(())
}

pub async fn kill(g: &GlobalArgs, a: KillArgs) -> Result<()> {
    let mut c = g.connect().await?;
    c.kill_process(KillProcessRequest {
        sandbox_id: a.id.clone(),
        process: Some(selector(&a.target)),
        signal: Signal::from(a.signal) as i32,
    })
    .await
    .with_context(|| format!("signal {} in sandbox {}", a.target, a.id))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_pids_and_the_rest_tags() {
        assert_eq!(
            selector("42").selector,
            Some(process_selector::Selector::Pid(42))
        );
        assert_eq!(
            selector("web-1").selector,
            Some(process_selector::Selector::Tag("web-1".into()))
        );
    }
}
