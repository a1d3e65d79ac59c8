//! Shared pieces of the monitor tests: a busybox bundle in a temp dir, the built
//! `berth-shim` binary, and a cleanup that runs also when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_shim::client::ShimClient;
use berth_shim::protocol::ExitInfo;
use oci_spec::runtime::{
    LinuxBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, Spec,
};

pub const RUNC: &str = "/usr/sbin/runc";

pub fn shim_binary() -> &'static str {
    env!("CARGO_BIN_EXE_berth-shim")
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A unique name part: pid + clock, hex.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff)
}

pub struct Bundle {
    pub temp: tempfile::TempDir,
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    pub log_path: PathBuf,
    /// `/berth-test-<unique>`: removed at the end with everything below it.
    pub cgroup_parent: String,
    pub cgroups_path: String,
    /// Some(runc) for external-runtime tests.
    pub runtime: Option<String>,
}

impl Bundle {
    /// A busybox rootfs and a spec from oci_spec's defaults running `args`.
    pub fn new(args: &[&str], runtime: Option<&str>) -> Bundle {
        let temp = tempfile::Builder::new()
            .prefix("berth-shim-test")
            .tempdir()
            .unwrap();
        let id = format!("c{}", unique());
        let bundle = temp.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        for dir in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(dir)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "echo", "sleep", "cat", "printf", "true", "false", "ls", "kill", "head", "yes",
            "dd", "tr", "wc",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let cgroup_parent = format!("/berth-test-{}", unique());
        let cgroups_path = format!("{cgroup_parent}/{id}");
        let mut spec = Spec::default();
        let process = ProcessBuilder::default()
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .env(vec!["PATH=/bin".to_string()])
            .cwd("/")
            .terminal(false)
            .build()
            .unwrap();
        spec.set_process(Some(process));
        spec.set_root(Some(
            RootBuilder::default()
                .path(rootfs.clone())
                .readonly(false)
                .build()
                .unwrap(),
        ));
        spec.set_hostname(Some("berth-test".into()));
        let default_linux = spec.linux().clone().unwrap();
        let linux = LinuxBuilder::default()
            .namespaces(default_linux.namespaces().clone().unwrap())
            .masked_paths(default_linux.masked_paths().clone().unwrap_or_default())
            .readonly_paths(default_linux.readonly_paths().clone().unwrap_or_default())
            .cgroups_path(PathBuf::from(&cgroups_path))
            .build()
            .unwrap();
        spec.set_linux(Some(linux));
        spec.save(bundle.join("config.json")).unwrap();
        Bundle {
            state_dir: temp.path().join("state"),
            log_path: temp.path().join("logs/container.log"),
            temp,
            id,
            bundle,
            cgroup_parent,
            cgroups_path,
            runtime: runtime.map(str::to_string),
        }
    }

