//! `wrenn-bench <scenario> [--quick]`: wrenn's benchmarks.
//!
//! Each scenario is one module with `pub async fn run(opts: &Opts) ->
//! anyhow::Result<()>` and one variant + match arm below. Scenarios print a
//! human-readable table and one `RESULT {json}` line per measurement (see
//! [`stats`]). `--quick` runs few iterations, for CI smoke runs.

mod forward;
mod guest;
mod runtime;
mod stats;

use clap::{Parser, ValueEnum};

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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Exec round trip of `true` and PTY keystroke echo, straight to wrenn-guest over loopback.
    Guest,
    /// Namespace sandboxes: create → guest healthy and destroy p50/p99 over 200, density up to 1000 idle.
    Runtime,
    /// Apps bound to 127.0.0.1 vs 0.0.0.0 through the proxy: netns fast path and guest forwarder.
    Forward,
}

/// Options every scenario receives.
#[derive(Debug, Clone)]
pub struct Opts {
    pub quick: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let opts = Opts { quick: args.quick };
    let Some(scenario) = args.scenario else {
        for s in Scenario::value_variants() {
            if let Some(v) = s.to_possible_value() {
                println!("{}", v.get_name());
            }
        }
        return Ok(());
    };
    match scenario {
        Scenario::Guest => guest::run(&opts).await,
        Scenario::Runtime => runtime::run(&opts).await,
        Scenario::Forward => forward::run(&opts).await,
    }
}
