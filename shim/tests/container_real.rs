//! Real containers from the built-in runtime (`berth_shim::container`): needs root and
//! /bin/busybox (busybox-static). Each test builds a busybox rootfs in a temp dir, writes a
//! spec, creates and starts the container from the test process and reads its output
//! through a pipe. Everything a test makes is undone by guards, also when it fails.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command as HostCommand;

use berth_shim::container::{self, ContainerError, CreatedContainer, InitMode, Stdio};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxNamespace, LinuxNamespaceType, LinuxSeccompAction,
    LinuxSeccompBuilder, LinuxSyscallBuilder, Mount, MountBuilder, Spec, User,
};

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "cat", "id", "echo", "hostname", "ls", "mkdir", "sleep", "touch", "wc", "readlink",
    "grep", "head", "true",
];

fn can_run() -> bool {
    if !nix::unistd::geteuid().is_root() || !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: needs root and {BUSYBOX}");
        return false;
    }
    true
}

/// A bundle dir with a busybox rootfs.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new() -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("berth-container-test")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for sub in ["bin", "proc", "dev", "sys", "etc", "tmp"] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        Bundle { dir }
    }

    fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The default spec with this rootfs, a test hostname and `args`.
    fn spec(&self, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap();
        root.set_path(self.rootfs()).set_readonly(Some(false));
        spec.set_root(Some(root));
        spec.set_hostname(Some("berth-test".into()));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        process.set_env(Some(vec!["PATH=/bin".into()]));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_masked_paths(Some(oci_spec::runtime::get_default_maskedpaths()));
        linux.set_readonly_paths(Some(oci_spec::runtime::get_default_readonly_paths()));
        spec.set_linux(Some(linux));
        spec
    }
}

/// Kills and reaps a container process the test did not reap itself.
struct Reaper(Option<Pid>);

impl Reaper {
    fn wait(&mut self) -> WaitStatus {
        let pid = self.0.take().expect("already reaped");
        waitpid(pid, None).unwrap()
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
}

/// Stdio with stdout and stderr into one pipe; returns its read end.
fn captured() -> (Stdio, OwnedFd) {
    let (read, write) = pipe();
    let stderr = write.try_clone().unwrap();
    (
        Stdio {
            stdin: None,
            stdout: write,
            stderr,
        },
        read,
    )
}

fn read_all(fd: OwnedFd) -> String {
    let mut out = String::new();
    std::fs::File::from(fd).read_to_string(&mut out).unwrap();
    out
}

fn no_cgroup(_: Pid) -> Result<(), String> {
    Ok(())
}

fn create(
    spec: &Spec,
    bundle: &Bundle,
    stdio: Stdio,
    mode: InitMode,
) -> Result<(CreatedContainer, Reaper), ContainerError> {
    let created = container::create(spec, bundle.dir.path(), stdio, &mut no_cgroup, mode)?;
    let reaper = Reaper(Some(created.pid()));
    Ok((created, reaper))
}

/// Create, start, collect the output and the exit code.
fn run(spec: &Spec, bundle: &Bundle) -> (String, i32) {
    let (stdio, output) = captured();
    let (created, mut reaper) = create(spec, bundle, stdio, InitMode::Exec).unwrap();
    created.start().unwrap();
    let text = read_all(output);
    let code = match reaper.wait() {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        other => panic!("unexpected wait status {other:?}"),
    };
    (text, code)
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in {status}"))
}

fn caps_mask(caps: &[u32]) -> String {
    format!(
        "{:016x}",
        caps.iter().fold(0u64, |mask, cap| mask | (1 << cap))
    )
}

#[test]
fn output_exit_code_pid_1_and_hostname() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&[
        "sh",
        "-c",
        "echo hello; echo pid=$$; hostname; echo err >&2; exit 3",
    ]);
    let (out, code) = run(&spec, &bundle);
    assert_eq!(out, "hello\npid=1\nberth-test\nerr\n");
    assert_eq!(code, 3);
}

