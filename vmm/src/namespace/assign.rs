//! Handing a running sandbox made ahead of time (the host agent's warm pool)
//! to the id a create asked for.
//!
//! What names a sandbox by its id moves: the table entry, the directory, the
//! cgroups (renamed in place; the processes stay in them) and the hostname
//! (set from inside the sandbox's UTS namespace). The record takes the new id,
//! environment, metadata and envd access token. Everything else — slot,
//! network, disk, user namespace, the running guest — stays, so the spec
//! must match what the sandbox was made with. The guest learns its id, environment and envd
//! access token from the caller (`wrenn.v1.Guest/Assign`).
//!
//! A failure part-way moves back what was moved: the sandbox stays under its
//! old id, whole, for the caller to destroy or keep.

use std::os::fd::AsFd as _;
use std::sync::Arc;

use wrenn_types::SandboxId;

use super::Inner;
use crate::runtime::{Error, Result, SandboxHandle, SandboxSpec};
use crate::sandbox::record::SandboxDir;
use crate::{steps, validate};

pub(super) async fn assign(
    inner: &Arc<Inner>,
    from: &SandboxId,
    spec: SandboxSpec,
) -> Result<SandboxHandle> {
    validate::spec(&spec)?;
    let started = std::time::Instant::now();
    let cell = inner.table.get(from)?;
    let mut st = cell.state.lock().await;
    if cell.handle.lock().is_none() {
        return Err(Error::NotFound(from.clone()));
    }
    let pid = match &st.proc {
        Some(p) if !p.has_exited() && !st.paused => p.pid,
        Some(_) if st.paused => {
            return Err(Error::WrongState {
                id: from.clone(),
                state: "paused",
            });
        }
        _ => {
            return Err(Error::WrongState {
                id: from.clone(),
                state: "not running",
            });
        }
    };
    if let Some(field) = st.record.spec().fixed_difference(&spec) {
        return Err(Error::InvalidSpec(format!(
            "sandbox {from} was made with another {field} than sandbox {} asks for",
            spec.id
        )));
    }
    inner.table.rename(from, &spec.id)?;
    let inner2 = inner.clone();
    let old = Moved {
        id: from.clone(),
        dir: st.dir.clone(),
        cgroup: st.cgroup.clone(),
    };
    let to = spec.id.clone();
    let moved = super::lifecycle::join(tokio::task::spawn_blocking(move || {
        move_names(&inner2, &old, &to, pid.as_raw())
    }))
    .await;
    match moved {
        Ok((dir, cgroup)) => {
            st.dir = dir;
            st.cgroup = cgroup;
            st.record.id = spec.id.clone();
            st.record.env = spec.env;
            st.record.metadata = spec.metadata;
            st.record.envd_access_token = spec.envd_access_token;
            let saved = steps::time("assign_record", || st.dir.write_record(&st.record)).map_err(
                |source| Error::Io {
                    step: "write sandbox record",
                    path: st.dir.record(),
                    source,
                },
            );
            if let Err(e) = saved {
                // The sandbox runs under its new name; only a restart of the
                // agent would find the record stale.
                tracing::warn!(sandbox_id = %spec.id, error = %e, "assigned sandbox's record");
            }
            let handle = inner.handle(&st);
            *cell.handle.lock() = Some(handle.clone());
            steps::observe("assign", started);
            tracing::debug!(sandbox_id = %spec.id, from = %from, "pooled sandbox assigned");
            Ok(handle)
        }
        Err(e) => {
            // `from` is a pooled sandbox's own id, asked for by no create.
            let _ = inner.table.rename(&spec.id, from);
            Err(e)
        }
    }
}

struct Moved {
    id: SandboxId,
    dir: SandboxDir,
    cgroup: crate::cgroup::Cgroup,
}

/// Renames directory and cgroups and sets the hostname; undoes the renames
/// when a later step fails.
fn move_names(
    inner: &Inner,
    old: &Moved,
    to: &SandboxId,
    pid: i32,
) -> Result<(SandboxDir, crate::cgroup::Cgroup)> {
    let dir = SandboxDir::new(&inner.cfg.dir, to);
    match std::fs::symlink_metadata(&dir.dir) {
        Ok(_) => return Err(Error::AlreadyExists(to.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Io {
                step: "inspect sandbox directory",
                path: dir.dir,
                source,
            });
        }
    }
    steps::time("assign_dir", || std::fs::rename(&old.dir.dir, &dir.dir)).map_err(|source| {
        Error::Io {
            step: "rename sandbox directory",
            path: old.dir.dir.clone(),
            source,
        }
    })?;
    let undo_dir = || {
        if let Err(e) = std::fs::rename(&dir.dir, &old.dir.dir) {
            tracing::warn!(error = %e, path = %dir.dir.display(), "moving a sandbox directory back");
        }
    };
    let cgroup = match steps::time("assign_cgroup", || old.cgroup.rename(to.as_str())) {
        Ok(c) => c,
        Err(e) => {
            undo_dir();
            return Err(e.into());
        }
    };
    if let Err(source) = steps::time("assign_hostname", || set_hostname(pid, to.as_str())) {
        if let Err(e) = cgroup.rename(old.id.as_str()) {
            tracing::warn!(error = %e, "moving a sandbox's cgroups back");
        }
        undo_dir();
        return Err(Error::Io {
            step: "set the sandbox's hostname",
            path: format!("/proc/{pid}/ns/uts").into(),
            source,
        });
    }
    Ok((dir, cgroup))
}

/// Sets the hostname of the UTS namespace `pid` is in, from a thread of its
/// own that joins it (and ends there).
fn set_hostname(pid: i32, name: &str) -> std::io::Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/uts"))?;
    let name = name.to_owned();
    std::thread::Builder::new()
        .name("wrenn-hostname".into())
        .spawn(move || -> std::io::Result<()> {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWUTS)?;
            nix::unistd::sethostname(&name)?;
            Ok(())
        })?
        .join()
        .map_err(|_| std::io::Error::other("the hostname thread panicked"))?
}
