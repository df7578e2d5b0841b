//! Templates from recipes (issue 21), through `wrenn template` and the
//! real platform: COPY into a relative destination under a WORKDIR, the
//! template's defaults in exec, cached steps asserted from the build's own
//! events, a failing step leaving nothing and the old template intact,
//! sources leading out refused before anything is sent, START + READY
//! holding `sandbox create` until the app is up, `rm` refused while in
//! use, and bad input named with the service still serving. On a platform
//! of their own with a SQLite store; the store's template records are
//! tested on both stores in `control/tests/store.rs`.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common::{Platform, eventually};

/// `wrenn template build <name> -f <recipe> --json [extra…]`: its events.
fn build(p: &Platform, name: &str, recipe: &Path, extra: &[&str]) -> Result<Vec<Value>, String> {
    let recipe = recipe.to_string_lossy();
    let mut args = vec!["template", "build", name, "-f", &recipe, "--json"];
    args.extend_from_slice(extra);
    let out = p.cli(&args);
    let events: Vec<Value> = out
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if out.code == 0 {
        Ok(events)
    } else {
        Err(format!("{out}"))
    }
}

/// The `step` events' texts, each with whether it came from the cache.
fn steps(events: &[Value]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter(|e| e["event"] == "step")
        .map(|e| {
            (
                e["text"].as_str().unwrap().to_owned(),
                e["cached"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn template_event(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["event"] == "template")
        .unwrap_or_else(|| panic!("no template event: {events:?}"))
}

/// Asserts no build left a sandbox or a partial step behind (the platform
/// runs nothing else meanwhile).
fn no_build_leftovers(p: &Platform) {
    if let Err(e) = build_leftovers(p) {
        panic!("{e}");
    }
}

fn build_leftovers(p: &Platform) -> Result<(), String> {
    let steps = p.dir.join("cache/steps");
    let partial: Vec<_> = std::fs::read_dir(&steps)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|e| {
            let name = e.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with('.') || !e.join("meta.json").is_file()
        })
        .collect();
    if !partial.is_empty() {
        return Err(format!("partial step cache entries: {partial:?}"));
    }
    let sandboxes = std::fs::read_dir(p.dir.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    let listed = p.cli_ok(&["sandbox", "ls", "--json"]);
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    if sandboxes > listed.len() {
        return Err(format!(
            "{sandboxes} sandbox directories on the host, {} sandboxes listed: a build left one",
            listed.len()
        ));
    }
    Ok(())
}

pub fn copy_workdir_defaults_and_cache(p: &Platform) {
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path();
    std::fs::create_dir_all(root.join("src/lib")).unwrap();
    std::fs::write(root.join("src/main.py"), "print('hi')\n").unwrap();
    std::fs::write(root.join("src/lib/util.py"), "X = 1\n").unwrap();
    std::fs::write(root.join("notes.txt"), "notes\n").unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::set_permissions(
        root.join("notes.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let recipe = root.join("app.recipe");
    let text = |last: &str| {
        format!(
            "# an app\nENV APP=/home/wrenn-user/app GREETING=hello\nWORKDIR app\nCOPY src/ notes.txt ./\n\
             COPY run.sh bin/run\nRUN echo \"$GREETING from $(id -un) in $(pwd)\" > made.txt \\\n  && ls >> made.txt\nENV X=$GREETING-x\n{last}\n"
        )
    };
    std::fs::write(&recipe, text("RUN echo one > last.txt")).unwrap();

    let first = build(p, "tpl-app", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let s = steps(&first);
    assert_eq!(
        s.first().map(|x| x.0.as_str()),
        Some("USER wrenn-user"),
        "{s:?}"
    );
    assert!(s.iter().any(|(t, _)| t.starts_with("COPY src/")), "{s:?}");
    let t = template_event(&first);
    assert_eq!(t["user"], "wrenn-user");
    assert_eq!(t["workdir"], "/home/wrenn-user/app");
    assert_eq!(t["env"]["X"], "hello-x");
    assert!(t["size_bytes"].as_u64().unwrap() > 1 << 20, "{t}");

    // Defaults in exec; COPY's files in place, owned by the build user,
    // readable by everyone.
    let sb = p.sandbox(&["--template", "tpl-app", "--timeout", "120"]);
    let out = sb.sh_ok(
        "id -un; pwd; echo $X; cat made.txt; ls; sh bin/run; stat -c '%U %a' notes.txt lib/util.py",
    );
    assert_eq!(
        out,
        "wrenn-user\n/home/wrenn-user/app\nhello-x\nhello from wrenn-user in /home/wrenn-user/app\nbin\nlib\nmade.txt\nmain.py\nnotes.txt\n\
         bin\nlast.txt\nlib\nmade.txt\nmain.py\nnotes.txt\nrun\nwrenn-user 644\nwrenn-user 644\n"
    );

    // Nothing changed: every step from the cache, none runs.
    let again = build(p, "tpl-app", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        steps(&again).iter().all(|(_, cached)| *cached),
        "{:?}",
        steps(&again)
    );
    assert_eq!(template_event(&again)["steps_run"], 0);

    // The last step changed: the steps before it cached, it and the
    // post-build step run.
    std::fs::write(&recipe, text("RUN echo two > last.txt")).unwrap();
    let changed = build(p, "tpl-app", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let s = steps(&changed);
    let n = s.len();
    assert!(s[..n - 2].iter().all(|(_, c)| *c), "{s:?}");
    assert!(!s[n - 2].1 && !s[n - 1].1, "{s:?}");
    assert_eq!(template_event(&changed)["steps_run"], 2);

    // A COPY source changed: that step and every later one run.
    std::fs::write(root.join("notes.txt"), "new notes\n").unwrap();
    let copied = build(p, "tpl-app", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let s = steps(&copied);
    let at = s
        .iter()
        .position(|(t, _)| t.starts_with("COPY src/"))
        .unwrap();
    assert!(
        s[..at].iter().all(|(_, c)| *c) && s[at..].iter().all(|(_, c)| !c),
        "{s:?}"
    );

    // The running sandbox keeps the image it started from.
    assert_eq!(sb.sh_ok("cat last.txt"), "one\n");
    let sb2 = p.sandbox(&["--template", "tpl-app", "--timeout", "120"]);
    assert_eq!(sb2.sh_ok("cat last.txt; cat notes.txt"), "two\nnew notes\n");

    // --no-cache runs everything.
    let fresh = build(p, "tpl-app", &recipe, &["--no-cache"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(steps(&fresh).iter().all(|(_, c)| !c));

    // In use: rm refused, naming the sandboxes; then allowed.
    let refused = p.cli(&["template", "rm", "tpl-app"]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains(&sb.id) && refused.stderr.contains(&sb2.id),
        "{refused}"
    );
    drop(sb);
    drop(sb2);
    p.cli_ok(&["template", "rm", "tpl-app"]);
    let gone = p.cli(&["template", "get", "tpl-app"]);
    assert_ne!(gone.code, 0);
    assert!(gone.stderr.contains("template tpl-app not found"), "{gone}");
    let no_image = p.cli(&["sandbox", "create", "--template", "tpl-app"]);
    assert_ne!(no_image.code, 0, "{no_image}");
    no_build_leftovers(p);
}

pub fn failures_leave_nothing(p: &Platform) {
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path();
    let recipe = root.join("ok.recipe");
    std::fs::write(&recipe, "RUN echo good > /home/wrenn-user/v\n").unwrap();
    build(p, "tpl-keep", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let before = p.cli_ok(&["template", "get", "tpl-keep", "--json"]);
    let before: Value = serde_json::from_str(&before).unwrap();

    // A failing RUN: the step, its line, the exit code and its last output;
    // the template of that name untouched.
    let bad = root.join("bad.recipe");
    std::fs::write(&bad, "RUN echo good > /home/wrenn-user/v\n# then\nRUN echo broken > /home/wrenn-user/v; echo 'it went wrong' >&2; exit 7\n").unwrap();
    let err = build(p, "tpl-keep", &bad, &[]).unwrap_err();
    assert!(err.contains("bad.recipe:3"), "{err}");
    assert!(err.contains("exit code 7"), "{err}");
    assert!(err.contains("it went wrong"), "{err}");
    let after = p.cli_ok(&["template", "get", "tpl-keep", "--json"]);
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(before["recipe_digest"], after["recipe_digest"]);
    let sb = p.sandbox(&["--template", "tpl-keep", "--timeout", "60"]);
    assert_eq!(sb.sh_ok("cat /home/wrenn-user/v"), "good\n");
    drop(sb);

    // A timeout is a failure too.
    std::fs::write(&bad, "RUN --timeout=1s sleep 30\n").unwrap();
    let err = build(p, "tpl-slow", &bad, &[]).unwrap_err();
    assert!(err.contains("timed out after 1 s"), "{err}");
    assert_ne!(p.cli(&["template", "get", "tpl-slow"]).code, 0);

    // Interrupted (Ctrl-C) while a step runs: the build is cancelled, its
    // sandbox destroyed, nothing is made.
    std::fs::write(&bad, "RUN echo started; sleep 60\n").unwrap();
    let mut cmd = p.command();
    cmd.args(["template", "build", "tpl-cancel", "-f"])
        .arg(&bad)
        .arg("--json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("\"output\"") && l.contains("started"));
    assert!(started, "the step's output never came");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    eventually(
        Duration::from_secs(30),
        "the cancelled build to clean up",
        || build_leftovers(p).ok(),
    );
    assert_ne!(p.cli(&["template", "get", "tpl-cancel"]).code, 0);

    // Sources leading out of the context: refused before anything is sent.
    std::fs::create_dir_all(root.join("ctx")).unwrap();
    std::fs::write(root.join("secret"), "s").unwrap();
    symlink("../secret", root.join("ctx/link")).unwrap();
    for (text, source) in [
        ("COPY ../secret /x\n", "../secret"),
        ("COPY link /x\n", "link"),
        ("COPY /etc/passwd /x\n", "/etc/passwd"),
        ("COPY missing /x\n", "missing"),
    ] {
        let r = root.join("ctx/escape.recipe");
        std::fs::write(&r, text).unwrap();
        let err = build(p, "tpl-escape", &r, &[]).unwrap_err();
        assert!(
            err.contains("escape.recipe:1:") && err.contains(source),
            "{text}: {err}"
        );
    }

    // Bad input: named, and the service keeps serving.
    for (text, what) in [
        ("FROB x\n", "escape.recipe:1:1"),
        ("RUN --timeout=soon true\n", "soon"),
        (
            "RUN true\nFROM base\n",
            "FROM must be the first instruction",
        ),
        ("FROM no-such-template\nRUN true\n", "no such template"),
    ] {
        let r = root.join("ctx/escape.recipe");
        std::fs::write(&r, text).unwrap();
        let err = build(p, "tpl-bad", &r, &[]).unwrap_err();
        assert!(err.contains(what), "{text}: {err}");
    }
    std::fs::write(&recipe, "RUN true\n").unwrap();
    let err = build(p, "base", &recipe, &[]).unwrap_err();
    assert!(err.contains("built-in"), "{err}");
    let err = build(p, "Not A Name", &recipe, &[]).unwrap_err();
    assert!(
        err.contains("not a template name") || err.contains("template name"),
        "{err}"
    );
    let listed = p.cli_ok(&["template", "ls"]);
    assert!(
        listed.contains("tpl-keep") && !listed.contains("tpl-bad"),
        "{listed}"
    );
    p.cli_ok(&["template", "rm", "tpl-keep"]);
    no_build_leftovers(p);
}

pub fn start_and_ready_hold_create(p: &Platform) {
    let ctx = tempfile::tempdir().unwrap();
    let recipe = ctx.path().join("Dockerfile");
    // The app comes up two seconds after start; READY waits for it.
    std::fs::write(
        &recipe,
        "FROM base\nARG WHO=docker\nENV GREETING=\"hi $WHO\"\nWORKDIR /srv\n\
         CMD [\"sh\", \"-c\", \"sleep 2; echo $GREETING > /tmp/up; sleep 600\"]\n",
    )
    .unwrap();
    let events = build(p, "tpl-docker", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let t = template_event(&events);
    assert_eq!(t["workdir"], "/srv");
    assert!(t["start"].as_str().unwrap().contains("sleep 2"), "{t}");
    assert!(
        t["env"].get("WHO").is_none(),
        "ARG is the build's only: {t}"
    );

    let recipe = ctx.path().join("ready.recipe");
    std::fs::write(
        &recipe,
        "FROM tpl-docker\nREADY --timeout=30s --interval=100ms test -f /tmp/up\n",
    )
    .unwrap();
    build(p, "tpl-ready", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    let sb = p.sandbox(&["--template", "tpl-ready", "--timeout", "60"]);
    // Ready means the app is up: no waiting here.
    assert_eq!(sb.sh_ok("cat /tmp/up; pwd"), "hi docker\n/srv\n");
    drop(sb);

    // Without READY, create returns at once: the app is not up yet.
    let sb = p.sandbox(&["--template", "tpl-docker", "--timeout", "60"]);
    let early = sb.sh("cat /tmp/up");
    assert_ne!(
        early.code, 0,
        "the START app ran before create returned? {early}"
    );
    drop(sb);

    // A build's own sandboxes ignore the template they start from: a parent
    // whose READY never passes still builds (each step would otherwise wait
    // for it and fail).
    std::fs::write(&recipe, "FROM tpl-docker\nREADY --timeout=2s false\n").unwrap();
    build(p, "tpl-never", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &recipe,
        "FROM tpl-never\nRUN touch /home/wrenn-user/child\n",
    )
    .unwrap();
    build(p, "tpl-child", &recipe, &[]).unwrap_or_else(|e| panic!("{e}"));
    for t in ["tpl-child", "tpl-never", "tpl-ready", "tpl-docker"] {
        p.cli_ok(&["template", "rm", t]);
    }
    no_build_leftovers(p);
}
