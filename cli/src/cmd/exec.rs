//! `wrenn exec <id> [--user U] [--cwd DIR] [--env K=V]… -- cmd args…`
//!
//! Output is written as it arrives; the exit code is the remote one. With
//! `--detach` the process starts in the background (optionally tagged) and its
//! pid is printed; it keeps running after `wrenn exec` returns. Ctrl-C
//! sends SIGINT to the remote process (a second one sends SIGKILL). The remote
//! process gets no stdin (it reads EOF); use `wrenn pty` for interactive work.

use std::io::Write;

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use wrenn_proto::process::{
    ProcessConfig, ProcessSelector, Signal, StartRequest, process_event, process_selector,
};
use wrenn_proto::wrenn::v1::{ExecRequest, KillProcessRequest, StartBackgroundRequest};

use crate::client::{GlobalArgs, parse_kv};

#[derive(Args)]
pub struct ExecArgs {
    /// Sandbox id.
    id: String,
    /// Run as this user (from the sandbox's /etc/passwd; default root).
    #[arg(long, short)]
    user: Option<String>,
    /// Working directory (default: the user's home).
    #[arg(long)]
    cwd: Option<String>,
    /// Environment variable, KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_kv)]
    env: Vec<(String, String)>,
    /// Kill the process after this many seconds.
    #[arg(long, conflicts_with = "detach")]
    timeout: Option<u32>,
    /// Start in the background and print its pid (see `wrenn ps`, `wrenn kill`).
    #[arg(long, short = 'd')]
    detach: bool,
    /// Tag to find a background process by (with --detach).
    #[arg(long, requires = "detach")]
    tag: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub async fn run(g: &GlobalArgs, a: ExecArgs) -> Result<i32> {
    let mut c = g.connect().await?;
    let mut argv = a.command.into_iter();
    let Some(cmd) = argv.next() else {
        bail!("no command given after --")
    };
    let start = StartRequest {
        process: Some(ProcessConfig {
            cmd,
            args: argv.collect(),
            envs: a.env.into_iter().collect(),
            cwd: a.cwd,
        }),
        pty: None,
        tag: a.tag,
        stdin: Some(false),
        user: a.user,
    };
    if a.detach {
        let pid = c
            .start_background(StartBackgroundRequest {
                sandbox_id: a.id.clone(),
                start: Some(start),
            })
            .await
            .with_context(|| format!("start a background process in sandbox {}", a.id))?
            .into_inner()
            .pid;
        println!("{pid}");
        return Ok(0);
    }
    let req = ExecRequest {
        sandbox_id: a.id.clone(),
        start: Some(start),
        output_limit: 0,
        timeout_secs: a.timeout.unwrap_or(0),
    };
    let mut stream = c
        .exec_stream(req)
        .await
        .with_context(|| format!("exec in sandbox {}", a.id))?
        .into_inner();

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut pid = None;
    let mut interrupts = 0;
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr();
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            _ = sigint.recv() => { interrupts += 1; forward(&mut c, &a.id, pid, interrupts).await; continue; }
            _ = sigterm.recv() => { forward(&mut c, &a.id, pid, 2).await; continue; }
        };
        let Some(ev) = msg.with_context(|| format!("output stream from sandbox {}", a.id))? else {
            bail!(
                "the output stream from sandbox {} ended before the process did",
                a.id
            );
        };
        match ev.event {
            Some(process_event::Event::Start(s)) => pid = Some(s.pid),
            Some(process_event::Event::Data(d)) => match d.output {
                Some(process_event::data_event::Output::Stdout(b))
                | Some(process_event::data_event::Output::Pty(b)) => {
                    stdout.write_all(&b)?;
                    stdout.flush()?;
                }
                Some(process_event::data_event::Output::Stderr(b)) => {
                    stderr.write_all(&b)?;
                }
                None => {}
            },
            Some(process_event::Event::End(e)) => {
                if let Some(err) = e.error.filter(|e| !e.is_empty()) {
                    eprintln!("wrenn: {err}");
                }
                return Ok(e.exit_code);
            }
            Some(process_event::Event::Keepalive(_)) | None => {}
        }
    }
}

/// First Ctrl-C: SIGINT; later ones (or SIGTERM): SIGKILL.
async fn forward(c: &mut crate::client::Client, id: &str, pid: Option<u32>, n: u32) {
    let Some(pid) = pid else { return };
    let signal = if n <= 1 {
        Signal::Sigint
    } else {
        Signal::Sigkill
    };
    let _ = c
        .kill_process(KillProcessRequest {
            sandbox_id: id.to_owned(),
            process: Some(ProcessSelector {
                selector: Some(process_selector::Selector::Pid(pid)),
            }),
            signal: signal as i32,
        })
        .await;
}
