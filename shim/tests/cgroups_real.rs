//! cgroup managers against the real kernel: whichever version this machine runs (v1 on the
//! development host, v2 in the qemu guest: `hack/vm-test` / `run-in-vm`).
//!
//! Every test works below its own `/berth-test-<random>` cgroup (in every v1 hierarchy), and
//! a drop guard kills its processes and removes that tree also when an assertion fails. No
//! existing cgroup is written to (on v2 the root's subtree_control is only read unless a
//! controller is missing there). Needs root; without it the tests say so and pass.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use berth_shim::cgroups::{self, CgroupManager, CgroupVersion};
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn random_hex() -> String {
    let mut bytes = [0u8; 6];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The directories a cgroups path maps to on this machine (one on v2, one per hierarchy on v1).
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    match cgroups::detect().unwrap() {
        CgroupVersion::V2 => vec![Path::new(cgroups::SYSTEM_CGROUP_ROOT).join(rel)],
        CgroupVersion::V1 => [
            "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
        ]
        .iter()
        .map(|c| Path::new(cgroups::SYSTEM_CGROUP_ROOT).join(c))
        .filter(|d| d.is_dir())
        .map(|d| d.join(rel))
        .collect(),
    }
}

/// One test's cgroup tree and processes; dropping it kills and removes everything.
struct TestTree {
    top: String,
    children: Vec<Child>,
}

impl TestTree {
    fn new() -> TestTree {
        TestTree {
            top: format!("/berth-test-{}", random_hex()),
            children: Vec::new(),
        }
    }

    fn path(&self, sub: &str) -> String {
        format!("{}/{sub}", self.top)
    }

