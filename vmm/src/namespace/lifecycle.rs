//! create, start, pause/resume, destroy and metrics of namespace sandboxes.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tracing::Instrument;
use wrenn_types::SandboxId;

use super::rootmount;
use super::spawn::{self, Plan, PlanInput};
use super::userns::{self, IdRange};
use super::{CGROUP_TIMEOUT, Cell, EXIT_TIMEOUT, Inner, State};
use crate::cgroup::{Cgroup, Limits, PIDS_MAX};
use crate::net::{netns, resolv};
use crate::runtime::{Backend, Error, Result, SandboxHandle, SandboxMetrics, SandboxSpec};
use crate::sandbox::proc::Proc;
use crate::sandbox::record::{self, Record, SandboxDir, process_start_time};
use crate::slot::Slot;
use crate::{image, loopdev, steps, validate};

pub(super) async fn create(inner: &Arc<Inner>, spec: SandboxSpec) -> Result<SandboxHandle> {
    validate::spec(&spec)?;
    let image = image::template_path(&inner.cfg.dir, &spec.template);
    if !image.is_file() {
        return Err(Error::UnknownTemplate {
            template: spec.template.clone(),
            path: image,
        });
    }
    let id = spec.id.clone();
    let started = std::time::Instant::now();
    let (cell, slot) = steps::time("reserve", || reserve(inner, &spec))?;
    let mut st = cell.state.try_lock().expect("a fresh cell is unlocked");
    let span = tracing::info_span!("create", sandbox_id = %id, slot = slot.get());
    let mut dir_created = false;
    let result = build(inner, &st, &mut dir_created).instrument(span).await;
    steps::observe("create", started);
    match result {
        Ok(userns) => {
            st.userns = userns;
            let handle = inner.handle(&st);
            *cell.handle.lock() = Some(handle.clone());
            tracing::debug!("sandbox created");
            Ok(handle)
        }
        Err(e) => {
            tracing::warn!(error = %e, "create failed; cleaning up");
            if let Err(clean) = teardown(inner, &mut st, dir_created).await {
                tracing::warn!(error = %clean, "cleanup after failed create");
            }
            st.proc = None;
            inner.table.unreserve(&id, slot);
            Err(e)
        }
    }
}

/// Claims the id and a slot; the cell stays hidden from `list` until created.
fn reserve(inner: &Inner, spec: &SandboxSpec) -> Result<(Arc<Cell>, Slot)> {
    inner.table.reserve(&spec.id, |slot| State {
        record: Record::new(spec, &inner.cfg.prefix, slot, Backend::Namespace),
        slot,
        dir: SandboxDir::new(&inner.cfg.dir, &spec.id),
        cgroup: inner.cgroup(&spec.id),
        proc: None,
        template_mount: None,
        paused: false,
        userns: None,
    })
}

/// Makes the sandbox's directory, then its network, cgroups, disk image and
/// (hardened) user namespace, the blocking part beside the network's.
/// Returns the user namespace for `start`.
async fn build(inner: &Arc<Inner>, st: &State, dir_created: &mut bool) -> Result<Option<OwnedFd>> {
    match steps::time("directory", || st.dir.create(&inner.cfg.dir, &st.record)) {
        Ok(()) => *dir_created = true,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST) | Some(libc::ENOTEMPTY)) => {
            return Err(Error::AlreadyExists(st.record.id.clone()));
        }
        Err(source) => {
            return Err(Error::Io {
                step: "create sandbox directory",
                path: st.dir.dir.clone(),
                source,
            });
        }
    }
    let cgroup = st.cgroup.clone();
    let limits = Limits {
        memory_bytes: u64::from(st.record.memory_mb) << 20,
        vcpus: st.record.vcpus,
        pids: PIDS_MAX,
    };
    let disk_mb = st.record.disk_mb;
    let disk = st.dir.disk_image();
    let ids = inner.seccomp.is_some().then(|| IdRange::for_slot(st.slot));
    let inner2 = inner.clone();
    let blocking = tokio::task::spawn_blocking(move || -> Result<Option<OwnedFd>> {
        steps::time("cgroup", || cgroup.create(&limits))?;
        steps::time("disk", || inner2.disks.create(disk_mb, &disk))?;
        ids.map(|ids| {
            steps::time("userns", || userns::create(ids)).map_err(|source| Error::Io {
                step: "create the sandbox's user namespace",
                path: format!("uid {}", ids.base).into(),
                source,
            })
        })
        .transpose()
    });
    // Both run to their end before either's error is returned: the caller's
    // teardown then finds everything that was made.
    let net = steps::timed(
        "network",
        inner.net.setup(st.slot, &slot_options(inner, st)),
    )
    .await;
    let made = join(blocking).await;
    net?;
    made
}

