//! The host agent killed (SIGKILL) and restarted under a running control
//! plane and proxy: the sandbox that survived is adopted and keeps its
//! processes, the one that died meanwhile is cleaned from the host and its
//! record marked stopped, a create refused while the agent was gone leaves no
//! live record, and store, agent and proxy agree afterwards.
//!
//! `wrenn up` stops everything when a component dies, so this test runs
//! `wrenn agent`, `wrenn control` and `wrenn proxy` as separate processes, as
//! the systemd units do, and kills and restarts the agent alone.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use wrenn_proto::wrenn::v1::ListSandboxesRequest;
use wrenn_proto::wrenn::v1::host_agent_client::HostAgentClient;

use crate::common::net::{grpc_serving, http_get, wait_http};
use crate::common::pg::TestDatabase;
use crate::common::proc::{self, CliOutput};
use crate::common::{
    DirClaim, PlatformOptions, Proc, START_TIMEOUT, STOP_TIMEOUT, WRENN, client_command,
    component_env, eventually, finish, free_ports, guest_bin, leftovers, prepare_dir,
};
use crate::stores::{PREFIX, assert_gone, slot_of};

/// The three components as separate processes on one `$WRENN_DIR`.
struct Split {
    options: PlatformOptions,
    dir: PathBuf,
    guest: PathBuf,
    control_url: String,
    agent_addr: SocketAddr,
    proxy: SocketAddr,
    agent: Option<Proc>,
    control: Option<Proc>,
    proxy_proc: Option<Proc>,
    ids: BTreeSet<String>,
    _claim: DirClaim,
}

impl Split {
    fn start(options: PlatformOptions) -> Split {
        crate::common::assert_root();
        let guest = guest_bin();
        let claim = prepare_dir(&options);
        let dir = claim.path().to_owned();
        let [control, agent, proxy, proxy_admin] = free_ports();
        let mut s = Split {
            options,
            dir,
            guest,
            control_url: format!("http://{control}"),
            agent_addr: agent,
            proxy,
            agent: None,
            control: None,
            proxy_proc: None,
            ids: BTreeSet::new(),
            _claim: claim,
        };
        s.start_agent();
        let mut cmd = s.component("control");
        cmd.args(["--listen", &control.to_string()])
            .args(["--agent", &format!("http://{agent}")])
            .args(["--proxy-url", &format!("http://{proxy}")])
            .args(["--reconcile-interval", "1"]);
        s.control = Some(Proc::spawn("wrenn control", cmd));
        s.wait_serving("wrenn control", control);
        let mut cmd = s.component("proxy");
        cmd.args(["--listen", &proxy.to_string()])
            .args(["--admin-listen", &proxy_admin.to_string()])
            .args(["--agent", &format!("http://{agent}")]);
        s.proxy_proc = Some(Proc::spawn("wrenn proxy", cmd));
        wait_http(proxy_admin, "localhost", "/readyz", 200, START_TIMEOUT);
        s
    }

    fn component(&self, name: &str) -> Command {
        // runs: -; the wrenn binary built here
        let mut cmd = Command::new(WRENN);
        cmd.arg(name).arg("--dir").arg(&self.dir);
        component_env(&mut cmd, &self.options, &self.guest);
        cmd
    }

    fn start_agent(&mut self) {
        let mut cmd = self.component("agent");
        cmd.args(["--listen", &self.agent_addr.to_string()]);
        self.agent = Some(Proc::spawn("wrenn agent", cmd));
        self.wait_serving("wrenn agent", self.agent_addr);
    }

    fn wait_serving(&self, name: &str, addr: SocketAddr) {
        eventually(START_TIMEOUT, &format!("{name} to serve on {addr}"), || {
            for p in [&self.agent, &self.control].into_iter().flatten() {
                assert!(
                    kill0(p),
                    "{} exited during start-up:\n{}",
                    p.name,
                    crate::common::tail(&p.output(), 100)
                );
            }
            grpc_serving(addr).then_some(())
        });
    }

