//! Sandbox lifecycle through the agent: create validation and admission,
//! readiness, WatchSandboxes, pause/resume, TTL, shutdown and adoption.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use tonic::Code;
use wrenn_proto::wrenn::v1::{self as pb, sandbox_event::Kind};

const T: Duration = Duration::from_secs(15);

fn kind(ev: &pb::SandboxEvent) -> Kind {
    Kind::try_from(ev.kind).unwrap()
}

async fn watch(c: &mut Client) -> tonic::Streaming<pb::SandboxEvent> {
    c.watch_sandboxes(pb::WatchSandboxesRequest {})
        .await
        .unwrap()
        .into_inner()
}

async fn expect(s: &mut tonic::Streaming<pb::SandboxEvent>, k: Kind, id: &str) -> pb::Sandbox {
    let ev = next(s, T).await.expect("an event").expect("no error");
    assert_eq!(
        (kind(&ev), ev.sandbox.as_ref().map(|s| s.id.as_str())),
        (k, Some(id)),
        "{ev:?}"
    );
    ev.sandbox.unwrap()
}

/// The next `Destroyed` event's sandbox, skipping other events.
async fn next_destroyed(w: &mut tonic::Streaming<pb::SandboxEvent>, what: &str) -> pb::Sandbox {
    loop {
        let ev = next(w, T).await.expect(what).unwrap();
        if kind(&ev) == Kind::Destroyed {
            return ev.sandbox.unwrap();
        }
    }
}

