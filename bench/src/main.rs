//! `wrenn-bench <scenario> [--quick]`: wrenn's benchmarks.
//!
//! Each scenario is one module with `pub async fn run(opts: &Opts) ->
//! anyhow::Result<()>` and one variant + match arm below. Scenarios print a
//! human-readable table; the platform scenarios (`proxy`, `ws`,
//! `pty-under-load`, `lifecycle`, `routes`, `templates`, `e2b`) also write
//! `<out>/<scenario>.{json,md,svg}` (see [`report`]). `--quick` runs few
//! iterations, for CI smoke runs. Every scenario is bounded: ≤ 60 s by
//! default, ≤ 15 s with `--quick` (plus `--rounds` − 1 repeats where a
//! scenario repeats).

mod e2b;
mod forward;
mod guest;
mod lifecycle;
mod memory;
mod namespace;
mod paths;
mod platform;
mod procstat;
mod proxy;
mod pty_load;
mod reference;
mod report;
mod routes;
mod runtime;
mod sandbox;
mod stats;
mod svg;
mod templates;
mod testbed;
mod wrk;
mod ws;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

// The allocator wrenn uses, so bare Pingora ([`pingora`]) differs from
// wrenn's proxy in wrenn's code only.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "wrenn-bench")]
struct Args {
    /// What to measure.
    #[arg(value_enum, required_unless_present = "list")]
    scenario: Option<Scenario>,
    /// Print every scenario's name, one per line, and exit.
    #[arg(long)]
    list: bool,
    /// Few iterations: checks the scenario runs, numbers are rough.
    #[arg(long)]
    quick: bool,
    /// Repeat each measurement this many times, interleaved (proxy, ws,
    /// routes); tables show the median and the spread.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=20))]
    rounds: u16,
    /// Where the JSON, markdown and SVG results go.
    #[arg(long, default_value = "target/wrenn-bench")]
    out: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Exec round trip of `true` and PTY keystroke echo, straight to wrenn-guest over loopback.
    Guest,
    /// Namespace sandboxes: create → guest healthy and destroy p50/p99 over 200, density up to 1000 idle.
    Runtime,
    /// Apps bound to 127.0.0.1 vs 0.0.0.0 through the proxy: netns fast path and guest forwarder.
    Forward,
    /// The proxy against a direct connection and nginx: req/s, p50/p99/p99.9, CPU, RSS.
    Proxy,
    /// WebSocket echo round trip and messages/s through the proxy and direct.
    Ws,
    /// PTY echo latency while N proxied clients poll and stream, and the shared-transport baseline.
    PtyUnderLoad,
    /// Through the control plane: create → ready, exec, destroy; density up to 1000 idle.
    Lifecycle,
    /// Proxy latency with 10, 1,000 and 10,000 sandboxes in the route table.
    Routes,
    /// Template builds (first, cached, last step changed), image sizes, create from a template vs base.
    Templates,
    /// E2B's Python SDK against wrenn (create, commands, files, run_code) beside wrenn's CLI.
    E2b,
}

/// Options every scenario receives.
#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
    pub rounds: usize,
    pub out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    // The reference proxies' child processes (`proxy` scenario): they start
    // their own runtimes, so they run before ours exists.
    let argv: Vec<String> = std::env::args().collect();
    match argv.get(1).map(String::as_str) {
        Some(reference::bare_pingora::SUBCOMMAND) => {
            return reference::bare_pingora::serve(&argv[2..]);
        }
        Some(reference::lean_tokio::SUBCOMMAND) => return reference::lean_tokio::serve(&argv[2..]),
        _ => {}
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(Args::parse()))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let opts = Opts {
        quick: args.quick,
        rounds: args.rounds.into(),
        out: args.out,
    };
    let Some(scenario) = args.scenario else {
        for s in Scenario::value_variants() {
            if let Some(v) = s.to_possible_value() {
                println!("{}", v.get_name());
            }
        }
        return Ok(());
    };
    report::mark_start();
    match scenario {
        Scenario::Guest => guest::run(&opts).await,
        Scenario::Runtime => runtime::run(&opts).await,
        Scenario::Forward => forward::run(&opts).await,
        Scenario::Proxy => proxy::run(&opts).await,
        Scenario::Ws => ws::run(&opts).await,
        Scenario::PtyUnderLoad => pty_load::run(&opts).await,
        Scenario::Lifecycle => lifecycle::run(&opts).await,
        Scenario::Routes => routes::run(&opts).await,
        Scenario::Templates => templates::run(&opts).await,
        Scenario::E2b => e2b::run(&opts).await,
    }
}

/// Fails clearly when not root (sandboxes need it; CI is root).
pub fn require_root(scenario: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "the {scenario} benchmark needs root: it runs `wrenn up` (namespaces, cgroups, netlink)"
        );
    }
    Ok(())
}

/// Raises the open-files limit to the hard limit; wrk and our clients
/// inherit it (1024 connections through a proxy is > 2048 descriptors).
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// CPU cores of this machine: the proxy's threads (its default), nginx's
/// workers and the load generator's threads.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
