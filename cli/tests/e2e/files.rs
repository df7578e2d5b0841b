//! `wrenn files put | get | ls | rm | mkdir`: a multi-megabyte round trip
//! checked by SHA-256 on both sides, stdin and stdout, modes and owners, and
//! errors that name the path.

use std::process::Stdio;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::{Platform, proc};

/// Deterministic incompressible bytes (xorshift64*).
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn round_trip(p: &Platform) {
    let sb = p.sandbox(&["--timeout", "600"]);
    let local = tempfile::tempdir().unwrap();
    let big = data(12 * 1024 * 1024 + 12345);
    let big_sha = sha(&big);
    let src = local.path().join("big.bin");
    std::fs::write(&src, &big).unwrap();

    p.cli_ok(&["files", "mkdir", &sb.id, "/data/in/deep"]);
    let out = p.cli_ok(&[
        "files",
        "put",
        &sb.id,
        src.to_str().unwrap(),
        "/data/in/deep/big.bin",
    ]);
    assert_eq!(out, "", "put prints nothing on success");
    // The guest sees the same bytes…
    let remote = sb.sh_ok("sha256sum /data/in/deep/big.bin");
    assert_eq!(remote.split(' ').next(), Some(big_sha.as_str()), "{remote}");
    // …ls reports them…
    let ls: serde_json::Value =
        serde_json::from_str(&p.cli_ok(&["files", "ls", "--json", &sb.id, "/data/in/deep"]))
            .unwrap();
    let e = &ls.as_array().unwrap()[..];
    assert_eq!(e.len(), 1, "{ls}");
    assert_eq!(
        (&e[0]["name"], &e[0]["type"], &e[0]["size"], &e[0]["path"]),
        (
            &"big.bin".into(),
            &"file".into(),
            &big.len().into(),
            &"/data/in/deep/big.bin".into()
        ),
        "{ls}"
    );
    let tree = p.cli_ok(&["files", "ls", "--depth", "3", &sb.id, "/data"]);
    for path in ["/data/in", "/data/in/deep", "/data/in/deep/big.bin"] {
        assert!(
            tree.lines().any(|l| l.ends_with(&format!(" {path}"))),
            "{path} not in:\n{tree}"
        );
    }
    // …and they come back whole, to a file and into a directory.
    let back = local.path().join("back.bin");
    p.cli_ok(&[
        "files",
        "get",
        &sb.id,
        "/data/in/deep/big.bin",
        back.to_str().unwrap(),
    ]);
    assert_eq!(sha(&std::fs::read(&back).unwrap()), big_sha);
    let into = local.path().join("into");
    std::fs::create_dir(&into).unwrap();
    p.cli_ok(&[
        "files",
        "get",
        &sb.id,
        "/data/in/deep/big.bin",
        into.to_str().unwrap(),
    ]);
    assert_eq!(sha(&std::fs::read(into.join("big.bin")).unwrap()), big_sha);

    // stdin and stdout, mode and owner.
    let mut cmd = p.command();
    cmd.args([
        "files",
        "put",
        "--mode",
        "600",
        "--owner",
        "wrenn-user",
        &sb.id,
        "-",
        "/home/wrenn-user/note.txt",
    ])
    .stdin(Stdio::from(
        std::fs::File::open(write_tmp(&local, "note", b"from stdin\n")).unwrap(),
    ));
    let out = proc::run(cmd, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out}");
    let out = p.cli_ok(&["files", "get", &sb.id, "/home/wrenn-user/note.txt", "-"]);
    assert_eq!(out, "from stdin\n");
    let ls = p.cli_ok(&["files", "ls", &sb.id, "/home/wrenn-user"]);
    let line = ls
        .lines()
        .find(|l| l.ends_with(" /home/wrenn-user/note.txt"))
        .unwrap_or_else(|| panic!("{ls}"));
    assert!(
        line.starts_with("-rw------- ") && line.contains(" wrenn-user "),
        "{line}"
    );
    let out = p.cli(&[
        "exec",
        "--user",
        "wrenn-user",
        &sb.id,
        "--",
        "cat",
        "/home/wrenn-user/note.txt",
    ]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (0, "from stdin\n"),
        "{out}"
    );

    // rm is recursive; what is gone is reported as not found, by path.
    p.cli_ok(&["files", "rm", &sb.id, "/data/in"]);
    let out = p.cli(&["files", "ls", &sb.id, "/data/in"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("/data/in"), "{out}");
    assert_eq!(sb.sh("test -e /data/in").code, 1);
    let out = p.cli(&["files", "rm", &sb.id, "/data/in"]);
    assert_eq!(out.code, 3, "{out}");

    // A failed download leaves nothing behind locally; bad paths are named.
    let nope = local.path().join("nope");
    let out = p.cli(&[
        "files",
        "get",
        &sb.id,
        "/no/such/file",
        nope.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stderr.contains("/no/such/file"), "{out}");
    let names: Vec<_> = std::fs::read_dir(local.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(".tmp") || n == "nope"),
        "{names:?}"
    );
    let out = p.cli(&["files", "put", &sb.id, src.to_str().unwrap(), "relative/x"]);
    assert_eq!(out.code, 6, "{out}");
    assert!(
        out.stderr.contains("relative/x") && out.stderr.contains("absolute"),
        "{out}"
    );
    let out = p.cli(&["files", "put", &sb.id, "/no/local/file", "/tmp/x"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("/no/local/file"), "{out}");
    assert_eq!(
        sb.sh("test -e /tmp/x").code,
        1,
        "a failed upload left a file"
    );
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, content: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, content).unwrap();
    p
}
