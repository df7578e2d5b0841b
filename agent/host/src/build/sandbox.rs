//! One build step's sandbox: started from the previous step's image, the
//! step run in it, then destroyed keeping its disk for flattening.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tonic::Status;
use wrenn_proto::filesystem as fs;
use wrenn_proto::process::{self as pp, process_event::Event, process_event::data_event::Output};
use wrenn_proto::wrenn::v1 as pb;
use wrenn_types::SandboxId;

use crate::manager::Manager;
use crate::service::exec::{signal, start_process};

pub use wrenn_types::spec::BUILD_METADATA_KEY as BUILD_METADATA;
/// Memory and disk of a build sandbox.
const MEMORY_MB: u32 = 4096;
const DISK_MB: u32 = 16 * 1024;
/// Bytes of a step's output kept for its error message and the build log.
pub const TAIL_BYTES: usize = 4096;
/// How long the kernel may take to let go of a destroyed sandbox's disk.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running build sandbox.
pub struct BuildSandbox {
    pub m: Arc<Manager>,
    pub id: SandboxId,
}

/// A shell command of a step: `/bin/sh -c script` with `args` as `$1…`.
pub struct Sh<'a> {
    pub script: &'a str,
    pub args: Vec<String>,
    pub user: &'a str,
    pub cwd: &'a str,
    pub env: HashMap<String, String>,
    pub timeout: Duration,
}

/// How a process in a build sandbox ended.
pub struct Ran {
    pub exit_code: i32,
    pub status: String,
    pub timed_out: bool,
    /// The last [`TAIL_BYTES`] of its output.
    pub tail: Vec<u8>,
    pub stdout: Vec<u8>,
}

impl BuildSandbox {
    /// Starts a sandbox from `template` (a template or a cached step).
    pub async fn start(
        m: &Arc<Manager>,
        template: &str,
        building: &str,
        allow_out: &[String],
    ) -> Result<BuildSandbox, Status> {
        let id = SandboxId::generate();
        let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        let spec = pb::SandboxSpec {
            vcpus: vcpus.min(wrenn_types::spec::MAX_VCPUS),
            memory_mb: MEMORY_MB,
            disk_mb: DISK_MB,
            metadata: [(BUILD_METADATA.to_owned(), building.to_owned())].into(),
            internet: Some(true),
            allow_out: allow_out.to_vec(),
            timeout_secs: m.limits().max_timeout_secs,
            ..Default::default()
        };
        let mut valid = crate::spec::validate(id.clone(), &spec, m.limits())?;
        valid.runtime.template = template.to_owned();
        valid.proto.template = template.to_owned();
        // The guest must not start the parent template's app in a build.
        valid
            .runtime
            .env
            .insert(TEMPLATE_OFF_ENV.to_owned(), "1".to_owned());
        m.create_checked(valid).await?;
        Ok(BuildSandbox { m: m.clone(), id })
    }

