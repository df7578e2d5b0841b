//! What the app tests do in their sandboxes through the CLI, as a person
//! would: reach the registries, copy files in, stop a server, read its log.

use std::path::Path;
use std::time::Duration;

use crate::common::{CliOutput, Platform, Sandbox, proc};

/// Room to install and run the apps: the defaults (512 MiB, 1 GiB disk,
/// 300 s) are too small for a 200 MB venv or a 350 MB `node_modules` and a
/// webpack build.
pub const RESOURCES: &[&str] = &["--memory", "2048", "--disk", "4096", "--timeout", "1800"];

/// Runs `sh -c <script>` in the sandbox with extra `--env`s, allowing
/// `timeout`; panics with the output unless it exits 0. Returns stdout.
pub fn sh(sb: &Sandbox<'_>, env: &[(&str, &str)], script: &str, timeout: Duration) -> String {
    let out = sh_out(sb, env, script, timeout);
    assert_eq!(out.code, 0, "in sandbox {}: {script:?}: {out}", sb.id);
    out.stdout
}

fn sh_out(sb: &Sandbox<'_>, env: &[(&str, &str)], script: &str, timeout: Duration) -> CliOutput {
    let mut cmd = sb.platform.command();
    cmd.args(["exec", &sb.id]);
    for (k, v) in env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.args(["--", "sh", "-c", script]);
    proc::run(cmd, timeout)
}

/// `wrenn files put <id> <local> <remote>`, allowing a few minutes for big files.
pub fn put(p: &Platform, id: &str, local: &Path, remote: &str) {
    let mut cmd = p.command();
    cmd.args(["files", "put", id]).arg(local).arg(remote);
    let out = proc::run(cmd, Duration::from_secs(300));
    assert_eq!(out.code, 0, "files put {} {remote}: {out}", local.display());
}

/// Stops the background process tagged `tag` with SIGTERM and waits until
/// it is gone and nothing listens on `port` any more.
pub fn stop(sb: &Sandbox<'_>, tag: &str, port: u16) {
    sb.platform
        .cli_ok(&["kill", "--signal", "term", &sb.id, tag]);
    crate::common::eventually(Duration::from_secs(60), &format!("{tag} to exit"), || {
        let out = sb.platform.cli_ok(&["ps", "--json", &sb.id]);
        let list: serde_json::Value = serde_json::from_str(&out).unwrap();
        let running = list.as_array().unwrap().iter().any(|p| p["tag"] == tag);
        (!running).then_some(())
    });
    sh(
        sb,
        &[],
        &format!(
            "for i in $(seq 300); do ss -Hltn 'sport = :{port}' | grep -q . || exit 0; sleep 0.1; done; \
             echo still listening on {port}; ss -ltnp; exit 1"
        ),
        Duration::from_secs(60),
    );
}

/// The last lines of a file in the sandbox (a server's log), for failure messages.
pub fn tail_file(sb: &Sandbox<'_>, path: &str) -> String {
    let out = sh_out(
        sb,
        &[],
        &format!("tail -n 40 {path}"),
        Duration::from_secs(30),
    );
    format!(
        "--- {path} in sandbox {} ---\n{}{}",
        sb.id, out.stdout, out.stderr
    )
}
