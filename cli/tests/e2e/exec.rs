//! `wrenn exec`: the remote exit code, stdout and stderr apart, env, user,
//! working directory, background processes, and errors naming their cause.

use crate::common::Platform;

pub fn exec(p: &Platform) {
    let sb = p.sandbox(&[
        "--timeout",
        "600",
        "--env",
        "FROM_CREATE=c",
        "--env",
        "BOTH=create",
    ]);
    let run = |args: &[&str]| {
        let mut v = vec!["exec"];
        v.extend_from_slice(args);
        p.cli(&v)
    };

    // Exit code and the two streams, kept apart.
    let out = sb.sh("echo out; echo err >&2; exit 3");
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n"),
        "{out}"
    );
    assert_eq!(run(&[&sb.id, "--", "true"]).code, 0);
    assert_eq!(run(&[&sb.id, "--", "false"]).code, 1);
    let out = sb.sh("kill -TERM $$");
    assert_eq!(out.code, 128 + 15, "killed by SIGTERM: {out}");
    // Arguments arrive as they were given, no shell in between.
    let out = run(&[&sb.id, "--", "printf", "[%s]", "a b", "$HOME", "*"]);
    assert_eq!(out.stdout, "[a b][$HOME][*]", "{out}");

    // Env: the create's, the exec's, and the exec's wins.
    let out = run(&[
        &sb.id,
        "--env",
        "BOTH=exec",
        "-e",
        "SPACED=x y",
        "--",
        "sh",
        "-c",
        r#"printf '%s|%s|%s' "$FROM_CREATE" "$BOTH" "$SPACED""#,
    ]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "c|exec|x y"), "{out}");

    // User and working directory: root in /root by default; wrenn-user in
    // its home, with passwordless sudo in the base template.
    let who = "printf '%s %s %s' \"$(id -un)\" \"$(id -u)\" \"$(pwd)\"";
    assert_eq!(sb.sh_ok(who), "root 0 /root");
    let out = run(&[&sb.id, "--user", "wrenn-user", "--", "sh", "-c", who]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "wrenn-user 1000 /home/wrenn-user"),
        "{out}"
    );
    let out = run(&[&sb.id, "-u", "wrenn-user", "--", "sudo", "-n", "id", "-u"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "0\n"), "{out}");
    let out = run(&[&sb.id, "--user", "wrenn-user", "--", "touch", "/root/x"]);
    assert_ne!(out.code, 0, "wrenn-user wrote into /root: {out}");
    let out = run(&[&sb.id, "--user", "wrenn-user", "--cwd", "/tmp", "--", "pwd"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, "/tmp\n"), "{out}");
    let out = run(&[&sb.id, "--cwd", "/usr/share", "--", "pwd"]);
    assert_eq!(out.stdout, "/usr/share\n", "{out}");

    // Output streams whole, not truncated; stdin is empty, not inherited.
    let out = run(&[&sb.id, "--", "seq", "1", "300000"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 300_000);
    assert_eq!((lines[0], lines[299_999]), ("1", "300000"));
    let out = run(&[&sb.id, "--", "cat"]);
    assert_eq!((out.code, out.stdout.as_str()), (0, ""), "{out}");
    let out = run(&[&sb.id, "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(out.code, 128 + 9, "--timeout kills: {out}");

    // Background: starts, keeps running after exec returns, listed, killed.
    let pid = p.cli_ok(&["exec", "-d", "--tag", "bg", &sb.id, "--", "sleep", "300"]);
    let pid = pid.trim();
    assert!(pid.parse::<u32>().is_ok(), "{pid:?}");
    let ps = p.cli_ok(&["ps", "--json", &sb.id]);
    let list: serde_json::Value = serde_json::from_str(&ps).unwrap();
    let bg = list
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["tag"] == "bg")
        .unwrap_or_else(|| panic!("no bg process: {ps}"));
    assert_eq!(
        (bg["pid"].to_string(), bg["cmd"].as_str()),
        (pid.to_owned(), Some("sleep"))
    );
    p.cli_ok(&["kill", "--signal", "term", &sb.id, pid]);
    crate::common::eventually(std::time::Duration::from_secs(10), "bg to end", || {
        (!p.cli_ok(&["ps", &sb.id]).contains(" bg ")).then_some(())
    });

    // Errors name their cause; 125 means wrenn failed, not the command.
    for (args, names) in [
        (
            vec!["--", "/no/such/cmd"],
            vec!["/no/such/cmd", "not found"],
        ),
        (
            vec!["--cwd", "/no/such/dir", "--", "true"],
            vec!["/no/such/dir"],
        ),
        (
            vec!["--user", "nobody-here", "--", "true"],
            vec!["nobody-here"],
        ),
        (vec!["--env", "=x", "--", "true"], vec!["KEY=VALUE"]),
    ] {
        let mut v = vec![sb.id.as_str()];
        v.extend(args.iter().copied());
        let out = run(&v);
        let want = if args.contains(&"=x") { 2 } else { 125 };
        assert_eq!(out.code, want, "{args:?}: {out}");
        for n in names {
            assert!(
                out.stderr.contains(n),
                "{args:?}: stderr does not name {n:?}: {out}"
            );
        }
    }
    assert_eq!(sb.sh_ok("echo fine"), "fine\n");
}
