//! `wrenn` — runs the platform's components (`up`, `control`, `agent`, `proxy`)
//! and talks to the control plane (`sandbox`, `template`, `key`, `exec`, `pty`,
//! `files`, `ps`, `kill`, `url`).
//!
//! Exit codes: 0 success; 1 any other failure; 2 bad usage; 3 not found;
//! 4 refused (bad or missing API key, permission); 5 the control plane is
//! unreachable; 6 invalid input or wrong state. `wrenn exec` and `wrenn pty`
//! exit with the remote process's exit code, and with 125 when wrenn itself
//! failed before the process ended.
//!
//! Every system call that needs `unsafe` lives in [`sys`].

#![deny(unsafe_code)]

mod client;
mod cmd;
mod exit;
mod json;
mod logging;
#[allow(unsafe_code)]
mod sys;

use clap::{Parser, Subcommand};

// The proxy allocates per request (Pingora's sessions, headers, tasks):
// mimalloc spends a fraction of glibc malloc's CPU on it (wrenn-bench proxy).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "wrenn",
    version,
    about = "Self-hosted sandboxes: run code in isolated sandboxes and open what they serve"
)]
struct Cli {
    #[command(flatten)]
    global: client::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine: control plane, host agent, proxy.
    Up(cmd::up::UpArgs),
    /// Run the control plane (API for the CLI and SDKs).
    Control(cmd::serve::ControlArgs),
    /// Run the host agent (owns this machine's sandboxes).
    Agent(cmd::serve::AgentArgs),
    /// Run the proxy (browsers to sandbox ports).
    Proxy(cmd::serve::ProxyArgs),
    /// Create, list, inspect, pause, resume and destroy sandboxes.
    #[command(subcommand)]
    Sandbox(cmd::sandbox::SandboxCmd),
    /// Build templates from recipes or Dockerfiles; list, show, delete them.
    #[command(subcommand)]
    Template(cmd::template::TemplateCmd),
    /// Create, list and revoke API keys (for the CLI, SDKs and E2B's REST API).
    #[command(subcommand)]
    Key(cmd::key::KeyCmd),
    /// Run a command in a sandbox; exits with its exit code.
    Exec(cmd::exec::ExecArgs),
    /// Open an interactive terminal in a sandbox.
    Pty(cmd::pty::PtyArgs),
    /// Copy files in and out of a sandbox, list, remove, make directories.
    #[command(subcommand)]
    Files(cmd::files::FilesCmd),
    /// List the processes the sandbox's guest agent started.
    Ps(cmd::ps::PsArgs),
    /// Signal a process in a sandbox by pid or tag.
    Kill(cmd::ps::KillArgs),
    /// Print the URLs that reach a port of a sandbox through the proxy.
    Url(cmd::url::UrlArgs),
}

fn main() {
    let cli = Cli::parse();
    if !matches!(
        cli.command,
        Command::Up(_) | Command::Control(_) | Command::Agent(_) | Command::Proxy(_)
    ) {
        // Client commands are pipeline citizens: `wrenn sandbox ls | head`
        // ends quietly when the reader goes away instead of panicking.
        sys::default_sigpipe();
    }
    let code = match cli.command {
        // Pingora runs its own runtimes and must not start inside one.
        Command::Proxy(args) => exit::report(cmd::serve::proxy(args)),
        command => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    std::process::exit(1);
                }
            };
            let code = rt.block_on(run(cli.global, command));
            // Blocking stdin readers (exec, pty) would keep a graceful shutdown waiting.
            rt.shutdown_background();
            code
        }
    };
    logging::flush();
    std::process::exit(code);
}

async fn run(global: client::GlobalArgs, command: Command) -> i32 {
    use cmd::*;
    match command {
        Command::Up(args) => exit::report(up::run(args).await),
        Command::Control(args) => exit::report(serve::control(args).await),
        Command::Agent(args) => exit::report(serve::agent(args).await),
        Command::Proxy(_) => unreachable!("handled before the runtime starts"),
        Command::Sandbox(c) => exit::report(sandbox::run(&global, c).await),
        Command::Template(c) => exit::report(template::run(&global, c).await),
        Command::Key(c) => exit::report(key::run(&global, c).await),
        Command::Exec(args) => exit::report_remote(exec::run(&global, args).await),
        Command::Pty(args) => exit::report_remote(pty::run(&global, args).await),
        Command::Files(c) => exit::report(files::run(&global, c).await),
        Command::Ps(args) => exit::report(ps::ps(&global, args).await),
        Command::Kill(args) => exit::report(ps::kill(&global, args).await),
        Command::Url(args) => exit::report(url::run(&global, args).await),
    }
}
