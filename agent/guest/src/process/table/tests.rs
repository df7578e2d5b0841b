use super::*;
use crate::reaper::ExitStatus;

fn proc(pid: u32, tag: Option<&str>) -> Arc<Proc> {
    let input = Input::Pipe(tokio::sync::Mutex::new(None));
    Arc::new(Proc::new(
        pid,
        tag.map(Into::into),
        ProcessConfig::default(),
        input,
    ))
}

fn by_tag(tag: &str) -> ProcessSelector {
    ProcessSelector {
        selector: Some(process_selector::Selector::Tag(tag.into())),
    }
}

fn by_pid(pid: u32) -> ProcessSelector {
    ProcessSelector {
        selector: Some(process_selector::Selector::Pid(pid)),
    }
}

fn end(proc: &Proc) {
    proc.finish(end_event(ExitStatus::Exited(0)));
}

#[test]
fn tags_are_unique_among_running_processes() {
    let table = ProcessTable::new(Reaper::idle(), END_RETENTION);
    let first = proc(10, Some("web"));
    table.insert(first.clone());
    let err = table.reserve_tag("web").map(drop).unwrap_err();
    assert!(matches!(err, TableError::TagInUse { pid: 10, .. }), "{err}");
    assert_eq!(Status::from(err).code(), tonic::Code::AlreadyExists);
    // Two starts racing for one tag: the second is refused while the first runs.
    let other = table.reserve_tag("api").unwrap();
    assert!(matches!(
        table.reserve_tag("api").map(drop),
        Err(TableError::TagStarting { .. })
    ));
    drop(other);
    assert!(table.reserve_tag("api").is_ok());
    // Once ended, the tag may be reused and then names the new process.
    end(&first);
    let _reserved = table.reserve_tag("web").unwrap();
    table.insert(proc(11, Some("web")));
    assert_eq!(table.get(Some(&by_tag("web"))).unwrap().pid, 11);
    assert_eq!(table.get(Some(&by_pid(10))).unwrap().pid, 10);
    assert!(matches!(
        table.reserve_tag("").map(drop),
        Err(TableError::EmptyTag)
    ));
}

#[test]
fn a_reused_pid_does_not_inherit_the_old_tag() {
    let table = ProcessTable::new(Reaper::idle(), END_RETENTION);
    let old = proc(20, Some("job"));
    table.insert(old.clone());
    end(&old);
    table.insert(proc(20, None));
    let err = table.get(Some(&by_tag("job"))).unwrap_err();
    assert_eq!(err.to_string(), "no process with tag \"job\"");
    assert!(table.get(Some(&by_pid(20))).unwrap().tag.is_none());
}

#[test]
fn lookups_fail_clearly() {
    let table = ProcessTable::new(Reaper::idle(), END_RETENTION);
    let status = Status::from(table.get(Some(&by_pid(999_999))).unwrap_err());
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(status.message(), "no process with pid 999999");
    let status = Status::from(table.get(None).unwrap_err());
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let empty = ProcessSelector { selector: None };
    assert!(matches!(
        table.get(Some(&empty)),
        Err(TableError::MissingSelector)
    ));
}

#[tokio::test(start_paused = true)]
async fn ended_processes_stay_for_the_retention_period() {
    let table = ProcessTable::new(Reaper::idle(), END_RETENTION);
    let p = proc(30, Some("bg"));
    table.insert(p.clone());
    let (exit_tx, exit_rx) = oneshot::channel();
    let (exited_tx, _) = watch::channel(false);
    let supervisor = tokio::spawn(table.clone().supervise(
        p.clone(),
        exit_rx,
        exited_tx,
        Vec::new(),
    ));
    assert_eq!(table.running().len(), 1);
    exit_tx
        .send(ExitStatus::Signaled {
            signal: 15,
            core: false,
        })
        .unwrap();
    p.wait_end().await;
    assert!(table.running().is_empty(), "an ended process is not listed");
    let ended = table.get(Some(&by_tag("bg"))).unwrap();
    assert_eq!(ended.fanout.end().unwrap().status, "signal: terminated");
    tokio::time::sleep(END_RETENTION - Duration::from_secs(1)).await;
    assert!(
        table.get(Some(&by_pid(30))).is_ok(),
        "still there just before the deadline"
    );
    supervisor.await.unwrap();
    assert!(matches!(
        table.get(Some(&by_pid(30))),
        Err(TableError::NoPid { pid: 30 })
    ));
    assert!(matches!(
        table.get(Some(&by_tag("bg"))),
        Err(TableError::NoTag { .. })
    ));
}
