//! What a test may leave behind, found from outside berthd: mounts, processes, temp files.

use std::path::{Path, PathBuf};

/// Everything found left behind under one berthd's temp dir.
#[derive(Debug, Default)]
pub struct Leaks {
    /// Mount points under the temp dir.
    pub mounts: Vec<PathBuf>,
    /// `(pid, command line)` of live processes that are berthd or name the temp dir.
    pub processes: Vec<(i32, String)>,
    /// Temp files of interrupted writes in the content or snapshot store.
    pub temp_files: Vec<PathBuf>,
    /// Pinned namespaces (nsfs bind mounts) under the temp dir; also listed in `mounts`.
    pub ns_mounts: Vec<PathBuf>,
    /// Cgroups below the test's own cgroup root, in any v1 hierarchy or in v2.
    pub cgroups: Vec<PathBuf>,
}

impl Leaks {
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
            && self.processes.is_empty()
            && self.temp_files.is_empty()
            && self.ns_mounts.is_empty()
            && self.cgroups.is_empty()
    }
}

/// Looks for leftovers of the berthd whose files live in `base` (root at `root`).
/// `berthd_pid` is the harness's child, if it still runs.
pub fn check(base: &Path, root: &Path, berthd_pid: Option<u32>) -> Leaks {
    let mut processes = processes_naming(base);
    if let Some(pid) = berthd_pid {
        let pid = pid as i32;
        if !processes.iter().any(|(p, _)| *p == pid) {
            processes.push((pid, "berthd (still running)".to_string()));
        }
    }
    Leaks {
        mounts: mounts_under(base),
        processes,
        temp_files: temp_leftovers(root),
        ns_mounts: ns_mounts_under(base),
        cgroups: Vec::new(),
    }
}

/// Leftovers of pods and containers while berthd still runs: every mount and pinned
/// namespace under `base`, every process naming `base` other than berthd itself (shims
/// name their state dir on their command line), and every cgroup below `cgroup_root`.
pub fn check_runtime(base: &Path, cgroup_root: &str, berthd_pid: Option<u32>) -> Leaks {
    let berthd_pid = berthd_pid.map(|pid| pid as i32);
    let processes = processes_naming(base).into_iter().filter(|(pid, _)| Some(*pid) != berthd_pid).collect();
    Leaks {
        mounts: mounts_under(base),
        processes,
        temp_files: Vec::new(),
        ns_mounts: ns_mounts_under(base),
        cgroups: cgroups_below(cgroup_root),
    }
}

/// One line of `/proc/self/mountinfo`: where it is mounted, the root of the mounted
/// filesystem it shows, and the filesystem type.
struct MountEntry {
    root: String,
    mount_point: PathBuf,
    fs_type: String,
}

fn mount_entries() -> Vec<MountEntry> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mountinfo
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            // Optional fields end with "-"; the filesystem type follows it.
            let separator = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                root: unescape_mountinfo(fields.get(3)?),
                mount_point: PathBuf::from(unescape_mountinfo(fields.get(4)?)),
                fs_type: fields.get(separator + 1)?.to_string(),
            })
        })
        .collect()
}

/// nsfs mounts (pinned namespaces) at or under `dir`.
pub fn ns_mounts_under(dir: &Path) -> Vec<PathBuf> {
    mount_entries()
        .into_iter()
        .filter(|m| m.fs_type == "nsfs" && m.mount_point.starts_with(dir))
        .map(|m| m.mount_point)
        .collect()
}

/// The directory of cgroup `cgroup_path` (like `/berth-test-1a2b`) in every mounted cgroup
/// hierarchy, v1 and v2, that shows the cgroup root (on this host: one per v1 controller
/// group plus the unified one; in the v2 guest: `/sys/fs/cgroup` alone). Hierarchies
/// mounted more than once are listed once.
pub fn cgroup_dirs(cgroup_path: &str) -> Vec<PathBuf> {
    let relative = cgroup_path.trim_start_matches('/');
    let mut dirs: Vec<PathBuf> = mount_entries()
        .into_iter()
        .filter(|m| (m.fs_type == "cgroup" || m.fs_type == "cgroup2") && m.root == "/")
        .map(|m| m.mount_point.join(relative))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Every cgroup strictly below `cgroup_root`, in every hierarchy, deepest first.
pub fn cgroups_below(cgroup_root: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for dir in cgroup_dirs(cgroup_root) {
        collect_child_cgroups(&dir, &mut found);
    }
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found
}

fn collect_child_cgroups(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let path = entry.path();
            collect_child_cgroups(&path, found);
            found.push(path);
        }
    }
}