/// The network a sandbox's record asks for.
fn slot_options(inner: &Inner, st: &State) -> crate::net::SlotOptions {
    let ids = IdRange::for_slot(st.slot);
    crate::net::SlotOptions {
        internet: st.record.internet,
        allow_out: st.record.allow_out.clone(),
        deny_out: st.record.deny_out.clone(),
        gids: inner
            .seccomp
            .is_some()
            .then(|| (ids.host(0), ids.host(userns::IDS - 1))),
    }
}

pub(super) async fn join<T>(h: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    h.await.map_err(|e| Error::Io {
        step: "blocking task",
        path: "".into(),
        source: std::io::Error::other(e),
    })?
}

/// Removes everything of the sandbox in `st`: processes, cgroups, network,
/// directory (only when `remove_dir`). Idempotent; returns the first error
/// after trying every step.
pub(super) async fn teardown(inner: &Arc<Inner>, st: &mut State, remove_dir: bool) -> Result<()> {
    let id = st.record.id.clone();
    let started = std::time::Instant::now();
    let mut first: Option<Error> = None;
    let mut note = |r: Result<()>| {
        if let Err(e) = r {
            tracing::warn!(sandbox_id = %id, error = %e, "teardown step");
            first.get_or_insert(e);
        }
    };
    // 1. Kill the init: its death takes the whole PID namespace, the mount
    //    namespace (disk, overlay) and the loop device with it. A frozen
    //    task only dies once thawed.
    if let Some(p) = &st.proc {
        p.kill();
        if st.paused {
            let cgroup = st.cgroup.clone();
            note(
                join(tokio::task::spawn_blocking(move || {
                    cgroup.thaw(CGROUP_TIMEOUT).map_err(Error::from)
                }))
                .await,
            );
            st.paused = false;
        }
        if !p.wait(EXIT_TIMEOUT).await {
            note(Err(Error::Io {
                step: "wait for sandbox init to exit",
                path: format!("/proc/{}", p.pid).into(),
                source: std::io::Error::from(std::io::ErrorKind::TimedOut),
            }));
        }
    }
    let exited = started.elapsed();
    let release = st.template_mount.take();
    // 2. The rest is independent: cgroups (killing any straggler, e.g. of a
    //    sandbox whose init was never recorded), network, template; then
    //    the directory.
    let cgroup = st.cgroup.clone();
    let cgroups = join(tokio::task::spawn_blocking(move || {
        cgroup.destroy(CGROUP_TIMEOUT).map_err(Error::from)
    }));
    let templates = async {
        if let Some(t) = release {
            let inner = inner.clone();
            join(tokio::task::spawn_blocking(move || {
                inner.templates.release(&t);
                Ok(())
            }))
            .await
        } else {
            Ok(())
        }
    };
    let egress = slot_options(inner, st).egress(st.slot);
    let net = async {
        inner
            .net
            .teardown(st.slot, &egress)
            .await
            .map_err(Error::from)
    };
    let (c, n, t) = tokio::join!(cgroups, net, templates);
    note(t);
    note(c);
    note(n);
    // The directory (and with it the record) goes last: an agent that dies
    // before every other step is done leaves the record, so the next start
    // finishes the job instead of leaking what the record names.
    if remove_dir {
        note(retire_dir(inner, st));
    }
    tracing::debug!(
        sandbox_id = %st.record.id,
        exit_us = exited.as_micros() as u64,
        total_us = started.elapsed().as_micros() as u64,
        "sandbox torn down"
    );
    first.map_or(Ok(()), Err)
}

