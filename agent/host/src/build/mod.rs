//! Template builds (`HostAgent.BuildTemplate`): a recipe's steps run in
//! sandboxes of this host, each step's result is kept as an image in the
//! step cache, and the last becomes the template's image.
//!
//! # Design
//! - [`plan`] checks the request before anything runs (name, recipe, the
//!   template it starts from, the COPY sources it carries) and adds wrenn's
//!   steps: `USER wrenn-user` and `WORKDIR /home/wrenn-user` first, the
//!   post-build step last (clean-up as root, the template's defaults
//!   written to `/etc/wrenn/template.json`, which the guest reads at start).
//! - A step that changes files runs in a fresh sandbox started from the
//!   previous step's image ([`sandbox`]); the sandbox is then destroyed
//!   keeping its disk, and [`flatten_disk`] writes the disk's upper layer
//!   over the previous image into the step's cache entry ([`cache`]). The
//!   next step starts from that image (template `@<key>`). ENV, ARG, START
//!   and READY change no file: they only change the build's [`State`].
//! - A step's key chains the previous key, its instruction and, for
//!   COPY/ADD, the SHA-256 of the archive this agent received; the chain
//!   starts from the identity of the image the build starts from. A build
//!   with nothing changed finds every step in the cache and runs none.
//! - The post-build step's image is shrunk, then grown to
//!   `WRENN_DEFAULT_ROOTFS_SIZE` (as `base`); it becomes the template by a
//!   hard link renamed over `images/<name>/rootfs.ext4`: atomic, a
//!   template of that name stays untouched until then, and sandboxes
//!   running from the old image keep it.
//! - Nothing half-made: a failure, the caller going away or the agent
//!   shutting down destroys the step's sandbox and removes the step's
//!   partial files; the stream ends with an error naming the step.
//!
//! # Limitations
//! - Each step that changes files costs a sandbox start and a sparse copy
//!   of the image: a long recipe is slower than in one container.
//! - `/tmp` is a tmpfs in a sandbox: what a step leaves there is not kept.
//! - A cancel during flattening lets the copy finish in the background;
//!   its entry stays incomplete (never used) until evicted.
//! - One build per template name at a time; others are refused.

pub mod cache;
mod plan;
mod sandbox;
mod scripts;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;
use wrenn_proto::wrenn::v1::{self as pb, build_event::Event};
use wrenn_vmm::image::{Shrink, flatten_disk, images_dir, template_path};

use crate::manager::Manager;
use cache::{Cache, Meta};
pub use plan::Defaults;
use plan::{Action, Plan, State, Step};
pub use sandbox::{BUILD_METADATA, TEMPLATE_OFF_ENV};

/// The template's defaults beside its image, for the agent.
pub const DEFAULTS_FILE: &str = "template.json";
/// Where the guest reads them in the image.
const GUEST_DEFAULTS: &str = "/etc/wrenn/template.json";
/// How long wrenn's own steps (USER, WORKDIR, COPY, post-build) may take.
const OWN_STEP_TIMEOUT: Duration = Duration::from_secs(600);
/// The build log kept with the template: step lines and output tails.
const LOG_MAX: usize = 64 * 1024;

pub type Events = UnboundedReceiverStream<Result<pb::BuildEvent, Status>>;

/// Template builds of one host.
pub struct Builder {
    m: Arc<Manager>,
    cache: Cache,
    building: Mutex<HashSet<String>>,
    /// Steps being made, by key: a build that needs a step another build is
    /// making waits for it and then finds it in the cache.
    making: Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Cache entries running builds start steps from, with how many builds
    /// do: eviction leaves them.
    in_use: Mutex<std::collections::HashMap<String, usize>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").finish_non_exhaustive()
    }
}

/// A template name being built; released when dropped.
struct Claim {
    builder: Arc<Builder>,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.builder.building.lock().remove(&self.name);
    }
}

/// What a build leaves while it runs, removed if it does not finish.
#[derive(Default)]
struct Scratch {
    sandbox: Option<String>,
    files: Vec<PathBuf>,
    entries: Vec<String>,
    /// Entries this build used (counted in `Builder::in_use`).
    used: Vec<String>,
}

