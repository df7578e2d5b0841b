//! `wrenn key create | ls | rm` (issue 22 §4): a created key works for the
//! CLI (gRPC) and for E2B's REST API (`X-API-Key`), both refuse it the moment
//! it is revoked, and bad input is named with the right exit code. Runs on
//! the shared platforms and never touches their admin key.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use crate::common::Platform;
use crate::common::proc::{self, CliOutput};
use crate::stores::unique;

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn with_key(p: &Platform, key: &str, args: &[&str]) -> CliOutput {
    let mut cmd = p.command();
    cmd.env("WRENN_API_KEY", key).args(args);
    proc::run(cmd, Duration::from_secs(60))
}

fn assert_fails(out: &CliOutput, code: i32, names: &[&str]) {
    assert_eq!(out.code, code, "{out}");
    for n in names {
        assert!(out.stderr.contains(n), "stderr does not name {n:?}: {out}");
    }
    assert!(out.stdout.is_empty(), "{out}");
}

/// The status of `GET /sandboxes` on the control plane (E2B's REST API)
/// with `X-API-Key: key`.
fn rest_status(p: &Platform, key: &str) -> u16 {
    let addr: SocketAddr = p
        .control_url
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|e| panic!("control URL {}: {e}", p.control_url));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /sandboxes HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let head = String::from_utf8_lossy(&raw);
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"))
}

/// The `key ls --json` entry named `name`.
fn listed(p: &Platform, name: &str) -> Value {
    let all = parse(&p.cli_ok(&["key", "ls", "--json"]));
    all.as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {all}"))
        .clone()
}

pub fn create_ls_rm(p: &Platform) {
    // Create, plain: the key alone on stdout, the warning on stderr.
    let name = unique("cli");
    let out = p.cli(&["key", "create", "--name", &name]);
    assert_eq!(out.code, 0, "{out}");
    let key = out.stdout.trim().to_owned();
    assert_eq!(out.stdout, format!("{key}\n"), "{out}");
    assert!(key.starts_with("wrn_") && key.len() == 36, "{out}");
    assert!(
        out.stderr.contains("shown only now") && out.stderr.contains(&name),
        "{out}"
    );
    // …and with --json.
    let json_name = unique("json");
    let made = parse(&p.cli_ok(&["key", "create", "--name", &json_name, "--json"]));
    let json_key = made["key"].as_str().unwrap().to_owned();
    assert!(json_key.starts_with("wrn_"), "{made}");
    assert!(made["id"].as_str().unwrap().starts_with("key_"), "{made}");
    assert_eq!(made["name"], json_name.as_str());
    assert_eq!(made["revoked"], false);

    // Both work for gRPC and REST.
    for k in [&key, &json_key] {
        let out = with_key(p, k, &["sandbox", "ls", "--json"]);
        assert_eq!(out.code, 0, "{out}");
        assert_eq!(rest_status(p, k), 200);
    }

    // Listed without the key; the admin key is the current one.
    let ls = p.cli_ok(&["key", "ls", "--json"]);
    assert!(
        !ls.contains(&key[4..]) && !ls.contains(&json_key[4..]),
        "{ls}"
    );
    let mine = listed(p, &name);
    assert_eq!(mine["revoked"], false, "{mine}");
    assert_eq!(mine["current"], false, "{mine}");
    assert_eq!(listed(p, "admin")["current"], true);
    let table = p.cli_ok(&["key", "ls"]);
    let line = table
        .lines()
        .find(|l| l.contains(&name))
        .unwrap_or_else(|| panic!("{name} not in the table:\n{table}"));
    assert!(line.contains("active"), "{table}");
    assert!(table.starts_with("  ID"), "{table}");

    // Revoke by name: refused at once by both paths.
    let out = p.cli(&["key", "rm", &name]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.trim(), mine["id"].as_str().unwrap());
    let refused = with_key(p, &key, &["sandbox", "ls"]);
    assert_fails(&refused, 4, &["missing or invalid API key"]);
    assert_eq!(rest_status(p, &key), 401);
    assert!(listed(p, &name)["revoked_at"].is_string());

    // Bad input: twice, unknown, empty and overlong names.
    assert_fails(&p.cli(&["key", "rm", &name]), 6, &["already revoked"]);
    let nosuch = unique("nosuch");
    assert_fails(&p.cli(&["key", "rm", &nosuch]), 3, &[&nosuch]);
    assert_fails(
        &p.cli(&["key", "rm", "key_doesnotexist"]),
        3,
        &["key_doesnotexist"],
    );
    assert_fails(&p.cli(&["key", "create", "--name", ""]), 6, &["empty"]);
    let long = "n".repeat(65);
    assert_fails(
        &p.cli(&["key", "create", "--name", &long]),
        6,
        &["at most 64"],
    );

    // The key making the call: refused unless --force, then gone at once.
    let out = with_key(p, &json_key, &["key", "rm", &json_name]);
    assert_fails(&out, 6, &["the key making this call", "--force"]);
    assert_eq!(rest_status(p, &json_key), 200, "the refused rm did nothing");
    let out = with_key(p, &json_key, &["key", "rm", &json_name, "--force"]);
    assert_eq!(out.code, 0, "{out}");
    assert_fails(
        &with_key(p, &json_key, &["key", "ls"]),
        4,
        &["missing or invalid API key"],
    );
    assert_eq!(rest_status(p, &json_key), 401);

    // The admin key, which the other tests use, is untouched.
    assert_eq!(listed(p, "admin")["revoked"], false);
}
