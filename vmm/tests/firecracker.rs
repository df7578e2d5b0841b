//! The Firecracker backend on this host: the factory explains why it cannot
//! run, the network part (netns, veth, TAP with txqueuelen 5000, NAT) is
//! built and read back for real. Booting a real microVM is selected
//! explicitly, on hosts with a firecracker binary, a usable /dev/kvm and a
//! kernel, and fails (never passes quietly) where one is missing:
//! `WRENN_FIRECRACKER_BIN=… WRENN_KERNEL=… cargo test -p wrenn-vmm --test
//! firecracker -- --ignored boots_a_real_microvm`. This machine's `/dev/kvm`
//! cannot boot a stock kernel, so `scripts/test` does not select it.
//! (The API client is tested against a request-checking server in
//! `src/firecracker/api/tests.rs`.) Slots 1600–1699.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{guest, leftovers};
use wrenn_vmm::firecracker::net::{GUEST_ADDR, NAT_TABLE, TAP_ADDR, list_nat, setup_guest_link};
use wrenn_vmm::net::tap::{TAP_NAME, TAP_TXQUEUELEN};
use wrenn_vmm::net::{Network, link};
use wrenn_vmm::slot::Slot;
use wrenn_vmm::{Backend, Error};

#[test]
fn the_factory_explains_why_firecracker_is_unavailable() {
    let mut cfg = common::config(
        std::path::Path::new("/var/tmp/wrenn-tv/fc-none"),
        1690..=1699,
    );
    cfg.backend = Backend::Firecracker;
    cfg.firecracker_bin = PathBuf::from("/nonexistent/firecracker");
    cfg.kernel = None;
    let err = wrenn_vmm::build(cfg).err().expect("no firecracker here");
    let text = err.to_string();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                backend: Backend::Firecracker,
                ..
            }
        ),
        "{text}"
    );
    for part in [
        "no firecracker binary at /nonexistent/firecracker",
        "no kernel image configured",
        "use the namespace backend",
    ] {
        assert!(text.contains(part), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
async fn the_microvm_network_is_built_for_real_and_removed() {
    common::require_root();
    let slots = 1600..=1609;
    let dir = common::env_dir(&slots);
    let net = Network::new(common::PREFIX, slots.clone());
    let slot = Slot::new(1600).unwrap();
    let _guard = NetGuard(slot, slots.clone());
    net.firewall().install(&[]).unwrap();
    let opts = wrenn_vmm::net::SlotOptions {
        internet: true,
        ..Default::default()
    };
    let sn = net.setup(slot, &opts).await.unwrap();
    setup_guest_link(&sn).await.unwrap();

    // tap0 inside the netns, its txqueuelen read back over netlink.
    let tap = link::get(&sn.inside, TAP_NAME)
        .await
        .unwrap()
        .expect("tap0 exists in the netns");
    assert_eq!(link::txqueuelen_of(&tap), Some(TAP_TXQUEUELEN));
    assert_eq!(TAP_TXQUEUELEN, 5000);
    assert!(
        link::get(net.root().await.unwrap(), TAP_NAME)
            .await
            .unwrap()
            .is_none(),
        "tap0 is not in the root netns"
    );
    let ns = net.netns_name(slot);
    let addr = Command::new("ip")
        .args(["-n", &ns, "-o", "addr", "show", TAP_NAME])
        .output()
        .unwrap();
    let addr = String::from_utf8_lossy(&addr.stdout);
    assert!(addr.contains(&format!("{TAP_ADDR}/30")), "{addr}");
    let fwd = Command::new("ip")
        .args(["netns", "exec", &ns, "cat", "/proc/sys/net/ipv4/ip_forward"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");

    // DNAT of the host-reachable address to the guest, SNAT back.
    let rules = list_nat(&sn.netns).await.unwrap();
    assert!(rules.contains(&format!("table ip {NAT_TABLE}")), "{rules}");
    assert!(
        rules.contains(&format!(
            "ip daddr {} dnat to {GUEST_ADDR}",
            slot.sandbox_addr()
        )),
        "{rules}"
    );
    assert!(
        rules.contains(&format!(
            "ip saddr {GUEST_ADDR} snat to {}",
            slot.sandbox_addr()
        )),
        "{rules}"
    );
    assert_eq!(net.internet_of(slot).await.unwrap(), Some(true));

    // Teardown takes the netns (and tap0 and the NAT table with it) and the veth.
    drop(sn);
    net.teardown(slot, &opts.egress(slot)).await.unwrap();
    net.firewall().remove().unwrap();
    leftovers::assert_clean("fcnet", &dir, &slots).await;
}

/// Removes the slot's network and the firewall table however the test ends.
struct NetGuard(Slot, std::ops::RangeInclusive<u16>);

impl Drop for NetGuard {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet(&["link", "del", &self.0.host_iface()]);
        quiet(&["netns", "del", &self.0.netns_name(common::PREFIX)]);
        let fw = wrenn_vmm::net::Firewall::new(common::PREFIX, &self.1);
        let _ = fw.remove();
    }
}

/// Why a real microVM cannot be booted here (`None`: it can).
fn vm_skip_reason() -> Option<String> {
    let (Some(bin), Some(kernel)) = (
        std::env::var_os("WRENN_FIRECRACKER_BIN"),
        std::env::var_os("WRENN_KERNEL"),
    ) else {
        return Some("WRENN_FIRECRACKER_BIN and WRENN_KERNEL are not both set".into());
    };
    wrenn_vmm::firecracker::unavailable_reason(
        PathBuf::from(bin).as_path(),
        Some(PathBuf::from(kernel).as_path()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs firecracker, a kernel and a usable /dev/kvm: select it with --ignored"]
async fn boots_a_real_microvm_where_firecracker_and_kvm_are_usable() {
    if let Some(why) = vm_skip_reason() {
        panic!("selected, but no real microVM can boot on this host: {why}");
    }
    let slots = 1610..=1619;
    let mut env_cfg = common::config(&common::env_dir(&slots), slots.clone());
    env_cfg.backend = Backend::Firecracker;
    env_cfg.firecracker_bin = std::env::var_os("WRENN_FIRECRACKER_BIN").unwrap().into();
    env_cfg.kernel = std::env::var_os("WRENN_KERNEL").map(Into::into);
    std::fs::create_dir_all(&env_cfg.dir).unwrap();
    wrenn_vmm::image::build_busybox(&env_cfg.dir, "busybox").unwrap();
    let runtime = wrenn_vmm::build(env_cfg.clone()).unwrap();
    runtime.recover().await.unwrap();
    let mut spec = wrenn_vmm::SandboxSpec::new(common::id("fcvm", 0));
    spec.template = "busybox".into();
    spec.memory_mb = 256;
    spec.disk_mb = 512;
    let h = runtime.create(spec).await.unwrap();
    runtime.start(&h.id).await.unwrap();
    if let Err(e) = guest::wait_healthy(h.guest_addr, Duration::from_secs(60)).await {
        panic!(
            "{e}\n{}",
            runtime.guest_output(&h.id, 8000).unwrap_or_default()
        );
    }
    assert_eq!(guest::sh(&h, "hostname").await.stdout.trim(), "fcvm0");
    runtime.pause(&h.id).await.unwrap();
    runtime.resume(&h.id).await.unwrap();
    guest::check(h.guest_addr).await.unwrap();
    runtime.destroy(&h.id).await.unwrap();
    runtime.shutdown(Duration::from_secs(30)).await.unwrap();
    leftovers::assert_clean("fcvm", &env_cfg.dir, &slots).await;
    std::fs::remove_dir_all(&env_cfg.dir).unwrap();
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn the_microvm_disk_gets_the_guest_and_its_files_without_mounting() {
    let tmp = std::env::temp_dir().join(format!("wrenn-tv-fcdisk-{}", std::process::id()));
    let _cleanup = DirGuard(tmp.clone());
    let template = wrenn_vmm::image::build_busybox(&tmp, "busybox").unwrap();
    let dest = tmp.join("rootfs.ext4");
    let guest_bin = common::guest_bin();
    let files = [
        (
            "/etc/resolv.conf",
            "nameserver 192.0.2.53\n".to_owned(),
            0o644,
        ),
        (
            wrenn_vmm::firecracker::TOKEN_IN_IMAGE,
            "t0ken".to_owned(),
            0o400,
        ),
    ];
    wrenn_vmm::firecracker::disk::prepare(&template, &dest, 200, &guest_bin, &files).unwrap();
    assert_eq!(
        wrenn_vmm::image::fs_size(&dest).unwrap(),
        200 << 20,
        "grown to disk_mb"
    );
    let cat = |path: &str| {
        Command::new("debugfs")
            .args(["-R", &format!("cat {path}")])
            .arg(&dest)
            .output()
            .unwrap()
            .stdout
    };
    assert_eq!(cat("/etc/resolv.conf"), b"nameserver 192.0.2.53\n");
    assert_eq!(cat(wrenn_vmm::firecracker::TOKEN_IN_IMAGE), b"t0ken");
    let token = Command::new("debugfs")
        .args([
            "-R",
            &format!("stat {}", wrenn_vmm::firecracker::TOKEN_IN_IMAGE),
        ])
        .arg(&dest)
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&token.stdout);
    assert!(
        token.contains("Mode:  0400") && token.contains("User:     0"),
        "{token}"
    );
    assert_eq!(
        cat(wrenn_vmm::firecracker::GUEST_IN_IMAGE),
        std::fs::read(&guest_bin).unwrap()
    );
    let stat = Command::new("debugfs")
        .args([
            "-R",
            &format!("stat {}", wrenn_vmm::firecracker::GUEST_IN_IMAGE),
        ])
        .arg(&dest)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&stat.stdout).contains("Mode:  0755"),
        "{stat:?}"
    );
    let slot = Slot::new(1601).unwrap();
    let args = wrenn_vmm::firecracker::boot_args("abc", slot, &Default::default());
    assert!(
        args.contains(&format!(
            "WRENN_GUEST_TOKEN_FILE={} WRENN_GUEST_ALLOW_PEER={}",
            wrenn_vmm::firecracker::TOKEN_IN_IMAGE,
            slot.host_addr()
        )),
        "{args}"
    );
    assert!(
        args.contains("ip=169.254.0.21::169.254.0.22:255.255.255.252:abc:eth0:off"),
        "{args}"
    );
    assert!(args.contains("init=/usr/local/bin/wrenn-guest"), "{args}");
}

struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
