//! Adopt-or-clean for Firecracker sandboxes: a record of this instance is
//! adopted when its VMM process still runs (same PID and start time) with its
//! API socket; otherwise everything it held is removed. Network objects of
//! the range that no adopted sandbox owns are removed too.

use std::sync::Arc;

use wrenn_types::SandboxId;

use super::vm::{Inner, Vm, VmState};
use crate::cgroup::Cgroup;
use crate::runtime::{Recovered, Result};
use crate::sandbox::proc::Proc;
use crate::sandbox::record::{SandboxDir, process_start_time, sandboxes_dir};

pub(super) async fn recover(inner: &Arc<Inner>) -> Result<Recovered> {
    let mut out = Recovered::default();
    let entries: Vec<_> = std::fs::read_dir(sandboxes_dir(&inner.cfg.dir))
        .map(|e| e.flatten().collect())
        .unwrap_or_default();
    inner.net.prepare_host()?;
    inner
        .net
        .firewall()
        .install(&crate::sandbox::record::recorded_egress(
            &inner.cfg.dir,
            &inner.cfg.prefix,
            &inner.cfg.slots,
            &entries,
        ))?;
    for e in entries {
        let Ok(id) = e.file_name().to_string_lossy().parse::<SandboxId>() else {
            continue;
        };
        let dir = SandboxDir::new(&inner.cfg.dir, &id);
        let Ok(record) = dir.read_record() else {
            continue;
        };
        let Some(slot) = record.slot() else { continue };
        if record.prefix != inner.cfg.prefix
            || !inner.cfg.slots.contains(&slot.get())
            || inner.table.contains(&id)
        {
            continue;
        }
        if !inner.table.claim(slot) {
            continue;
        }
        let alive = match (record.pid, record.pid_start) {
            (Some(pid), Some(start))
                if process_start_time(pid) == Some(start) && dir.api_socket().exists() =>
            {
                Proc::watch(nix::unistd::Pid::from_raw(pid), false, id.as_str()).ok()
            }
            _ => None,
        };
        let mut st = VmState {
            cgroup: Cgroup::new(inner.layout.clone(), &inner.cfg.prefix, id.as_str()),
            dir,
            slot,
            record,
            proc: alive,
            paused: false,
        };
        if st.proc.is_some() {
            let handle = inner.handle(&st);
            let init = st.proc.clone();
            inner
                .table
                .insert(id, Vm::new(st, Some(handle.clone()), init));
            out.adopted.push(handle);
        } else {
            inner.teardown(&mut st).await?;
            inner.table.release(slot);
            out.cleaned.push(id);
        }
    }
    for slot in inner.net.occupied_slots().await? {
        if !inner.table.is_used(slot) {
            inner.net.teardown_now(slot).await?;
        }
    }
    Ok(out)
}