impl Builder {
    pub fn new(m: Arc<Manager>) -> Arc<Builder> {
        let cap = cache::cap_from_env().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "using the default template cache size");
            cache::DEFAULT_CAP_BYTES
        });
        let cache = Cache::new(m.dir(), cap);
        // Nothing builds yet: what is unfinished was left by a previous run.
        let partial = cache.remove_partial();
        if partial > 0 {
            tracing::info!(
                count = partial,
                "template step cache: removed what unfinished builds left"
            );
        }
        Arc::new(Builder {
            m,
            cache,
            building: Mutex::new(HashSet::new()),
            making: Mutex::new(std::collections::HashMap::new()),
            in_use: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Checks the request and starts the build; its events follow on the
    /// stream, which ends with the template or an error.
    pub fn build(self: &Arc<Self>, req: pb::BuildTemplateRequest) -> Result<Events, Status> {
        let dir = self.m.dir().to_owned();
        let mut plan = plan::plan(&req, &|t| template_path(&dir, t).is_file())?;
        let parent = Defaults::load(&images_dir(&dir).join(&plan.from).join(DEFAULTS_FILE))
            .map_err(|e| Status::failed_precondition(format!("template {}: {e}", plan.from)))?;
        if !parent.user.is_empty() {
            // A built template's user and directory carry over (as a
            // Dockerfile's FROM keeps USER and WORKDIR): no pre-build steps.
            plan.steps
                .retain(|s| s.line != 0 || matches!(s.action, Action::Finish));
        }
        if !self.building.lock().insert(plan.name.clone()) {
            return Err(Status::aborted(format!(
                "template {}: a build of it is in progress on this host",
                plan.name
            )));
        }
        let claim = Claim {
            builder: self.clone(),
            name: plan.name.clone(),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let this = self.clone();
        tokio::spawn(async move {
            let _claim = claim;
            this.run(plan, parent, req.no_cache, tx).await;
        });
        Ok(UnboundedReceiverStream::new(rx))
    }

    /// Removes a template's image and defaults (sandboxes using it keep
    /// their image until they go). A template this host lacks is not an
    /// error.
    pub fn delete(&self, name: &str) -> Result<(), Status> {
        if !wrenn_types::spec::is_template_name(name) {
            return Err(Status::invalid_argument(format!(
                "{name:?} is not a template name"
            )));
        }
        if name == wrenn_types::spec::DEFAULT_TEMPLATE {
            return Err(Status::invalid_argument(
                "the built-in template base cannot be deleted",
            ));
        }
        if self.building.lock().contains(name) {
            return Err(Status::aborted(format!(
                "template {name}: a build of it is in progress"
            )));
        }
        let dir = images_dir(self.m.dir()).join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Status::internal(format!("removing {}: {e}", dir.display()))),
        }
    }

    async fn run(
        self: Arc<Self>,
        plan: Plan,
        parent: Defaults,
        no_cache: bool,
        tx: mpsc::UnboundedSender<Result<pb::BuildEvent, Status>>,
    ) {
        let scratch = Arc::new(Mutex::new(Scratch::default()));
        let name = plan.name.clone();
        let started = Instant::now();
        let result = tokio::select! {
            r = self.steps(&plan, &parent, no_cache, &tx, &scratch) => r,
            _ = tx.closed() => Err(Status::cancelled(format!("the build of {name} was cancelled"))),
            _ = self.m.shutdown_token().cancelled() => {
                Err(Status::unavailable(format!("the build of {name} stopped: the host agent is shutting down")))
            }
        };
        self.clean_up(&scratch).await;
        self.making.lock().retain(|_, m| Arc::strong_count(m) > 1);
        let used = std::mem::take(&mut scratch.lock().used);
        let keep: HashSet<String> = {
            let mut in_use = self.in_use.lock();
            for k in used {
                if let Some(n) = in_use.get_mut(&k) {
                    *n -= 1;
                    if *n == 0 {
                        in_use.remove(&k);
                    }
                }
            }
            in_use.keys().cloned().collect()
        };
        let cache = self.cache.clone();
        let _ = tokio::task::spawn_blocking(move || cache.evict(&keep)).await;
        match result {
            Ok(mut t) => {
                t.build_ms = started.elapsed().as_millis() as u64;
                tracing::info!(template = %name, ms = t.build_ms, run = t.steps_run, cached = t.steps_cached, "template built");
                let _ = tx.send(Ok(pb::BuildEvent {
                    event: Some(Event::Template(t)),
                }));
            }
            Err(s) => {
                tracing::info!(template = %name, error = %s.message(), "template build failed");
                let _ = tx.send(Err(s));
            }
        }
    }

    /// Records that this build starts steps from entry `key`.
    fn use_entry(&self, key: &str, scratch: &Mutex<Scratch>) {
        *self.in_use.lock().entry(key.to_owned()).or_default() += 1;
        scratch.lock().used.push(key.to_owned());
    }

    /// Destroys the step's sandbox and removes the partial files of a
    /// build that did not finish.
    async fn clean_up(&self, scratch: &Mutex<Scratch>) {
        let (sandbox, files, entries) = {
            let mut s = scratch.lock();
            (
                s.sandbox.take(),
                std::mem::take(&mut s.files),
                std::mem::take(&mut s.entries),
            )
        };
        if let Some(id) = sandbox
            && let Err(e) = self.m.destroy(&id, "template build ended").await
        {
            tracing::warn!(sandbox_id = %id, error = %e, "destroying a build sandbox");
        }
        for f in files {
            let _ = std::fs::remove_file(f);
        }
        for e in entries {
            self.cache.remove(&e);
        }
    }

    /// Runs the plan from the template it starts from, whose defaults are
    /// `parent`.
    async fn steps(
        &self,
        plan: &Plan,
        parent: &Defaults,
        no_cache: bool,
        tx: &mpsc::UnboundedSender<Result<pb::BuildEvent, Status>>,
        scratch: &Mutex<Scratch>,
    ) -> Result<pb::Template, Status> {
        let dir = self.m.dir().to_owned();
        let send = |event: Event| {
            let _ = tx.send(Ok(pb::BuildEvent { event: Some(event) }));
        };
        let size = wrenn_vmm::image::rootfs_size_from_env()
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let from_image = template_path(&dir, &plan.from);
        let mut state = State::new(parent);
        let mut key = plan::root_key(&plan.from, &from_image)
            .map_err(|e| Status::failed_precondition(format!("{}: {e}", from_image.display())))?;
        let mut image = plan.from.clone();
        let mut fresh = no_cache;
        let mut t = pb::Template {
            name: plan.name.clone(),
            recipe_digest: plan.recipe_digest.clone(),
            host_id: self.m.host_id().to_owned(),
            ..Default::default()
        };
        let mut log = String::new();
        let total = plan.steps.len() as u32;
        for (i, step) in plan.steps.iter().enumerate() {
            let index = i as u32 + 1;
            let at = || where_(plan, step);
            let started = |cached: bool| {
                Event::Step(pb::BuildStepStarted {
                    index,
                    total,
                    line: step.line as u32,
                    text: step.text.clone(),
                    cached,
                })
            };
            let finished = |cached: bool, ms: u64| {
                Event::Finished(pb::BuildStepFinished {
                    index,
                    cached,
                    duration_ms: ms,
                })
            };
            if !step.action.changes_files() {
                apply(&mut state, step)
                    .map_err(|e| Status::invalid_argument(format!("{}: {e}", at())))?;
                key = plan::step_key(&key, step, b"");
                send(started(!fresh));
                send(finished(!fresh, 0));
                push_log(&mut log, &format!("step {index}/{total}: {}\n", step.text));
                continue;
            }
            let extra = match step.action {
                Action::Finish => serde_json::to_vec(&state.defaults()).unwrap_or_default(),
                _ => Vec::new(),
            };
            let effect = prepare(&state, step)
                .map_err(|e| Status::invalid_argument(format!("{}: {e}", at())))?;
            key = plan::step_key(&key, step, &extra);
            let making = self.making.lock().entry(key.clone()).or_default().clone();
            let _making = making.lock().await;
            if !fresh && let Some(meta) = self.cache.get(&key) {
                send(started(true));
                effect.apply(&mut state, meta.home.clone());
                self.use_entry(&key, scratch);
                image = Cache::template(&key);
                t.size_bytes = meta.shrunk_bytes;
                t.steps_cached += 1;
                send(finished(true, 0));
                push_log(
                    &mut log,
                    &format!("step {index}/{total}: {} (cached)\n", step.text),
                );
                continue;
            }
            fresh = true;
            send(started(false));
            let step_started = Instant::now();
            let sb =
                sandbox::BuildSandbox::start(&self.m, &image, &plan.name, &plan.allow_out).await?;
            scratch.lock().sandbox = Some(sb.id.to_string());
            let mut output = |data: Vec<u8>| send(Event::Output(data));
            let home = match self.run_step(&sb, &state, step, &effect, &mut output).await {
                Ok(home) => home,
                Err(Failure::Status(s)) => return Err(s),
                Err(Failure::Step { what, tail }) => {
                    let tail = String::from_utf8_lossy(&tail);
                    let tail = tail.trim_end();
                    return Err(Status::failed_precondition(format!(
                        "step {index}/{total} ({}) `{}` {what}{}",
                        at(),
                        step.text,
                        if tail.is_empty() {
                            String::new()
                        } else {
                            format!("; last output:\n{tail}")
                        }
                    )));
                }
            };
            let keep = self.cache.entry(&format!(".disk-{}", sb.id));
            scratch.lock().files.push(keep.clone());
            let disk = sb.finish(&keep).await?;
            scratch.lock().sandbox = None;
            scratch.lock().entries.push(key.clone());
            let lower = template_path(&dir, &image);
            let dest = self.cache.image(&key);
            let shrink = if matches!(step.action, Action::Finish) {
                Shrink::Yes
            } else {
                Shrink::No
            };
            let flatten_started = Instant::now();
            let disk2 = disk.clone();
            let flattened = tokio::task::spawn_blocking(move || {
                flatten_disk(&lower, &disk2, &dest, size, shrink)
            })
            .await
            .map_err(|e| Status::internal(format!("flatten task: {e}")))?
            .map_err(|e| {
                Status::internal(format!(
                    "{}: flattening the step's layers: {}",
                    at(),
                    crate::error::chain(&e)
                ))
            })?;
            t.flatten_ms += flatten_started.elapsed().as_millis() as u64;
            let _ = std::fs::remove_file(&disk);
            self.cache
                .put_meta(
                    &key,
                    &Meta {
                        shrunk_bytes: flattened.shrunk_bytes,
                        home: home.clone(),
                    },
                )
                .map_err(|e| Status::internal(format!("step cache entry {key}: {e}")))?;
            {
                let mut s = scratch.lock();
                s.entries.retain(|e| *e != key);
                s.files.retain(|f| *f != keep);
            }
            effect.apply(&mut state, home);
            self.use_entry(&key, scratch);
            image = Cache::template(&key);
            t.size_bytes = flattened.shrunk_bytes;
            t.steps_run += 1;
            let ms = step_started.elapsed().as_millis() as u64;
            send(finished(false, ms));
            push_log(
                &mut log,
                &format!("step {index}/{total}: {} ({ms} ms)\n", step.text),
            );
        }
        let defaults = state.defaults();
        let final_image = self.cache.image(&key);
        install(&dir, &plan.name, &final_image, &defaults)
            .map_err(|e| Status::internal(format!("installing template {}: {e}", plan.name)))?;
        t.image_bytes = std::fs::metadata(&final_image)
            .map(|m| m.len())
            .unwrap_or(0);
        t.defaults = Some(defaults.to_proto());
        t.build_log = log;
        Ok(t)
    }

    /// Runs a step that changes files in its sandbox; returns the home of
    /// a `USER` step's user.
    async fn run_step(
        &self,
        sb: &sandbox::BuildSandbox,
        state: &State,
        step: &Step,
        effect: &Effect,
        output: &mut (dyn FnMut(Vec<u8>) + Send),
    ) -> Result<Option<String>, Failure> {
        let root = |script: &'static str, args: Vec<String>| async move {
            let cmd = sandbox::Sh {
                script,
                args,
                user: "root",
                cwd: "/",
                env: Default::default(),
                timeout: OWN_STEP_TIMEOUT,
            };
            let ran = sb.sh(cmd, None).await?;
            check(&ran, OWN_STEP_TIMEOUT)?;
            Ok::<_, Failure>(ran)
        };
        match (&step.action, effect) {
            (Action::Run { command, timeout }, _) => {
                let cmd = sandbox::Sh {
                    script: command,
                    args: Vec::new(),
                    user: &state.user,
                    cwd: &state.workdir,
                    env: state.process_env(),
                    timeout: *timeout,
                };
                let ran = sb.sh(cmd, Some(output)).await?;
                check(&ran, *timeout)?;
                Ok(None)
            }
            (Action::Workdir(_), Effect::Workdir(path)) => {
                root(scripts::WORKDIR, vec![path.clone(), state.user.clone()]).await?;
                Ok(None)
            }
            (Action::User(_), Effect::User(user)) => {
                let ran = root(scripts::USER, vec![user.clone()]).await?;
                let home = String::from_utf8_lossy(&ran.stdout)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                Ok(Some(if home.is_empty() {
                    "/".to_owned()
                } else {
                    home
                }))
            }
            (Action::Copy { context, .. }, Effect::Copy(dest)) => {
                let archive = format!("/tmp/.wrenn-context-{}.tar", std::process::id());
                sb.write(&archive, 0o600, context.archive.clone()).await?;
                let single = if context.single_file { "1" } else { "0" };
                root(
                    scripts::COPY,
                    vec![archive, dest.clone(), state.user.clone(), single.into()],
                )
                .await?;
                Ok(None)
            }
            (Action::Finish, _) => {
                root(scripts::FINISH, Vec::new()).await?;
                let json = serde_json::to_vec_pretty(&state.defaults()).unwrap_or_default();
                sb.write(GUEST_DEFAULTS, 0o644, json).await?;
                Ok(None)
            }
            _ => Err(Failure::Status(Status::internal(format!(
                "step {}: no way to run it",
                step.text
            )))),
        }
    }
}

