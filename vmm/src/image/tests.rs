use std::ffi::OsStr;

use super::*;
use wrenn_types::ByteSize;

#[test]
fn template_names_are_path_safe() {
    for ok in ["base", "busybox", "py3.11", "a_b-c"] {
        validate_name(ok).unwrap();
    }
    for bad in ["", "..", ".hidden", "a/b", "Base", "-x", &"a".repeat(65)] {
        let e = validate_name(bad).unwrap_err().to_string();
        assert!(e.contains("invalid template name"), "{e}");
    }
}

#[test]
fn rootfs_size_accepts_the_documented_forms_and_names_the_variable_otherwise() {
    assert_eq!(parse_rootfs_size(None).unwrap(), DEFAULT_ROOTFS_SIZE);
    assert_eq!(
        parse_rootfs_size(Some(OsStr::new("5G"))).unwrap(),
        ByteSize::gib(5)
    );
    assert_eq!(
        parse_rootfs_size(Some(OsStr::new("512Mi"))).unwrap(),
        ByteSize::mib(512)
    );
    let e = parse_rootfs_size(Some(OsStr::new("5GB")))
        .unwrap_err()
        .to_string();
    assert!(e.contains(ROOTFS_SIZE_ENV), "{e}");
    assert!(
        e.contains("\"5GB\"") && e.contains("5G, 2Gi, 1000M, 512Mi"),
        "{e}"
    );
}