    /// Runs `/bin/sh -c script` with `args` as `$1…`; `output` gets the
    /// output as it comes when given.
    pub async fn sh(
        &self,
        cmd: Sh<'_>,
        mut output: Option<&mut (dyn FnMut(Vec<u8>) + Send)>,
    ) -> Result<Ran, Status> {
        let sb = self.m.get(self.id.as_ref())?;
        let guest = sb.running_guest()?.clone();
        let mut argv = vec![
            "-c".to_owned(),
            cmd.script.to_owned(),
            "wrenn-build".to_owned(),
        ];
        argv.extend(cmd.args);
        let timeout = cmd.timeout;
        let start = pp::StartRequest {
            process: Some(pp::ProcessConfig {
                cmd: "/bin/sh".into(),
                args: argv,
                envs: cmd.env,
                cwd: Some(cmd.cwd.to_owned()),
            }),
            pty: None,
            tag: Some("build".into()),
            stdin: Some(false),
            user: Some(cmd.user.to_owned()),
        };
        let (pid, mut events) = start_process(&sb, &guest, start).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut ran = Ran {
            exit_code: -1,
            status: String::new(),
            timed_out: false,
            tail: Vec::new(),
            stdout: Vec::new(),
        };
        loop {
            let next = tokio::select! {
                _ = sb.cancel.cancelled() => return Err(sb.ended_status()),
                _ = tokio::time::sleep_until(deadline), if !ran.timed_out => {
                    ran.timed_out = true;
                    let _ = signal(&guest, pid, pp::Signal::Sigkill).await;
                    continue;
                }
                m = events.next() => m,
            };
            let ev = match next {
                None => {
                    return Err(Status::unavailable(format!(
                        "sandbox {}: the guest's stream ended before the step's process did",
                        self.id
                    )));
                }
                Some(Err(s)) => return Err(crate::service::guest_err(&sb, s)),
                Some(Ok(r)) => r.event.and_then(|e| e.event),
            };
            match ev {
                Some(Event::Data(d)) => {
                    let (data, is_stdout) = match d.output {
                        Some(Output::Stdout(b)) => (b, true),
                        Some(Output::Stderr(b)) | Some(Output::Pty(b)) => (b, false),
                        None => continue,
                    };
                    if is_stdout && ran.stdout.len() < 64 * 1024 {
                        ran.stdout.extend_from_slice(&data);
                    }
                    ran.tail.extend_from_slice(&data);
                    if ran.tail.len() > TAIL_BYTES {
                        ran.tail.drain(..ran.tail.len() - TAIL_BYTES);
                    }
                    if let Some(out) = output.as_deref_mut() {
                        out(data);
                    }
                }
                Some(Event::End(end)) => {
                    ran.exit_code = end.exit_code;
                    ran.status = end.status;
                    // Read the stream to its end (see service::exec).
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = events.next().await {}
                    })
                    .await;
                    return Ok(ran);
                }
                _ => {}
            }
        }
    }

    /// Writes `data` to `path` in the sandbox (owner root, mode `mode`).
    pub async fn write(&self, path: &str, mode: u32, data: Vec<u8>) -> Result<(), Status> {
        let sb = self.m.get(self.id.as_ref())?;
        let guest = sb.running_guest()?.clone();
        let size = data.len() as u64;
        let mut msgs = vec![fs::WriteRequest {
            event: Some(fs::write_request::Event::Start(
                fs::write_request::StartEvent {
                    path: path.to_owned(),
                    mode: Some(mode),
                    owner: Some("root".into()),
                    size: Some(size),
                },
            )),
        }];
        for chunk in data.chunks(64 * 1024) {
            msgs.push(fs::WriteRequest {
                event: Some(fs::write_request::Event::Data(chunk.to_vec())),
            });
        }
        guest
            .filesystem()
            .write(futures::stream::iter(msgs))
            .await
            .map_err(|s| crate::service::guest_err(&sb, s))?;
        Ok(())
    }

    /// Destroys the sandbox and returns its disk image, kept by a hard link
    /// at `keep`, once the kernel has let go of it (complete on disk).
    pub async fn finish(self, keep: &Path) -> Result<PathBuf, Status> {
        let raw = self.id.to_string();
        let disk = self.m.runtime().disk_image(&self.id).ok_or_else(|| {
            Status::failed_precondition(format!(
                "sandbox {raw}: this backend keeps no disk image a template can be made from"
            ))
        })?;
        if let Some(parent) = keep.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Status::internal(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::hard_link(&disk, keep).map_err(|e| {
            Status::internal(format!(
                "keeping {} as {}: {e}",
                disk.display(),
                keep.display()
            ))
        })?;
        let loops = wrenn_vmm::loopdev::backed_by(&disk);
        self.m.destroy(&raw, "template build step finished").await?;
        let released = tokio::task::spawn_blocking(move || {
            loops
                .iter()
                .all(|(n, _)| wrenn_vmm::loopdev::wait_released(*n, &raw, RELEASE_TIMEOUT))
        })
        .await
        .unwrap_or(false);
        if !released {
            return Err(Status::internal(format!(
                "the disk of build sandbox {} was not released within {} s",
                self.id,
                RELEASE_TIMEOUT.as_secs()
            )));
        }
        Ok(keep.to_owned())
    }
}

/// Set in a build sandbox's environment: its guest ignores the template
/// defaults it finds in the image (no START, no READY).
pub const TEMPLATE_OFF_ENV: &str = "WRENN_GUEST_NO_TEMPLATE";
