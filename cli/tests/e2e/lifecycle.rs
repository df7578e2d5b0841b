//! Sandbox lifecycle through the CLI: create (`--json`, `--env`, `--meta`),
//! `ls` filters, get, rm, bad input, pause/resume, TTL expiry, API keys.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::proc::{self, CliOutput};
use crate::common::{Platform, Sandbox, eventually, leftovers};
use crate::stores::{assert_sandbox_gone, sandbox_leftovers, slot_of, unique};

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str()
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .to_utc()
}

fn ls(p: &Platform, filters: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["sandbox", "ls", "--json"];
    for f in filters {
        args.extend(["--meta", f]);
    }
    ids(&parse(&p.cli_ok(&args)))
}

pub fn create_json_env_meta_and_filters(p: &Platform) {
    let tag = unique("create");
    let suite = format!("suite={tag}");
    let out = p.cli_ok(&[
        "sandbox",
        "create",
        "--json",
        "--timeout",
        "600",
        "--env",
        "GREETING=hello there",
        "--env",
        "EMPTY=",
        "--meta",
        &suite,
        "--meta",
        "kind=a",
    ]);
    let a = parse(&out);
    let a_id = a["id"].as_str().unwrap().to_owned();
    let a_guard = Sandbox {
        id: a_id.clone(),
        platform: p,
    };
    assert!(wrenn_types::SandboxId::is_valid(&a_id), "{a}");
    assert_eq!(a["state"], "running", "{a}");
    assert_eq!(a["template"], "base", "{a}");
    assert_eq!(a["backend"], "namespace", "{a}");
    assert_eq!(a["timeout_secs"], 600, "{a}");
    assert_eq!(a["metadata"], json!({"suite": tag, "kind": "a"}), "{a}");
    let address = a["address"].as_str().unwrap().to_owned();
    assert!(
        p.options.slots.contains(&slot_of(&address)),
        "{address} is outside the platform's slots {:?}",
        p.options.slots
    );
    let ttl = time(&a["expires_at"]) - time(&a["created_at"]);
    assert!((599..=601).contains(&ttl.num_seconds()), "{a}");

    // Without --json: the id and nothing else.
    let out = p.cli(&[
        "sandbox",
        "create",
        "--timeout",
        "600",
        "--meta",
        &suite,
        "--meta",
        "kind=b",
    ]);
    assert_eq!(out.code, 0, "{out}");
    let b = Sandbox {
        id: out.stdout.trim().to_owned(),
        platform: p,
    };
    assert_eq!(out.stdout, format!("{}\n", b.id), "{out}");
    assert!(wrenn_types::SandboxId::is_valid(&b.id), "{out}");

    // The create's env reaches every process; metadata filters the list.
    assert_eq!(
        a_guard.sh_ok(r#"printf '%s|%s' "$GREETING" "${EMPTY-unset}""#),
        "hello there|"
    );
    assert_eq!(b.sh_ok(r#"printf '%s' "${GREETING-unset}""#), "unset");
    let both = BTreeSet::from([a_id.clone(), b.id.clone()]);
    assert_eq!(ls(p, &[&suite]), both);
    assert_eq!(ls(p, &[&suite, "kind=a"]), BTreeSet::from([a_id.clone()]));
    assert_eq!(ls(p, &[&suite, "kind=c"]), BTreeSet::new());
    assert_eq!(ls(p, &[&format!("suite={tag}-other")]), BTreeSet::new());
    let table = p.cli_ok(&["sandbox", "ls", "--meta", &suite]);
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "a header and two rows:\n{table}");
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("METADATA"),
        "{table}"
    );
    assert!(
        rows.iter().any(|r| r.starts_with(&a_id)
            && r.contains("running")
            && r.ends_with(&format!("kind=a,{suite}"))),
        "{table}"
    );
    let get = p.cli_ok(&["sandbox", "get", &a_id]);
    for line in [
        "state        running",
        "metadata     kind=a",
        &format!("address      {address}"),
    ] {
        assert!(get.lines().any(|l| l == line), "no {line:?} in:\n{get}");
    }

    // rm: the record stops, the host lets go of everything.
    assert_eq!(p.cli_ok(&["sandbox", "rm", &a_id]), format!("{a_id}\n"));
    std::mem::forget(a_guard);
    let gone = parse(&p.cli_ok(&["sandbox", "get", "--json", &a_id]));
    assert_eq!(gone["state"], "stopped", "{gone}");
    assert!(gone["stop_reason"].is_string(), "{gone}");
    assert_eq!(ls(p, &[&suite]), BTreeSet::from([b.id.clone()]));
    let all = ["sandbox", "ls", "--json", "--all", "--meta", &suite];
    assert_eq!(ids(&parse(&p.cli_ok(&all))), both);
    assert_sandbox_gone(p, &a_id, &address);
    let out = p.cli(&["exec", &a_id, "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(
        out.stderr.contains(&a_id) && out.stderr.contains("stopped"),
        "{out}"
    );
}

fn assert_fails(out: &CliOutput, code: i32, names: &[&str]) {
    assert_eq!(out.code, code, "{out}");
    for n in names {
        assert!(out.stderr.contains(n), "stderr does not name {n:?}: {out}");
    }
    assert!(out.stdout.is_empty(), "{out}");
}

pub fn bad_input(p: &Platform) {
    let tag = unique("bad");
    let suite = format!("suite={tag}");
    let create = |extra: &[&str]| {
        let mut args = vec!["sandbox", "create", "--meta", &suite];
        args.extend_from_slice(extra);
        p.cli(&args)
    };
    assert_fails(&create(&["--env", "NOVALUE"]), 2, &["NOVALUE", "KEY=VALUE"]);
    assert_fails(&create(&["--template", "nosuch"]), 3, &["nosuch"]);
    assert_fails(&create(&["--vcpus", "1000"]), 6, &["vcpus"]);
    assert_fails(&create(&["--memory", "100000000"]), 6, &["memory"]);
    assert_fails(
        &create(&["--timeout", "99999999"]),
        6,
        &["timeout_secs", "86400"],
    );
    assert_fails(
        &p.cli(&["sandbox", "get", "no/such id"]),
        6,
        &["no/such id"],
    );
    let missing = "aaaaaaaaaaaaaaaaaaaa";
    assert_fails(
        &p.cli(&["sandbox", "get", missing]),
        3,
        &[missing, "not found"],
    );
    assert_fails(&p.cli(&["sandbox", "rm", missing]), 3, &[missing]);
    assert_fails(
        &p.cli(&["exec", missing, "--", "true"]),
        125,
        &[missing, "not found"],
    );
    assert_fails(&p.cli(&["files", "ls", missing, "/"]), 3, &[missing]);
    assert_fails(&p.cli(&["url", missing, "0"]), 2, &["0"]);
    assert_fails(&p.cli(&["sandbox", "frobnicate"]), 2, &["frobnicate"]);
    // A spec over the size cap (env and metadata together, 64 KiB): refused
    // by name and size, and the proxy's watch of the agent is unharmed.
    let big: Vec<String> = (0..5)
        .map(|i| format!("V{i}={}", "x".repeat(15 * 1024)))
        .collect();
    let mut args: Vec<&str> = Vec::new();
    for e in &big {
        args.extend(["--env", e.as_str()]);
    }
    assert_fails(&create(&args), 6, &["65536", "bytes", "env"]);
    assert_fails(
        &create(&["--allow-out", "10.1.2.3/24"]),
        2,
        &["10.1.2.0/24", "host bits"],
    );
    assert_fails(
        &create(&["--allow-out", "10.210.0.0/16"]),
        6,
        &["sandbox network"],
    );

    // Nothing was made, and the platform still serves.
    let all = parse(&p.cli_ok(&["sandbox", "ls", "--all", "--json", "--meta", &suite]));
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "stopped"),
        "a refused create left a live record: {all}"
    );
    let sb = p.sandbox(&["--timeout", "120"]);
    assert_eq!(sb.sh_ok("echo still serving"), "still serving\n");
    let ready = crate::common::net::http_get(p.proxy_admin, "localhost", "/readyz").unwrap();
    assert_eq!(ready.status, 200, "the proxy is not ready: {}", ready.head);
}