/// Moves the sandbox directory out of the way as
/// `.deleting-<prefix>-<slot>-<id>` (a rename, microseconds) and deletes it
/// in the background: unlinking the disk image and removing the mount points
/// the sandbox's dying mount namespace used cost 10–30 ms (measured), which
/// `destroy` does not wait for. The name stays attributable to this
/// instance, so recovery finishes the job after a crash; `shutdown` waits
/// for pending deletions.
fn retire_dir(inner: &Arc<Inner>, st: &State) -> Result<()> {
    let dir = &st.dir.dir;
    let parent = dir.parent().unwrap_or(dir);
    let mut target = parent.join(record::deleting_name(
        &inner.cfg.prefix,
        st.slot.get(),
        &st.record.id,
        0,
    ));
    for n in 1..100 {
        if !target.exists() {
            break;
        }
        target = parent.join(record::deleting_name(
            &inner.cfg.prefix,
            st.slot.get(),
            &st.record.id,
            n,
        ));
    }
    match std::fs::rename(dir, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                step: "move sandbox directory aside",
                path: dir.clone(),
                source,
            });
        }
    }
    inner.background.run(async move {
        let result = join(tokio::task::spawn_blocking(move || {
            remove_sandbox_dir(&target)
        }))
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "deleting a sandbox directory");
        }
    });
    Ok(())
}

pub(super) fn remove_sandbox_dir(dir: &std::path::Path) -> Result<()> {
    crate::mounts::unmount_under(dir);
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            step: "remove sandbox directory",
            path: dir.to_owned(),
            source,
        }),
    }
}

pub(super) async fn start(inner: &Arc<Inner>, cell: &Cell) -> Result<()> {
    steps::timed("start", start_locked(inner, cell)).await
}

async fn start_locked(inner: &Arc<Inner>, cell: &Cell) -> Result<()> {
    let mut st = cell.state.lock().await;
    let id = st.record.id.clone();
    if cell.handle.lock().is_none() {
        return Err(Error::NotFound(id));
    }
    if st.proc.is_some() {
        let state = if st.paused { "paused" } else { "running" };
        return Err(Error::WrongState { id, state });
    }
    let template = st.record.template.clone();
    let input = StartInput {
        id: id.clone(),
        slot: st.slot,
        netns: inner.net.netns_name(st.slot),
        cgroup: st.cgroup.clone(),
        dir: st.dir.clone(),
        template: template.clone(),
        guest_bin: inner.cfg.guest_bin.clone(),
        resolv_conf: resolv::sandbox_resolv_conf(st.record.internet),
        hosts: format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{}\n",
            st.slot.sandbox_addr(),
            id
        ),
        env: st.record.spec().guest_env(),
        token: st.record.guest_token.clone(),
        userns: st.userns.take(),
    };
    let inner2 = inner.clone();
    let ((pid, console, disk), template_key) = join(tokio::task::spawn_blocking(move || {
        let (key, lower) = steps::time("template", || inner2.templates.acquire(&input.template))?;
        match start_blocking(&inner2, input, &lower) {
            Ok(spawned) => Ok((spawned, key)),
            Err(e) => {
                tracing::debug!(error = %e, "start failed");
                inner2.templates.release(&key);
                Err(e)
            }
        }
    }))
    .await?;
    st.template_mount = Some(template_key);
    // Off the start's path (see `loopdev`): the sandbox runs meanwhile.
    inner.background.run(async move {
        let switched = tokio::task::spawn_blocking(move || disk.set_direct_io(true)).await;
        if let Ok(Err(e)) = switched {
            tracing::warn!(error = %e, "switching a sandbox disk to direct I/O");
        }
    });
    let start_time = process_start_time(pid.as_raw()).unwrap_or(0);
    let proc = Proc::watch(pid, true, id.as_str()).map_err(|source| Error::Io {
        step: "pidfd_open",
        path: format!("/proc/{pid}").into(),
        source,
    });
    st.record.pid = Some(pid.as_raw());
    st.record.pid_start = Some(start_time);
    st.record.console = crate::guestlog::PipeId::of(&console).ok();
    let recorded = std::time::Instant::now();
    let drained = crate::guestlog::drain(console, st.dir.log()).map_err(|source| Error::Io {
        step: "drain the guest's console",
        path: st.dir.log(),
        source,
    });
    let saved = st.dir.write_record(&st.record).map_err(|source| Error::Io {
        step: "write sandbox record",
        path: st.dir.record(),
        source,
    });
    steps::observe("record", recorded);
    match (proc, saved.and(drained)) {
        (Ok(p), Ok(())) => {
            *cell.init.lock() = Some(p.clone());
            st.proc = Some(p);
            tracing::debug!(sandbox_id = %id, pid = pid.as_raw(), "sandbox started");
            Ok(())
        }
        (p, saved) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            st.proc = p.ok();
            let err = saved.err().unwrap_or_else(|| Error::Io {
                step: "watch sandbox init",
                path: format!("/proc/{pid}").into(),
                source: std::io::Error::other("pidfd"),
            });
            Err(err)
        }
    }
}