#[test]
fn default_capabilities_no_new_privs_and_no_seccomp() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&["cat", "/proc/self/status"]);
    let (status, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{status}");
    // The spec default: AUDIT_WRITE (29), KILL (5), NET_BIND_SERVICE (10) in every set.
    let want = caps_mask(&[5, 10, 29]);
    for field in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&status, field), want, "{field}");
    }
    assert_eq!(status_field(&status, "NoNewPrivs"), "1");
    assert_eq!(status_field(&status, "Seccomp"), "0");
}

#[test]
fn capabilities_added_and_dropped_and_non_root_user() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["sh", "-c", "id; cat /proc/self/status"]);
    let mut process = spec.process().clone().unwrap();
    let set: oci_spec::runtime::Capabilities = [
        Capability::NetBindService,
        Capability::SysAdmin,
        Capability::Chown,
    ]
    .into_iter()
    .collect();
    let mut caps = LinuxCapabilities::default();
    caps.set_bounding(Some(set.clone()))
        .set_permitted(Some(set.clone()))
        .set_effective(Some(set.clone()))
        .set_inheritable(Some(set.clone()))
        .set_ambient(Some(set));
    process.set_capabilities(Some(caps));
    let mut user = User::default();
    user.set_uid(1000)
        .set_gid(1000)
        .set_additional_gids(Some(vec![10, 20]));
    process.set_user(user);
    process.set_no_new_privileges(Some(false));
    spec.set_process(Some(process));
    let (out, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{out}");
    let id = out.lines().next().unwrap();
    assert!(id.starts_with("uid=1000 gid=1000 groups="), "{id}");
    assert!(
        id.contains("10") && id.contains("20") && !id.contains("groups=0"),
        "{id}"
    );
    let want = caps_mask(&[0, 10, 21]);
    // A non-root user keeps them as ambient capabilities.
    for field in ["CapEff", "CapPrm", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(&out, field), want, "{field}");
    }
    assert_eq!(status_field(&out, "NoNewPrivs"), "0");
}

#[test]
fn seccomp_errno_rule_denies_mkdir() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "grep Seccomp: /proc/self/status; mkdir /tmp/x; echo rc=$?; touch /tmp/y && echo touched",
    ]);
    let profile = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EPERM as u32)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(profile));
    spec.set_linux(Some(linux));
    let (out, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(out.contains("touched"), "{out}");
}

#[test]
fn masked_and_read_only_paths_and_read_only_root() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "echo timer_list=$(cat /proc/timer_list | wc -c); ls /proc/acpi 2>/dev/null | wc -l; echo 1 > /proc/sys/kernel/domainname || echo sys-ro; touch /newfile || echo root-ro; touch /dev/shm/ok && echo shm-rw",
    ]);
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(true));
    spec.set_root(Some(root));
    let (out, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{out}");
    // Masked by a bind of /dev/null: exists, reads empty (no kcore on this host).
    assert!(out.contains("timer_list=0"), "{out}");
    assert!(!out.contains("can't open"), "{out}");
    assert!(out.contains("sys-ro"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.contains("root-ro"), "{out}");
    assert!(out.contains("shm-rw"), "{out}");
    assert!(!bundle.rootfs().join("newfile").exists());
}

fn bind(destination: &str, source: &Path, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .unwrap()
}

#[test]
fn read_only_bind_mount_and_a_missing_source() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("data.txt"), "from the host\n").unwrap();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "cat /data/data.txt; touch /data/new || echo data-ro; echo hi > /rw/file && echo rw-ok",
    ]);
    let rw = tempfile::tempdir().unwrap();
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(bind(
        "/data",
        host.path(),
        &["rbind", "ro", "nosuid", "rprivate"],
    ));
    mounts.push(bind("/rw", rw.path(), &["rbind", "rw"]));
    spec.set_mounts(Some(mounts.clone()));
    let (out, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("from the host\n"), "{out}");
    assert!(out.contains("data-ro"), "{out}");
    assert!(out.contains("rw-ok"), "{out}");
    assert!(!host.path().join("new").exists());
    assert_eq!(
        std::fs::read_to_string(rw.path().join("file")).unwrap(),
        "hi\n"
    );

    mounts.push(bind(
        "/nope",
        Path::new("/nonexistent/berth-test-source"),
        &["rbind"],
    ));
    spec.set_mounts(Some(mounts));
    let (stdio, _output) = captured();
    let err = create(&spec, &bundle, stdio, InitMode::Exec)
        .err()
        .expect("a missing bind source must fail");
    assert_eq!(
        err.to_string(),
        "mount /nope: source /nonexistent/berth-test-source does not exist"
    );
}

