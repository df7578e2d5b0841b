//! A microVM's root disk: a sparse copy of the template image, grown to the
//! sandbox's disk size, with the guest agent and per-sandbox files written in
//! by `debugfs` (no mount).

use std::fs;
use std::path::Path;
use std::process::Command;

use super::{Error, GUEST_IN_IMAGE};
use crate::image;

/// A file written into the image: path in the image, contents, mode (owned
/// by root).
pub type ImageFile = (&'static str, String, u32);

/// Builds `dest` from `template`: copy, grow to `disk_mb` (if larger), write
/// the guest binary and the given files (their directories must exist in
/// the template or be `/etc/wrenn`).
pub fn prepare(
    template: &Path,
    dest: &Path,
    disk_mb: u32,
    guest_bin: &Path,
    files: &[ImageFile],
) -> Result<(), Error> {
    image::sparse::copy(template, dest).map_err(|e| Error::Io {
        step: "copy template image",
        path: dest.to_owned(),
        source: std::io::Error::other(e),
    })?;
    let want = u64::from(disk_mb) << 20;
    let have = fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    if want > have {
        image::ensure_image_size(dest, wrenn_types::ByteSize(want)).map_err(|e| Error::Io {
            step: "grow disk",
            path: dest.to_owned(),
            source: std::io::Error::other(e),
        })?;
    }
    let staging = dest.with_extension("files");
    fs::create_dir_all(&staging).map_err(|source| Error::Io {
        step: "create",
        path: staging.clone(),
        source,
    })?;
    let mut script = format!(
        "mkdir /usr/local\nmkdir /usr/local/bin\nmkdir /etc/wrenn\nrm {GUEST_IN_IMAGE}\nwrite {} {GUEST_IN_IMAGE}\nsif {GUEST_IN_IMAGE} mode 0100755\n",
        guest_bin.display()
    );
    for (i, (path, body, mode)) in files.iter().enumerate() {
        let local = staging.join(i.to_string());
        fs::write(&local, body).map_err(|source| Error::Io {
            step: "write",
            path: local.clone(),
            source,
        })?;
        script.push_str(&format!(
            "rm {path}\nwrite {} {path}\nsif {path} mode 0100{mode:o}\nsif {path} uid 0\nsif {path} gid 0\n",
            local.display()
        ));
    }
    let cmds = staging.join("debugfs.cmds");
    fs::write(&cmds, &script).map_err(|source| Error::Io {
        step: "write",
        path: cmds.clone(),
        source,
    })?;
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(dest)
        .output();
    let _ = fs::remove_dir_all(&staging);
    let out = out.map_err(|source| Error::Io {
        step: "run debugfs (install e2fsprogs)",
        path: dest.to_owned(),
        source,
    })?;
    let check = Command::new("debugfs")
        .arg("-R")
        .arg(format!("stat {GUEST_IN_IMAGE}"))
        .arg(dest)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("Type: regular"))
        .unwrap_or(false);
    if !out.status.success() || !check {
        return Err(Error::Command {
            program: "debugfs",
            path: dest.to_owned(),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}
