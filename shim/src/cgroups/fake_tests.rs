//! Manager logic on fake roots (temp dirs): which files get which values, without root.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};

use super::{CgroupRoot, CgroupVersion};

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn full_resources() -> LinuxResources {
    LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(1024u64)
                .quota(50_000i64)
                .period(100_000u64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 << 20)
                .swap(96 << 20)
                .reservation(32 << 20)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(42).build().unwrap())
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4 << 21)
            .build()
            .unwrap()])
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .throttle_read_bps_device(vec![LinuxThrottleDeviceBuilder::default()
                    .major(8)
                    .minor(0)
                    .rate(1_000_000u64)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
        )
        .devices(vec![
            LinuxDeviceCgroupBuilder::default()
                .allow(false)
                .access("rwm")
                .build()
                .unwrap(),
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rwm")
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap()
}

#[test]
fn v2_create_enables_controllers_and_apply_writes_v2_values() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path();
    fs::write(
        base.join("cgroup.controllers"),
        "cpuset cpu io memory hugetlb pids rdma\n",
    )
    .unwrap();
    fs::write(
        base.join("cgroup.subtree_control"),
        "cpu memory io hugetlb pids\n",
    )
    .unwrap();
    let root = CgroupRoot::fake(base, CgroupVersion::V2);
    let m = root.manager("/berth/pod-1/c1").unwrap();
    assert!(!m.exists());
    m.create().unwrap();
    assert!(m.exists());
    // Only the one that was offered and missing got enabled.
    assert_eq!(read(&base.join("cgroup.subtree_control")), "+cpuset");
    fs::write(
        base.join("cgroup.subtree_control"),
        "cpuset cpu memory io hugetlb pids\n",
    )
    .unwrap();
    m.create().unwrap();
    assert_eq!(
        read(&base.join("cgroup.subtree_control")),
        "cpuset cpu memory io hugetlb pids\n"
    );

    let mut r = full_resources();
    r.set_unified(Some(
        [("memory.high".to_string(), "50000000".to_string())].into(),
    ));
    m.apply(&r).unwrap();
    let dir = base.join("berth/pod-1/c1");
    assert_eq!(read(&dir.join("cpu.weight")), "39");
    assert_eq!(read(&dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(&dir.join("cpuset.cpus")), "0");
    assert_eq!(read(&dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(
        read(&dir.join("memory.swap.max")),
        (32u64 << 20).to_string()
    );
    assert_eq!(read(&dir.join("memory.low")), (32u64 << 20).to_string());
    assert_eq!(read(&dir.join("memory.high")), "50000000");
    assert_eq!(read(&dir.join("pids.max")), "42");
    assert_eq!(read(&dir.join("hugetlb.2MB.max")), (8u64 << 20).to_string());
    assert_eq!(read(&dir.join("io.weight")), "default 4950");
    assert_eq!(read(&dir.join("io.max")), "8:0 rbps=1000000");

    let mut bad = LinuxResources::default();
    bad.set_unified(Some([("../escape".to_string(), "1".to_string())].into()));
    assert!(m.apply(&bad).is_err());
    assert!(!base.join("berth/pod-1/escape").exists());
}

#[test]
fn v2_counters_and_procs_come_from_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = CgroupRoot::fake(tmp.path(), CgroupVersion::V2);
    let m = root.manager("pod/c").unwrap();
    m.create().unwrap();
    let dir = tmp.path().join("pod/c");
    fs::write(
        dir.join("memory.events"),
        "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\n",
    )
    .unwrap();
    fs::write(dir.join("memory.current"), "4096\n").unwrap();
    fs::write(dir.join("memory.stat"), "anon 3000\ninactive_file 1000\n").unwrap();
    fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
    m.add_task(Pid::from_raw(4242)).unwrap();
    assert_eq!(m.procs().unwrap(), vec![Pid::from_raw(4242)]);
    assert_eq!(m.oom_kill_count().unwrap(), 2);
    let stats = m.stats().unwrap();
    assert_eq!(stats.memory_usage_bytes, Some(4096));
    assert_eq!(stats.memory_working_set_bytes, Some(3096));
    assert_eq!(stats.cpu_usage_ns, Some(1_500_000));
    assert_eq!(stats.pids_current, None);
}

#[test]
fn kill_all_signals_the_listed_processes_and_destroy_is_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let root = CgroupRoot::fake(tmp.path(), CgroupVersion::V2);
    let m = root.manager("/pod/c").unwrap();
    m.create().unwrap();
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    // A nested cgroup: kill_all covers the subtree.
    let nested = tmp.path().join("pod/c/inner");
    fs::create_dir(&nested).unwrap();
    fs::write(nested.join("cgroup.procs"), format!("{pid}\n")).unwrap();
    m.kill_all(Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    fs::write(nested.join("cgroup.procs"), "").unwrap();
    m.destroy().unwrap();
    assert!(!m.exists());
    m.destroy().unwrap();
}

/// A fake v1 root: each controller a directory (cpuacct a symlink to cpu, as when co-mounted),
/// the cpuset root with cpus and mems.
fn fake_v1() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for c in [
        "cpu", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "unified", "systemd",
    ] {
        fs::create_dir(tmp.path().join(c)).unwrap();
    }
    symlink(tmp.path().join("cpu"), tmp.path().join("cpuacct")).unwrap();
    fs::write(tmp.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
    fs::write(tmp.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
    tmp
}

#[test]
fn v1_create_copies_cpusets_into_new_levels_only() {
    let tmp = fake_v1();
    let base = tmp.path();
    // /kube exists already with its own (narrower) cpuset: it must stay untouched.
    fs::create_dir(base.join("cpuset/kube")).unwrap();
    fs::write(base.join("cpuset/kube/cpuset.cpus"), "1\n").unwrap();
    fs::write(base.join("cpuset/kube/cpuset.mems"), "0\n").unwrap();
    let root = CgroupRoot::fake(base, CgroupVersion::V1);
    let m = root.manager("/kube/pod/c").unwrap();
    m.create().unwrap();
    for c in [
        "cpu", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        assert!(base.join(c).join("kube/pod/c").is_dir(), "{c}");
    }
    assert!(!base.join("unified/kube").exists());
    assert!(!base.join("systemd/kube").exists());
    assert_eq!(read(&base.join("cpuset/kube/cpuset.cpus")), "1\n");
    assert_eq!(read(&base.join("cpuset/kube/pod/cpuset.cpus")), "1");
    assert_eq!(read(&base.join("cpuset/kube/pod/c/cpuset.cpus")), "1");
    assert_eq!(read(&base.join("cpuset/kube/pod/c/cpuset.mems")), "0");
}

#[test]
fn v1_apply_writes_v1_values() {
    let tmp = fake_v1();
    let base = tmp.path();
    let root = CgroupRoot::fake(base, CgroupVersion::V1);
    let m = root.manager("berth/c").unwrap();
    m.create().unwrap();
    // Optional files exist on this "kernel".
    fs::write(base.join("blkio/berth/c/blkio.weight"), "").unwrap();
    m.apply(&full_resources()).unwrap();
    let d = |c: &str, f: &str| read(&base.join(c).join("berth/c").join(f));
    assert_eq!(d("cpu", "cpu.shares"), "1024");
    assert_eq!(d("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(d("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(d("cpuset", "cpuset.cpus"), "0");
    assert_eq!(
        d("memory", "memory.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        d("memory", "memory.memsw.limit_in_bytes"),
        (96u64 << 20).to_string()
    );
    assert_eq!(
        d("memory", "memory.soft_limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(d("pids", "pids.max"), "42");
    assert_eq!(d("blkio", "blkio.weight"), "500");
    assert_eq!(d("blkio", "blkio.throttle.read_bps_device"), "8:0 1000000");
    // Fake files keep only the last write: the allow rule after the deny-all.
    assert_eq!(d("devices", "devices.deny"), "a *:* rwm");
    assert_eq!(d("devices", "devices.allow"), "c 1:3 rwm");
    // hugetlb is not mounted here: skipped, not an error.
    assert!(!base.join("hugetlb").exists());

    let mut unified = LinuxResources::default();
    unified.set_unified(Some([("memory.high".to_string(), "1".to_string())].into()));
    assert!(m.apply(&unified).is_err(), "unified on v1");
}

#[test]
fn v1_procs_are_the_union_and_oom_comes_from_oom_control() {
    let tmp = fake_v1();
    let base = tmp.path();
    let root = CgroupRoot::fake(base, CgroupVersion::V1);
    let m = root.manager("berth/c").unwrap();
    m.create().unwrap();
    m.add_task(Pid::from_raw(10)).unwrap();
    assert_eq!(read(&base.join("pids/berth/c/cgroup.procs")), "10");
    fs::write(base.join("freezer/berth/c/cgroup.procs"), "10\n11\n").unwrap();
    assert_eq!(
        m.procs().unwrap(),
        vec![Pid::from_raw(10), Pid::from_raw(11)]
    );
    fs::write(
        base.join("memory/berth/c/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
    )
    .unwrap();
    assert_eq!(m.oom_kill_count().unwrap(), 3);
    for c in [
        "cpu", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        fs::write(base.join(c).join("berth/c/cgroup.procs"), "").unwrap();
    }
    // An external runtime made the path in the named and unified trees too.
    fs::create_dir_all(base.join("systemd/berth/c")).unwrap();
    fs::create_dir_all(base.join("unified/berth/c")).unwrap();
    m.destroy().unwrap();
    assert!(!m.exists());
    assert!(!base.join("systemd/berth/c").exists());
    assert!(!base.join("unified/berth/c").exists());
    assert!(
        base.join("pids/berth").is_dir(),
        "only the managed cgroup is removed"
    );
}

#[test]
fn ensure_pod_cgroup_reports_whether_it_created() {
    let tmp = tempfile::tempdir().unwrap();
    let root = CgroupRoot::fake(tmp.path(), CgroupVersion::V2);
    fs::create_dir_all(tmp.path().join("kubepods/pod-a")).unwrap();
    assert!(!root.ensure_pod_cgroup("/kubepods/pod-a").unwrap());
    assert!(root.ensure_pod_cgroup("/berth/pod-b").unwrap());
    assert!(!root.ensure_pod_cgroup("/berth/pod-b").unwrap());
}