/// The counter in the sandbox as the host kernel sees it (through the
/// process's root), independent of wrenn.
fn read_count(host_pid: i32) -> u64 {
    let path = format!("/proc/{host_pid}/root/tmp/count");
    eventually(Duration::from_secs(10), "a readable counter", || {
        std::fs::read_to_string(&path).ok()?.trim().parse().ok()
    })
}

pub fn pause_resume(p: &Platform) {
    let sb = p.sandbox(&["--timeout", "600"]);
    let script = "i=0; while :; do i=$((i+1)); echo $i > /tmp/c.tmp && mv /tmp/c.tmp /tmp/count; sleep 0.05; done";
    let out = p.cli_ok(&[
        "exec", "-d", "--tag", "counter", &sb.id, "--", "sh", "-c", script,
    ]);
    let guest_pid: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("pid: {out:?}"));
    let ps = p.cli_ok(&["ps", &sb.id]);
    assert!(
        ps.lines()
            .any(|l| l.trim_start().starts_with(&format!("{guest_pid} ")) && l.contains("counter")),
        "{ps}"
    );
    let host_pid = eventually(Duration::from_secs(10), "the counter on the host", || {
        leftovers::sandbox_pids(&p.options.prefix, &sb.id)
            .into_iter()
            .find(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains("while :"))
            })
    });
    let start = read_count(host_pid);
    eventually(Duration::from_secs(10), "the counter to count", || {
        (read_count(host_pid) >= start + 3).then_some(())
    });

    let out = p.cli_ok(&["sandbox", "pause", &sb.id]);
    assert!(out.lines().any(|l| l == "state        paused"), "{out}");
    assert_eq!(sb.get()["state"], "paused");
    let frozen = read_count(host_pid);
    // Paused means not one more step, over many of its 50 ms periods.
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        assert_eq!(
            read_count(host_pid),
            frozen,
            "the counter moved while paused"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = sb.sh("true");
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("paused"), "{out}");
    assert_fails(&p.cli(&["sandbox", "pause", &sb.id]), 6, &["paused"]);
    assert_fails(
        &p.cli(&["files", "get", &sb.id, "/tmp/count", "-"]),
        6,
        &["paused"],
    );

    let out = p.cli_ok(&["sandbox", "resume", &sb.id]);
    assert!(out.lines().any(|l| l == "state        running"), "{out}");
    let after = read_count(host_pid);
    assert!(after >= frozen, "the counter restarted: {after} < {frozen}");
    eventually(Duration::from_secs(10), "the counter to continue", || {
        (read_count(host_pid) >= frozen + 5).then_some(())
    });
    assert_fails(&p.cli(&["sandbox", "resume", &sb.id]), 6, &["running"]);
    // The same process, not a new one.
    let via_wrenn: u64 = p
        .cli_ok(&["files", "get", &sb.id, "/tmp/count", "-"])
        .trim()
        .parse()
        .unwrap();
    assert!(via_wrenn >= after, "{via_wrenn} < {after}");
    p.cli_ok(&["kill", &sb.id, "counter"]);
    eventually(Duration::from_secs(10), "the counter to be killed", || {
        let ps = p.cli_ok(&["ps", "--json", &sb.id]);
        (!ps.contains("counter")).then_some(())
    });
}

