//! `wrenn up` refuses bad configuration with an error that names what is
//! wrong and where, stops what it had started, and leaves nothing behind.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use crate::common::{
    PlatformOptions, Proc, WRENN, component_env, finish, free_ports, guest_bin, prepare_dir,
};
use crate::stores::PREFIX;

/// Runs `wrenn up` with `options` and `extra` flags, expects it to exit
/// non-zero by itself, and returns its output; checks nothing is left.
fn failing_up(options: PlatformOptions, extra: &[String]) -> String {
    let claim = prepare_dir(&options);
    let dir = claim.path().to_owned();
    // runs: -; the wrenn binary built here
    let mut cmd = Command::new(WRENN);
    cmd.arg("up").arg("--dir").arg(&dir).args(extra);
    component_env(&mut cmd, &options, &guest_bin());
    let mut up = Proc::spawn("wrenn up", cmd);
    let status = up.wait(Duration::from_secs(60));
    let output = up.output();
    let problem = match status {
        Ok(s) if !s.success() => None,
        Ok(s) => Some(format!(
            "wrenn up exited with {s} although it could not start"
        )),
        Err(e) => Some(e),
    };
    finish(
        &options,
        &dir,
        &BTreeSet::new(),
        problem,
        || output.clone(),
        "wrenn up",
    );
    drop(claim);
    output
}

fn ports() -> Vec<String> {
    let [c, a, p, m] = free_ports();
    vec![
        "--control-listen".into(),
        c.to_string(),
        "--agent-listen".into(),
        a.to_string(),
        "--proxy-listen".into(),
        p.to_string(),
        "--proxy-admin".into(),
        m.to_string(),
    ]
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn an_unreachable_database_is_named_without_its_password() {
    // A port nothing listens on.
    let [dead] = free_ports();
    let url = format!("postgres://wrenn:s3cret-pw@{dead}/wrenn");
    let out = failing_up(
        PlatformOptions::new(PREFIX, 3320..=3329).database_url(&url),
        &ports(),
    );
    assert!(out.contains("control exited during start-up"), "{out}");
    assert!(
        out.contains(&dead.to_string()),
        "the address is not named:\n{out}"
    );
    assert!(!out.contains("s3cret-pw"), "the password leaked:\n{out}");
    assert!(!out.contains("wrenn is up"), "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut args = ports();
    args[1] = addr.clone(); // --control-listen
    let out = failing_up(PlatformOptions::new(PREFIX, 3330..=3339), &args);
    assert!(
        out.contains(&addr),
        "the address in use is not named:\n{out}"
    );
    assert!(out.to_lowercase().contains("in use"), "{out}");
    assert!(
        out.contains("control exited during start-up")
            && out.contains("/var/tmp/wrenn-te/3330-3339/logs/control.log"),
        "the failed component and its log are not named:\n{out}"
    );
    assert!(!out.contains("wrenn is up"), "{out}");
}
