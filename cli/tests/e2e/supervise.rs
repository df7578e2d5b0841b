//! Nothing is lost when processes die: `wrenn up` and every component
//! SIGKILLed (the parent first, as `pkill -9 wrenn` may) and started again
//! adopt every sandbox with its deadline and processes; a component that
//! dies under `wrenn up` is restarted; one that keeps dying stops the
//! platform, which then destroys its sandboxes. Slots 3400–3419.

use std::time::Duration;

use crate::common::{Platform, PlatformOptions, eventually};

fn ids(p: &Platform) -> Vec<String> {
    let out = p.cli_ok(&["sandbox", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "running")
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn killing_every_process_then_starting_again_adopts_every_sandbox() {
    let mut p = Platform::start(PlatformOptions::new("wrenn-te", 3400..=3409));
    let long = p.create_sandbox(&["--timeout", "3600"]);
    let short = p.create_sandbox(&[]);
    p.cli_ok(&[
        "exec", "-d", "--tag", "sleeper", &long, "--", "sleep", "600",
    ]);
    let expires = |p: &Platform, id: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&p.cli_ok(&["sandbox", "get", "--json", id])).unwrap();
        v["expires_at"].as_str().unwrap().to_owned()
    };
    let before = (expires(&p, &long), expires(&p, &short));
    let mut want = vec![long.clone(), short.clone()];
    want.sort();
    for round in 0..3 {
        p.kill_everything_and_start_again();
        let got = eventually(
            Duration::from_secs(30),
            "both sandboxes running again",
            || {
                let got = ids(&p);
                (got == want).then_some(got)
            },
        );
        assert_eq!(got, want, "round {round}");
        assert_eq!(
            (expires(&p, &long), expires(&p, &short)),
            before,
            "round {round}: deadlines changed"
        );
        let ps = p.cli_ok(&["ps", &long]);
        assert!(ps.contains("sleeper"), "round {round}: {ps}");
        let out = p.cli_ok(&["exec", &short, "--", "echo", "still-here"]);
        assert_eq!(out, "still-here\n", "round {round}");
    }
    p.stop();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn a_dead_component_is_restarted_and_one_that_keeps_dying_stops_the_platform() {
    let p = Platform::start(PlatformOptions::new("wrenn-te", 3410..=3419));
    let id = p.create_sandbox(&[]);
    // One death of each: back, and the sandbox with it.
    for (name, back) in [
        ("agent", "agent is back"),
        ("proxy", "proxy is back"),
        ("control", "control is back"),
    ] {
        let pid = p.component(name);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        eventually(
            Duration::from_secs(60),
            &format!("{name} restarted"),
            || p.output().contains(back).then_some(()),
        );
        let out = eventually(Duration::from_secs(30), "exec after the restart", || {
            let out = p.cli(&["exec", &id, "--", "echo", "ok"]);
            (out.code == 0).then_some(out.stdout)
        });
        assert_eq!(out, "ok\n", "after {name} died");
    }
    // An agent that keeps dying: the platform gives up, and its sandboxes go.
    let mut killed = 0;
    eventually(Duration::from_secs(120), "wrenn up gives up", || {
        if p.output().contains("keeps dying") {
            return Some(());
        }
        if let Some((_, pid)) = p.components().into_iter().find(|(n, _)| n == "agent")
            && nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok()
        {
            killed += 1;
            std::thread::sleep(Duration::from_millis(300));
        }
        None
    });
    assert!(killed >= 5, "killed the agent {killed} times");
    // `wrenn up` exits with an error and leaves nothing: the sandbox was
    // destroyed although its agent kept dying.
    p.expect_failed_exit(Duration::from_secs(120));
}