#[test]
fn build_from_dir_makes_an_ext4_image_without_mounting() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::fs::write(src.join("etc/hello"), "hi").unwrap();
    let img = tmp.path().join("out/rootfs.ext4");
    build_from_dir(&src, &img, None).unwrap();
    assert_eq!(
        fs_size(&img).unwrap(),
        std::fs::metadata(&img).unwrap().len()
    );
    assert_eq!(
        fs_size(&img).unwrap(),
        64 << 20,
        "small trees get the 64 MiB minimum"
    );
    // The file is really in the image: debugfs reads it without mounting.
    let out = std::process::Command::new("debugfs")
        .args(["-R", "cat /etc/hello"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi");
    let missing = build_from_dir(&tmp.path().join("nope"), &img, None)
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope"), "{missing}");
}

#[test]
fn sparse_copy_keeps_holes_and_data() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", (32 << 20) + 5).unwrap();
    drop(f);
    let dst = tmp.path().join("b");
    sparse::copy(&src, &dst).unwrap();
    let a = std::fs::read(&src).unwrap();
    let b = std::fs::read(&dst).unwrap();
    assert!(a == b);
    use std::os::unix::fs::MetadataExt;
    let blocks = std::fs::metadata(&dst).unwrap().blocks();
    assert!(
        blocks * 512 < 1 << 20,
        "copy is sparse ({} bytes allocated)",
        blocks * 512
    );
    assert!(sparse::copy(&src, &dst).is_err(), "never overwrites");
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn busybox_template_grow_and_shrink_are_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let img = build_busybox(tmp.path(), BUSYBOX_TEMPLATE).unwrap();
    assert_eq!(img, template_path(tmp.path(), "busybox"));
    assert_eq!(list_templates(tmp.path()), vec!["busybox".to_owned()]);
    // Second build: kept as is.
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    build_busybox(tmp.path(), BUSYBOX_TEMPLATE).unwrap();
    assert_eq!(std::fs::metadata(&img).unwrap().modified().unwrap(), mtime);

    let size = ByteSize::mib(200);
    let grown = ensure_image_sizes_to(tmp.path(), size).unwrap();
    assert!(
        matches!(grown[0].1, ResizeOutcome::Resized { to, .. } if to == size.bytes()),
        "{grown:?}"
    );
    assert_eq!(fs_size(&img).unwrap(), size.bytes());
    assert_eq!(
        ensure_image_sizes_to(tmp.path(), size).unwrap()[0].1,
        ResizeOutcome::Unchanged
    );

    let shrunk = shrink_images(tmp.path()).unwrap();
    let ResizeOutcome::Resized { to, .. } = shrunk[0].1 else {
        panic!("{shrunk:?}");
    };
    assert!(to < 64 << 20, "busybox shrinks below 64 MiB, got {to}");
    assert_eq!(
        std::fs::metadata(&img).unwrap().len(),
        fs_size(&img).unwrap()
    );
    assert_eq!(shrink_image(&img).unwrap(), ResizeOutcome::Unchanged);
    // Still a valid filesystem with busybox in it.
    let out = std::process::Command::new("debugfs")
        .args(["-R", "stat /bin/busybox"])
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Type: regular"),
        "{out:?}"
    );
    // The accounts: wrenn's and E2B's default user, each with its home.
    let debugfs = |cmd: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", cmd])
            .arg(&img)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let passwd = debugfs("cat /etc/passwd");
    assert!(
        passwd.contains("\nuser:x:1001:1001:user:/home/user:/bin/sh\n"),
        "{passwd}"
    );
    assert!(passwd.contains("\nwrenn-user:x:1000:1000:"), "{passwd}");
    assert!(debugfs("cat /etc/group").contains("\nuser:x:1001:\n"));
    let home = debugfs("stat /home/user");
    assert!(
        home.contains("User:  1001") && home.contains("Group:  1001"),
        "{home}"
    );
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn images_in_use_are_skipped() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI runs as root)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let img = build_busybox(tmp.path(), "inuse").unwrap();
    let before = std::fs::metadata(&img).unwrap().len();
    let dev = crate::loopdev::attach(&img, true).unwrap();
    assert!(in_use(&img));
    assert_eq!(shrink_image(&img).unwrap(), ResizeOutcome::SkippedInUse);
    assert_eq!(
        ensure_image_size(&img, ByteSize::gib(1)).unwrap(),
        ResizeOutcome::SkippedInUse
    );
    assert_eq!(std::fs::metadata(&img).unwrap().len(), before);
    drop(dev);
    // Autoclear: closing the only user detaches the device.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while in_use(&img) {
        assert!(
            std::time::Instant::now() < deadline,
            "loop device not released"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
#[ignore = "needs root: scripts/test runs it (cargo test -- --include-ignored)"]
fn flatten_applies_whiteouts_and_opaque_dirs_and_maps_owners() {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, chown, symlink};

    use nix::sys::stat::{Mode, SFlag, mknod};

    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let src = t.join("lower-src");
    for d in ["old", "replaced"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for (f, text) in [
        ("keep", "keep"),
        ("gone", "gone"),
        ("changed", "v1"),
        ("old/a", "a"),
        ("replaced/x", "x"),
    ] {
        fs::write(src.join(f), text).unwrap();
    }
    let lower = t.join("lower.img");
    build_from_dir(&src, &lower, None).unwrap();

    // The upper layer as overlayfs writes it, owned by host ids (100000 + id).
    let up = t.join("upper");
    fs::create_dir_all(up.join("replaced")).unwrap();
    mknod(&up.join("gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
    crate::sys::lsetxattr(&up.join("replaced"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(up.join("replaced/y"), "y").unwrap();
    fs::write(up.join("changed"), "v2").unwrap();
    fs::write(up.join("new"), "new").unwrap();
    fs::set_permissions(up.join("new"), fs::Permissions::from_mode(0o640)).unwrap();
    chown(up.join("new"), Some(101_000), Some(101_000)).unwrap();
    symlink("keep", up.join("link")).unwrap();
    fs::create_dir(up.join("newdir")).unwrap();
    fs::write(up.join("newdir/f"), "f").unwrap();
    chown(up.join("newdir"), Some(100_000), Some(100_000)).unwrap();

    let dest = t.join("images/built/rootfs.ext4");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let size = ByteSize::mib(64);
    let made = flatten(&lower, &up, &dest, size, &|id| id.saturating_sub(100_000)).unwrap();
    assert_eq!(fs_size(&dest).unwrap(), size.bytes());
    assert_eq!(made.bytes, size.bytes());
    assert!(made.shrunk_bytes < size.bytes(), "{made:?}");

    let debugfs = |cmd: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", cmd])
            .arg(&dest)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(debugfs("cat /changed").contains("v2"));
    assert!(debugfs("cat /keep").contains("keep"));
    assert!(debugfs("cat /old/a").contains('a'));
    assert!(
        debugfs("stat /gone").contains("not found"),
        "a whiteout removes"
    );
    let replaced = debugfs("ls /replaced");
    assert!(
        replaced.contains(" y ") || replaced.contains("y\n") || replaced.contains("  y"),
        "{replaced}"
    );
    assert!(
        !replaced.contains(" x "),
        "an opaque directory hides the lower one's files: {replaced}"
    );
    let new = debugfs("stat /new");
    assert!(
        new.contains("User:  1000") && new.contains("Group:  1000"),
        "{new}"
    );
    assert!(new.contains("Mode:  0640"), "{new}");
    assert!(debugfs("stat /link").contains("Fast link dest: \"keep\""));
    assert!(debugfs("stat /newdir").contains("User:     0"));
    assert!(debugfs("cat /newdir/f").contains('f'));

    // Nothing left: no work directory, mount or loop device.
    let leftovers: Vec<_> = fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["rootfs.ext4"], "{leftovers:?}");
    assert!(crate::mounts::mounts_under(t).is_empty());
    assert!(crate::loopdev::backed_by(t).is_empty());
}

#[test]
fn step_templates_live_in_the_step_cache_and_only_hex_keys_count() {
    let dir = Path::new("/w");
    let key = "0123456789abcdef0123456789abcdef";
    assert!(is_step_template(&format!("@{key}")));
    assert_eq!(
        template_path(dir, &format!("@{key}")),
        Path::new("/w/cache/steps").join(key).join(ROOTFS_FILE)
    );
    assert_eq!(
        template_path(dir, "base"),
        Path::new("/w/images/base/rootfs.ext4")
    );
    for bad in [
        "@",
        "@abc",
        "@../../etc",
        "@0123456789ABCDEF",
        "base",
        "@0123456789abcdeg",
    ] {
        assert!(!is_step_template(bad), "{bad}");
    }
    // Not a step: stays under images/ (and fails the name check elsewhere).
    assert!(template_path(dir, "@../x").starts_with("/w/images"));
}