    fn cli(&self, args: &[&str]) -> CliOutput {
        let mut cmd = client_command(&self.control_url, &self.dir);
        cmd.args(args);
        proc::run(cmd, Duration::from_secs(120))
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert_eq!(out.code, 0, "wrenn {}: {out}", args.join(" "));
        out.stdout
    }

    fn get(&self, id: &str) -> Value {
        serde_json::from_str(&self.cli_ok(&["sandbox", "get", "--json", id])).unwrap()
    }

    fn create(&mut self) -> (String, String, u64) {
        let out = self.cli_ok(&["sandbox", "create", "--json", "--timeout", "600"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let id = v["id"].as_str().unwrap().to_owned();
        self.ids.insert(id.clone());
        (
            id,
            v["address"].as_str().unwrap().to_owned(),
            v["generation"].as_u64().unwrap(),
        )
    }

    /// What the agent itself runs: id → generation.
    fn agent_view(&self) -> Vec<(String, u64)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", self.agent_addr))
                .unwrap()
                .connect()
                .await
                .expect("connect to the agent");
            let key =
                wrenn_proto::auth::load_key(&self.dir.join("agent.key")).expect("the agent's key");
            let ch =
                wrenn_proto::auth::with_bearer(ch, wrenn_proto::auth::Bearer::new(&key).unwrap());
            let list = HostAgentClient::new(ch)
                .list_sandboxes(ListSandboxesRequest::default())
                .await
                .expect("ListSandboxes")
                .into_inner()
                .sandboxes;
            let mut v: Vec<_> = list.into_iter().map(|s| (s.id, s.generation)).collect();
            v.sort();
            v
        })
    }
}

