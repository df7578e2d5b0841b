//! The agent over the real namespace runtime (netns, veth, overlayfs, loop
//! devices, cgroups) and the real guest: start-up through `wrenn_agent::start`,
//! every kind of call once, and nothing left on the host afterwards.
//!
//! Each test has its own slot range within the suite's 2000–2999 and its own
//! `$WRENN_DIR`, so they run side by side.

mod common;

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::host::{HostEnv, slot_of};
use common::*;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use wrenn_agent::{Agent, AgentConfig, Progress};
use wrenn_proto::filesystem as fs;
use wrenn_proto::process::{self as pp, process_event::Event, process_event::data_event::Output};
use wrenn_proto::wrenn::v1::{self as pb, pty_request, sandbox_event::Kind, write_file_request};

const T: Duration = Duration::from_secs(30);

fn busybox(id: &str) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        sandbox_id: id.into(),
        spec: Some(pb::SandboxSpec {
            template: "busybox".into(),
            memory_mb: 128,
            disk_mb: 256,
            internet: Some(false),
            env: [("GREETING".to_string(), "hello-from-spec".to_string())].into(),
            ..Default::default()
        }),
    }
}

/// Starts an agent the way `wrenn agent` does; returns it, a client and the
/// progress it reported.
async fn boot(config: AgentConfig) -> (Agent, Client, Vec<Progress>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let key_of = config.clone();
    let agent = wrenn_agent::start(config, move |p| sink.lock().unwrap().push(p))
        .await
        .unwrap_or_else(|e| panic!("agent start: {}", chain(&e)));
    let client = connect(agent.local_addr(), &agent_key(&key_of)).await;
    let progress = seen.lock().unwrap().clone();
    (agent, client, progress)
}

use wrenn_types::chain;

async fn event(w: &mut tonic::Streaming<pb::SandboxEvent>) -> (Kind, Option<pb::Sandbox>) {
    let ev = tokio::time::timeout(T, w.next())
        .await
        .expect("event in time")
        .expect("open")
        .expect("ok");
    (Kind::try_from(ev.kind).unwrap(), ev.sandbox)
}

