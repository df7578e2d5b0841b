//! Adopt-or-clean at start-up.
//!
//! Only objects of this instance — its prefix and slot range — are touched:
//!
//! 1. every `sandboxes/<id>/sandbox.json` of the instance: adopted when its
//!    init still runs (same PID *and* start time), its netns, host link and
//!    cgroups exist; otherwise torn down like `destroy` would;
//!    A record whose id is not its directory's (a pooled sandbox's hand-out
//!    cut short by a crash) is torn down under both names;
//! 2. half-created `sandboxes/.creating-<prefix>-<slot>` and retired
//!    `sandboxes/.deleting-<prefix>-<slot>-…` directories: removed;
//! 3. netns `<prefix>-<slot>` and links `wv<slot>` of the range that no
//!    adopted sandbox owns: removed;
//! 4. the instance's template mounts: unmounted (adopted sandboxes keep their
//!    own references through their overlays).

use std::sync::Arc;

use wrenn_types::SandboxId;

use super::{Cell, Inner, State};
use crate::net::{link, netns};
use crate::runtime::{Recovered, Result};
use crate::sandbox::proc::Proc;
use crate::sandbox::record::{self, SandboxDir, process_start_time, sandboxes_dir};

pub(super) async fn recover(inner: &Arc<Inner>) -> Result<Recovered> {
    let mut out = Recovered::default();
    let base = sandboxes_dir(&inner.cfg.dir);
    let entries: Vec<_> = match std::fs::read_dir(&base) {
        Ok(e) => e.flatten().collect(),
        Err(_) => Vec::new(),
    };
    // The firewall table anew, with the egress lists of every sandbox a
    // record of this instance names, in one transaction: an adopted
    // sandbox's lists never lapse, and elements nothing names are gone.
    inner.net.prepare_host()?;
    inner.net.firewall().install(&record::recorded_egress(
        &inner.cfg.dir,
        &inner.cfg.prefix,
        &inner.cfg.slots,
        &entries,
    ))?;
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = record::parse_creating(&name) {
            if owns_creating(inner, rest) {
                tracing::info!(dir = %entry.path().display(), "removing half-created sandbox directory");
                super::lifecycle::remove_sandbox_dir(&entry.path())?;
            }
            continue;
        }
        if let Some(slot) = record::parse_deleting(&inner.cfg.prefix, &name) {
            if inner.cfg.slots.contains(&slot) {
                tracing::info!(dir = %entry.path().display(), "finishing the deletion of a sandbox directory");
                super::lifecycle::remove_sandbox_dir(&entry.path())?;
            }
            continue;
        }
        let Ok(id) = name.parse::<SandboxId>() else {
            continue;
        };
        if inner.table.contains(&id) {
            continue;
        }
        let dir = SandboxDir::new(&inner.cfg.dir, &id);
        let Ok(mut record) = dir.read_record() else {
            continue;
        };
        // A hand-out (`assign`) cut short between the directory's rename and
        // the record's: nobody was given the sandbox. Its processes may be
        // in the cgroups of either name; it is cleaned under the directory's.
        let cut_short = record.id != id;
        if cut_short {
            tracing::warn!(sandbox_id = %id, recorded = %record.id, "a hand-out of a pooled sandbox was cut short; cleaning it");
            let other = inner.cgroup(&record.id);
            super::lifecycle::join(tokio::task::spawn_blocking(move || {
                other
                    .destroy(super::CGROUP_TIMEOUT)
                    .map_err(crate::runtime::Error::from)
            }))
            .await?;
            record.id = id.clone();
        }
        let Some(slot) = record.slot() else {
            continue;
        };
        if record.prefix != inner.cfg.prefix || !inner.cfg.slots.contains(&slot.get()) {
            continue;
        }
        if !inner.table.claim(slot) {
            // Another managed sandbox owns the slot (and its network): this
            // record is stale; remove only what is keyed by its id.
            tracing::warn!(sandbox_id = %id, slot = slot.get(), "slot already in use: removing the stale record");
            let cgroup = inner.cgroup(&id);
            super::lifecycle::join(tokio::task::spawn_blocking(move || {
                cgroup
                    .destroy(super::CGROUP_TIMEOUT)
                    .map_err(crate::runtime::Error::from)
            }))
            .await?;
            super::lifecycle::remove_sandbox_dir(&dir.dir)?;
            out.cleaned.push(id);
            continue;
        }
        let mut st = State {
            cgroup: inner.cgroup(&id),
            slot,
            dir,
            proc: None,
            template_mount: None,
            paused: false,
            userns: None,
            record,
        };
        let checked = if cut_short {
            Err("a hand-out was cut short")
        } else {
            intact(inner, &st).await
        };
        match checked {
            Ok(proc) => {
                st.paused = st.cgroup.is_frozen().unwrap_or(false);
                if let Some(console) = st.record.console {
                    let drained = crate::guestlog::reopen(proc.pid.as_raw(), console)
                        .and_then(|fd| crate::guestlog::drain(fd, st.dir.log()));
                    if let Err(e) = drained {
                        tracing::warn!(sandbox_id = %id, error = %e, "the console of an adopted sandbox is not logged");
                    }
                }
                let handle = inner.handle(&st);
                let init = Some(proc.clone());
                let st = State {
                    proc: Some(proc),
                    ..st
                };
                let cell = Cell::new(st, Some(handle.clone()), init);
                inner.table.insert(id.clone(), cell);
                tracing::info!(sandbox_id = %id, slot = slot.get(), "adopted sandbox");
                out.adopted.push(handle);
            }
            Err(why) => {
                tracing::info!(sandbox_id = %id, slot = slot.get(), why, "cleaning dead or partial sandbox");
                // Its init may still run with a broken network: kill through the cgroup.
                let result = super::lifecycle::teardown(inner, &mut st, true).await;
                inner.table.release(slot);
                result?;
                out.cleaned.push(id);
            }
        }
    }
    sweep_network(inner).await?;
    inner.templates.clear();
    Ok(out)
}

