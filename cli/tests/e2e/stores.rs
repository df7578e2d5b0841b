//! The shared platforms: one `wrenn up` with SQLite, one with PostgreSQL
//! (its own database on the `WRENN_TEST_DATABASE_URL` cluster), each started
//! by the first test that asks and stopped — with the check that nothing is
//! left — when the last test holding it ends.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::common::leftovers::{self, Snapshot};
use crate::common::pg::TestDatabase;
use crate::common::{Platform, PlatformOptions, shared};

pub const PREFIX: &str = "wrenn-te";

/// A platform and, for PostgreSQL, its database (dropped after the platform).
pub struct Shared {
    pub platform: Platform,
    _db: Option<TestDatabase>,
}

static SQLITE: Mutex<Weak<Shared>> = Mutex::new(Weak::new());
static POSTGRES: Mutex<Weak<Shared>> = Mutex::new(Weak::new());

pub fn sqlite() -> Arc<Shared> {
    shared(&SQLITE, || Shared {
        platform: Platform::start(PlatformOptions::new(PREFIX, 3000..=3099)),
        _db: None,
    })
}

pub fn postgres() -> Arc<Shared> {
    shared(&POSTGRES, || {
        let db = TestDatabase::create();
        let options = PlatformOptions::new(PREFIX, 3100..=3199).database_url(&db.url);
        let platform = Platform::start(options);
        // The store really is PostgreSQL: no SQLite file appears.
        assert!(
            !platform.dir.join("wrenn.db").exists(),
            "wrenn.db exists although DATABASE_URL points at PostgreSQL"
        );
        Shared {
            platform,
            _db: Some(db),
        }
    })
}

/// A value unique to one test run, for metadata filters on a shared platform.
pub fn unique(what: &str) -> String {
    format!("{what}-{}", wrenn_types::SandboxId::generate())
}

/// The slot a sandbox address belongs to (sandbox end = 10.210.0.0 + 2s + 1).
pub fn slot_of(address: &str) -> u16 {
    let ip: std::net::Ipv4Addr = address
        .parse()
        .unwrap_or_else(|e| panic!("address {address:?}: {e}"));
    let base = u32::from(std::net::Ipv4Addr::new(10, 210, 0, 0));
    let off = u32::from(ip)
        .checked_sub(base + 1)
        .unwrap_or_else(|| panic!("{address} is below the sandbox range"));
    assert_eq!(off % 2, 0, "{address} is not a sandbox end of a /31");
    u16::try_from(off / 2).unwrap()
}

/// What sandbox `id` (at `address`) of the instance with `prefix` and
/// `dir` still holds on the host.
pub fn sandbox_left(prefix: &str, dir: &Path, id: &str, address: &str) -> Snapshot {
    let slot = slot_of(address);
    let mut s = leftovers::take(
        prefix,
        &(slot..=slot),
        dir,
        &BTreeSet::from([id.to_owned()]),
    );
    // Only this sandbox's: the platform's own processes, the firewall table
    // and the other sandboxes' directories and images are not its leftovers.
    s.processes.retain(|p| p.contains("in a sandbox cgroup"));
    s.nft_tables.clear();
    s.sandbox_dirs.retain(|d| d == id);
    s.loops.retain(|l| l.contains(id));
    s.mounts.retain(|m| m.contains(id));
    s
}

/// Polls until sandbox `id` holds nothing on the host; panics with what it holds.
pub fn assert_gone(prefix: &str, dir: &Path, id: &str, address: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = sandbox_left(prefix, dir, id, address);
        if s.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox {id} left behind: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn sandbox_leftovers(p: &Platform, id: &str, address: &str) -> Snapshot {
    sandbox_left(&p.options.prefix, &p.dir, id, address)
}

pub fn assert_sandbox_gone(p: &Platform, id: &str, address: &str) {
    assert_gone(&p.options.prefix, &p.dir, id, address)
}