/// Why a step did not succeed.
enum Failure {
    /// The step ran and failed: what happened, and its last output.
    Step {
        what: String,
        tail: Vec<u8>,
    },
    Status(Status),
}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::Status(s)
    }
}

fn check(ran: &sandbox::Ran, timeout: Duration) -> Result<(), Failure> {
    if ran.timed_out {
        return Err(Failure::Step {
            what: format!("timed out after {}", humantime(timeout)),
            tail: ran.tail.clone(),
        });
    }
    if ran.exit_code != 0 {
        return Err(Failure::Step {
            what: format!("failed with exit code {}", ran.exit_code),
            tail: ran.tail.clone(),
        });
    }
    Ok(())
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else if s > 0 {
        format!("{s} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// `file:line` of a step, or "post-build"/"pre-build" for wrenn's own.
fn where_(plan: &Plan, step: &Step) -> String {
    if step.line == 0 {
        match step.action {
            Action::Finish => "post-build".into(),
            _ => "pre-build".into(),
        }
    } else {
        format!("{}:{}", plan.file, step.line)
    }
}

fn push_log(log: &mut String, line: &str) {
    if log.len() + line.len() <= LOG_MAX {
        log.push_str(line);
    }
}

/// What a step that changes files does to the build's state, worked out
/// before it runs (the same whether it runs or comes from the cache).
enum Effect {
    None,
    Workdir(String),
    User(String),
    Copy(String),
}

impl Effect {
    fn apply(&self, state: &mut State, home: Option<String>) {
        match self {
            Effect::Workdir(p) => state.workdir = p.clone(),
            Effect::User(u) => {
                state.user = u.clone();
                state.home = home.unwrap_or_else(|| plan::home_of(u));
            }
            Effect::None | Effect::Copy(_) => {}
        }
    }
}

fn prepare(state: &State, step: &Step) -> Result<Effect, String> {
    Ok(match &step.action {
        Action::Workdir(p) => Effect::Workdir(normalize(&state.resolve(&state.expand(p)?))),
        Action::User(u) => {
            let u = state.expand(u)?;
            if !is_user_name(&u) {
                return Err(format!(
                    "USER {u:?}: not a user name (lowercase letters, digits, '_', '-'; up to 32)"
                ));
            }
            Effect::User(u)
        }
        Action::Copy { dest, .. } => {
            let d = state.expand(dest)?;
            let mut resolved = normalize(&state.resolve(&d));
            if d.ends_with('/') && !resolved.ends_with('/') {
                resolved.push('/');
            }
            Effect::Copy(resolved)
        }
        _ => Effect::None,
    })
}

/// ENV, ARG, START, READY: the build's state only.
fn apply(state: &mut State, step: &Step) -> Result<(), String> {
    match &step.action {
        Action::Env(vars) => {
            let expanded: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| Ok((k.clone(), state.expand(v)?)))
                .collect::<Result<_, String>>()?;
            state.env.extend(expanded);
        }
        Action::Arg { name, default } => {
            let v = match default {
                Some(d) => state.expand(d)?,
                None => String::new(),
            };
            state.args.insert(name.clone(), v);
        }
        Action::Start(c) => state.start = c.clone(),
        Action::Ready {
            command,
            timeout,
            interval,
        } => {
            state.ready = Some(plan::Ready {
                command: command.clone(),
                timeout_ms: timeout.as_millis() as u64,
                interval_ms: interval.as_millis() as u64,
            });
        }
        _ => {}
    }
    Ok(())
}

/// `/a/./b/../c` → `/a/c` (an absolute path; `..` stops at `/`).
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn is_user_name(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && u.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Makes `image` the template `name` with `defaults`: the defaults file,
/// then a hard link renamed over the image (atomic).
fn install(wrenn_dir: &Path, name: &str, image: &Path, defaults: &Defaults) -> std::io::Result<()> {
    let dir = images_dir(wrenn_dir).join(name);
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{DEFAULTS_FILE}.tmp"));
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(defaults).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, dir.join(DEFAULTS_FILE))?;
    let tmp = dir.join(format!(".{}.tmp", wrenn_vmm::image::ROOTFS_FILE));
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(image, &tmp)?;
    std::fs::rename(&tmp, dir.join(wrenn_vmm::image::ROOTFS_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_and_users_are_checked() {
        assert_eq!(normalize("/a/./b/../c/"), "/a/c");
        assert_eq!(normalize("/../x"), "/x");
        assert!(is_user_name("wrenn-user") && is_user_name("_apt"));
        assert!(!is_user_name("Root") && !is_user_name("a b") && !is_user_name("1x"));
    }

    #[test]
    fn effects_resolve_against_the_working_directory() {
        let mut s = State::new(&Defaults::default());
        s.workdir = "/home/wrenn-user".into();
        s.env.insert("APP".into(), "app".into());
        let step = |action| Step {
            line: 1,
            text: String::new(),
            action,
        };
        match prepare(&s, &step(Action::Workdir("$APP/../srv".into()))).unwrap() {
            Effect::Workdir(p) => assert_eq!(p, "/home/wrenn-user/srv"),
            _ => panic!(),
        }
        let copy = Action::Copy {
            dest: "${APP}/".into(),
            context: Default::default(),
        };
        match prepare(&s, &step(copy)).unwrap() {
            Effect::Copy(p) => assert_eq!(p, "/home/wrenn-user/app/"),
            _ => panic!(),
        }
        assert!(prepare(&s, &step(Action::User("Bad User".into()))).is_err());
        let mut st = s.clone();
        Effect::User("alice".into()).apply(&mut st, None);
        assert_eq!(
            (st.user.as_str(), st.home.as_str()),
            ("alice", "/home/alice")
        );
    }
}