/// Removes the test's cgroup root and everything below it in every hierarchy: SIGKILLs the
/// processes in them (they can only be the test's containers: the root's name is unique to
/// the test), then removes the directories deepest first. Returns what could not be removed.
pub fn remove_cgroup_tree(cgroup_root: &str, patience: std::time::Duration) -> Vec<PathBuf> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let mut dirs = cgroups_below(cgroup_root);
        dirs.extend(cgroup_dirs(cgroup_root).into_iter().filter(|d| d.is_dir()));
        if dirs.is_empty() {
            return dirs;
        }
        for dir in &dirs {
            // A frozen cgroup's processes cannot die; thaw it first (v1 freezer, v2 freeze).
            let _ = std::fs::write(dir.join("freezer.state"), "THAWED");
            let _ = std::fs::write(dir.join("cgroup.freeze"), "0");
            for pid in cgroup_pids(dir) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let mut left = Vec::new();
        for dir in dirs {
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                left.push(dir);
            }
        }
        if left.is_empty() || std::time::Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The processes in the cgroup at `dir` (`cgroup.procs`).
pub fn cgroup_pids(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs the processes (other than `except`) whose command line mentions `dir`: the
/// shims of a berthd whose state dir is `dir`. Returns what was killed.
pub fn kill_processes_naming(dir: &Path, except: Option<u32>) -> Vec<(i32, String)> {
    let except = except.map(|pid| pid as i32);
    let victims: Vec<(i32, String)> = processes_naming(dir).into_iter().filter(|(pid, _)| Some(*pid) != except).collect();
    for (pid, _) in &victims {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGKILL);
    }
    victims
}

/// Mount points at or under `dir`, from `/proc/self/mountinfo`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount_point| mount_point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Lazily unmounts everything under `dir`, deepest first, repeating for stacked mounts.
/// Returns the mount points that are still there afterwards.
pub fn unmount_all_under(dir: &Path) -> Vec<PathBuf> {
    for _ in 0..16 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return mounts;
        }
        for mount in mounts {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(dir)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Live processes (other than this one) whose command line mentions `dir`: berthd itself,
/// and anything it started with a path under its root or state.
pub fn processes_naming(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me || is_zombie(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push((pid, cmdline.trim_end().to_string()));
        }
    }
    found
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// Temp files of interrupted writes: anything in `content/ingest`, any `.tmp-*` (or other
/// dot-named) entry directly under `snapshots/`, and any file in the content store whose
/// name is not a hex digest (a blob still under its temp name).
pub fn temp_leftovers(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    found.extend(children(&root.join("content").join("ingest")));
    for entry in children(&root.join("snapshots")) {
        if is_temp_name(&entry) {
            found.push(entry);
        }
    }
    // Per-algorithm snapshot dirs (`snapshots/sha256/<hex>`) are checked the same way.
    for entry in children(&root.join("snapshots").join("sha256")) {
        if is_temp_name(&entry) {
            found.push(entry);
        }
    }
    let blobs = root.join("content").join("blobs");
    for algorithm_dir in children(&blobs) {
        for blob in children(&algorithm_dir) {
            let name = blob.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if !is_hex_digest(&name) {
                found.push(blob);
            }
        }
    }
    found
}

fn is_temp_name(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.starts_with('.') || name.contains("tmp") || name.contains("partial") || name.contains("ingest")
}

fn is_hex_digest(name: &str) -> bool {
    name.len() >= 32 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Entries of `dir`, or none if it does not exist.
pub fn children(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b\134c"), r"/tmp/a b\c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/end\04"), r"/end\04");
    }

    #[test]
    fn cgroup_dirs_cover_every_mounted_hierarchy() {
        let dirs = cgroup_dirs("/berth-test-unit");
        assert!(!dirs.is_empty(), "no cgroup hierarchy found in /proc/self/mountinfo");
        assert!(dirs.iter().all(|d| d.ends_with("berth-test-unit") && d.starts_with("/sys/fs/cgroup")), "{dirs:?}");
        assert!(cgroups_below("/berth-test-unit").is_empty());
    }

    #[test]
    fn temp_names_are_recognised() {
        assert!(is_temp_name(Path::new("/r/snapshots/.tmp-123")));
        assert!(is_temp_name(Path::new("/r/snapshots/abc.partial")));
        assert!(!is_temp_name(Path::new("/r/snapshots/0123abcd")));
        assert!(is_hex_digest(&"ab".repeat(32)));
        assert!(!is_hex_digest("sha256-xyz.tmp"));
    }
}
