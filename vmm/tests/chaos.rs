//! The runtime's owner killed with SIGKILL at random points of create,
//! exec, pause, resume and destroy, then a new owner over the same
//! directory, 200 times: every sandbox whose first process is alive when the
//! owner dies (and that the owner had not begun to destroy) is adopted by
//! the next one — never cleaned as dead; everything else is cleaned; nothing
//! is left at the end.
//! Slots 1800–1819.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{guest, leftovers};

const OWNER_DIR: &str = "WRENN_TV_CHAOS_DIR";
const OWNER_SEED: &str = "WRENN_TV_CHAOS_SEED";
const SLOTS: std::ops::RangeInclusive<u16> = 1800..=1819;
const ROUNDS: u64 = 200;
/// Sandboxes an owner keeps at most.
const MAX_LIVE: usize = 4;

/// A small deterministic generator (xorshift), seeded per round.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Run by `killed_owners_never_lose_a_live_sandbox` in a child process:
/// recovers, prints what it adopted (`adopted <id> <paused>`), then works
/// on sandboxes at random until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process of killed_owners_never_lose_a_live_sandbox"]
async fn helper_process_chaos_owner() {
    let dir = std::env::var(OWNER_DIR).expect("run by the chaos test");
    let seed: u64 = std::env::var(OWNER_SEED).unwrap().parse().unwrap();
    // The runtime's log goes to stderr, which the test keeps per round.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter("wrenn_vmm=debug")
        .try_init();
    let runtime = wrenn_vmm::build(common::config(dir.as_ref(), SLOTS)).unwrap();
    let rec = runtime.recover().await.unwrap();
    for h in &rec.adopted {
        println!("adopted {} {}", h.id, h.paused);
    }
    for id in &rec.cleaned {
        println!("cleaned {id}");
    }
    println!("recovered");
    let mut rng = Rng(seed | 1);
    let mut n = 0;
    loop {
        let live = runtime.list();
        let pick = |rng: &mut Rng| live[rng.below(live.len() as u64) as usize].clone();
        match rng.below(5) {
            0 | 1 if live.len() < MAX_LIVE => {
                n += 1;
                let mut spec = wrenn_vmm::SandboxSpec::new(common::id(&format!("ch{seed}x"), n));
                spec.template = "busybox".into();
                spec.memory_mb = 64;
                spec.disk_mb = 128;
                let h = runtime.create(spec).await.unwrap();
                runtime.start(&h.id).await.unwrap();
                guest::wait_healthy(h.guest_addr, Duration::from_secs(20))
                    .await
                    .unwrap();
            }
            2 if !live.is_empty() => {
                let h = pick(&mut rng);
                if !h.paused {
                    let _ = guest::sh(&h, "echo x > /tmp/x; cat /tmp/x").await;
                }
            }
            3 if !live.is_empty() => {
                let h = pick(&mut rng);
                if h.paused {
                    runtime.resume(&h.id).await.unwrap();
                } else {
                    runtime.pause(&h.id).await.unwrap();
                }
            }
            4 if !live.is_empty() => {
                let h = pick(&mut rng);
                // Said first: a sandbox killed half-way through its destroy
                // is on its way out, not lost.
                println!("destroying {}", h.id);
                runtime.destroy(&h.id).await.unwrap();
            }
            _ => tokio::task::yield_now().await,
        }
    }
}

/// Sandboxes whose recorded first process is alive (PID and start time, not
/// a zombie).
fn live_sandboxes(dir: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir.join("sandboxes"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(e.path().join("sandbox.json")) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let (Some(pid), Some(start)) = (v["pid"].as_i64(), v["pid_start"].as_u64()) else {
            continue;
        };
        // A zombie (killed by an owner's destroy that died half-way) is dead.
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        if wrenn_vmm::sandbox::record::process_start_time(pid as i32) == Some(start) && !zombie {
            out.insert(v["id"].as_str().unwrap().to_owned());
        }
    }
    out
}