/// A network and a UTS namespace pinned by bind mounts (as berthd pins a pod's), removed on drop.
struct PinnedNamespaces {
    dir: tempfile::TempDir,
}

impl PinnedNamespaces {
    fn new(hostname: &str) -> PinnedNamespaces {
        let dir = tempfile::Builder::new()
            .prefix("berth-pinned-ns")
            .tempdir()
            .unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let pinned = PinnedNamespaces { dir };
        // A private mount of its own: nsfs binds are refused on a shared mount.
        sh(&format!("mount --bind {path} {path} && mount --make-private {path} && touch {path}/net {path}/uts"));
        sh(&format!(
            "unshare --net={path}/net --uts={path}/uts hostname {hostname}"
        ));
        pinned
    }

    fn net(&self) -> PathBuf {
        self.dir.path().join("net")
    }

    fn uts(&self) -> PathBuf {
        self.dir.path().join("uts")
    }
}

impl Drop for PinnedNamespaces {
    fn drop(&mut self) {
        let path = self.dir.path().display().to_string();
        let _ = HostCommand::new("sh")
            .arg("-c")
            .arg(format!(
                "umount {path}/net; umount {path}/uts; umount {path}"
            ))
            .status();
    }
}

fn sh(script: &str) {
    let status = HostCommand::new("sh")
        .arg("-c")
        .arg(script)
        .status()
        .unwrap();
    assert!(status.success(), "{script}");
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut ns = LinuxNamespace::default();
    ns.set_typ(typ).set_path(path);
    ns
}

#[test]
fn joins_pinned_network_and_uts_namespaces() {
    if !can_run() {
        return;
    }
    let pinned = PinnedNamespaces::new("pinned-host");
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "hostname; readlink /proc/self/ns/net; cat /proc/net/dev | wc -l",
    ]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_namespaces(Some(vec![
        namespace(LinuxNamespaceType::Pid, None),
        namespace(LinuxNamespaceType::Network, Some(pinned.net())),
        namespace(LinuxNamespaceType::Uts, Some(pinned.uts())),
        namespace(LinuxNamespaceType::Ipc, None),
        namespace(LinuxNamespaceType::Mount, None),
    ]));
    spec.set_linux(Some(linux));
    let (out, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // A joined UTS namespace keeps its hostname (the spec's is for new ones).
    assert_eq!(lines[0], "pinned-host");
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(pinned.net()).unwrap());
    assert_eq!(lines[1], format!("net:[{inode}]"));
    // Two header lines and lo only.
    assert_eq!(lines[2], "3");
}

#[test]
fn missing_binary_fails_at_start() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&["nosuch", "arg"]);
    let (stdio, _output) = captured();
    let (created, mut reaper) = create(&spec, &bundle, stdio, InitMode::Exec).unwrap();
    let pid = created.pid();
    let err = created.start().unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec \"nosuch\": executable file not found in $PATH"
    );
    assert_eq!(reaper.wait(), WaitStatus::Exited(pid, 127));
}

fn test_init() -> ! {
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGCHLD);
    signals.thread_block().unwrap();
    loop {
        if let Ok(Signal::SIGTERM) = signals.wait() {
            // SAFETY: exiting the forked init.
            unsafe { libc::_exit(0) }
        }
    }
}

