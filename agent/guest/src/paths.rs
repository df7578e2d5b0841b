//! Validation of paths received over the wire: absolute, no `..`, no NUL bytes.
//! Every path the agent touches goes through [`absolute`] first, so an error names
//! the request field and the path exactly as the client sent it.

use std::path::{Component, Path, PathBuf};

use tonic::Status;

/// Why a path from a request was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{field}: path is empty")]
    Empty { field: &'static str },
    #[error("{field}: path {path:?} is not absolute")]
    Relative { field: &'static str, path: String },
    #[error("{field}: path {path:?} contains a `..` component")]
    ParentDir { field: &'static str, path: String },
    #[error("{field}: path {path:?} contains a NUL byte")]
    Nul { field: &'static str, path: String },
}

impl From<PathError> for Status {
    fn from(err: PathError) -> Self {
        Status::invalid_argument(err.to_string())
    }
}

/// Checks `raw` (from request field `field`) and returns it normalized: repeated
/// slashes and `.` components removed.
pub fn absolute(field: &'static str, raw: &str) -> Result<PathBuf, PathError> {
    if raw.is_empty() {
        return Err(PathError::Empty { field });
    }
    let owned = || raw.to_owned();
    if raw.contains('\0') {
        return Err(PathError::Nul {
            field,
            path: owned(),
        });
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(PathError::Relative {
            field,
            path: owned(),
        });
    }
    let mut normal = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(PathError::ParentDir {
                    field,
                    path: owned(),
                });
            }
            Component::Normal(part) => normal.push(part),
            Component::Prefix(_) => {
                return Err(PathError::Relative {
                    field,
                    path: owned(),
                });
            }
        }
    }
    Ok(normal)
}

/// True for `/` itself, which no request may remove or move.
pub fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_normalized() {
        assert_eq!(
            absolute("path", "/a//b/./c/").unwrap(),
            PathBuf::from("/a/b/c")
        );
        assert_eq!(absolute("path", "/").unwrap(), PathBuf::from("/"));
        assert!(is_root(&absolute("path", "/./").unwrap()));
        assert!(!is_root(&absolute("path", "/tmp").unwrap()));
    }

    #[test]
    fn bad_paths_name_the_field_and_path() {
        let err = absolute("cwd", "tmp/x").unwrap_err();
        assert_eq!(err.to_string(), r#"cwd: path "tmp/x" is not absolute"#);
        let err = absolute("path", "/tmp/../etc/passwd").unwrap_err();
        assert!(matches!(err, PathError::ParentDir { .. }));
        assert!(err.to_string().contains("/tmp/../etc/passwd"));
        assert_eq!(
            absolute("path", ""),
            Err(PathError::Empty { field: "path" })
        );
        assert!(matches!(
            absolute("path", "/a\0b"),
            Err(PathError::Nul { .. })
        ));
        assert_eq!(Status::from(err).code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert_eq!(
            absolute("path", "/a/..b/c..").unwrap(),
            PathBuf::from("/a/..b/c..")
        );
    }
}