/// Cgroups of this test's sandboxes (ids `ch…`) that an earlier run killed
/// half-way left without a record: killed and removed.
fn remove_stale_cgroups() {
    let Ok(layout) = wrenn_vmm::cgroup::Layout::detect() else {
        return;
    };
    for root in layout.roots() {
        let dir = root.join(common::PREFIX);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if !e.file_name().to_string_lossy().starts_with("ch") {
                continue;
            }
            let procs = std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while std::fs::remove_dir(e.path()).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// What recovery checks of a sandbox, as found on the host.
fn facts_of(dir: &std::path::Path, id: &str) -> String {
    let text = std::fs::read_to_string(dir.join("sandboxes").join(id).join("sandbox.json"))
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let slot = v["slot"].as_u64().unwrap_or(0);
    let pid = v["pid"].as_i64().unwrap_or(0);
    let netns = std::path::Path::new(&format!("/run/netns/{}-{slot}", common::PREFIX)).exists();
    let link = std::path::Path::new(&format!("/sys/class/net/wv{slot}")).exists();
    let cgroups: Vec<String> = wrenn_vmm::cgroup::Layout::detect()
        .map(|l| {
            l.roots()
                .iter()
                .map(|r| {
                    let procs = r.join(common::PREFIX).join(id).join("cgroup.procs");
                    format!(
                        "{}: {:?}",
                        procs.display(),
                        std::fs::read_to_string(&procs).map(|s| s.contains(&pid.to_string()))
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, r)| r.split(' ').collect())
        .unwrap_or_default();
    // State, parent, and (for a zombie) its wait status.
    let (state, ppid, exit) = (
        fields.first().copied().unwrap_or("?"),
        fields.get(1).copied().unwrap_or("?"),
        fields.last().copied().unwrap_or("?").trim(),
    );
    format!(
        "{id}: slot {slot} pid {pid} state {state} ppid {ppid} exit {exit} netns {netns} link {link} cgroups {cgroups:?}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn killed_owners_never_lose_a_live_sandbox() {
    common::require_root();
    let dir = common::env_dir(&SLOTS);
    if dir.exists() {
        common::clean(common::config(&dir, SLOTS)).await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
    remove_stale_cgroups();
    std::fs::create_dir_all(&dir).unwrap();
    wrenn_vmm::image::build_busybox(&dir, "busybox").unwrap();
    let started = Instant::now();
    let mut rng = Rng(0x5eed_1234_abcd);
    let mut adoptions = 0;
    let mut expected: BTreeSet<String> = BTreeSet::new();
    let mut facts: Vec<String> = Vec::new();
    for round in 0..=ROUNDS {
        // runs: -; this test binary, as the owning process
        let mut owner = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_process_chaos_owner",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(OWNER_DIR, &dir)
            .env(OWNER_SEED, round.to_string())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join(format!("owner-{round}.log"))).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(owner.stdout.take().unwrap()).lines();
        // (libtest prints `test helper_process_chaos_owner ... ` before the first line.)
        let mut adopted = BTreeSet::new();
        let mut cleaned = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            if line.ends_with("recovered") {
                break;
            }
            if let Some((_, rest)) = line.split_once("adopted ") {
                adopted.insert(rest.split(' ').next().unwrap().to_owned());
            }
            if let Some((_, rest)) = line.split_once("cleaned ") {
                cleaned.push(rest.to_owned());
            }
        }
        // Every sandbox alive when the last owner died is adopted.
        let lost: Vec<_> = expected.difference(&adopted).collect();
        if !lost.is_empty() {
            for r in round.saturating_sub(1)..=round {
                let log =
                    std::fs::read_to_string(dir.join(format!("owner-{r}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                eprintln!("--- owner {r} (last lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        assert!(
            lost.is_empty(),
            "round {round}: live sandboxes not adopted: {lost:?} (adopted {adopted:?}, cleaned {cleaned:?}); \
             as the last owner left them: {facts:#?}"
        );
        adoptions += adopted.len();
        if round == ROUNDS {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(owner.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            owner.wait().unwrap();
            break;
        }
        // Let it work for a while, then kill it wherever it is.
        std::thread::sleep(Duration::from_millis(20 + rng.below(400)));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(owner.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        owner.wait().unwrap();
        let destroying: BTreeSet<String> = lines
            .map_while(Result::ok)
            .filter_map(|l| l.split_once("destroying ").map(|(_, id)| id.to_owned()))
            .collect();
        expected = live_sandboxes(&dir)
            .difference(&destroying)
            .cloned()
            .collect();
        facts = expected.iter().map(|id| facts_of(&dir, id)).collect();
    }
    println!(
        "{ROUNDS} rounds in {:.1} s, {adoptions} adoptions",
        started.elapsed().as_secs_f64()
    );
    // The last owner's sandboxes go; nothing is left.
    common::clean(common::config(&dir, SLOTS)).await;
    leftovers::assert_clean("ch", &dir, &SLOTS).await;
    std::fs::remove_dir_all(&dir).unwrap();
}