/// `.creating-<prefix>-<slot>` of this instance.
fn owns_creating(inner: &Inner, rest: &str) -> bool {
    crate::slot::Slot::from_netns_name(&inner.cfg.prefix, rest)
        .is_some_and(|s| inner.cfg.slots.contains(&s.get()) && !inner.table.is_used(s))
}

/// The init of `st` still runs and everything it needs exists; otherwise
/// what is missing.
async fn intact(inner: &Inner, st: &State) -> Result<Proc, &'static str> {
    let (Some(pid), Some(start)) = (st.record.pid, st.record.pid_start) else {
        return Err("never started");
    };
    if process_start_time(pid) != Some(start) {
        return Err("its first process is gone");
    }
    if !netns::exists(&inner.net.netns_name(st.slot)) {
        return Err("its network namespace is gone");
    }
    if !st.cgroup.exists() {
        return Err("its cgroups are gone");
    }
    let root = inner.net.root().await.map_err(|_| "no netlink socket")?;
    match link::get(root, &st.slot.host_iface()).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err("its host link is gone"),
        Err(_) => return Err("its host link cannot be read"),
    }
    // The init of a sandbox is in the sandbox's cgroup (a zombie is not).
    let pids = st.cgroup.pids().map_err(|_| "its cgroup cannot be read")?;
    if !pids.contains(&pid) {
        tracing::debug!(
            sandbox_id = %st.record.id,
            pid,
            ?pids,
            stat = %std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().trim(),
            "the recorded first process is not in the sandbox's cgroup"
        );
        return Err("its first process is not in its cgroup (dead)");
    }
    Proc::watch(
        nix::unistd::Pid::from_raw(pid),
        false,
        st.record.id.as_str(),
    )
    .map_err(|_| "its first process cannot be watched")
}

/// Network objects of the range that no managed sandbox owns.
async fn sweep_network(inner: &Inner) -> Result<()> {
    for slot in inner.net.occupied_slots().await? {
        if inner.table.is_used(slot) {
            continue;
        }
        tracing::info!(slot = slot.get(), "removing leftover sandbox network");
        inner.net.teardown_now(slot).await?;
    }
    Ok(())
}