    /// `sh -c "read _ && { <script> }"`: it waits on stdin, so it can be moved into a cgroup
    /// before it does anything.
    fn spawn_gated(&mut self, script: &str, args: &[&str]) -> (Pid, ChildStdin) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ && {{ {script}\n}}"))
            .arg("sh")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        self.children.push(child);
        (pid, stdin)
    }

    fn child(&mut self, pid: Pid) -> &mut Child {
        self.children
            .iter_mut()
            .find(|c| c.id() as i32 == pid.as_raw())
            .unwrap()
    }

    fn wait_exit(&mut self, pid: Pid, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child(pid).try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "pid {pid} still running after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestTree {
    fn drop(&mut self) {
        for child in &mut self.children {
            // Our own children, by pid; already-exited ones answer an error we ignore.
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(top) = cgroups::manager(&self.top) {
            if let Err(e) = top.destroy() {
                eprintln!("cleanup of {} failed: {e}", self.top);
            }
        }
    }
}

fn release(stdin: ChildStdin) {
    let mut stdin = stdin;
    stdin.write_all(b"\n").unwrap();
}

fn assert_gone(path: &str) {
    for dir in cgroup_dirs(path) {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

fn file(manager_path: &str, controller_v1: &str, name: &str) -> String {
    let rel = manager_path.trim_start_matches('/');
    let base = Path::new(cgroups::SYSTEM_CGROUP_ROOT);
    let dir = match cgroups::detect().unwrap() {
        CgroupVersion::V2 => base.join(rel),
        CgroupVersion::V1 => base.join(controller_v1).join(rel),
    };
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn limits_apply_a_process_joins_and_destroy_removes_everything() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let version = cgroups::detect().unwrap();
    let mut tree = TestTree::new();
    let pod_path = tree.path("pod");
    let ctr_path = tree.path("pod/ctr");

    assert!(
        cgroups::ensure_pod_cgroup(&pod_path).unwrap(),
        "a new pod cgroup is ours"
    );
    assert!(
        !cgroups::ensure_pod_cgroup(&pod_path).unwrap(),
        "the second time it existed"
    );
    let ctr = cgroups::manager(&ctr_path).unwrap();
    assert_eq!(ctr.version(), version);
    ctr.create().unwrap();
    assert!(ctr.exists());
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(20_000i64)
                .period(100_000u64)
                .cpus("0")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(20).build().unwrap())
        .build()
        .unwrap();
    ctr.apply(&resources).unwrap();

    let (pid, stdin) = tree.spawn_gated("exec sleep 60", &[]);
    ctr.add_task(pid).unwrap();
    release(stdin);
    assert_eq!(ctr.procs().unwrap(), vec![pid]);
    let proc_cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(proc_cgroup.contains(&ctr_path), "{proc_cgroup}");

    match version {
        CgroupVersion::V2 => {
            assert_eq!(file(&ctr_path, "", "cpu.weight").trim(), "20");
            assert_eq!(file(&ctr_path, "", "cpu.max").trim(), "20000 100000");
            assert_eq!(
                file(&ctr_path, "", "memory.max").trim(),
                (64u64 << 20).to_string()
            );
            assert_eq!(file(&ctr_path, "", "pids.max").trim(), "20");
            assert_eq!(file(&ctr_path, "", "cpuset.cpus").trim(), "0");
        }
        CgroupVersion::V1 => {
            assert_eq!(file(&ctr_path, "cpu", "cpu.shares").trim(), "512");
            assert_eq!(file(&ctr_path, "cpu", "cpu.cfs_quota_us").trim(), "20000");
            assert_eq!(
                file(&ctr_path, "memory", "memory.limit_in_bytes").trim(),
                (64u64 << 20).to_string()
            );
            assert_eq!(file(&ctr_path, "pids", "pids.max").trim(), "20");
            assert_eq!(file(&ctr_path, "cpuset", "cpuset.cpus").trim(), "0");
            // The pod level got the parent's cpus and mems copied in.
            assert!(!file(&pod_path, "cpuset", "cpuset.mems").trim().is_empty());
        }
    }
    let stats = ctr.stats().unwrap();
    assert!(stats.memory_usage_bytes.is_some(), "{stats:?}");
    assert!(stats.cpu_usage_ns.is_some(), "{stats:?}");
    assert_eq!(ctr.oom_kill_count().unwrap(), 0);

    // Destroy while the killed process is still our unreaped child: a zombie must not keep
    // the cgroup busy (the shim destroys before it has reaped everything).
    ctr.destroy().unwrap();
    assert!(!ctr.exists());
    assert_gone(&ctr_path);
    let status = tree.wait_exit(pid, Duration::from_secs(10));
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    ctr.destroy().unwrap();

    let pod = cgroups::manager(&pod_path).unwrap();
    pod.destroy().unwrap();
    assert_gone(&pod_path);
}

#[test]
fn destroy_kills_forked_processes_and_nested_cgroups() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut tree = TestTree::new();
    let pod_path = tree.path("pod");
    let ctr = cgroups::manager(&tree.path("pod/ctr")).unwrap();
    ctr.create().unwrap();
    let (pid, stdin) = tree.spawn_gated("sleep 60 & sleep 60 & wait", &[]);
    ctr.add_task(pid).unwrap();
    release(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    while ctr.procs().unwrap().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "children did not start: {:?}",
            ctr.procs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Destroying the pod removes the container cgroup below it and its processes.
    let pod = cgroups::manager(&pod_path).unwrap();
    pod.destroy().unwrap();
    assert_gone(&pod_path);
    assert_eq!(
        tree.wait_exit(pid, Duration::from_secs(10)).signal(),
        Some(libc::SIGKILL)
    );
}

#[test]
fn an_oom_kill_is_counted() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut tree = TestTree::new();
    let ctr = cgroups::manager(&tree.path("ctr")).unwrap();
    ctr.create().unwrap();
    let limit = 32i64 << 20;
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(limit)
                .swap(limit)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    ctr.apply(&resources).unwrap();
    // tail keeps the endless "line" of /dev/zero in memory until the OOM killer stops it.
    let (pid, stdin) = tree.spawn_gated("exec tail /dev/zero", &[]);
    ctr.add_task(pid).unwrap();
    release(stdin);
    let status = tree.wait_exit(pid, Duration::from_secs(60));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(ctr.oom_kill_count().unwrap() >= 1);
    ctr.destroy().unwrap();
    assert_gone(&tree.path("ctr"));
}

fn device_rule(allow: bool, major: Option<i64>, minor: Option<i64>) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access("rwm");
    if let Some(m) = major {
        b = b.typ(LinuxDeviceType::C).major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().unwrap()
}

fn devices(rules: Vec<LinuxDeviceCgroup>) -> LinuxResources {
    LinuxResourcesBuilder::default()
        .devices(rules)
        .build()
        .unwrap()
}

/// Opens `node` for writing from a fresh process inside the cgroup: Ok, or the shell's error.
fn open_in(tree: &mut TestTree, manager: &dyn CgroupManager, node: &Path) -> Result<(), String> {
    let err_file = node.with_extension("err");
    let (pid, stdin) = tree.spawn_gated(
        "{ echo x > \"$1\"; } 2>\"$2\"",
        &[node.to_str().unwrap(), err_file.to_str().unwrap()],
    );
    manager.add_task(pid).unwrap();
    release(stdin);
    let status = tree.wait_exit(pid, Duration::from_secs(20));
    if status.success() {
        Ok(())
    } else {
        Err(fs::read_to_string(&err_file).unwrap_or_default())
    }
}

/// A directory for device nodes: the first candidate whose filesystem is not mounted nodev
/// (the guest's /tmp is).
fn device_node_dir() -> tempfile::TempDir {
    for candidate in ["/tmp", "/var/tmp", "/run"] {
        let Ok(st) = nix::sys::statvfs::statvfs(candidate) else {
            continue;
        };
        if !st.flags().contains(nix::sys::statvfs::FsFlags::ST_NODEV) {
            return tempfile::Builder::new()
                .prefix("berth-devtest")
                .tempdir_in(candidate)
                .unwrap();
        }
    }
    panic!("no filesystem without nodev for the test device node");
}

fn assert_denied(result: Result<(), String>, what: &str) {
    match result {
        Err(msg) => assert!(msg.contains("Operation not permitted"), "{what}: {msg}"),
        Ok(()) => panic!("{what}: the open worked"),
    }
}

#[test]
fn device_rules_are_enforced_and_replaced() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut tree = TestTree::new();
    // A "/dev/null" of our own (char 1:3) on a filesystem that allows device nodes.
    let nodes = device_node_dir();
    let node = nodes.path().join("null");
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();

    let denied = cgroups::manager(&tree.path("denied")).unwrap();
    denied.create().unwrap();
    denied
        .apply(&devices(vec![
            device_rule(false, None, None),
            device_rule(true, Some(1), Some(5)),
        ]))
        .unwrap();
    assert_denied(
        open_in(&mut tree, denied.as_ref(), &node),
        "char 1:3 must be denied",
    );

    let allowed = cgroups::manager(&tree.path("allowed")).unwrap();
    allowed.create().unwrap();
    allowed
        .apply(&devices(vec![
            device_rule(false, None, None),
            device_rule(true, Some(1), Some(3)),
        ]))
        .unwrap();
    open_in(&mut tree, allowed.as_ref(), &node).expect("char 1:3 must be allowed");

    // Applying again replaces the rules (on v2: the old program is detached, else both would
    // have to allow).
    denied
        .apply(&devices(vec![
            device_rule(false, None, None),
            device_rule(true, Some(1), Some(3)),
        ]))
        .unwrap();
    open_in(&mut tree, denied.as_ref(), &node).expect("the new rules allow 1:3");
    allowed
        .apply(&devices(vec![device_rule(false, None, None)]))
        .unwrap();
    assert_denied(
        open_in(&mut tree, allowed.as_ref(), &node),
        "the new rules deny everything",
    );

    denied.destroy().unwrap();
    allowed.destroy().unwrap();
    assert_gone(&tree.path("denied"));
    assert_gone(&tree.path("allowed"));
}

