//! The one error type of the cgroup managers.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroupfs file or directory operation failed.
    #[error("cgroup {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `/sys/fs/cgroup` is neither a cgroup2 mount nor a tmpfs of v1 hierarchies.
    #[error("no usable cgroup filesystem at {}: {reason}", path.display())]
    NoCgroupFs { path: PathBuf, reason: String },
    /// The cgroups path is empty, the root, or climbs out of the hierarchy.
    #[error("invalid cgroups path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    /// A resource value that cannot be expressed (or not on this cgroup version).
    #[error("invalid cgroup resource: {0}")]
    InvalidResource(String),
    /// The bpf(2) device filter could not be built, loaded or attached.
    #[error("cgroup v2 device filter: {op}: {source}{}", log_suffix(verifier_log))]
    Bpf {
        op: &'static str,
        #[source]
        source: io::Error,
        verifier_log: String,
    },
    /// Processes were still in the cgroup (or it could not be removed) when the deadline passed.
    #[error("cgroup {} still busy after {waited_ms} ms: {detail}", path.display())]
    Busy {
        path: PathBuf,
        waited_ms: u64,
        detail: String,
    },
}

fn log_suffix(log: &str) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (verifier: {})", log.trim())
    }
}

impl CgroupError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        CgroupError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the error is a file or directory that does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CgroupError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}