/// Ids of the sandboxes the agent lists.
async fn listed_ids(h: &mut Harness) -> Vec<String> {
    let list = h
        .client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    list.sandboxes.into_iter().map(|s| s.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn watch_sends_snapshot_then_lifecycle_events() {
    let mut h = Harness::start().await;
    let a = h.create().await;
    assert_eq!(a.state, pb::SandboxState::Running as i32);
    assert_eq!(a.address, "127.0.0.1");
    assert_eq!(a.host_id, "test-host");
    assert_eq!(a.backend, "namespace");

    let mut w = watch(&mut h.client).await;
    let snap = expect(&mut w, Kind::Existing, &a.id).await;
    assert_eq!(snap.generation, a.generation);
    let synced = next(&mut w, T).await.unwrap().unwrap();
    assert_eq!(kind(&synced), Kind::Synced);
    assert!(synced.sandbox.is_none());

    let b = h.create().await;
    let created = expect(&mut w, Kind::Created, &b.id).await;
    assert_eq!(created.state, pb::SandboxState::Starting as i32);
    assert_eq!(created.address, "127.0.0.1");
    let running = expect(&mut w, Kind::Running, &b.id).await;
    assert_eq!(running.generation, created.generation);
    assert_eq!(running.generation, b.generation);
    assert_ne!(b.generation, a.generation);

    let paused = h
        .client
        .pause_sandbox(pb::SandboxRef {
            sandbox_id: b.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(paused.state, pb::SandboxState::Paused as i32);
    expect(&mut w, Kind::Paused, &b.id).await;
    h.client
        .resume_sandbox(pb::SandboxRef {
            sandbox_id: b.id.clone(),
        })
        .await
        .unwrap();
    let resumed = expect(&mut w, Kind::Resumed, &b.id).await;
    assert_eq!(resumed.state, pb::SandboxState::Running as i32);
    assert_eq!(
        resumed.generation, b.generation,
        "same address, same generation"
    );

    h.client
        .destroy_sandbox(pb::SandboxRef {
            sandbox_id: b.id.clone(),
        })
        .await
        .unwrap();
    let gone = expect(&mut w, Kind::Destroyed, &b.id).await;
    assert_eq!(gone.state, pb::SandboxState::Stopped as i32);
    assert_eq!(gone.stop_reason, "destroyed by request");
    assert_eq!(gone.generation, b.generation);

    let e = h
        .client
        .destroy_sandbox(pb::SandboxRef {
            sandbox_id: b.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    h.shutdown().await;
    // Watchers are told the agent is going away.
    loop {
        match next(&mut w, T).await {
            Some(Ok(ev)) => assert_eq!(kind(&ev), Kind::Destroyed, "{ev:?}"),
            Some(Err(s)) => {
                assert_eq!(s.code(), Code::Unavailable, "{s:?}");
                break;
            }
            None => break,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn paused_sandboxes_refuse_interactive_calls_until_resumed() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let r = pb::SandboxRef {
        sandbox_id: sb.id.clone(),
    };
    h.client.pause_sandbox(r.clone()).await.unwrap();
    let e = h.client.exec(sh(&sb.id, "true")).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(e.message(), format!("sandbox {} is paused", sb.id));
    let e = h.client.pause_sandbox(r.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    h.client.resume_sandbox(r.clone()).await.unwrap();
    assert_eq!(h.exec(&sb.id, "true", &[]).await.exit_code, 0);
    let e = h.client.resume_sandbox(r).await.unwrap_err();
    assert_eq!(e.message(), format!("sandbox {} is running", sb.id));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn create_validates_and_names_what_was_wrong() {
    let mut h = Harness::start().await;
    let bad = |spec: pb::SandboxSpec| pb::CreateSandboxRequest {
        sandbox_id: String::new(),
        spec: Some(spec),
    };
    let e = h
        .client
        .create_sandbox(bad(pb::SandboxSpec {
            vcpus: 1000,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(e.message(), "spec.vcpus: 1000 is above the maximum 64");
    let e = h
        .client
        .create_sandbox(bad(pb::SandboxSpec {
            envd_access_token: "not a token!".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("spec.envd_access_token: "),
        "{}",
        e.message()
    );
    let e = h
        .client
        .create_sandbox(bad(pb::SandboxSpec {
            timeout_secs: u32::MAX,
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(
        e.message().starts_with("spec.timeout_secs: "),
        "{}",
        e.message()
    );
    let e = h
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "Not_Valid".into(),
            spec: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("sandbox_id: invalid sandbox id"),
        "{}",
        e.message()
    );
    let e = h
        .client
        .create_sandbox(bad(pb::SandboxSpec {
            template: "nosuch".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nosuch"), "{}", e.message());

    // A chosen id is kept; a second create with it is refused.
    let req = pb::CreateSandboxRequest {
        sandbox_id: "chosen1".into(),
        spec: None,
    };
    let sb = h
        .client
        .create_sandbox(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sb.id, "chosen1");
    assert_eq!(
        sb.spec.as_ref().unwrap().memory_mb,
        512,
        "defaults filled in"
    );
    let token = sb.spec.as_ref().unwrap().envd_access_token.clone();
    assert_eq!(token.len(), 64, "an envd access token chosen: {token:?}");
    let listed = h
        .client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed.sandboxes[0].spec.as_ref().unwrap().envd_access_token,
        token,
        "List reports it"
    );
    // A given token is kept.
    let given = h
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "chosen2".into(),
            spec: Some(pb::SandboxSpec {
                envd_access_token: "my-own_token.0123456789".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        given.spec.unwrap().envd_access_token,
        "my-own_token.0123456789"
    );
    let e = h.client.create_sandbox(req).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(
        h.runtime.count(),
        2,
        "nothing half-made by the refused creates"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn admission_refuses_more_memory_than_the_host_has() {
    // Full limits (overcommit 1): 200 GiB is more than this host has.
    let mut h = Harness::start_with(|c| c.memory_overcommit = 1).await;
    let spec = pb::SandboxSpec {
        memory_mb: 200 * 1024,
        ..Default::default()
    };
    let e = h
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "huge".into(),
            spec: Some(spec),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message()
            .starts_with("not enough memory on this host for sandbox huge: requested 204800 MiB; ")
            && e.message().ends_with("divided by memory_overcommit 1"),
        "{}",
        e.message()
    );
    assert_eq!(h.runtime.count(), 0);
    // An ordinary create still works.
    h.create().await;
    h.shutdown().await;
}

/// Admission counts every sandbox from its create to its destroy, a share
/// of its limits set by the overcommit: with room for one 2 GiB disk at full
/// size (plus a margin for what other tests write meanwhile), a second is
/// refused naming the disk until the first is destroyed; at an overcommit
/// of 4 both fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn admission_counts_sandboxes_until_destroyed_with_the_overcommit() {
    let free = wrenn_agent::manager::admission::disk_free_mb(&std::env::temp_dir()).unwrap();
    assert!(
        free > 8 * 1024,
        "the test needs 8 GiB free under the temp dir, has {free} MiB"
    );
    // 2048 MiB needed by one sandbox fits in 3072; two (4096) do not.
    let reserve = free - 3072;
    let spec = || pb::SandboxSpec {
        disk_mb: 2048,
        ..Default::default()
    };
    let mut h = Harness::start_with(|c| {
        c.disk_overcommit = 1;
        c.reserve_disk_mb = reserve;
    })
    .await;
    let first = h.create_spec(spec()).await;
    let e = h
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "second".into(),
            spec: Some(spec()),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    assert!(
        e.message().starts_with("not enough disk on this host for sandbox second: requested 2048 MiB; ")
            && e.message().contains("4096 MiB needed for the limits of 1 sandboxes (2048 MiB) and this one, divided by disk_overcommit 1"),
        "{}",
        e.message()
    );
    h.client
        .destroy_sandbox(pb::SandboxRef {
            sandbox_id: first.id.clone(),
        })
        .await
        .unwrap();
    h.create_spec(spec()).await;
    h.shutdown().await;

    let mut h = Harness::start_with(|c| {
        c.disk_overcommit = 4;
        c.reserve_disk_mb = reserve;
    })
    .await;
    h.create_spec(spec()).await;
    h.create_spec(spec()).await;
    assert_eq!(h.runtime.count(), 2);
    h.shutdown().await;
}

/// `/metrics` of the agent: refused without the key (plain HTTP 401), the
/// create steps' histogram and the admission gauges with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn metrics_need_the_key_and_show_create_steps_and_admission() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut h = Harness::start().await;
    h.create().await;
    let addr = h.agent.as_ref().unwrap().local_addr();
    let get = |auth: Option<String>| async move {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let auth = auth
            .map(|k| format!("Authorization: Bearer {k}\r\n"))
            .unwrap_or_default();
        let head =
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut text = String::new();
        tcp.read_to_string(&mut text).await.unwrap();
        text
    };
    let refused = get(None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    assert!(!refused.contains("wrenn_create_step_seconds"), "{refused}");
    let wrong = get(Some("0".repeat(64))).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let text = get(Some(agent_key(&h.config))).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for needle in [
        "wrenn_create_step_seconds_count{step=\"total\"}",
        "wrenn_create_step_seconds_count{step=\"admission\"}",
        "wrenn_create_step_seconds_bucket{step=\"guest_ready\"",
        "wrenn_host_free_bytes{resource=\"disk\"}",
        "wrenn_host_committed_bytes{resource=\"memory\"}",
        "wrenn_host_low{resource=\"memory\"} 0",
    ] {
        assert!(text.contains(needle), "no {needle} in:\n{text}");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn readiness_timeout_destroys_and_quotes_the_guest_output() {
    let mut h = Harness::start_with(|c| c.guest_ready_timeout_ms = 500).await;
    h.runtime.set_mode(GuestMode::Broken(
        "echo 'guest exploded: cannot open /dev/vsock' >&2; exec sleep 600".into(),
    ));
    let mut w = watch(&mut h.client).await;
    assert_eq!(kind(&next(&mut w, T).await.unwrap().unwrap()), Kind::Synced);
    let e = h
        .client
        .create_sandbox(pb::CreateSandboxRequest {
            sandbox_id: "broken1".into(),
            spec: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(
        e.message().contains("guest agent at 127.0.0.1:"),
        "{}",
        e.message()
    );
    assert!(e.message().contains("not healthy after"), "{}", e.message());
    assert!(
        e.message()
            .contains("guest exploded: cannot open /dev/vsock"),
        "{}",
        e.message()
    );
    expect(&mut w, Kind::Created, "broken1").await;
    let gone = expect(&mut w, Kind::Destroyed, "broken1").await;
    assert_eq!(gone.stop_reason, "guest not ready");
    assert_eq!(h.runtime.count(), 0, "the runtime destroyed it");
    assert!(listed_ids(&mut h).await.is_empty());
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn ttl_expiry_destroys_and_set_timeout_extends() {
    let mut h = Harness::start().await;
    // Watching first: no lifecycle event can slip past the test.
    let mut w = watch(&mut h.client).await;
    assert_eq!(kind(&next(&mut w, T).await.unwrap().unwrap()), Kind::Synced);
    let spec = |timeout_secs| pb::SandboxSpec {
        timeout_secs,
        ..Default::default()
    };
    let extended = h.create_spec(spec(2)).await;
    let r = h
        .client
        .set_timeout(pb::SetTimeoutRequest {
            sandbox_id: extended.id.clone(),
            timeout_secs: 120,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.spec.unwrap().timeout_secs, 120);
    assert!(r.expires_at.unwrap().seconds >= extended.expires_at.unwrap().seconds + 100);
    let doomed = h.create_spec(spec(1)).await;
    let pid = h.runtime.guest_pid(&doomed.id).expect("guest running");
    let sb = next_destroyed(&mut w, "timeout reaps it").await;
    assert_eq!(sb.id, doomed.id, "only the short-lived one expires");
    assert_eq!(sb.stop_reason, "timeout");
    eventually(T, "guest process gone", || !pid_alive(pid)).await;
    // Past `extended`'s original deadline, it still runs.
    let original = extended.expires_at.unwrap();
    let original =
        std::time::UNIX_EPOCH + Duration::new(original.seconds as u64, original.nanos as u32);
    eventually(T, "original deadline passed", || {
        std::time::SystemTime::now() > original + Duration::from_millis(300)
    })
    .await;
    assert_eq!(listed_ids(&mut h).await, [extended.id.as_str()]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_sandbox_whose_guest_exits_is_destroyed_as_lost() {
    let mut h = Harness::start().await;
    let mut w = watch(&mut h.client).await;
    assert_eq!(kind(&next(&mut w, T).await.unwrap().unwrap()), Kind::Synced);
    let kept = h.create().await;
    let lost = h.create().await;
    let pid = h.runtime.guest_pid(&lost.id).expect("guest running");
    // SAFETY: kill takes a pid and a signal by value.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // Within the reaper's scan interval, long before its 5-minute deadline.
    let sb = next_destroyed(&mut w, "the reaper notices").await;
    assert_eq!(sb.id, lost.id, "only the one whose guest exited");
    assert_eq!(sb.stop_reason, "lost: its guest agent exited");
    eventually(T, "its sandbox process gone", || h.runtime.count() == 1).await;
    assert_eq!(listed_ids(&mut h).await, [kept.id.as_str()]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn shutdown_destroys_every_sandbox_and_its_processes() {
    let mut h = Harness::start().await;
    let mut pids = Vec::new();
    for _ in 0..2 {
        let sb = h.create().await;
        h.client
            .start_background(pb::StartBackgroundRequest {
                sandbox_id: sb.id.clone(),
                start: Some(start("sleep", &["600"])),
            })
            .await
            .unwrap();
        pids.push(h.runtime.guest_pid(&sb.id).unwrap());
        pids.push(h.runtime.pid(&sb.id).unwrap() as i32);
    }
    let addr = h.agent.as_ref().unwrap().local_addr();
    h.shutdown().await;
    assert_eq!(h.runtime.count(), 0);
    assert_eq!(h.runtime.destroys.load(Ordering::Relaxed), 2);
    assert_eq!(
        h.runtime.shutdowns.load(Ordering::Relaxed),
        1,
        "images shrunk"
    );
    for pid in pids {
        eventually(T, "sandbox process gone", || !pid_alive(pid)).await;
    }
    let sandboxes_dir = h.dir.path().join("sandboxes");
    assert_eq!(
        std::fs::read_dir(&sandboxes_dir).unwrap().count(),
        0,
        "sandbox dirs removed"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn kept_sandboxes_are_adopted_by_the_next_agent() {
    let mut h = Harness::start_with(|c| c.keep_sandboxes_on_shutdown = true).await;
    let sb = h
        .create_spec(pb::SandboxSpec {
            timeout_secs: 3600,
            ..Default::default()
        })
        .await;
    h.client
        .start_background(pb::StartBackgroundRequest {
            sandbox_id: sb.id.clone(),
            start: Some(start("sleep", &["600"])),
        })
        .await
        .unwrap();
    h.shutdown().await;
    assert_eq!(h.runtime.count(), 1, "kept running");
    let pid = h.runtime.guest_pid(&sb.id).unwrap();
    assert!(pid_alive(pid));

    *h.runtime.to_adopt.lock() = wrenn_vmm::Runtime::list(&*h.runtime);
    let mut config = h.config.clone();
    config.keep_sandboxes_on_shutdown = false;
    let dir = std::mem::replace(&mut h.dir, tempfile::tempdir().unwrap());
    let mut h2 = Harness::start_over(h.runtime.clone(), config, dir).await;
    let list = h2
        .client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.sandboxes.len(), 1);
    let adopted = &list.sandboxes[0];
    assert_eq!(adopted.id, sb.id);
    assert_eq!(adopted.state, pb::SandboxState::Running as i32);
    assert!(
        adopted.generation > sb.generation,
        "a new generation for a reappearing sandbox"
    );
    // Its own deadline and creation time, not the default timeout from now.
    assert_eq!(adopted.expires_at, sb.expires_at);
    assert_eq!(adopted.created_at, sb.created_at);
    assert_eq!(adopted.spec.as_ref().unwrap().timeout_secs, 3600);
    assert_eq!(
        adopted.spec.as_ref().unwrap().envd_access_token,
        sb.spec.as_ref().unwrap().envd_access_token,
        "the same envd access token"
    );
    assert!(adopted.unhealthy.is_empty(), "{adopted:?}");
    // Its processes survived and the new channel reaches them.
    let ps = h2
        .client
        .list_processes(pb::SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        ps.processes
            .iter()
            .any(|p| p.config.as_ref().unwrap().cmd == "sleep"),
        "{ps:?}"
    );
    h2.shutdown().await;
    assert_eq!(h2.runtime.count(), 0);
    eventually(T, "guest gone", || !pid_alive(pid)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn an_adopted_sandbox_whose_guest_does_not_answer_is_kept_and_probed_again() {
    let mut h = Harness::start_with(|c| c.keep_sandboxes_on_shutdown = true).await;
    let sb = h.create().await;
    h.shutdown().await;
    // The guest is stopped (a loaded host, a busy sandbox): it cannot answer.
    let pid = h.runtime.guest_pid(&sb.id).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    *h.runtime.to_adopt.lock() = wrenn_vmm::Runtime::list(&*h.runtime);
    let mut config = h.config.clone();
    config.keep_sandboxes_on_shutdown = false;
    let dir = std::mem::replace(&mut h.dir, tempfile::tempdir().unwrap());
    let mut h2 = Harness::start_over(h.runtime.clone(), config, dir).await;
    let get = |c: &mut Client| {
        let mut c = c.clone();
        async move {
            c.list_sandboxes(pb::ListSandboxesRequest::default())
                .await
                .unwrap()
                .into_inner()
                .sandboxes
        }
    };
    let list = get(&mut h2.client).await;
    assert_eq!(list.len(), 1, "kept, not destroyed");
    assert!(!list[0].unhealthy.is_empty(), "{:?}", list[0]);
    assert!(pid_alive(pid));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGCONT,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let list = get(&mut h2.client).await;
        if list[0].unhealthy.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still unhealthy: {:?}",
            list[0]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn destroy_ends_open_streams_with_the_reason() {
    let mut h = Harness::start().await;
    let sb = h.create().await;
    let mut s = h
        .client
        .exec_stream(sh(&sb.id, "sleep 600"))
        .await
        .unwrap()
        .into_inner();
    assert!(next(&mut s, T).await.unwrap().is_ok(), "start event");
    h.client
        .destroy_sandbox(pb::SandboxRef {
            sandbox_id: sb.id.clone(),
        })
        .await
        .unwrap();
    let end = loop {
        match next(&mut s, T)
            .await
            .expect("the stream ends with an error")
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(end.code(), Code::Aborted, "{end:?}");
    assert_eq!(
        end.message(),
        format!("sandbox {} was destroyed (destroyed by request)", sb.id)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn list_filters_by_metadata_and_metrics_come_from_the_runtime() {
    let mut h = Harness::start().await;
    let tagged = h
        .create_spec(pb::SandboxSpec {
            metadata: [("team".to_string(), "a".to_string())].into(),
            memory_mb: 256,
            ..Default::default()
        })
        .await;
    h.create().await;
    let req = pb::ListSandboxesRequest {
        metadata: [("team".to_string(), "a".to_string())].into(),
        include_stopped: false,
    };
    let list = h.client.list_sandboxes(req).await.unwrap().into_inner();
    assert_eq!(list.sandboxes.len(), 1);
    assert_eq!(list.sandboxes[0].id, tagged.id);
    let all = h
        .client
        .list_sandboxes(pb::ListSandboxesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.sandboxes.len(), 2);
    let m = h
        .client
        .get_sandbox_metrics(pb::SandboxRef {
            sandbox_id: tagged.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.sandbox_id, tagged.id);
    assert_eq!(m.memory_limit_bytes, 256 << 20);
    h.shutdown().await;
}
