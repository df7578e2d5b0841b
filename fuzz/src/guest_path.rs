//! Target `guest_path`: the guest agent's check of every path an RPC names
//! (`paths::absolute` in `agent/guest/src/paths.rs`: files, directories,
//! a process's working directory).
//!
//! The guest agent is a binary crate with no library to depend on, so its
//! `paths.rs` (no dependencies beyond `thiserror` and `tonic::Status`) is
//! compiled into this crate as it is. A library target for the guest would
//! have changed how the guest builds for one file of pure code.
//!
//! Input: the path, as the RPC's string field (skipped when not UTF-8,
//! which protobuf strings are not allowed to be).
//!
//! Checks, against a model that splits at `/`:
//! - empty, NUL, relative and `..` paths are refused, in that order of
//!   precedence, and the error names the field and the path as sent;
//! - anything else becomes `/` and its non-empty, non-`.` components,
//!   which checks again to itself, and is the root only when it is `/`.

use std::path::PathBuf;

// The whole file is compiled; this target calls only part of it.
#[allow(dead_code)]
#[path = "../../agent/guest/src/paths.rs"]
mod paths;

use paths::PathError;

const FIELD: &str = "path";

pub fn guest_path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let got = paths::absolute(FIELD, raw);
    assert_eq!(got, model(raw), "{raw:?}");
    if let Ok(p) = got {
        let text = p.to_str().expect("UTF-8 in, UTF-8 out");
        assert_eq!(paths::absolute(FIELD, text).as_ref(), Ok(&p), "{raw:?}");
        assert_eq!(paths::is_root(&p), text == "/", "{raw:?}");
    }
}

fn model(raw: &str) -> Result<PathBuf, PathError> {
    let field = FIELD;
    let path = raw.to_owned();
    if raw.is_empty() {
        return Err(PathError::Empty { field });
    }
    if raw.contains('\0') {
        return Err(PathError::Nul { field, path });
    }
    if !raw.starts_with('/') {
        return Err(PathError::Relative { field, path });
    }
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(PathError::ParentDir { field, path });
    }
    Ok(PathBuf::from(format!("/{}", parts.join("/"))))
}
