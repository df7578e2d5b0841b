//! `wrenn agent` and `wrenn proxy` configuration through the real binary
//! (`--print-config`): a flag, the `--config` file and the environment give
//! the same configuration, and flags beat the environment, which beats the
//! file. Needs no root: `--print-config` exits before anything starts.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `wrenn <args> --print-config` with only `env` (and `PATH`) set.
fn print_config(args: &[&str], env: &[(&str, &str)]) -> Value {
    // runs: -; the wrenn binary built here
    let out = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(args)
        .arg("--print-config")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().copied())
        .output()
        .expect("run wrenn");
    assert!(
        out.status.success(),
        "wrenn {args:?} with {env:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--print-config prints JSON")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn agent_flag_file_and_environment_give_the_same_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let default = print_config(&["agent"], &[]);
    let flags = print_config(
        &[
            "agent",
            "--listen",
            "127.0.0.1:7999",
            "--dir",
            "/var/tmp/wrenn-config-test",
            "--default-timeout",
            "77",
            "--keep-sandboxes",
            "true",
            "--prefix",
            "wrenn-cfg",
            "--slots",
            "10-20",
            "--guest-bin",
            "/opt/wrenn-guest",
        ],
        &[],
    );
    let file = write(
        tmp.path(),
        "agent.toml",
        r#"
listen = "127.0.0.1:7999"
dir = "/var/tmp/wrenn-config-test"
default_timeout_secs = 77
keep_sandboxes_on_shutdown = true
[runtime]
prefix = "wrenn-cfg"
slot_first = 10
slot_last = 20
guest_bin = "/opt/wrenn-guest"
"#,
    );
    let from_file = print_config(&["agent", "--config", &file], &[]);
    let from_env = print_config(
        &["agent"],
        &[
            ("WRENN_AGENT_LISTEN", "127.0.0.1:7999"),
            ("WRENN_DIR", "/var/tmp/wrenn-config-test"),
            ("WRENN_DEFAULT_TIMEOUT", "77"),
            ("WRENN_KEEP_SANDBOXES", "true"),
            ("WRENN_PREFIX", "wrenn-cfg"),
            ("WRENN_SLOTS", "10-20"),
            ("WRENN_GUEST_BIN", "/opt/wrenn-guest"),
        ],
    );
    assert_ne!(flags, default, "the flags change the configuration");
    assert_eq!(flags["default_timeout_secs"], 77);
    assert_eq!(flags["runtime"]["slot_first"], 10);
    assert_eq!(from_file, flags, "file vs flags");
    assert_eq!(from_env, flags, "environment vs flags");

    // Precedence: flag over environment over file.
    let timeout = write(tmp.path(), "timeout.toml", "default_timeout_secs = 66\n");
    let env = [("WRENN_DEFAULT_TIMEOUT", "88")];
    let file_only = print_config(&["agent", "--config", &timeout], &[]);
    let file_and_env = print_config(&["agent", "--config", &timeout], &env);
    let all = print_config(
        &["agent", "--config", &timeout, "--default-timeout", "99"],
        &env,
    );
    assert_eq!(file_only["default_timeout_secs"], 66);
    assert_eq!(file_and_env["default_timeout_secs"], 88);
    assert_eq!(all["default_timeout_secs"], 99);
}

#[test]
fn proxy_flag_file_and_environment_give_the_same_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let default = print_config(&["proxy"], &[]);
    let flags = print_config(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:7990",
            "--admin-listen",
            "127.0.0.1:7991",
            "--domain",
            "sandbox.example.test",
            "--agent",
            "http://127.0.0.1:7992",
            "--threads",
            "3",
            "--grace-period",
            "4",
        ],
        &[],
    );
    let file = write(
        tmp.path(),
        "proxy.toml",
        r#"
listen = "127.0.0.1:7990"
admin_listen = "127.0.0.1:7991"
domain = "sandbox.example.test"
agent = "http://127.0.0.1:7992"
threads = 3
grace_period_secs = 4
"#,
    );
    let from_file = print_config(&["proxy", "--config", &file], &[]);
    let from_env = print_config(
        &["proxy"],
        &[
            ("WRENN_PROXY_LISTEN", "127.0.0.1:7990"),
            ("WRENN_PROXY_ADMIN_LISTEN", "127.0.0.1:7991"),
            ("WRENN_PROXY_DOMAIN", "sandbox.example.test"),
            ("WRENN_AGENT", "http://127.0.0.1:7992"),
            ("WRENN_PROXY_THREADS", "3"),
            ("WRENN_PROXY_GRACE_PERIOD", "4"),
        ],
    );
    assert_ne!(flags, default, "the flags change the configuration");
    assert_eq!(flags["domain"], "sandbox.example.test");
    assert_eq!(from_file, flags, "file vs flags");
    assert_eq!(from_env, flags, "environment vs flags");

    let env = [("WRENN_PROXY_THREADS", "5")];
    let threads = write(tmp.path(), "threads.toml", "threads = 4\n");
    assert_eq!(
        print_config(&["proxy", "--config", &threads], &[])["threads"],
        4
    );
    assert_eq!(
        print_config(&["proxy", "--config", &threads], &env)["threads"],
        5
    );
    assert_eq!(
        print_config(&["proxy", "--config", &threads, "--threads", "6"], &env)["threads"],
        6
    );
}

#[test]
fn a_bad_config_file_is_refused_naming_the_file_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "agent.toml", "listne = \"127.0.0.1:1\"\n");
    // runs: -; the wrenn binary built here
    let out = Command::new(env!("CARGO_BIN_EXE_wrenn"))
        .args(["agent", "--config", &file, "--print-config"])
        .env_clear()
        .output()
        .expect("run wrenn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file) && err.contains("listne"), "{err}");
}