#[test]
fn builtin_init_exits_on_sigterm() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["berth-init"]);
    let mut root = spec.root().clone().unwrap();
    root.set_path(PathBuf::from("/"));
    spec.set_root(Some(root));
    spec.set_mounts(Some(vec![]));
    let mut linux = spec.linux().clone().unwrap();
    linux
        .set_namespaces(Some(vec![namespace(LinuxNamespaceType::Pid, None)]))
        .set_masked_paths(None)
        .set_readonly_paths(None);
    spec.set_linux(Some(linux));
    let (stdio, _output) = captured();
    let (created, mut reaper) =
        create(&spec, &bundle, stdio, InitMode::Builtin(test_init)).unwrap();
    let pid = created.pid();
    created.start().unwrap();
    // The init is PID 1 of its own namespace.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status_field(&status, "NSpid").ends_with("\t1"), "{status}");
    std::thread::sleep(std::time::Duration::from_millis(50));
    kill(pid, Signal::SIGTERM).unwrap();
    assert_eq!(reaper.wait(), WaitStatus::Exited(pid, 0));
}

#[test]
fn exec_into_a_running_container() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let spec = bundle.spec(&["sleep", "30"]);
    let (stdio, _output) = captured();
    let (created, mut reaper) = create(&spec, &bundle, stdio, InitMode::Exec).unwrap();
    let init = created.pid();
    created.start().unwrap();

    let (stdio, output) = captured();
    let args: Vec<String> = ["sh", "-c", "hostname; cat /proc/1/cmdline | head -c 5; echo; pwd; echo $FOO; grep CapEff /proc/self/status"].iter().map(|s| s.to_string()).collect();
    let env = vec!["PATH=/bin".to_string(), "FOO=bar".to_string()];
    let exec_pid = container::exec_in(
        init,
        &spec,
        &args,
        &env,
        Some("/tmp"),
        stdio,
        &mut no_cgroup,
    )
    .unwrap();
    let mut exec_reaper = Reaper(Some(exec_pid));
    let out = read_all(output);
    assert_eq!(exec_reaper.wait(), WaitStatus::Exited(exec_pid, 0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..4], ["berth-test", "sleep", "/tmp", "bar"], "{out}");
    assert!(lines[4].ends_with(&caps_mask(&[5, 10, 29])), "{out}");

    let (stdio, _output) = captured();
    let err = container::exec_in(
        init,
        &spec,
        &["nosuch".to_string()],
        &env,
        None,
        stdio,
        &mut no_cgroup,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "exec \"nosuch\": executable file not found in $PATH"
    );

    kill(init, Signal::SIGKILL).unwrap();
    assert_eq!(
        reaper.wait(),
        WaitStatus::Signaled(init, Signal::SIGKILL, false)
    );
}

#[test]
fn oom_score_adj_is_clamped_and_sysctls_are_written() {
    if !can_run() {
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "cat /proc/self/oom_score_adj; cat /proc/sys/kernel/shm_rmid_forced",
    ]);
    let mut process = spec.process().clone().unwrap();
    process.set_oom_score_adj(Some(-998));
    spec.set_process(Some(process));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_sysctl(Some(
        [("kernel.shm_rmid_forced".to_string(), "1".to_string())]
            .into_iter()
            .collect(),
    ));
    spec.set_linux(Some(linux));
    let (out, code) = run(&spec, &bundle);
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    let ours: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let got: i32 = lines[0].parse().unwrap();
    assert!(got == -998 || got == ours, "{out}");
    assert_eq!(lines[1], "1");

    let mut process = spec.process().clone().unwrap();
    process.set_oom_score_adj(Some(500));
    spec.set_process(Some(process));
    let (out, _) = run(&spec, &bundle);
    assert!(out.starts_with("500\n"), "{out}");
}