struct StartInput {
    id: SandboxId,
    slot: Slot,
    netns: String,
    cgroup: Cgroup,
    dir: SandboxDir,
    template: String,
    guest_bin: std::path::PathBuf,
    resolv_conf: String,
    hosts: String,
    env: std::collections::BTreeMap<String, String>,
    token: String,
    /// Made at create; `None` when unhardened (or made here if missing).
    userns: Option<OwnedFd>,
}

/// Attaches the disk, builds the root filesystem and the user namespace,
/// prepares the plan and clones the first process — all from a thread in
/// the spawn mount namespace (where `lower`, the template, is mounted).
/// Returns the first process, the read end of its console and the disk's
/// loop device (still buffered).
fn start_blocking(
    inner: &Inner,
    i: StartInput,
    lower: &std::path::Path,
) -> Result<(nix::unistd::Pid, OwnedFd, loopdev::LoopDevice)> {
    let disk = steps::time("loop", || {
        loopdev::attach_with(&i.dir.disk_image(), false, loopdev::Caching::Buffered)
    })?;
    let (console, stdout) = crate::guestlog::pipe().map_err(|source| Error::Io {
        step: "create the console pipe",
        path: i.dir.log(),
        source,
    })?;
    let spawn_err = |source| Error::Spawn {
        id: i.id.clone(),
        source,
    };
    let netns = netns::open(&i.netns)?;
    let cgroup_procs = i.cgroup.open_procs()?;
    let ids = IdRange::for_slot(i.slot);
    let seccomp = inner.seccomp;
    let guest_args = vec![
        "--token-file".to_owned(),
        spawn::TOKEN_PATH.to_owned(),
        "--allow-peer".to_owned(),
        i.slot.host_addr().to_string(),
    ];
    let root_dir = i.dir.root_dir();
    let disk_path = disk.path();
    let id = i.id.clone();
    let pid = inner
        .templates
        .ns()
        .run(move || -> Result<nix::unistd::Pid> {
            let userns = match (seccomp, i.userns) {
                (Some(_), Some(made)) => Some(made),
                (Some(_), None) => Some(userns::create(ids).map_err(|source| Error::Io {
                    step: "create the sandbox's user namespace",
                    path: format!("uid {}", ids.base).into(),
                    source,
                })?),
                (None, _) => None,
            };
            let idmap = userns.as_ref().map(|u| rootmount::Idmap { ids, userns: u });
            let root = steps::time("rootfs", || rootmount::assemble(lower, &disk_path, idmap))
                .map_err(|e| Error::Io {
                    step: e.step,
                    path: e.what.into(),
                    source: e.source,
                })?;
            let t = std::time::Instant::now();
            let plan = Plan::new(PlanInput {
                hostname: id.as_str(),
                netns,
                cgroup_procs,
                stdout,
                root,
                root_dir: &root_dir,
                guest_bin: &i.guest_bin,
                args: guest_args,
                token: &i.token,
                resolv_conf: i.resolv_conf,
                hosts: i.hosts,
                env: i.env,
                hardening: userns.zip(seccomp).map(|(u, s)| (ids, u, s)),
            })
            .map_err(spawn_err)?;
            let pid = spawn::spawn(plan).map_err(spawn_err);
            steps::observe("spawn", t);
            pid
        })??;
    // The sandbox's mount holds the device now; autoclear frees it with the
    // mount once `disk` is closed too (after its switch to direct I/O).
    Ok((pid, console, disk))
}