#[test]
fn paths_outside_the_hierarchy_are_refused() {
    assert!(cgroups::manager("/").is_err());
    assert!(cgroups::manager("/berth/../..").is_err());
}

#[test]
fn memory_limits_can_be_raised_and_lowered() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tree = TestTree::new();
    let path = tree.path("ctr");
    let ctr = cgroups::manager(&path).unwrap();
    ctr.create().unwrap();
    // v1 keeps memsw >= limit at every step, so raising and lowering need opposite orders.
    for mib in [64i64, 256, 32, -1, 48] {
        let bytes = if mib < 0 { -1 } else { mib << 20 };
        let resources = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(bytes)
                    .swap(bytes)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        ctr.apply(&resources)
            .unwrap_or_else(|e| panic!("limit {mib} MiB: {e}"));
        let (got, unlimited) = match cgroups::detect().unwrap() {
            CgroupVersion::V2 => (file(&path, "", "memory.max"), "max"),
            CgroupVersion::V1 => (
                file(&path, "memory", "memory.limit_in_bytes"),
                // v1 shows "unlimited" as the largest page-aligned value.
                "9223372036854771712",
            ),
        };
        if mib < 0 {
            assert_eq!(got.trim(), unlimited);
        } else {
            assert_eq!(got.trim(), bytes.to_string());
        }
    }
    ctr.destroy().unwrap();
    assert_gone(&path);
}

/// On a hybrid v1 host runc also creates the path in the `systemd` and `unified` trees; berth
/// never creates there but removes what it finds, so `--runtime runc` containers leave nothing.
#[test]
fn v1_destroy_also_removes_runc_style_named_and_unified_dirs() {
    if !is_root() || cgroups::detect().unwrap() != CgroupVersion::V1 {
        eprintln!("skipped: needs root on a cgroup v1 host");
        return;
    }
    let tree = TestTree::new();
    let path = tree.path("ctr");
    let ctr = cgroups::manager(&path).unwrap();
    ctr.create().unwrap();
    let base = Path::new(cgroups::SYSTEM_CGROUP_ROOT);
    let extra: Vec<PathBuf> = ["systemd", "unified"]
        .iter()
        .map(|h| base.join(h))
        .filter(|d| d.is_dir())
        .map(|d| d.join(path.trim_start_matches('/')))
        .collect();
    for dir in &extra {
        assert!(!dir.exists(), "berth created {}", dir.display());
        fs::create_dir_all(dir).unwrap();
    }
    ctr.destroy().unwrap();
    assert_gone(&path);
    for dir in &extra {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    // The test's top level there too (TestTree's cleanup only knows its own manager's paths,
    // which now include these).
    cgroups::manager(&tree.top).unwrap().destroy().unwrap();
    for dir in &extra {
        assert!(!dir.parent().unwrap().exists());
    }
}