pub fn ttl_expiry(p: &Platform) {
    let a = parse(&p.cli_ok(&["sandbox", "create", "--json", "--timeout", "2"]));
    let (a_id, address) = (
        a["id"].as_str().unwrap().to_owned(),
        a["address"].as_str().unwrap().to_owned(),
    );
    let created = Instant::now();
    let a_guard = Sandbox {
        id: a_id.clone(),
        platform: p,
    };
    let b = p.sandbox(&["--timeout", "2"]);
    let extended = parse(&p.cli_ok(&["sandbox", "timeout", "--json", &b.id, "600"]));
    let left = time(&extended["expires_at"]) - chrono::Utc::now();
    assert!((590..=600).contains(&left.num_seconds()), "{extended}");
    assert!(!sandbox_leftovers(p, &a_id, &address).netns.is_empty());

    let stopped = eventually(Duration::from_secs(30), "the sandbox to expire", || {
        let s = a_guard.get();
        (s["state"] == "stopped").then_some(s)
    });
    assert!(
        created.elapsed() >= Duration::from_millis(1500),
        "stopped after {:?}, before its timeout",
        created.elapsed()
    );
    let reason = stopped["stop_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("expired"), "{stopped}");
    assert_sandbox_gone(p, &a_id, &address);
    assert!(!ls(p, &[]).contains(&a_id));
    let out = p.cli(&["exec", &a_id, "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert!(out.stderr.contains("expired"), "{out}");
    // The one whose timeout was extended runs on.
    assert_eq!(b.get()["state"], "running");
    assert_eq!(b.sh_ok("echo alive"), "alive\n");
}

fn with_key(p: &Platform, key: &str, args: &[&str]) -> CliOutput {
    let mut cmd = p.command();
    cmd.env("WRENN_API_KEY", key).args(args);
    proc::run(cmd, Duration::from_secs(60))
}

pub fn wrong_key(p: &Platform) {
    let sb = p.sandbox(&["--timeout", "600"]);
    let address = sb.get()["address"].as_str().unwrap().to_owned();
    let wrong = format!("wrn_{}", "x".repeat(32));
    let missing = "aaaaaaaaaaaaaaaaaaaa";
    let message = "missing or invalid API key";
    for key in [
        wrong.as_str(),
        "",
        "not-a-key",
        &p.admin_key[..p.admin_key.len() - 1],
    ] {
        let runs: [&[&str]; 6] = [
            &["sandbox", "get", &sb.id],
            &["sandbox", "ls"],
            &["sandbox", "rm", &sb.id],
            &["sandbox", "create"],
            &["files", "get", &sb.id, "/etc/hostname", "-"],
            &["sandbox", "get", missing],
        ];
        for args in runs {
            let out = with_key(p, key, args);
            assert_fails(&out, 4, &[message]);
            for secret in [p.admin_key.as_str(), &address, "not found", "running"] {
                assert!(
                    !out.stderr.contains(secret),
                    "{key:?} {args:?} revealed {secret:?}: {out}"
                );
            }
        }
        // Whether the sandbox exists is not revealed either.
        let real = with_key(p, key, &["sandbox", "get", &sb.id]);
        let fake = with_key(p, key, &["sandbox", "get", missing]);
        assert_eq!(
            real.stderr.replace(&sb.id, "ID"),
            fake.stderr.replace(missing, "ID")
        );
        let out = with_key(p, key, &["exec", &sb.id, "--", "true"]);
        assert_eq!(out.code, 125, "{out}");
        assert!(out.stderr.contains(message), "{out}");
    }
    // The refused rm did nothing; the right key still works.
    assert_eq!(sb.get()["state"], "running");
    let out = with_key(p, &p.admin_key, &["exec", &sb.id, "--", "echo", "ok"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "ok\n"), "{out}");
}