fn kill0(p: &Proc) -> bool {
    nix::sys::signal::kill(p.pid(), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{}/stat", p.pid())).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
}

impl Drop for Split {
    fn drop(&mut self) {
        let mut problems = Vec::new();
        let mut output = String::new();
        for slot in [&mut self.proxy_proc, &mut self.control, &mut self.agent] {
            let Some(mut p) = slot.take() else { continue };
            match p.interrupt_and_wait(STOP_TIMEOUT) {
                Ok(s) if s.success() => {}
                Ok(s) => problems.push(format!("{} exited with {s}", p.name)),
                Err(e) => problems.push(e),
            }
            output.push_str(&format!(
                "--- {} ---\n{}\n",
                p.name,
                crate::common::tail(&p.output(), 60)
            ));
        }
        let mut ids = self.ids.clone();
        ids.extend(leftovers::sandbox_dirs(&self.dir));
        let problem = (!problems.is_empty()).then(|| problems.join("; "));
        finish(
            &self.options,
            &self.dir,
            &ids,
            problem,
            || output.clone(),
            "the split platform",
        );
    }
}

fn agent_killed_and_restarted(options: PlatformOptions) {
    let mut s = Split::start(options);

    // a survives the agent's death; b dies while the agent is gone.
    let (a, a_addr, a_gen) = s.create();
    let (b, b_addr, _) = s.create();
    for addr in [&a_addr, &b_addr] {
        assert!(s.options.slots.contains(&slot_of(addr)), "{addr}");
    }
    s.cli_ok(&["exec", "-d", "--tag", "keeper", &a, "--", "sleep", "3600"]);
    s.cli_ok(&[
        "exec",
        &a,
        "--",
        "sh",
        "-c",
        "mkdir /srv/www && hostname > /srv/www/who",
    ]);
    s.cli_ok(&[
        "exec",
        "-d",
        "--tag",
        "web",
        &a,
        "--cwd",
        "/srv/www",
        "--",
        "python3",
        "-m",
        "http.server",
        "8000",
    ]);
    let path = format!("/proxy/{a}/8000/who");
    let before = wait_http(s.proxy, "localhost", &path, 200, Duration::from_secs(30));
    assert_eq!(String::from_utf8_lossy(&before.body).trim(), a);

    let status = s.agent.as_mut().unwrap().kill();
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    for pid in leftovers::sandbox_pids(PREFIX, &b) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }

    // The control plane keeps serving its records and says what is wrong.
    let listed: Value = serde_json::from_str(&s.cli_ok(&["sandbox", "ls", "--json"])).unwrap();
    let listed: BTreeSet<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(a.as_str()) && listed.contains(b.as_str()),
        "{listed:?}"
    );
    let out = s.cli(&["exec", &a, "--", "true"]);
    assert_eq!(out.code, 125, "{out}");
    assert_unreachable_named(&s, &out);
    let out = s.cli(&["sandbox", "create", "--json", "--meta", "made=while-down"]);
    assert_eq!(out.code, 5, "create with the agent down: {out}");
    assert_unreachable_named(&s, &out);
    assert!(out.stdout.is_empty(), "{out}");

    s.start_agent();

    // Reconciled: b lost, a running with the generation the new agent gave it.
    let b_rec = eventually(
        Duration::from_secs(30),
        "b's record to be marked stopped",
        || {
            let v = s.get(&b);
            (v["state"] == "stopped").then_some(v)
        },
    );
    assert!(
        b_rec["stop_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("lost"),
        "{b_rec}"
    );
    assert_gone(&s.options.prefix, &s.dir, &b, &b_addr);
    let agent = s.agent_view();
    assert_eq!(agent.len(), 1, "the agent runs only a: {agent:?}");
    assert_eq!(agent[0].0, a);
    let new_gen = agent[0].1;
    assert_ne!(new_gen, a_gen, "adoption gives a new generation");
    eventually(
        Duration::from_secs(30),
        "a's record to carry the new generation",
        || {
            let v = s.get(&a);
            (v["state"] == "running" && v["generation"].as_u64() == Some(new_gen)).then_some(())
        },
    );
    let running: Value = serde_json::from_str(&s.cli_ok(&["sandbox", "ls", "--json"])).unwrap();
    let running: Vec<&str> = running
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(running, [a.as_str()], "only a is live in the store");
    let all: Value = serde_json::from_str(&s.cli_ok(&[
        "sandbox",
        "ls",
        "--all",
        "--json",
        "--meta",
        "made=while-down",
    ]))
    .unwrap();
    for rec in all.as_array().unwrap() {
        assert_eq!(rec["state"], "stopped", "the refused create left {rec}");
        s.ids.insert(rec["id"].as_str().unwrap().to_owned());
    }

    // a is the same sandbox: its processes lived on, it still serves.
    let ps = s.cli_ok(&["ps", &a]);
    assert!(ps.contains("keeper") && ps.contains("web"), "{ps}");
    assert_eq!(
        s.cli_ok(&["exec", &a, "--", "cat", "/srv/www/who"]).trim(),
        a
    );
    let after = wait_http(s.proxy, "localhost", &path, 200, Duration::from_secs(30));
    assert_eq!(after.body, before.body);
    // And the platform works as before.
    let (c, _, _) = s.create();
    assert_eq!(s.cli_ok(&["exec", &c, "--", "echo", "new"]), "new\n");
    assert_eq!(
        http_get(s.proxy, "localhost", &format!("/proxy/{b}/8000/"))
            .map(|r| r.status)
            .ok(),
        Some(404)
    );
}

/// The error names the host, its agent and the cause, once.
fn assert_unreachable_named(s: &Split, out: &CliOutput) {
    let head = format!(
        "host local (agent http://{}) is unreachable: ",
        s.agent_addr
    );
    assert!(out.stderr.contains(&head), "{out}");
    assert!(out.stderr.contains("Connection refused"), "{out}");
    assert_eq!(out.stderr.matches("onnection refused").count(), 1, "{out}");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn sqlite_agent_killed_and_restarted_store_stays_consistent() {
    agent_killed_and_restarted(PlatformOptions::new(PREFIX, 3200..=3219));
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn postgres_agent_killed_and_restarted_store_stays_consistent() {
    let db = TestDatabase::create();
    agent_killed_and_restarted(PlatformOptions::new(PREFIX, 3220..=3239).database_url(&db.url));
}