    pub fn create_command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(shim_binary());
        command
            .arg("create")
            .arg("--id")
            .arg(&self.id)
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log-path")
            .arg(&self.log_path);
        if let Some(runtime) = &self.runtime {
            command.arg("--runtime").arg(runtime);
        }
        command.args(extra);
        command
    }

    /// Run `berth-shim create` to completion (the daemon lives on).
    pub fn create(&self) -> Output {
        self.create_command(&[]).output().unwrap()
    }

    /// Runs `berth-shim create` with `extra` arguments, which must succeed, and returns
    /// the pids of the shim and of the container's init.
    pub fn create_ok_with(&self, extra: &[&str]) -> (i32, i32) {
        let output = self.create_command(extra).output().unwrap();
        assert!(
            output.status.success(),
            "create failed: {}",
            stderr_of(&output)
        );
        self.pids()
    }

    /// `create_ok_with` without extra arguments.
    pub fn create_ok(&self) -> (i32, i32) {
        self.create_ok_with(&[])
    }

    /// The pids of the shim and of the container's init, both written before a successful
    /// create returns.
    pub fn pids(&self) -> (i32, i32) {
        let shim_pid = self
            .read_pid("shim.pid")
            .expect("shim.pid written before create returns");
        let init_pid = self
            .read_pid("pid")
            .expect("pid written before create returns");
        (shim_pid, init_pid)
    }

    pub fn client(&self) -> ShimClient {
        ShimClient::new(&self.state_dir)
    }

    pub fn read_pid(&self, name: &str) -> Option<i32> {
        std::fs::read_to_string(self.state_dir.join(name))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn cgroup_exists(&self) -> bool {
        berth_shim::cgroups::manager(&self.cgroups_path)
            .map(|m| m.exists())
            .unwrap_or(false)
    }

    /// Nothing of the container is left: no shim, no init, no cgroup, no socket.
    pub fn assert_nothing_left(&self, shim_pid: i32, init_pid: i32) {
        wait_until(
            Duration::from_secs(5),
            || !alive(shim_pid),
            "the shim exits",
        );
        assert!(!alive(init_pid), "container init {init_pid} is gone");
        assert!(
            !self.state_dir.join("control.sock").exists(),
            "control socket removed"
        );
        assert!(
            !self.cgroup_exists(),
            "container cgroup {} removed",
            self.cgroups_path
        );
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // Kill only what this test started, by pid: the shim, then the container init.
        for name in ["shim.pid", "pid"] {
            if let Some(pid) = self.read_pid(name) {
                if alive(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        if let Some(runtime) = &self.runtime {
            let _ = Command::new(runtime)
                .arg("--root")
                .arg(self.state_dir.join("runtime"))
                .args(["delete", "--force", &self.id])
                .output();
        }
        if let Ok(manager) = berth_shim::cgroups::manager(&self.cgroup_parent) {
            let _ = manager.destroy();
        }
        // runc also joins the hybrid host's name=systemd and unified trees, which berth's
        // cgroup manager leaves alone; `runc delete` removes only the container's own dirs.
        for tree in ["systemd", "unified"] {
            let parent = format!("/sys/fs/cgroup/{tree}{}", self.cgroup_parent);
            let _ = std::fs::remove_dir(format!("{parent}/{}", self.id));
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// A process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z') | Some('X') | None)
        }
        Err(_) => false,
    }
}

/// Waits up to `timeout` for the container to exit and returns how it exited.
pub fn wait_exit(client: &ShimClient, timeout: Duration) -> ExitInfo {
    client.wait(timeout).unwrap().exit.expect("exited")
}

pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The CRI entries of a log as (stream, tag, content).
pub fn entries(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .map(|line| {
            let mut parts = line.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert_eq!(ts.len(), 30, "timestamp in {line:?}");
            assert!(ts.ends_with('Z'));
            (
                parts.next().unwrap().to_string(),
                parts.next().unwrap().to_string(),
                parts.next().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn has_entry(text: &str, stream: &str, tag: &str, content: &str) -> bool {
    entries(text)
        .iter()
        .any(|(s, t, c)| s == stream && t == tag && c == content)
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The whole life of a container through the shim, for either runtime:
/// create -> created -> start -> CRI log lines -> exec -> reopen log -> TERM -> wait ->
/// exit.json (143) -> nothing left.
pub fn lifecycle(runtime: Option<&str>) {
    use berth_shim::protocol::ShimState;
    let script = "trap 'exit 143' TERM; echo out; echo err >&2; printf 'no newline' >&2; \
                  while true; do sleep 0.05; done";
    let bundle = Bundle::new(&["sh", "-c", script], runtime);
    let (shim_pid, init_pid) = bundle.create_ok();
    assert!(alive(shim_pid) && alive(init_pid));
    let client = bundle.client();

    let status = client.status().unwrap();
    assert_eq!(status.state, ShimState::Created);
    assert_eq!(status.pid, init_pid);
    assert_eq!(status.started_at_ns, 0);
    assert!(
        bundle.cgroup_exists(),
        "cgroup {} exists while created",
        bundle.cgroups_path
    );
    // Exec needs a running container.
    assert!(client
        .exec(vec!["true".into()], vec![], None, Duration::from_secs(5))
        .is_err());

    client.start().unwrap();
    let status = client.status().unwrap();
    assert_eq!(status.state, ShimState::Running);
    assert!(status.started_at_ns > 0);
    assert!(client.start().is_err(), "a second start fails");

    wait_until(
        Duration::from_secs(5),
        || {
            let text = bundle.log_text();
            has_entry(&text, "stdout", "F", "out") && has_entry(&text, "stderr", "F", "err")
        },
        "stdout and stderr lines are in the CRI log",
    );

    let hi = client
        .exec(
            vec!["echo".into(), "hi".into()],
            vec![],
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(
        (
            hi.exit_code,
            hi.stdout.as_slice(),
            hi.stderr.as_slice(),
            hi.timed_out
        ),
        (0, &b"hi\n"[..], &b""[..], false)
    );
    let env_cwd = client
        .exec(
            vec![
                "sh".into(),
                "-c".into(),
                "echo $GREETING; pwd; echo e >&2; exit 3".into(),
            ],
            vec!["GREETING=hello".into(), "PATH=/bin".into()],
            Some("/tmp".into()),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(env_cwd.exit_code, 3);
    // Without env the command gets the container's environment (as runc exec does).
    let inherited = client
        .exec(
            vec!["sh".into(), "-c".into(), "echo $PATH".into()],
            vec![],
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&inherited.stdout), "/bin\n");
    assert_eq!(String::from_utf8_lossy(&env_cwd.stdout), "hello\n/tmp\n");
    assert_eq!(String::from_utf8_lossy(&env_cwd.stderr), "e\n");
    let started = Instant::now();
    let slow = client
        .exec(
            vec!["sleep".into(), "30".into()],
            vec![],
            None,
            Duration::from_millis(300),
        )
        .unwrap();
    assert!(slow.timed_out, "{slow:?}");
    assert_eq!(slow.exit_code, -1);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "timeout enforced: {:?}",
        started.elapsed()
    );
    // The shim kept serving meanwhile, and the container still runs.
    assert_eq!(client.status().unwrap().state, ShimState::Running);

    // kubelet's rotation: rename, then ReopenContainerLog.
    let rotated = bundle.log_path.with_extension("log.1");
    std::fs::rename(&bundle.log_path, &rotated).unwrap();
    client.reopen_log().unwrap();
    assert!(
        bundle.log_path.exists(),
        "reopen creates the log file again"
    );
    let write = client
        .exec(
            vec![
                "sh".into(),
                "-c".into(),
                "echo after-rotation > /proc/1/fd/1".into(),
            ],
            vec![],
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(write.exit_code, 0, "{write:?}");
    wait_until(
        Duration::from_secs(5),
        || has_entry(&bundle.log_text(), "stdout", "F", "after-rotation"),
        "the new file gets new lines",
    );
    assert!(!std::fs::read_to_string(&rotated)
        .unwrap()
        .contains("after-rotation"));

    client.signal(15, false).unwrap();
    let status = client.wait(Duration::from_secs(10)).unwrap();
    assert_eq!(status.state, ShimState::Stopped, "{status:?}");
    let exit = status.exit.expect("exit info in the wait answer");
    assert_eq!(exit.exit_code, 143);
    assert!(!exit.oom_killed);
    assert!(exit.exited_at_ns >= exit.started_at_ns && exit.started_at_ns > 0);
    let recorded = berth_shim::monitor::read_exit_file(&bundle.state_dir)
        .unwrap()
        .expect("exit.json written");
    assert_eq!(recorded, exit);

    bundle.assert_nothing_left(shim_pid, init_pid);
    // The unterminated last line was written as a full entry at EOF... into the file that was
    // current then (the rotated one got it only if it came before the rename).
    let all = format!(
        "{}{}",
        std::fs::read_to_string(&rotated).unwrap(),
        bundle.log_text()
    );
    assert!(has_entry(&all, "stderr", "F", "no newline"), "{all}");
    // The shim is gone; the client answers from exit.json.
    assert_eq!(client.status().unwrap().exit, Some(exit));
    assert!(matches!(
        client.start(),
        Err(berth_shim::client::ShimClientError::NotRunning)
    ));
}

/// A container that is never started and gets SIGKILL exits like any other.
pub fn kill_before_start(runtime: Option<&str>) {
    let bundle = Bundle::new(&["sleep", "100"], runtime);
    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.signal(9, false).unwrap();
    let status = client.wait(Duration::from_secs(10)).unwrap();
    let exit = status.exit.expect("exited");
    assert_eq!(
        (exit.exit_code, exit.signal, exit.started_at_ns),
        (137, 9, 0)
    );
    bundle.assert_nothing_left(shim_pid, init_pid);
}

/// A wait with a short timeout answers with the still-running status.
pub fn wait_times_out(runtime: Option<&str>) {
    let bundle = Bundle::new(&["sleep", "100"], runtime);
    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let started = Instant::now();
    let status = client.wait(Duration::from_millis(200)).unwrap();
    assert!(started.elapsed() >= Duration::from_millis(190));
    assert_eq!(status.state, berth_shim::protocol::ShimState::Running);
    assert!(status.exit.is_none());
    client.signal(9, true).unwrap();
    let exit = wait_exit(&client, Duration::from_secs(10));
    assert_eq!(exit.exit_code, 137);
    bundle.assert_nothing_left(shim_pid, init_pid);
}

/// A command that does not exist fails (at create or at start) with a message naming it,
/// and leaves nothing behind. Returns the message and whether it was start that failed.
pub fn missing_binary(runtime: Option<&str>) -> (String, bool) {
    let bundle = Bundle::new(&["/no/such/binary"], runtime);
    let output = bundle.create();
    let message = if output.status.success() {
        let (shim_pid, init_pid) = bundle.pids();
        let error = bundle
            .client()
            .start()
            .expect_err("start of a missing binary fails");
        let message = error.to_string();
        bundle.assert_nothing_left(shim_pid, init_pid);
        let exit = berth_shim::monitor::read_exit_file(&bundle.state_dir)
            .unwrap()
            .expect("exit.json");
        assert_ne!(exit.exit_code, 0);
        message
    } else {
        assert!(!bundle.state_dir.join("control.sock").exists());
        assert!(!bundle.state_dir.join("shim.pid").exists());
        assert!(!bundle.cgroup_exists());
        stderr_of(&output)
    };
    assert!(
        message.contains("/no/such/binary"),
        "message names the binary: {message}"
    );
    (message, output.status.success())
}

/// The shim is detached: killing the process that ran `berth-shim create` (and its whole
/// process group) does not touch the shim or the container.
pub fn survives_parent_death(runtime: Option<&str>) {
    use std::os::unix::process::CommandExt;
    let bundle = Bundle::new(&["sleep", "100"], runtime);
    let create = bundle.create_command(&[]);
    let script = format!(
        "{:?} {}; sleep 100",
        create.get_program(),
        create
            .get_args()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(script)
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        || bundle.state_dir.join("control.sock").exists(),
        "the shim serves",
    );
    let (shim_pid, init_pid) = bundle.pids();
    // Kill the parent's whole process group (only processes this test started).
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(parent.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    parent.wait().unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        alive(shim_pid) && alive(init_pid),
        "shim and container outlive the parent"
    );
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(shim_pid))).unwrap();
    assert_ne!(
        sid,
        nix::unistd::getsid(None).unwrap(),
        "the shim has its own session"
    );
    let client = bundle.client();
    assert_eq!(
        client.status().unwrap().state,
        berth_shim::protocol::ShimState::Created
    );
    client.signal(9, false).unwrap();
    client.wait(Duration::from_secs(10)).unwrap();
    bundle.assert_nothing_left(shim_pid, init_pid);
}

/// Output through the real pipes: a 40000-byte line becomes P, P, F entries; big exec
/// output arrives whole; a final unterminated line is a full entry.
pub fn big_output(runtime: Option<&str>) {
    let script = "yes x | head -c 80000 | tr -d '\\n'; echo; printf tail";
    let bundle = Bundle::new(&["sh", "-c", script], runtime);
    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let exit = wait_exit(&client, Duration::from_secs(10));
    assert_eq!(exit.exit_code, 0);
    bundle.assert_nothing_left(shim_pid, init_pid);
    let entries = entries(&bundle.log_text());
    let shape: Vec<(&str, &str, usize)> = entries
        .iter()
        .map(|(s, t, c)| (s.as_str(), t.as_str(), c.len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            ("stdout", "P", 16384),
            ("stdout", "P", 16384),
            ("stdout", "F", 40000 - 2 * 16384),
            ("stdout", "F", 4)
        ]
    );
    assert_eq!(entries[3].2, "tail");
}

/// Exec output larger than a pipe buffer (and than the helper's read size) arrives whole.
pub fn big_exec_output(runtime: Option<&str>) {
    let bundle = Bundle::new(&["sleep", "100"], runtime);
    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let big = client
        .exec(
            vec![
                "sh".into(),
                "-c".into(),
                "yes abcdefg | head -c 1000000; yes e | head -c 300000 >&2".into(),
            ],
            vec![],
            None,
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(big.exit_code, 0);
    assert_eq!(big.stdout.len(), 1_000_000);
    assert_eq!(big.stderr.len(), 300_000);
    assert!(big.stdout.starts_with(b"abcdefg\nabcdefg\n"));
    client.signal(9, false).unwrap();
    client.wait(Duration::from_secs(10)).unwrap();
    bundle.assert_nothing_left(shim_pid, init_pid);
}

/// A container over its memory limit is OOM-killed: exit 137 and oom_killed in exit.json.
pub fn oom_kill(runtime: Option<&str>) {
    let bundle = Bundle::new(
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"],
        runtime,
    );
    // 32 MiB of memory (and no more with swap), written into the spec.
    let config = bundle.bundle.join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    let mut linux = spec.linux().clone().unwrap();
    let memory = LinuxMemoryBuilder::default()
        .limit(32 << 20)
        .swap(32 << 20)
        .build()
        .unwrap();
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .memory(memory)
            .build()
            .unwrap(),
    ));
    spec.set_linux(Some(linux));
    spec.save(&config).unwrap();

    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let exit = wait_exit(&client, Duration::from_secs(20));
    assert_eq!(
        (exit.exit_code, exit.signal, exit.oom_killed),
        (137, 9, true),
        "{exit:?}"
    );
    bundle.assert_nothing_left(shim_pid, init_pid);
}

/// A long exec runs in a helper: status, a second exec and wait are served meanwhile.
pub fn serves_during_exec(runtime: Option<&str>) {
    let bundle = Bundle::new(
        &[
            "sh",
            "-c",
            "trap 'exit 143' TERM; while true; do sleep 0.05; done",
        ],
        runtime,
    );
    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let slow_client = client.clone();
    // The slow exec outlasts the quick one by far, also in the emulated cgroup v2 guest
    // (hack/vm-test scales the tests' waits there).
    let scale: u64 = std::env::var("BERTH_TEST_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|f| f.ceil().max(1.0) as u64)
        .unwrap_or(1);
    let slow_script = format!("sleep {}; echo slow", 2 * scale);
    let slow = std::thread::spawn(move || {
        slow_client.exec(
            vec!["sh".into(), "-c".into(), slow_script],
            vec![],
            None,
            Duration::from_secs(20 * scale),
        )
    });
    std::thread::sleep(Duration::from_millis(100 * scale));
    assert_eq!(
        client.status().unwrap().state,
        berth_shim::protocol::ShimState::Running
    );
    let quick = client
        .exec(
            vec!["echo".into(), "quick".into()],
            vec![],
            None,
            Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(quick.stdout, b"quick\n");
    assert!(
        !slow.is_finished(),
        "the quick exec must be served while the slow one still runs"
    );
    let slow = slow.join().unwrap().unwrap();
    assert_eq!(slow.stdout, b"slow\n");
    let waiter_client = client.clone();
    let waiter = std::thread::spawn(move || waiter_client.wait(Duration::from_secs(30)));
    std::thread::sleep(Duration::from_millis(100));
    client.signal(15, false).unwrap();
    let exit = waiter.join().unwrap().unwrap().exit.expect("exited");
    assert_eq!(exit.exit_code, 143);
    bundle.assert_nothing_left(shim_pid, init_pid);
}