pub(super) async fn set_paused(_inner: &Inner, cell: &Cell, paused: bool) -> Result<()> {
    let mut st = cell.state.lock().await;
    let id = st.record.id.clone();
    let Some(handle) = cell.handle.lock().clone() else {
        return Err(Error::NotFound(id));
    };
    if st.proc.is_none() {
        return Err(Error::WrongState {
            id,
            state: "created",
        });
    }
    if st.paused == paused {
        return Ok(());
    }
    let cgroup = st.cgroup.clone();
    join(tokio::task::spawn_blocking(move || {
        if paused {
            cgroup.freeze(CGROUP_TIMEOUT)
        } else {
            cgroup.thaw(CGROUP_TIMEOUT)
        }
        .map_err(Error::from)
    }))
    .await?;
    st.paused = paused;
    *cell.handle.lock() = Some(SandboxHandle { paused, ..handle });
    tracing::debug!(sandbox_id = %id, paused, "sandbox freezer state changed");
    Ok(())
}

pub(super) async fn destroy(inner: &Arc<Inner>, id: &SandboxId) -> Result<()> {
    let cell = inner.table.remove(id);
    let Some(cell) = cell else {
        return destroy_leftover(inner, id).await;
    };
    let mut st = cell.state.lock().await;
    *cell.handle.lock() = None;
    let result = teardown(inner, &mut st, true).await;
    st.proc = None;
    inner.table.release(st.slot);
    tracing::debug!(sandbox_id = %id, ok = result.is_ok(), "sandbox destroyed");
    result
}

/// `destroy` of an id this runtime does not manage: cleans a directory a
/// crashed run of this instance left, if it is ours (prefix and slot range)
/// and its slot is not in use.
async fn destroy_leftover(inner: &Arc<Inner>, id: &SandboxId) -> Result<()> {
    let dir = SandboxDir::new(&inner.cfg.dir, id);
    let Ok(record) = dir.read_record() else {
        return Ok(());
    };
    let Some(slot) = record.slot() else {
        return Ok(());
    };
    if record.prefix != inner.cfg.prefix || !inner.cfg.slots.contains(&slot.get()) {
        return Ok(());
    }
    if !inner.table.claim(slot) {
        return Ok(());
    }
    let mut st = State {
        cgroup: inner.cgroup(id),
        slot,
        dir,
        proc: None,
        template_mount: None,
        paused: false,
        userns: None,
        record,
    };
    let result = teardown(inner, &mut st, true).await;
    inner.table.release(slot);
    result
}

pub(super) async fn metrics(cell: &Cell) -> Result<SandboxMetrics> {
    let st = cell.state.lock().await;
    if cell.handle.lock().is_none() {
        return Err(Error::NotFound(st.record.id.clone()));
    }
    let usage = st.cgroup.usage()?;
    let disk_limit = u64::from(st.record.disk_mb) << 20;
    let disk_used = match &st.proc {
        Some(p) if !p.has_exited() => {
            let root = format!("/proc/{}/root", p.pid);
            nix::sys::statfs::statfs(root.as_str())
                .map(|s| (s.blocks() - s.blocks_free()) * s.block_size() as u64)
                .unwrap_or(0)
        }
        _ => 0,
    };
    Ok(SandboxMetrics {
        cpu_usage_usec: usage.cpu_usec,
        memory_bytes: usage.memory_bytes,
        memory_limit_bytes: usage.memory_limit_bytes,
        disk_used_bytes: disk_used,
        disk_limit_bytes: disk_limit,
        pids: usage.pids,
    })
}
