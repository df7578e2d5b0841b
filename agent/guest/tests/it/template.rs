//! Template defaults (`--template-file`): the user, working directory and
//! environment of requests that name none, START in the background, and
//! READY holding back health service `""`.

use std::os::unix::fs::chown;
use std::path::Path;
use std::time::{Duration, Instant};

use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use wrenn_proto::process::ListRequest;

use crate::common::*;

/// The runtime's default `PATH`, which a template's `PATH` replaces.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

async fn health(agent: &Agent, service: &str) -> ServingStatus {
    HealthClient::new(agent.channel.clone())
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("health of {service:?}: {e}"))
        .into_inner()
        .status()
}

/// An agent reading `json` as its template file (kept in `dir`).
async fn agent_with_template(dir: &Path, json: &str) -> Agent {
    let file = dir.join("template.json");
    std::fs::write(&file, json).unwrap();
    Agent::builder()
        .arg("--template-file")
        .arg(file.to_str().unwrap())
        // As a runtime starts it: the default PATH, which the template's replaces.
        .env("PATH", DEFAULT_PATH)
        .capture_stderr()
        .start()
        .await
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn start_runs_with_the_template_defaults_and_ready_holds_back_health() {
    let user = TestUser::create("tpl");
    let workdir = user.home.join("app");
    std::fs::create_dir(&workdir).unwrap();
    chown(&workdir, Some(user.uid()), Some(user.gid())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // START writes its facts after 2 s; READY waits for them.
    let start = "sleep 2; echo \"$X $(id -un) $(pwd) $PATH\" > facts.tmp && mv facts.tmp facts; exec sleep 100";
    let template_path = format!("/opt/tpl/bin:{DEFAULT_PATH}");
    let json = format!(
        r#"{{
            "user": "{}",
            "workdir": "{}",
            "env": {{"X": "from-template", "PATH": "{template_path}"}},
            "start": "{}",
            "ready": {{"command": "test -f facts", "timeout_ms": 30000, "interval_ms": 50}}
        }}"#,
        user.name,
        workdir.display(),
        start.replace('"', "\\\""),
    );
    let began = Instant::now();
    let agent = agent_with_template(dir.path(), &json).await;

    // Not ready yet, but processes and files are served.
    assert_eq!(health(&agent, "").await, ServingStatus::NotServing);
    assert_eq!(
        health(&agent, "process.Process").await,
        ServingStatus::Serving
    );
    assert_eq!(
        health(&agent, "filesystem.Filesystem").await,
        ServingStatus::Serving
    );
    let out = run(&agent, sh("id -un; pwd; echo $X; echo $PATH; echo $HOME")).await;
    assert_eq!(
        out.stdout_str(),
        format!(
            "{}\n{}\nfrom-template\n{template_path}\n{}\n",
            user.name,
            workdir.display(),
            user.home.display()
        )
    );
    // What a request names wins.
    let mut req = sh("id -un; pwd; echo $X");
    req.user = Some("root".into());
    req.process.as_mut().unwrap().cwd = Some("/".into());
    req.process
        .as_mut()
        .unwrap()
        .envs
        .insert("X".into(), "from-request".into());
    assert_eq!(
        run(&agent, req).await.stdout_str(),
        "root\n/\nfrom-request\n"
    );

    // START is a tagged background process.
    let listed = agent
        .process()
        .list(ListRequest {})
        .await
        .unwrap()
        .into_inner();
    let start_proc = listed
        .processes
        .iter()
        .find(|p| p.tag.as_deref() == Some("start"))
        .expect("List does not show START");
    let config = start_proc.config.as_ref().unwrap();
    assert_eq!(config.cmd, "/bin/sh");
    assert_eq!(config.args, ["-c", start]);

    // READY passes once START has written its facts.
    let deadline = Instant::now() + PATIENCE;
    while health(&agent, "").await != ServingStatus::Serving {
        assert!(Instant::now() < deadline, "READY never passed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        began.elapsed() >= Duration::from_secs(2),
        "SERVING before START could have written its facts"
    );
    let facts = std::fs::read_to_string(workdir.join("facts")).expect("START's facts");
    assert_eq!(
        facts,
        format!(
            "from-template {} {} {template_path}\n",
            user.name,
            workdir.display()
        )
    );
    let log = agent.stderr();
    assert!(!log.contains("READY did not pass"), "{log}");
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_ready_that_never_passes_keeps_health_back_and_logs_why() {
    let dir = tempfile::tempdir().unwrap();
    let json = r#"{"ready": {
        "command": "echo starting up >&2; echo not yet >&2; exit 3",
        "timeout_ms": 800,
        "interval_ms": 100
    }}"#;
    let agent = agent_with_template(dir.path(), json).await;
    let want = "READY did not pass within 0.8 s: exit 3: starting up | not yet\n";
    eventually("the READY failure is logged", || {
        agent.stderr().contains(want)
    })
    .await;
    let log = agent.stderr();
    assert_eq!(log.matches("READY did not pass").count(), 1, "{log}");
    assert_eq!(health(&agent, "").await, ServingStatus::NotServing);
    // The host may still exec into it.
    assert_eq!(run(&agent, sh("echo alive")).await.stdout, b"alive\n");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(health(&agent, "").await, ServingStatus::NotServing);
}

#[tokio::test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_broken_template_is_logged_and_the_sandbox_still_comes_up() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent_with_template(dir.path(), r#"{"user": "root", "start": "#).await;
    agent.assert_serving().await;
    let file = dir.path().join("template.json");
    let want = format!("parsing the template file {}: EOF", file.display());
    eventually("the parse error is logged", || {
        agent.stderr().contains(&want)
    })
    .await;
    drop(agent);

    // Valid, but its user does not exist: START fails and says why, requests
    // that rely on the default are refused naming the user.
    let agent = agent_with_template(
        dir.path(),
        r#"{"user": "wtg-nobody-here", "start": "sleep 100"}"#,
    )
    .await;
    for service in ["", "process.Process", "filesystem.Filesystem"] {
        assert_eq!(health(&agent, service).await, ServingStatus::Serving);
    }
    eventually("the START failure is logged", || {
        agent
            .stderr()
            .contains("START could not be started: user \"wtg-nobody-here\" does not exist")
    })
    .await;
    let status = start_err(&agent, sh("true")).await;
    assert_code(&status, Code::InvalidArgument, "\"wtg-nobody-here\"");
    let mut req = sh("echo named");
    req.user = Some("root".into());
    assert_eq!(run(&agent, req).await.stdout, b"named\n");
}