async fn output(c: &mut Client, id: &str, script: &str) -> pb::ExecResponse {
    c.exec(sh(id, script))
        .await
        .unwrap_or_else(|e| panic!("exec {script:?}: {e:?}"))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn every_call_over_the_namespace_runtime_and_nothing_left() {
    let env = HostEnv::new(2000..=2099).await;
    let (agent, mut c, progress) = boot(env.config()).await;
    assert_eq!(
        progress,
        [
            Progress::Step("runtime"),
            Progress::Step("image sizes"),
            Progress::Step("recover"),
            Progress::Serving(agent.local_addr())
        ]
    );
    let mut w = c
        .watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(event(&mut w).await.0, Kind::Synced);

    let sb = c
        .create_sandbox(busybox("tae2e1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sb.state, pb::SandboxState::Running as i32);
    assert_eq!(sb.backend, "namespace");
    assert!(
        (2000..=2099).contains(&slot_of(&sb.address)),
        "{} outside the slot range",
        sb.address
    );
    let (k, created) = event(&mut w).await;
    assert_eq!(
        (k, created.as_ref().unwrap().address.as_str()),
        (Kind::Created, sb.address.as_str())
    );
    assert_eq!(event(&mut w).await.0, Kind::Running);

    // The envd access token: chosen by the agent, reported, in the record,
    // given to the guest (and not passed on to its processes).
    let token = sb.spec.as_ref().unwrap().envd_access_token.clone();
    assert_eq!(token.len(), 64, "{token:?}");
    let listed = c
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.sandboxes[0].spec.as_ref().unwrap().envd_access_token,
        token
    );
    let record = recorded(&env, &sb.id);
    assert_eq!(record["envd_access_token"], token.as_str());
    let guest_env = std::fs::read(format!("/proc/{}/environ", record["pid"])).unwrap();
    let want = format!("{}={token}", wrenn_vmm::ENVD_ACCESS_TOKEN_ENV);
    assert!(
        guest_env.split(|b| *b == 0).any(|v| v == want.as_bytes()),
        "the guest's environment has the token"
    );

    // Exec: exit code, stdout, stderr, the spec's env, a user, the hostname.
    let r = output(
        &mut c,
        &sb.id,
        "echo $GREETING$WRENN_GUEST_ENVD_ACCESS_TOKEN; echo err >&2; hostname; exit 3",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "hello-from-spec\ntae2e1\n"
    );
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.exit_code, 3);
    let mut st = start("id", &["-u"]);
    st.user = Some("wrenn-user".into());
    let r = c.exec(exec_req(&sb.id, st)).await.unwrap().into_inner();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "1000",
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );

    // Files: upload, read back, stat.
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let msgs = std::iter::once(pb::WriteFileRequest {
        event: Some(write_file_request::Event::Start(pb::WriteFileStart {
            sandbox_id: sb.id.clone(),
            file: Some(fs::write_request::StartEvent {
                path: "/srv/www/index.html".into(),
                mode: None,
                owner: None,
                size: None,
            }),
        })),
    })
    .chain(body.chunks(64 * 1024).map(|d| pb::WriteFileRequest {
        event: Some(write_file_request::Event::Data(d.to_vec())),
    }))
    .collect::<Vec<_>>();
    c.write_file(futures::stream::iter(msgs)).await.unwrap();
    let mut s = c
        .read_file(pb::ReadFileRequest {
            sandbox_id: sb.id.clone(),
            path: "/srv/www/index.html".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut back = Vec::new();
    while let Some(chunk) = s.next().await {
        back.extend_from_slice(&chunk.unwrap().data);
    }
    assert!(back == body, "read {} bytes back", back.len());
    let stat = c
        .stat(pb::PathRequest {
            sandbox_id: sb.id.clone(),
            path: "/srv/www/index.html".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stat.entry.unwrap().size, body.len() as i64);

    // The address the agent reports serves what the sandbox listens on.
    let mut httpd = start("busybox", &["httpd", "-f", "-p", "8080", "-h", "/srv/www"]);
    httpd.tag = Some("httpd".into());
    c.start_background(pb::StartBackgroundRequest {
        sandbox_id: sb.id.clone(),
        start: Some(httpd),
    })
    .await
    .unwrap();
    let addr = format!("{}:8080", sb.address);
    let got = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + T;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").unwrap();
                let mut buf = Vec::new();
                s.read_to_end(&mut buf).unwrap();
                return buf;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nothing listens on {addr}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    })
    .await
    .unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(got.ends_with(&body[body.len() - 1000..]));

    // PTY: a shell on a terminal.
    let (tx, rx) = mpsc::channel(8);
    let mut pst = start("sh", &[]);
    pst.pty = Some(pp::Pty {
        size: Some(pp::pty::Size {
            cols: 100,
            rows: 30,
        }),
    });
    tx.send(pb::PtyRequest {
        event: Some(pty_request::Event::Start(pb::PtyStart {
            sandbox_id: sb.id.clone(),
            start: Some(pst),
        })),
    })
    .await
    .unwrap();
    let mut out = c.pty(ReceiverStream::new(rx)).await.unwrap().into_inner();
    tx.send(pb::PtyRequest {
        event: Some(pty_request::Event::Input(b"stty size; exit 4\n".to_vec())),
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    let end = loop {
        let msg = tokio::time::timeout(T, out.next())
            .await
            .expect("pty output")
            .expect("open")
            .unwrap();
        match msg.event.and_then(|e| e.event) {
            Some(Event::Data(d)) => {
                if let Some(Output::Pty(b)) = d.output {
                    seen.extend_from_slice(&b);
                }
            }
            Some(Event::End(e)) => break e,
            _ => {}
        }
    };
    assert!(
        String::from_utf8_lossy(&seen).contains("30 100"),
        "{:?}",
        String::from_utf8_lossy(&seen)
    );
    assert_eq!(end.exit_code, 4);

    // Metrics come from the sandbox's cgroup.
    let m = c
        .get_sandbox_metrics(pb::SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.memory_limit_bytes, 128 << 20);
    assert!(m.pids >= 2, "guest and httpd: {m:?}");

    // Pause freezes (calls refused), resume thaws (httpd still there).
    let r = pb::SandboxRef {
        sandbox_id: sb.id.clone(),
    };
    c.pause_sandbox(r.clone()).await.unwrap();
    assert_eq!(event(&mut w).await.0, Kind::Paused);
    assert_eq!(
        c.exec(sh(&sb.id, "true")).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    c.resume_sandbox(r.clone()).await.unwrap();
    assert_eq!(event(&mut w).await.0, Kind::Resumed);
    let ps = c.list_processes(r.clone()).await.unwrap().into_inner();
    assert!(
        ps.processes
            .iter()
            .any(|p| p.tag.as_deref() == Some("httpd")),
        "{ps:?}"
    );

    c.destroy_sandbox(r).await.unwrap();
    let (k, gone) = event(&mut w).await;
    assert_eq!((k, gone.unwrap().id), (Kind::Destroyed, sb.id.clone()));
    env.assert_sandbox_gone("tae2e1", &sb.address).await;

    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn ttl_expiry_and_shutdown_leave_nothing_behind() {
    let env = HostEnv::new(2100..=2199).await;
    let (agent, mut c, _) = boot(env.config()).await;
    // Watching first: no lifecycle event can slip past the test.
    let mut w = c
        .watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut short = busybox("tattl1");
    short.spec.as_mut().unwrap().timeout_secs = 1;
    let short_addr = c.create_sandbox(short).await.unwrap().into_inner().address;
    let long = c
        .create_sandbox(busybox("tattl2"))
        .await
        .unwrap()
        .into_inner();
    loop {
        let (k, sb) = event(&mut w).await;
        if k == Kind::Destroyed {
            let sb = sb.unwrap();
            assert_eq!(
                (sb.id.as_str(), sb.stop_reason.as_str()),
                ("tattl1", "timeout")
            );
            break;
        }
    }
    env.assert_sandbox_gone("tattl1", &short_addr).await;
    assert!(
        !env.sandbox_leftovers("tattl2", &long.address).is_empty(),
        "the other one still runs"
    );
    c.exec(sh(&long.id, "true")).await.unwrap();
    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_restarted_agent_adopts_kept_sandboxes() {
    let env = HostEnv::new(2200..=2299).await;
    let mut config = env.config();
    config.keep_sandboxes_on_shutdown = true;
    let (agent, mut c, _) = boot(config.clone()).await;
    let sb = c
        .create_sandbox(busybox("takeep1"))
        .await
        .unwrap()
        .into_inner();
    let mut sleeper = start("sleep", &["600"]);
    sleeper.tag = Some("sleeper".into());
    c.start_background(pb::StartBackgroundRequest {
        sandbox_id: sb.id.clone(),
        start: Some(sleeper),
    })
    .await
    .unwrap();
    agent.shutdown().await.unwrap();
    let kept = env.sandbox_leftovers("takeep1", &sb.address);
    assert!(
        !kept.netns.is_empty() && !kept.processes.is_empty(),
        "kept running: {kept:#?}"
    );

    config.keep_sandboxes_on_shutdown = false;
    let (agent, mut c, _) = boot(config).await;
    let list = c
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sandboxes.len(), 1);
    let adopted = &list.sandboxes[0];
    assert_eq!(
        (adopted.id.as_str(), adopted.address.as_str()),
        ("takeep1", sb.address.as_str())
    );
    assert!(adopted.generation > sb.generation);
    let ps = c
        .list_processes(pb::SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        ps.processes
            .iter()
            .any(|p| p.tag.as_deref() == Some("sleeper")),
        "{ps:?}"
    );
    assert_eq!(
        output(&mut c, &sb.id, "echo $GREETING").await.stdout,
        b"hello-from-spec\n"
    );
    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_guest_that_never_serves_is_destroyed_with_its_output_in_the_error() {
    let env = HostEnv::new(2300..=2399).await;
    let script = env.dir.join("broken-guest");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'guest exploded: cannot open /dev/vsock' >&2\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut config = env.config();
    config.runtime.guest_bin = Some(script);
    config.guest_ready_timeout_ms = 1500;
    let (agent, mut c, _) = boot(config).await;
    let e = c.create_sandbox(busybox("tabroke1")).await.unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("not healthy after"), "{}", e.message());
    assert!(
        e.message()
            .contains("guest exploded: cannot open /dev/vsock"),
        "{}",
        e.message()
    );
    env.assert_no_sandboxes().await;
    let list = c
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.sandboxes.is_empty());
    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn start_up_builds_the_missing_base_template_with_progress() {
    let env = HostEnv::new(2400..=2499).await;
    let mut config = env.config();
    config.build_base_image = true;
    let (agent, mut c, progress) = boot(config).await;
    let base: Vec<_> = progress
        .iter()
        .filter_map(|p| match p {
            Progress::BaseImage(b) => Some(b.clone()),
            _ => None,
        })
        .collect();
    assert!(!base.is_empty(), "{progress:?}");
    assert!(
        base.windows(2).all(|w| w[0].fraction <= w[1].fraction),
        "never decreasing: {base:?}"
    );
    let last = base.last().unwrap();
    assert_eq!(
        (last.step, last.fraction),
        (wrenn_vmm::image::BuildStep::Done, 1.0),
        "{base:?}"
    );
    assert!(env.dir.join("images/base/rootfs.ext4").is_file());

    // The default template is `base`: Debian with python.
    let sb = c
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "tabase1".into(),
            spec: Some(pb::SandboxSpec {
                internet: Some(false),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sb.spec.unwrap().template, "base");
    let r = c
        .exec(exec_req(&sb.id, start("python3", &["-c", "print(6 * 7)"])))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.stdout,
        b"42\n",
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

/// The runtime's record of sandbox `id` (`sandboxes/<id>/sandbox.json`).
fn recorded(env: &HostEnv, id: &str) -> serde_json::Value {
    let path = env.dir.join("sandboxes").join(id).join("sandbox.json");
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// Waits until the agent's pool holds `n` ready sandboxes.
async fn pool_ready(agent: &Agent, n: usize) {
    let m = agent.manager().clone();
    eventually(T, &format!("{n} pooled sandboxes ready"), move || {
        m.pool().ready() == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_pooled_sandbox_is_handed_out_under_the_new_name_and_nothing_is_left() {
    let env = HostEnv::new(2500..=2599).await;
    let mut config = env.config();
    config.pool_size = 2;
    config.pool_template = "busybox".into();
    let (agent, mut c, _) = boot(config).await;
    let mut w = c
        .watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(event(&mut w).await.0, Kind::Synced);
    pool_ready(&agent, 2).await;
    let pool = agent.manager().pool();
    assert!(
        c.list_sandboxes(pb::ListSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sandboxes
            .is_empty(),
        "pooled sandboxes are not listed"
    );

    // The default shape of the pool's template: handed out, not made.
    let sb = c
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "tapool1".into(),
            spec: Some(pb::SandboxSpec {
                template: "busybox".into(),
                env: [("GREETING".to_string(), "hello-from-pool".to_string())].into(),
                metadata: [("team".to_string(), "a".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pool.handed_out(), 1);
    assert_eq!(sb.state, pb::SandboxState::Running as i32);
    assert_eq!(sb.spec.as_ref().unwrap().metadata["team"], "a");
    // A token of its own, given at the hand-out (the pool's had none).
    let token = sb.spec.as_ref().unwrap().envd_access_token.clone();
    assert_eq!(token.len(), 64, "{token:?}");
    assert_eq!(
        recorded(&env, "tapool1")["envd_access_token"],
        token.as_str()
    );
    let (k, created) = event(&mut w).await;
    assert_eq!(
        (k, created.unwrap().id.as_str()),
        (Kind::Created, "tapool1")
    );
    assert_eq!(event(&mut w).await.0, Kind::Running);

    // Everything named by the id moved: environment, hostname, hosts file,
    // directory and cgroups; the pool's name is gone from the host.
    let r = output(
        &mut c,
        &sb.id,
        "echo $GREETING $WRENN_SANDBOX_ID; hostname; cat /etc/hosts",
    )
    .await;
    let out = String::from_utf8_lossy(&r.stdout);
    assert!(
        out.starts_with("hello-from-pool tapool1\ntapool1\n"),
        "{out}; stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let names: Vec<&str> = out
        .lines()
        .skip(2)
        .flat_map(|l| l.split_whitespace().skip(1))
        .collect();
    assert!(
        names.contains(&"tapool1") && !names.iter().any(|n| n.starts_with("pool")),
        "/etc/hosts names the new id only: {out}"
    );
    let mine = env.sandbox_leftovers("tapool1", &sb.address);
    assert!(
        !mine.cgroups.is_empty() && !mine.dirs.is_empty(),
        "the cgroups and directory carry the new id: {mine:#?}"
    );
    pool_ready(&agent, 2).await;
    let sandboxes = env.dir.join("sandboxes");
    let mut names: Vec<String> = std::fs::read_dir(&sandboxes)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "tapool1 and two pooled: {names:?}");
    assert!(names.contains(&"tapool1".to_owned()), "{names:?}");
    for pooled in names.iter().filter(|n| n.starts_with("pool")) {
        assert_eq!(
            recorded(&env, pooled)["envd_access_token"],
            "",
            "no token before the hand-out"
        );
    }

    // Another shape is made the usual way, beside the pool.
    let other = c
        .create_sandbox(busybox("tapool2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pool.handed_out(), 1);
    assert_eq!(
        output(&mut c, &other.id, "echo $GREETING; hostname")
            .await
            .stdout,
        b"hello-from-spec\ntapool2\n"
    );
    let listed: Vec<String> = c
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .sandboxes
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(listed, ["tapool1", "tapool2"]);

    c.destroy_sandbox(pb::SandboxRef {
        sandbox_id: sb.id.clone(),
    })
    .await
    .unwrap();
    env.assert_sandbox_gone("tapool1", &sb.address).await;
    // Shutdown destroys the pool with the rest.
    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_pooled_sandbox_a_crashed_agent_left_is_destroyed_at_start() {
    let env = HostEnv::new(2600..=2699).await;
    // What a killed agent leaves: a running sandbox whose record says pooled.
    let runtime = wrenn_vmm::build(env.runtime_config()).unwrap();
    let mut spec = wrenn_vmm::SandboxSpec::new("poolleftover1".parse().unwrap());
    spec.template = "busybox".into();
    spec.metadata
        .insert(wrenn_agent::manager::pool::MARK.into(), "1".into());
    let h = runtime.create(spec).await.unwrap();
    runtime.start(&h.id).await.unwrap();
    drop(runtime);
    assert!(
        !env.sandbox_leftovers("poolleftover1", &h.address.to_string())
            .processes
            .is_empty()
    );

    let (agent, mut c, _) = boot(env.config()).await;
    assert!(
        c.list_sandboxes(pb::ListSandboxesRequest::default())
            .await
            .unwrap()
            .into_inner()
            .sandboxes
            .is_empty(),
        "a pooled sandbox is not adopted"
    );
    env.assert_sandbox_gone("poolleftover1", &h.address.to_string())
        .await;
    agent.shutdown().await.unwrap();
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn shutdown_while_the_pool_fills_leaves_nothing() {
    let env = HostEnv::new(2700..=2799).await;
    let mut config = env.config();
    config.pool_size = 4;
    config.pool_template = "busybox".into();
    // Kept sandboxes stay for the next agent; pooled ones never do.
    config.keep_sandboxes_on_shutdown = true;
    for wait_ms in [0, 15, 40] {
        let (agent, _c, _) = boot(config.clone()).await;
        tokio::time::sleep(Duration::from_millis(wait_ms)).await;
        agent.shutdown().await.unwrap();
        env.assert_clean().await;
    }
}
