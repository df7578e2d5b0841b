//! Building the shipped templates (`conf/templates`) on a test's platform
//! from PyPI and the npm registry, as a user would with `wrenn template
//! build`.
//!
//! Where egress goes through a TLS-inspecting gateway (as on the machines
//! this project is tested on) the registries are reachable only with its
//! CA, so the shipped recipes are built from [`with_host_ca`]: `base` with
//! the host's CA bundle. Their builds may reach the registries' addresses
//! ([`registry_access`]): a network whose registry mirror sits on a private
//! or test address (this machine's answer 203.0.113.0/24) is refused by a
//! sandbox's default egress policy, as a user there would find; public
//! addresses change nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Platform, proc};

/// The registries the recipes download from.
const REGISTRIES: &[&str] = &["registry.npmjs.org", "pypi.org", "files.pythonhosted.org"];

/// `--allow-out` for the addresses the registries have from this host.
pub fn registry_access() -> Vec<String> {
    use std::net::ToSocketAddrs as _;
    let mut nets: Vec<String> = REGISTRIES
        .iter()
        .filter_map(|h| (*h, 443).to_socket_addrs().ok())
        .flatten()
        .filter(|a| a.is_ipv4())
        .map(|a| format!("{}/32", a.ip()))
        .collect();
    nets.sort();
    nets.dedup();
    if nets.is_empty() {
        return Vec::new();
    }
    vec!["--allow-out".to_owned(), nets.join(",")]
}

/// The shipped template recipes (`conf/templates`).
pub fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/templates")
}

/// `wrenn template build <name> -f <recipe> [extra…]`, allowing minutes.
pub fn build(p: &Platform, name: &str, recipe: &Path, extra: &[String]) {
    let started = Instant::now();
    let mut cmd = p.command();
    cmd.args(["template", "build", name, "-f"])
        .arg(recipe)
        .args(extra);
    let out = proc::run(cmd, Duration::from_secs(900));
    assert_eq!(out.code, 0, "template build {name}: {out}");
    eprintln!(
        "template {name} built in {:.1?}: {}",
        started.elapsed(),
        out.stdout.lines().last().unwrap_or("")
    );
}

/// Builds `name`: `base` with the host's CA bundle.
pub fn with_host_ca(p: &Platform, name: &str) {
    let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
    assert!(
        bundle.is_file(),
        "{} is missing: apt-get install ca-certificates",
        bundle.display()
    );
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(bundle, ctx.path().join("ca.crt")).unwrap();
    let recipe = ctx.path().join("wrenn.recipe");
    std::fs::write(
        &recipe,
        "COPY ca.crt /home/wrenn-user/.host-ca.crt\n\
         RUN sudo cp /home/wrenn-user/.host-ca.crt /etc/ssl/certs/ca-certificates.crt \
         && rm /home/wrenn-user/.host-ca.crt\n",
    )
    .unwrap();
    build(p, name, &recipe, &[]);
}

/// Builds the shipped recipe `recipe` (a directory of `conf/templates`) as
/// template `name`, from `from` (made by [`with_host_ca`]), with the
/// registries reachable.
pub fn build_shipped(p: &Platform, name: &str, recipe: &str, from: &str) {
    let mut extra = vec!["--from".to_owned(), from.to_owned()];
    extra.extend(registry_access());
    build(
        p,
        name,
        &shipped().join(recipe).join("wrenn.recipe"),
        &extra,
    );
}
