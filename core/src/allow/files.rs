//! Where file sources may be read: directories (`--file-roots`), compared with the canonical
//! path so neither `..` nor a symbolic link leads out of them, and buckets (`--allowed-buckets`).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;
use url::Url;

#[derive(Debug, Error)]
pub enum FileError {
    #[error(
        "{path} is outside the allowed file roots ({roots}); --file-roots lists the directories \
         file sources may be read from"
    )]
    OutsideRoots { path: String, roots: String },
    #[error(
        "{path} leads to {target} through a symbolic link, outside the allowed file roots \
         ({roots}); --file-roots lists the directories file sources may be read from"
    )]
    LinkOutsideRoots {
        path: String,
        target: String,
        roots: String,
    },
    #[error("bucket {bucket:?} is not an allowed bucket ({allowed}); --allowed-buckets lists them")]
    Bucket { bucket: String, allowed: String },
    #[error("{location} is neither a file:// nor an s3:// location")]
    NotAFileLocation { location: String },
    #[error("cannot look at {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("invalid file root {path}: {reason} (--file-roots takes existing directories)")]
    InvalidRoot { path: String, reason: String },
}

/// Directories files may be read from, canonical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRoots {
    /// Any file this process can read (the `kalla` CLI, run by its user on their own files).
    Any,
    Under(Vec<PathBuf>),
}

