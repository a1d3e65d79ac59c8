//! Finds a runtime's shim processes in /proc and reads their memory (PSS from
//! smaps_rollup: a shared page counts once in total over all processes sharing it, so the
//! sum over the shims is what they really cost together).

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Which processes are the runtime's shims.
pub struct ShimSelector {
    /// Executable: a path (compared whole) or a file name (compared with the exe's name).
    pub exe: String,
    /// A string every one of this run's shims has in its command line (socket or state
    /// dir), so shims of other runtimes or runs on the machine are not counted.
    pub cmdline_contains: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessMemory {
    pub pid: u32,
    pub name: String,
    pub pss_kib: u64,
    pub rss_kib: u64,
    /// Processes whose parent is this one (container inits, exec helpers), with their memory.
    #[serde(default)]
    pub children: Vec<ChildMemory>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildMemory {
    pub pid: u32,
    pub name: String,
    pub pss_kib: u64,
}

fn exe_path(pid: u32) -> Option<String> {
    let target = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let target = target.to_string_lossy();
    Some(target.strip_suffix(" (deleted)").unwrap_or(&target).to_string())
}

fn cmdline(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
        .unwrap_or_default()
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm")).map(|s| s.trim().to_string()).unwrap_or_default()
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start past the last ')': state, ppid.
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// `Pss:` and `Rss:` of /proc/<pid>/smaps_rollup in KiB; None when the process is gone.
pub fn read_pss_rss(pid: u32) -> Option<(u64, u64)> {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| -> u64 {
        rollup
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Some((field("Pss:"), field("Rss:")))
}

impl ShimSelector {
    fn matches(&self, pid: u32) -> bool {
        let Some(exe) = exe_path(pid) else { return false };
        let exe_matches = if self.exe.contains('/') {
            exe == self.exe
        } else {
            Path::new(&exe).file_name().is_some_and(|name| name == self.exe.as_str())
        };
        exe_matches && self.cmdline_contains.as_ref().is_none_or(|needle| cmdline(pid).contains(needle.as_str()))
    }
}

/// Every shim of the selector that is not itself the child of a matching process (a shim's
/// fork that has not exec'd yet, or an exec helper, is not another shim), with its memory
/// and that of its children.
pub fn shim_memory(selector: &ShimSelector) -> Vec<ProcessMemory> {
    let pids = all_pids();
    let parents: Vec<(u32, Option<u32>)> = pids.iter().map(|&pid| (pid, parent_pid(pid))).collect();
    let matching: Vec<u32> = pids.iter().copied().filter(|&pid| selector.matches(pid)).collect();
    let mut shims = Vec::new();
    for &pid in &matching {
        let parent = parents.iter().find(|(p, _)| *p == pid).and_then(|(_, parent)| *parent);
        if parent.is_some_and(|parent| matching.contains(&parent)) {
            continue;
        }
        let Some((pss_kib, rss_kib)) = read_pss_rss(pid) else { continue };
        let children = parents
            .iter()
            .filter(|(_, parent)| *parent == Some(pid))
            .filter_map(|&(child, _)| {
                let (pss_kib, _) = read_pss_rss(child)?;
                Some(ChildMemory { pid: child, name: comm(child), pss_kib })
            })
            .collect();
        shims.push(ProcessMemory { pid, name: comm(pid), pss_kib, rss_kib, children });
    }
    shims
}
