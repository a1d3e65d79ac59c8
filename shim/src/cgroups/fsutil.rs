//! Small cgroupfs file helpers shared by the v1 and v2 back ends.
//!
//! cgroupfs files take one value per write(2), so every write is a single `write_all` of a
//! short string on a freshly opened file. On a fake root (unit tests on temp dirs) files are
//! created on write and directories are removed with their contents; on the real cgroupfs a
//! missing file is an error and a cgroup is removed with a bare rmdir.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::error::CgroupError;

/// How files behave under a cgroup root: the real cgroupfs, or a plain directory in tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FsMode {
    Real,
    Fake,
}

pub(crate) fn write_file(mode: FsMode, path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .truncate(mode == FsMode::Fake)
        .create(mode == FsMode::Fake)
        .open(path)
        .map_err(|e| CgroupError::io("open", path, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| CgroupError::io("write", path, e))?;
    tracing::trace!(path = %path.display(), value, "cgroup file written");
    Ok(())
}

pub(crate) fn read_string(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|e| CgroupError::io("read", path, e))
}

/// The value of `key` in a flat keyed file (`key value` lines: memory.events, cpu.stat, ...).
pub(crate) fn keyed_value(content: &str, key: &str) -> Option<u64> {
    content.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            fields.next().and_then(|v| v.parse().ok())
        } else {
            None
        }
    })
}

pub(crate) fn parse_pids(content: &str) -> Vec<Pid> {
    content
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
        .map(Pid::from_raw)
        .collect()
}

/// The pids in `dir/cgroup.procs`; a missing directory has none.
pub(crate) fn procs_of(dir: &Path) -> Result<Vec<Pid>, CgroupError> {
    let file = dir.join("cgroup.procs");
    match fs::read_to_string(&file) {
        Ok(content) => Ok(parse_pids(&content)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        // A cgroup being removed concurrently answers ENODEV.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(Vec::new()),
        Err(e) => Err(CgroupError::io("read", file, e)),
    }
}

/// The cgroup directories below `dir` (children first), without `dir` itself.
pub(crate) fn descendants(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    collect_descendants(dir, &mut out);
    out
}

fn collect_descendants(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let child = entry.path();
            collect_descendants(&child, out);
            out.push(child);
        }
    }
}

/// Every pid in `dir` and the cgroups below it.
pub(crate) fn subtree_procs(dirs: &[PathBuf]) -> Result<BTreeSet<i32>, CgroupError> {
    let mut pids = BTreeSet::new();
    for dir in dirs {
        for cgroup in std::iter::once(dir.clone()).chain(descendants(dir)) {
            pids.extend(procs_of(&cgroup)?.into_iter().map(Pid::as_raw));
        }
    }
    Ok(pids)
}

/// Sends `signal` to each pid; pids that are already gone are fine.
pub(crate) fn signal_pids(pids: &BTreeSet<i32>, signal: Signal) -> Result<(), CgroupError> {
    for &pid in pids {
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(CgroupError::io(
                    "kill",
                    format!("/proc/{pid}"),
                    io::Error::from(e),
                ))
            }
        }
    }
    Ok(())
}

/// Creates `dir` if missing; answers whether this call created it.
pub(crate) fn mkdir(dir: &Path) -> Result<bool, CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => {
            tracing::debug!(dir = %dir.display(), "cgroup created");
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CgroupError::io("mkdir", dir, e)),
    }
}

/// Removes `dir` and every cgroup below it, deepest first. Answers Ok(true) when nothing is
/// left, Ok(false) when the kernel still says busy (processes not yet gone), and an error
/// for anything else. A missing directory is already removed.
pub(crate) fn remove_tree(mode: FsMode, dir: &Path) -> Result<bool, CgroupError> {
    if !dir.exists() {
        return Ok(true);
    }
    if mode == FsMode::Fake {
        return match fs::remove_dir_all(dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(CgroupError::io("remove", dir, e)),
        };
    }
    let mut all_gone = true;
    for cgroup in descendants(dir)
        .into_iter()
        .chain(std::iter::once(dir.to_path_buf()))
    {
        match fs::remove_dir(&cgroup) {
            Ok(()) => tracing::debug!(dir = %cgroup.display(), "cgroup removed"),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => all_gone = false,
            // A parent whose child is still busy.
            Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => all_gone = false,
            Err(e) => return Err(CgroupError::io("rmdir", cgroup, e)),
        }
    }
    Ok(all_gone)
}

/// The destroy loop both back ends share: kill everything, then rmdir until all directories
/// are gone or `timeout` passed. SIGKILL is repeated because processes that forked while the
/// first round went out are not in the first list.
pub(crate) fn kill_and_remove(
    mode: FsMode,
    dirs: &[PathBuf],
    kill_all: &dyn Fn() -> Result<(), CgroupError>,
    timeout: Duration,
) -> Result<(), CgroupError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(2);
    loop {
        let alive = subtree_procs(dirs)?;
        if !alive.is_empty() {
            kill_all()?;
        }
        let mut all_gone = true;
        for dir in dirs {
            all_gone &= remove_tree(mode, dir)?;
        }
        if all_gone {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let left = subtree_procs(dirs).unwrap_or_default();
            return Err(CgroupError::Busy {
                path: dirs.first().cloned().unwrap_or_default(),
                waited_ms: started.elapsed().as_millis() as u64,
                detail: if left.is_empty() {
                    "rmdir keeps answering EBUSY".to_string()
                } else {
                    format!("processes left: {left:?}")
                },
            });
        }
        thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

/// `/a/b/c` -> [`a`, `a/b`, `a/b/c`]: each level from the top, to create them in order.
pub(crate) fn levels(rel: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut acc = PathBuf::new();
    for component in rel.components() {
        acc.push(component);
        out.push(acc.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_value_finds_the_key_only() {
        let events = "low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(1));
        assert_eq!(keyed_value(events, "oom"), Some(2));
        assert_eq!(keyed_value(events, "missing"), None);
    }

    #[test]
    fn pids_parse_skips_blank_lines() {
        assert_eq!(
            parse_pids("12\n\n345\n"),
            vec![Pid::from_raw(12), Pid::from_raw(345)]
        );
    }

    #[test]
    fn levels_are_top_down() {
        assert_eq!(
            levels(Path::new("berth/pod-1/c")),
            vec![
                PathBuf::from("berth"),
                PathBuf::from("berth/pod-1"),
                PathBuf::from("berth/pod-1/c")
            ]
        );
    }

    #[test]
    fn fake_remove_tree_removes_files_and_children() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a");
        fs::create_dir_all(dir.join("b/c")).unwrap();
        fs::write(dir.join("b/cgroup.procs"), "").unwrap();
        assert!(remove_tree(FsMode::Fake, &dir).unwrap());
        assert!(!dir.exists());
        assert!(
            remove_tree(FsMode::Fake, &dir).unwrap(),
            "missing is removed"
        );
    }
}