impl FileRoots {
    /// `dirs`, each resolved to its canonical path; each must exist.
    pub fn under<P: AsRef<Path>>(dirs: &[P]) -> Result<Self, FileError> {
        dirs.iter()
            .map(|dir| {
                let dir = dir.as_ref();
                std::fs::canonicalize(dir).map_err(|e| FileError::InvalidRoot {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()
            .map(Self::Under)
    }

    /// Whether `path` (a file, or a directory and everything under it) lies under a root once
    /// `..` and links are resolved. Nothing is read, only looked up.
    pub fn check(&self, path: &Path) -> Result<(), FileError> {
        let Self::Under(roots) = self else {
            return Ok(());
        };
        let canonical = canonical_within(path, roots).map_err(|e| unreadable(path, e))?;
        let Some(canonical) = canonical else {
            return Err(FileError::OutsideRoots {
                path: path.display().to_string(),
                roots: self.to_string(),
            });
        };
        if canonical.is_dir() {
            self.check_tree(&canonical, roots)?;
        }
        Ok(())
    }

    /// Every entry under `dir` (links followed, as listings follow them) stays under a root.
    fn check_tree(&self, dir: &Path, roots: &[PathBuf]) -> Result<(), FileError> {
        let entries = std::fs::read_dir(dir).map_err(|e| unreadable(dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| unreadable(dir, e))?.path();
            let Ok(target) = std::fs::canonicalize(&path) else {
                continue; // A dangling link: nothing to read.
            };
            if !roots.iter().any(|root| target.starts_with(root)) {
                return Err(FileError::LinkOutsideRoots {
                    path: path.display().to_string(),
                    target: target.display().to_string(),
                    roots: self.to_string(),
                });
            }
            // Real subdirectories are walked; a link to a directory (which may loop back) is not,
            // and the files it leads to are checked again where tasks open them.
            if target.is_dir() && target == path {
                self.check_tree(&target, roots)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for FileRoots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Under(roots) if roots.is_empty() => f.write_str("none"),
            Self::Under(roots) => {
                let shown: Vec<String> = roots.iter().map(|root| root.display().to_string()).collect();
                f.write_str(&shown.join(", "))
            }
        }
    }
}

/// `path` made canonical (its longest existing prefix resolved, the rest appended, so a file yet
/// to be written can be checked too), if that lies under one of `roots` (canonical themselves).
pub fn canonical_within(path: &Path, roots: &[PathBuf]) -> io::Result<Option<PathBuf>> {
    let canonical = canonical_prefix(path)?;
    Ok(roots
        .iter()
        .any(|root| canonical.starts_with(root))
        .then_some(canonical))
}

fn canonical_prefix(path: &Path) -> io::Result<PathBuf> {
    match std::fs::canonicalize(path) {
        Ok(canonical) => Ok(canonical),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(error);
            };
            Ok(canonical_prefix(parent)?.join(name))
        }
        Err(error) => Err(error),
    }
}

fn unreadable(path: &Path, error: io::Error) -> FileError {
    FileError::Unreadable {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// Buckets files may be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buckets {
    Any,
    Only(Vec<String>),
}

impl Buckets {
    pub fn check(&self, bucket: &str) -> Result<(), FileError> {
        match self {
            Self::Any => Ok(()),
            Self::Only(allowed) if allowed.iter().any(|name| name == bucket) => Ok(()),
            Self::Only(allowed) => Err(FileError::Bucket {
                bucket: bucket.to_string(),
                allowed: if allowed.is_empty() {
                    "none".into()
                } else {
                    allowed.join(", ")
                },
            }),
        }
    }
}

/// Where file sources may be read: local directories and buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccess {
    pub roots: FileRoots,
    pub buckets: Buckets,
}

impl FileAccess {
    /// Any file and any bucket: the `kalla` CLI's, whose user reads their own files.
    pub fn any() -> Self {
        Self {
            roots: FileRoots::Any,
            buckets: Buckets::Any,
        }
    }

    /// Whether the file, directory or bucket prefix at `location` may be read.
    pub fn check(&self, location: &Url) -> Result<(), FileError> {
        match location.scheme() {
            "file" => {
                let path = location
                    .to_file_path()
                    .map_err(|()| FileError::NotAFileLocation {
                        location: location.to_string(),
                    })?;
                self.roots.check(&path)
            }
            "s3" => self.buckets.check(location.host_str().unwrap_or_default()),
            _ => Err(FileError::NotAFileLocation {
                location: location.to_string(),
            }),
        }
    }
}

impl Default for FileAccess {
    fn default() -> Self {
        Self::any()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_url(path: &Path) -> Url {
        Url::from_file_path(path).unwrap()
    }

    #[test]
    fn files_under_a_root_are_read_and_escapes_are_not() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.csv"), "a\n1\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("data.csv"), "a\n1\n").unwrap();
        let access = FileAccess {
            roots: FileRoots::under(&[root.path()]).unwrap(),
            buckets: Buckets::Only(vec![]),
        };
        access.check(&file_url(&root.path().join("data.csv"))).unwrap();
        access.check(&file_url(&root.path().join("not-yet.csv"))).unwrap();

        let direct = access.check(&file_url(&outside.path().join("secret.csv")));
        assert!(
            matches!(direct, Err(FileError::OutsideRoots { .. })),
            "{direct:?}"
        );
        // `..` spelled out in the path (Url resolves it; a path given as text is resolved here).
        let dotted = root
            .path()
            .join("..")
            .join(outside.path().file_name().unwrap())
            .join("secret.csv");
        let error = access.roots.check(&dotted).unwrap_err();
        assert!(matches!(error, FileError::OutsideRoots { .. }), "{error:?}");
        assert!(error.to_string().contains("--file-roots"), "{error}");

        std::os::unix::fs::symlink(outside.path().join("secret.csv"), root.path().join("link.csv")).unwrap();
        let linked = access.check(&file_url(&root.path().join("link.csv")));
        assert!(
            matches!(linked, Err(FileError::OutsideRoots { .. })),
            "{linked:?}"
        );
        // The directory holding that link is refused too: its listing would read through it.
        let listed = access.check(&file_url(root.path()));
        assert!(
            matches!(listed, Err(FileError::LinkOutsideRoots { .. })),
            "{listed:?}"
        );
    }

    #[test]
    fn buckets_are_allowed_by_name() {
        let access = FileAccess {
            roots: FileRoots::Under(vec![]),
            buckets: Buckets::Only(vec!["cache".into()]),
        };
        access
            .check(&Url::parse("s3://cache/x/y.parquet").unwrap())
            .unwrap();
        let error = access
            .check(&Url::parse("s3://other/y.csv").unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("--allowed-buckets"), "{error}");
        let error = access
            .check(&Url::parse("file:///etc/passwd").unwrap())
            .unwrap_err();
        assert!(error.to_string().contains("(none)"), "{error}");
    }
}
