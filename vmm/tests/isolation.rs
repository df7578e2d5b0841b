//! Two sandboxes cannot see each other's processes or files, cannot reach
//! each other over the network, and reach the host only on connections the
//! host starts. Also: what a sandbox's root may do (capabilities, read-only
//! /proc and /sys, /dev). Slots 1200–1299.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use common::{guest, leftovers};
use wrenn_vmm::SandboxSpec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn sandboxes_are_isolated_from_each_other_and_from_host_ports() {
    let env = common::Env::new(1200..=1209).await;
    let a = env.up(env.spec("isoa")).await;
    let b = env.up(env.spec("isob")).await;
    // An internet-enabled sandbox is kept from other sandboxes just the same.
    let c = env
        .up(SandboxSpec {
            internet: true,
            ..env.spec("isoc")
        })
        .await;

    // Processes: B's sleeper is invisible in A; each sees its own guest as PID 1.
    let out = guest::sh(&b, "sleep 300 >/dev/null 2>&1 & echo started").await;
    assert_eq!(out.stdout.trim(), "started", "{out:?}");
    let ps_b = guest::sh(&b, "ps -o comm").await.stdout;
    assert!(ps_b.contains("sleep"), "{ps_b}");
    let ps_a = guest::sh(&a, "ps -o pid,comm").await.stdout;
    assert!(!ps_a.contains("sleep"), "A sees B's process: {ps_a}");
    assert!(ps_a.lines().any(|l| l.trim() == "1 wrenn-guest"), "{ps_a}");
    let pids = guest::sh(&a, "ls /proc | grep -c '^[0-9]'").await.stdout;
    assert!(
        pids.trim().parse::<u32>().unwrap() < 10,
        "A sees {pids} processes"
    );

    // Files: written in A, absent in B; the host's files are not visible.
    assert_eq!(
        guest::sh(&a, "echo s3cret > /root/a.txt && cat /root/a.txt")
            .await
            .stdout,
        "s3cret\n"
    );
    let in_b = guest::sh(&b, "cat /root/a.txt").await;
    assert_ne!(in_b.exit_code, 0, "B reads A's file: {in_b:?}");
    let host_dir = env.path().display().to_string();
    let host = guest::sh(
        &a,
        &format!("test -e {host_dir} || test -e /run/netns/wrenn-tv-1201; echo $?"),
    )
    .await;
    assert_eq!(host.stdout.trim(), "1", "host paths visible: {host:?}");

    // Network: A cannot open B's guest port (which the host can).
    guest::check(b.guest_addr).await.unwrap();
    for (from, name) in [(&a, "A"), (&c, "C (internet)")] {
        let out = guest::sh(
            from,
            &format!("nc -w 3 {} 49983 </dev/null; echo rc=$?", b.address),
        )
        .await;
        assert!(!out.stdout.contains("rc=0"), "{name} reached B: {out:?}");
    }
    let to_c = guest::sh(
        &a,
        &format!("nc -w 3 {} 49983 </dev/null; echo rc=$?", c.address),
    )
    .await;
    assert!(!to_c.stdout.contains("rc=0"), "A reached C: {to_c:?}");

    // Host ports: a listener on every host address is reachable from the host
    // through the sandbox's gateway address, but not from the sandbox.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let gateway = std::net::Ipv4Addr::from(u32::from(a.address) - 1);
    std::net::TcpStream::connect_timeout(
        &SocketAddr::new(gateway.into(), port),
        Duration::from_secs(2),
    )
    .expect("the host reaches its own listener on the gateway address");
    let (_, peer) = listener.accept().expect("the control connection");
    assert!(peer.ip().is_ipv4());
    for (from, name) in [(&a, "A"), (&c, "C (internet)")] {
        let gw = std::net::Ipv4Addr::from(u32::from(from.address) - 1);
        let out = guest::sh(from, &format!("nc -w 3 {gw} {port} </dev/null; echo rc=$?")).await;
        assert!(
            !out.stdout.contains("rc=0"),
            "{name} reached a host port: {out:?}"
        );
        // Refused at once (a TCP reset), not left to time out.
        assert!(out.stderr.contains("refused"), "{name}: {out:?}");
    }
    assert!(
        listener.accept().is_err(),
        "no connection from a sandbox arrived"
    );

    // Host-initiated connections to any sandbox port work (the proxy's path).
    let serving = guest::sh(
        &a,
        "nc -l -p 8080 -e echo hello-from-a >/dev/null 2>&1 & sleep 0.2; echo ok",
    )
    .await;
    assert_eq!(serving.stdout.trim(), "ok");
    let mut got = String::new();
    for _ in 0..50 {
        if let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &SocketAddr::new(a.address.into(), 8080),
            Duration::from_secs(1),
        ) {
            use std::io::Read;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.read_to_string(&mut got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.trim(), "hello-from-a");

    env.finish().await;
    leftovers::assert_clean("iso", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn root_inside_is_bounded() {
    let env = common::Env::new(1210..=1219).await;
    let h = env.up(env.spec("isoroot")).await;
    let run = |s: &'static str| guest::sh(&h, s);

    let want: u64 = wrenn_vmm::namespace::spawn::ALLOWED_CAPS
        .iter()
        .map(|(c, _)| 1u64 << c)
        .sum();
    let caps = run("grep -E '^Cap(Bnd|Eff|Inh)' /proc/1/status; grep CapEff /proc/self/status")
        .await
        .stdout;
    let field = |name: &str| -> Vec<u64> {
        caps.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap())
            .collect()
    };
    assert_eq!(field("CapBnd:"), vec![want], "{caps}");
    assert_eq!(field("CapInh:"), vec![0], "{caps}");
    assert!(field("CapEff:").iter().all(|c| *c == want), "{caps}");

    for (script, what) in [
        ("mknod /tmp/sda b 8 0", "mknod (no CAP_MKNOD)"),
        ("mount -t tmpfs none /mnt", "mount (no CAP_SYS_ADMIN)"),
        (
            "echo 1 > /proc/sys/vm/drop_caches",
            "write /proc/sys (read-only)",
        ),
        ("touch /sys/kernel/x", "write /sys (read-only)"),
        (
            "ip link set lo down",
            "change the network (no CAP_NET_ADMIN)",
        ),
        ("hostname other", "set the hostname (no CAP_SYS_ADMIN)"),
    ] {
        let out = run(script).await;
        assert_ne!(out.exit_code, 0, "{what} succeeded: {out:?}");
    }
    assert_eq!(run("hostname").await.stdout.trim(), "isoroot");
    let dev = run("ls /dev").await.stdout;
    for n in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "fd",
    ] {
        assert!(
            dev.split_whitespace().any(|x| x == n),
            "/dev lacks {n}: {dev}"
        );
    }
    assert_eq!(
        run("head -c 16 /dev/urandom | wc -c").await.stdout.trim(),
        "16"
    );
    let mounts = run("cat /proc/mounts").await.stdout;
    for (point, kind) in [
        ("/ ", "overlay"),
        ("/proc ", "proc"),
        ("/sys ", "sysfs"),
        ("/dev ", "tmpfs"),
        ("/dev/pts ", "devpts"),
        ("/dev/shm ", "tmpfs"),
        ("/tmp ", "tmpfs"),
    ] {
        assert!(
            mounts.lines().any(|l| l
                .split_once(' ')
                .is_some_and(|(_, r)| r.starts_with(point) && r.contains(kind))),
            "no {kind} on {point}: {mounts}"
        );
    }
    // /proc is the sandbox's own; what reaches the kernel is read-only.
    for (path, ro) in [
        ("/proc/sys", " /proc/sys proc ro,"),
        ("/proc/sysrq-trigger", " /proc/sysrq-trigger proc ro,"),
        ("/sys", " /sys sysfs ro,"),
    ] {
        // (Entries this kernel does not have are not there to protect.)
        if std::path::Path::new(path).exists() {
            assert!(mounts.lines().any(|l| l.contains(ro)), "no{ro}: {mounts}");
        }
    }
    assert!(
        mounts
            .lines()
            .any(|l| l.contains("/run/wrenn/wrenn-guest") && l.contains(" ro,")),
        "{mounts}"
    );
    // No nameserver without internet.
    let resolv = run("cat /etc/resolv.conf").await.stdout;
    assert!(
        wrenn_vmm::net::resolv::parse_nameservers(&resolv).is_empty(),
        "{resolv}"
    );
    let hosts = run("cat /etc/hosts").await.stdout;
    assert!(
        hosts.contains(&format!("{}\tisoroot", h.address)),
        "{hosts}"
    );

    env.finish().await;
    leftovers::assert_clean("isoroot", env.path(), &env.slots()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn internet_sandboxes_get_the_hosts_reachable_nameservers() {
    let env = common::Env::new(1220..=1229).await;
    let h = env
        .up(SandboxSpec {
            internet: true,
            ..env.spec("isodns")
        })
        .await;
    let resolv = guest::sh(&h, "cat /etc/resolv.conf").await.stdout;
    let want = wrenn_vmm::net::resolv::host_nameservers();
    let got = wrenn_vmm::net::resolv::parse_nameservers(&resolv);
    assert_eq!(got, want, "{resolv}");
    assert!(got.iter().all(|a| !a.is_loopback()));
    env.finish().await;
    leftovers::assert_clean("isodns", env.path(), &env.slots()).await;
}
