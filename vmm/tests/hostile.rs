//! Hostile code inside a sandbox: each test is a real attempt from inside a
//! real sandbox (the static `wrenn-probe`, busybox) and asserts the
//! refusal. Slots 1700–1799.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{guest, leftovers};
use wrenn_vmm::namespace::seccomp::REFUSED;
use wrenn_vmm::namespace::userns::IdRange;
use wrenn_vmm::slot::Slot;

/// Field `name` of `/proc/<pid>/status` on the host.
fn host_status(pid: u32, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

/// The host PID of a sandbox's first process (its record).
fn init_pid(env: &common::Env, id: &str) -> u32 {
    let record =
        std::fs::read_to_string(env.path().join("sandboxes").join(id).join("sandbox.json"))
            .unwrap();
    let v: serde_json::Value = serde_json::from_str(&record).unwrap();
    v["pid"]
        .as_u64()
        .expect("a started sandbox records its pid") as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn sandbox_root_is_an_unprivileged_host_user_under_seccomp() {
    let env = common::Env::new(1700..=1709).await;
    let h = env.up(env.spec("hosroot")).await;
    guest::install_probe(&h).await;
    let ids = IdRange::for_slot(Slot::new(h.slot).unwrap());

    // Inside: root of its own user namespace, mapped to the slot's range.
    let me = guest::run(&h, "/probe", &["identity"], None).await;
    assert!(
        me.stdout.contains(&format!("uid_map 0 {} 65536", ids.base)),
        "{me:?}"
    );
    assert!(
        me.stdout.contains("Seccomp: 2"),
        "seccomp filter mode: {me:?}"
    );
    assert!(
        me.stdout.contains("NoNewPrivs: 0"),
        "sudo must keep working: {me:?}"
    );
    assert!(me.stdout.contains("Uid: 0 0 0 0"), "{me:?}");
    // Outside: the guest runs as the range's base, not as host root.
    let pid = init_pid(&env, "hosroot");
    let uid = host_status(pid, "Uid:");
    let base = ids.base.to_string();
    assert_eq!(
        uid.split_whitespace().collect::<Vec<_>>(),
        [base.as_str(); 4],
        "host view of the guest's uids"
    );
    // Files of the template belong to root inside; what root makes inside
    // is root's, what it gives away is the other user's.
    let own = guest::sh(
        &h,
        "stat -c '%u %g' /bin/busybox /etc/passwd; touch /x; chown 1000:1000 /x; stat -c '%u %g' /x",
    )
    .await;
    assert_eq!(own.stdout, "0 0\n0 0\n1000 1000\n", "{own:?}");

    // Every refused call returns EPERM, and a new user namespace cannot
    // be made by any route.
    let mut names: Vec<&str> = REFUSED.iter().map(|(n, _, _)| *n).collect();
    names.push("clone_newuser");
    let mut args = vec!["syscalls"];
    args.extend(&names);
    let calls = guest::run(&h, "/probe", &args, None).await;
    for name in &names {
        let line = format!("{name} {}", libc::EPERM);
        assert!(
            calls.stdout.lines().any(|l| l == line),
            "{name} was not refused with EPERM: {calls:?}"
        );
    }
    let unshare = guest::sh(&h, "unshare -U -n true; echo rc=$?").await;
    assert!(!unshare.stdout.contains("rc=0"), "{unshare:?}");

    env.finish().await;
    leftovers::assert_clean("hosroot", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn proc_and_sys_are_masked_like_docker() {
    let env = common::Env::new(1710..=1719).await;
    let h = env.up(env.spec("hosmask")).await;
    for file in ["/proc/kcore", "/proc/keys", "/proc/timer_list"] {
        if !std::path::Path::new(file).exists() {
            continue;
        }
        let out = guest::sh(&h, &format!("head -c 100 {file} | wc -c")).await;
        assert_eq!(out.stdout.trim(), "0", "{file} is readable: {out:?}");
    }
    if std::path::Path::new("/sys/firmware").is_dir() {
        let fw = guest::sh(
            &h,
            "ls -A /sys/firmware | wc -l; touch /sys/firmware/x; echo rc=$?",
        )
        .await;
        assert!(
            fw.stdout.starts_with("0\n") && !fw.stdout.contains("rc=0"),
            "{fw:?}"
        );
    }
    for (script, what) in [
        ("echo 1 > /proc/sys/kernel/sysrq", "write /proc/sys"),
        ("echo h > /proc/sysrq-trigger", "write /proc/sysrq-trigger"),
        ("touch /sys/kernel/x", "write /sys"),
    ] {
        let out = guest::sh(&h, &format!("{script}; echo rc=$?")).await;
        assert!(!out.stdout.contains("rc=0"), "{what} succeeded: {out:?}");
    }
    // /proc itself stays writable where a program's own process is concerned.
    let adj = guest::sh(
        &h,
        "echo 500 > /proc/self/oom_score_adj && cat /proc/self/oom_score_adj",
    )
    .await;
    assert_eq!(adj.stdout.trim(), "500", "{adj:?}");
    env.finish().await;
    leftovers::assert_clean("hosmask", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn one_sandbox_exhausting_inotify_does_not_starve_another() {
    let env = common::Env::new(1720..=1729).await;
    let a = env.up(env.spec("hosinoa")).await;
    let b = env.up(env.spec("hosinob")).await;
    guest::install_probe(&a).await;
    guest::install_probe(&b).await;
    // A takes every inotify instance its user may have, and keeps them.
    let mut hog = guest::stream(&a, "/probe", &["inotify", "100000"]).await;
    let line = hog.next_line().await;
    let (opened, errno) = line.split_once(' ').expect("`<opened> <errno>`");
    let limit: u64 = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        opened.parse::<u64>().unwrap() >= limit - 2 && errno == libc::EMFILE.to_string(),
        "A should stop at its own limit ({limit}): {line}"
    );
    // B still gets its own, and so does the host.
    let mut b_line = guest::stream(&b, "/probe", &["inotify", "10"]).await;
    assert_eq!(b_line.next_line().await, "10 0", "B is starved by A");
    // SAFETY: inotify_init1 takes flags by value; the descriptor is closed.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "the host is starved by A");
    // SAFETY: closing the descriptor just opened.
    unsafe { libc::close(fd) };
    drop(hog);
    env.finish().await;
    leftovers::assert_clean("hosino", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn the_console_is_out_of_reach_and_capped() {
    let env = common::Env::new(1730..=1739).await;
    let h = env.up(env.spec("hoslog")).await;
    // The guest's binary belongs to a host user the sandbox cannot see, so
    // its process is not dumpable for the sandbox: its root cannot open the
    // guest's descriptors or memory.
    for path in ["/proc/1/fd/1", "/proc/1/mem"] {
        let out = guest::sh(&h, &format!("head -c 1 {path} >/dev/null 2>&1; echo rc=$?")).await;
        assert!(
            !out.stdout.contains("rc=0"),
            "{path} opened from inside: {out:?}"
        );
    }
    let out = guest::sh(&h, "echo x > /proc/1/fd/1; echo rc=$?").await;
    assert!(!out.stdout.contains("rc=0"), "{out:?}");
    // Whatever floods the console pipe (here the host, which may), the log
    // keeps at most its cap.
    let pid = init_pid(&env, "hoslog");
    let mut console = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/fd/1"))
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..40 {
        use std::io::Write;
        console.write_all(&chunk).unwrap();
    }
    drop(console);
    let dir = env.path().join("sandboxes/hoslog");
    let size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // 40 MiB went through the pipe: wait until the drain has caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = 0;
    while Instant::now() < deadline {
        let total = size("guest.log") + size("guest.log.1");
        if total == seen && size("guest.log.1") > 0 {
            break;
        }
        seen = total;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = size("guest.log") + size("guest.log.1");
    assert!(
        size("guest.log.1") > 0,
        "the log never rotated: {} + {} bytes",
        size("guest.log"),
        size("guest.log.1")
    );
    assert!(
        total <= wrenn_vmm::guestlog::LOG_CAP,
        "{total} bytes kept, above the cap"
    );
    // The guest kept serving.
    assert_eq!(guest::sh(&h, "echo alive").await.stdout, "alive\n");
    env.finish().await;
    leftovers::assert_clean("hoslog", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn the_guest_agent_answers_only_the_host_with_the_token() {
    let env = common::Env::new(1740..=1749).await;
    let h = env.up(env.spec("hosguest")).await;
    // From inside, even as root, even on the sandbox's own address: the
    // connection is closed before the agent says anything.
    let preface = "printf 'PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n'";
    for target in ["127.0.0.1".to_owned(), h.address.to_string()] {
        let out = guest::sh(&h, &format!("{preface} | nc -w 2 {target} 49983 | wc -c")).await;
        assert_eq!(
            out.stdout.trim(),
            "0",
            "{target} answered from inside: {out:?}"
        );
    }
    // From the host the agent speaks (its SETTINGS frame)…
    let mut s =
        std::net::TcpStream::connect_timeout(&h.guest_addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
    let mut frame = [0u8; 9];
    s.read_exact(&mut frame).unwrap();
    assert_eq!(frame[3], 4, "a SETTINGS frame");
    // …but every call without the token is refused.
    let ch = guest::channel(h.guest_addr).await.unwrap();
    let mut anon = wrenn_proto::process::process_client::ProcessClient::new(ch);
    let err = anon
        .list(wrenn_proto::process::ListRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let wrong = wrenn_proto::auth::with_bearer(
        guest::channel(h.guest_addr).await.unwrap(),
        wrenn_proto::auth::Bearer::new("not-the-token").unwrap(),
    );
    let err = wrenn_proto::process::process_client::ProcessClient::new(wrong)
        .list(wrenn_proto::process::ListRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    // The token is the sandbox root's alone.
    let token = guest::sh(&h, "stat -c '%a %u' /run/wrenn/token; cat /run/wrenn/token").await;
    assert_eq!(
        token.stdout,
        format!("400 0\n{}", h.guest_token),
        "{token:?}"
    );
    let as_user = guest::run(&h, "cat", &["/run/wrenn/token"], Some("wrenn-user")).await;
    assert_ne!(
        as_user.exit_code, 0,
        "a non-root user read the token: {as_user:?}"
    );
    env.finish().await;
    leftovers::assert_clean("hosguest", env.path(), &env.slots()).await;
}

/// A network namespace of the test's own with a private address and a TCP
/// server that greets each connection; removed on drop.
struct PrivateServer {
    netns: String,
    host_link: String,
    addr: SocketAddr,
}

impl PrivateServer {
    fn start(netns: &str, host_link: &str, host_ip: &str, server_ip: Ipv4Addr) -> PrivateServer {
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
        };
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", netns])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", host_link])
            .output();
        ip(&["netns", "add", netns]);
        ip(&[
            "link", "add", host_link, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ]);
        ip(&["addr", "add", host_ip, "dev", host_link]);
        ip(&["link", "set", host_link, "up"]);
        let s = server_ip.to_string();
        let cidr = format!("{s}/24");
        ip(&["-n", netns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", netns, "link", "set", "eth0", "up"]);
        ip(&["-n", netns, "link", "set", "lo", "up"]);
        let gw = host_ip.split('/').next().unwrap().to_owned();
        ip(&["-n", netns, "route", "add", "default", "via", &gw]);
        // A listener inside the namespace, served from a thread of ours.
        let ns = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
        let addr = SocketAddr::new(server_ip.into(), 8080);
        let listener = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            TcpListener::bind(addr).unwrap()
        })
        .join()
        .unwrap();
        std::thread::spawn(move || {
            for c in listener.incoming() {
                let Ok(mut c) = c else { return };
                use std::io::Write;
                let _ = c.write_all(b"hello-from-private\n");
            }
        });
        PrivateServer {
            netns: netns.to_owned(),
            host_link: host_link.to_owned(),
            addr,
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_link])
            .output();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn egress_reaches_private_networks_only_through_the_allow_list() {
    let env = common::Env::new(1750..=1759).await;
    let server = PrivateServer::start(
        "wrenn-tv-egress",
        "wtegress0",
        "10.99.0.2/24",
        Ipv4Addr::new(10, 99, 0, 1),
    );
    // The host reaches the server: the network works.
    std::net::TcpStream::connect_timeout(&server.addr, Duration::from_secs(2)).unwrap();
    let reach = |h| {
        let addr = server.addr;
        async move {
            guest::sh(
                h,
                &format!(
                    "nc -w 3 {} {} </dev/null; echo rc=$?",
                    addr.ip(),
                    addr.port()
                ),
            )
            .await
        }
    };
    let internet = wrenn_vmm::SandboxSpec {
        internet: true,
        ..env.spec("hosegr1")
    };
    let plain = env.up(internet.clone()).await;
    let out = reach(&plain).await;
    assert!(
        !out.stdout.contains("hello-from-private"),
        "a private address was reached: {out:?}"
    );
    let allowed = env
        .up(wrenn_vmm::SandboxSpec {
            allow_out: vec!["10.99.0.0/24".parse().unwrap()],
            ..wrenn_vmm::SandboxSpec {
                id: "hosegr2".parse().unwrap(),
                ..internet.clone()
            }
        })
        .await;
    let out = reach(&allowed).await;
    assert!(
        out.stdout.contains("hello-from-private"),
        "the allow list did not open it: {out:?}"
    );
    // Deny wins over allow; without internet, the allow list alone opens it.
    let denied = env
        .up(wrenn_vmm::SandboxSpec {
            allow_out: vec!["10.99.0.0/24".parse().unwrap()],
            deny_out: vec!["10.99.0.1/32".parse().unwrap()],
            ..wrenn_vmm::SandboxSpec {
                id: "hosegr3".parse().unwrap(),
                ..internet.clone()
            }
        })
        .await;
    let out = reach(&denied).await;
    assert!(
        !out.stdout.contains("hello-from-private"),
        "the deny list did not win: {out:?}"
    );
    let offline = env
        .up(wrenn_vmm::SandboxSpec {
            internet: false,
            allow_out: vec!["10.99.0.0/24".parse().unwrap()],
            ..env.spec("hosegr4")
        })
        .await;
    let out = reach(&offline).await;
    assert!(out.stdout.contains("hello-from-private"), "{out:?}");
    // The lists go with their sandbox.
    for id in ["hosegr2", "hosegr3"] {
        env.runtime.destroy(&id.parse().unwrap()).await.unwrap();
    }
    let again = env
        .up(wrenn_vmm::SandboxSpec {
            id: "hosegr5".parse().unwrap(),
            ..internet.clone()
        })
        .await;
    let out = reach(&again).await;
    assert!(
        !out.stdout.contains("hello-from-private"),
        "a destroyed sandbox's allow list lives on: {out:?}"
    );
    env.finish().await;
    drop(server);
    leftovers::assert_clean("hosegr", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn a_spec_over_the_size_cap_is_refused_and_creates_nothing() {
    let env = common::Env::new(1760..=1769).await;
    let mut spec = env.spec("hosbig");
    // Each value within its own limit, together over the 64 KiB cap.
    for i in 0..3 {
        spec.env.insert(format!("BIG{i}"), "x".repeat(30 * 1024));
    }
    let e = env.runtime.create(spec).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("65536") && msg.contains("bytes"), "{msg}");
    let mut spec = env.spec("hosbig2");
    spec.allow_out = vec!["10.210.0.0/16".parse().unwrap()];
    let e = env.runtime.create(spec).await.unwrap_err();
    assert!(e.to_string().contains("sandbox network"), "{e}");
    assert!(env.runtime.list().is_empty());
    env.finish().await;
    leftovers::assert_clean("hosbig", env.path(), &env.slots()).await;
}
