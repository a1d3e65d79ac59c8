//! [`Berthd`]: one real `berthd` process with its own temp root, state dir and socket.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cri::{self, ImageClient, RuntimeClient};
use crate::leaks::{self, Leaks};
use crate::paths;
use crate::timing::scaled;

/// How long berthd may take from exec to accepting connections on its socket (times
/// `BERTH_TEST_TIME_SCALE`).
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// berthd's own crates at debug, the gRPC and HTTP/2 machinery quiet.
pub const LOG_LEVEL: &str = "info,berth_cri=debug,berth_images=debug";
/// How long berthd may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running berthd under test. Its directories live in one temp dir:
/// `root/` (`--root`), `run/` (`--state`, holding `berth.sock`), `config.toml` and
/// `berthd.log` (stdout and stderr of every run, appended; printed when the test fails).
///
/// Dropping it stops berthd (SIGTERM, then SIGKILL), unmounts whatever is left under the temp
/// dir, prints the log if the test is failing, and removes the temp dir (kept, and its path
/// printed, when `BERTH_TEST_KEEP` is set).
pub struct Berthd {
    dir: Option<tempfile::TempDir>,
    base: PathBuf,
    root: PathBuf,
    state: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    /// `[runtime] cgroup_root` of this berthd: `/berth-test-<random>`, unique to the test,
    /// so that the leak check and the clean-up never look at anyone else's cgroups.
    cgroup_root: String,
    child: Option<Child>,
}

impl Berthd {
    /// Starts berthd with an empty config file.
    pub async fn start() -> Berthd {
        Self::start_with("").await
    }

    /// Starts berthd with `config_toml` as its config file (`--config`); root, state and
    /// address always come from flags. When berthd knows the `[runtime]` table, the
    /// harness adds `cgroup_root = "/berth-test-<random>"` to it (or adds the table).
    pub async fn start_with(config_toml: &str) -> Berthd {
        // Short names: a shim's control socket is `<state>/shims/<64 hex>/control.sock`,
        // and a unix socket path has at most 107 bytes (`/tmp/bt-XXXXXX/run/...` leaves 5).
        let dir = tempfile::Builder::new().prefix("bt-").tempdir().expect("create temp dir for berthd");
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let state = base.join("run");
        for d in [&root, &state] {
            std::fs::create_dir_all(d).expect("create berthd dirs");
        }
        let config = base.join("config.toml");
        let cgroup_root = format!("/berth-test-{}", random_hex(8));
        let config_toml = with_network_disabled_unless_configured(with_cgroup_root(config_toml, &cgroup_root));
        std::fs::write(&config, config_toml).expect("write berthd config");
        let mut berthd = Berthd {
            dir: Some(dir),
            socket: state.join("berth.sock"),
            log: base.join("berthd.log"),
            base,
            root,
            state,
            config,
            cgroup_root,
            child: None,
        };
        berthd.spawn().await;
        berthd
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// This berthd's `[runtime] cgroup_root` (e.g. `/berth-test-0a1b2c3d`).
    pub fn cgroup_root(&self) -> &str {
        &self.cgroup_root
    }

    /// The temp dir holding root, state, config and log.
    pub fn base_dir(&self) -> &Path {
        &self.base
    }

    /// PID of the running berthd, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything berthd has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A RuntimeService client on a fresh connection.
    pub async fn runtime(&self) -> RuntimeClient {
        RuntimeClient::new(self.channel().await)
    }

    /// An ImageService client on a fresh connection.
    pub async fn images(&self) -> ImageClient {
        ImageClient::new(self.channel().await)
    }

    async fn channel(&self) -> tonic::transport::Channel {
        match cri::connect(&self.socket).await {
            Ok(channel) => channel,
            Err(e) => panic!("connect to berthd at {}: {e:?}", self.socket.display()),
        }
    }

    /// SIGKILLs berthd and reaps it, as a crash would end it.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("kill9: berthd is not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for berthd to exit; returns how it exited.
    pub fn terminate(&mut self) -> ExitStatus {
        self.terminate_with(Signal::SIGTERM)
    }

    /// Sends `signal` and waits for berthd to exit; returns how it exited.
    pub fn terminate_with(&mut self, signal: Signal) -> ExitStatus {
        let mut child = self.child.take().expect("terminate: berthd is not running");
        match stop_child(&mut child, signal, scaled(STOP_TIMEOUT)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("berthd did not exit within {STOP_TIMEOUT:?} of {signal}");
            }
        }
    }

    /// Stops berthd with SIGTERM and asserts it exited with status 0.
    pub fn stop(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "berthd exited with {status} after SIGTERM");
    }

    /// Starts berthd again on the same root, state and config. If it still runs, it is
    /// stopped (SIGTERM) first.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn().await;
    }

    /// What is left behind right now: mounts under the temp dir, processes (berthd or its
    /// children) naming the temp dir, and temp files of interrupted writes in the store.
    pub fn leaks(&self) -> Leaks {
        leaks::check(&self.base, &self.root, self.pid())
    }

    /// What pods and containers left behind while berthd runs: mounts and pinned
    /// namespaces under the temp dir, shim (or any) processes naming it, cgroups below the
    /// test's cgroup root.
    pub fn runtime_leaks(&self) -> Leaks {
        leaks::check_runtime(&self.base, &self.cgroup_root, self.pid())
    }

    /// Asserts that nothing of removed pods and containers is left (berthd may run).
    pub fn assert_no_runtime_leaks(&self) {
        let found = self.runtime_leaks();
        assert!(found.is_empty(), "left behind after every pod was removed: {found:#?}");
    }

    /// Asserts nothing leaked; call it after [`Berthd::stop`] at the end of a test.
    pub fn assert_no_leaks(&self) {
        let found = self.leaks();
        assert!(found.is_empty(), "leaked after berthd stopped: {found:#?}");
    }

    /// Asserts that no interrupted write left temp files in the content or snapshot store;
    /// unlike [`Berthd::assert_no_leaks`] it may run while berthd runs.
    pub fn assert_no_temp_leftovers(&self) {
        let found = leaks::temp_leftovers(&self.root);
        assert!(found.is_empty(), "temp files left in the store: {found:#?}");
    }

    fn log_banner(&self) -> String {
        format!("----- berthd log ({}) -----\n{}\n----- end of berthd log -----", self.log.display(), self.log())
    }

    async fn spawn(&mut self) {
        let mut log = OpenOptions::new().create(true).append(true).open(&self.log).expect("open berthd log");
        let bin = paths::berthd_bin();
        let _ = writeln!(log, "===== harness: starting {} =====", bin.display());
        let stderr = log.try_clone().expect("clone log fd");
        let mut command = Command::new(&bin);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--address")
            .arg(&self.socket)
            .arg("--config")
            .arg(&self.config)
            .arg("--log-level")
            .arg(LOG_LEVEL)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        // SAFETY: prctl is async-signal-safe. If the test dies without running Drop
        // (SIGKILL, abort), berthd gets SIGTERM instead of living on as an orphan. The
        // signal fires when the forking *thread* exits: libtest runs each test on its own
        // thread and the test's future on it, so that is the end of the test.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
        self.wait_ready().await;
    }

    /// Waits until berthd accepts connections on its socket.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + scaled(START_TIMEOUT);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("berthd exited during startup with {status}");
                }
            }
            if tokio::net::UnixStream::connect(&self.socket).await.is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!("berthd did not listen on {} within {START_TIMEOUT:?}", self.socket.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if stop_child(&mut child, Signal::SIGTERM, scaled(STOP_TIMEOUT)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Shims outlive berthd by design: whatever a test did not remove goes now. Only
        // processes naming this test's state dir are killed, and only processes in this
        // test's own cgroup root.
        for (pid, cmdline) in leaks::kill_processes_naming(&self.state, None) {
            eprintln!("harness: killed leftover process {pid}: {cmdline}");
        }
        for cgroup in leaks::remove_cgroup_tree(&self.cgroup_root, scaled(Duration::from_secs(5))) {
            eprintln!("harness: could not remove cgroup {}", cgroup.display());
        }
        for mount in leaks::unmount_all_under(&self.base) {
            eprintln!("harness: could not unmount {}", mount.display());
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_banner());
        }
        if let Some(dir) = self.dir.take() {
            if std::env::var_os("BERTH_TEST_KEEP").is_some() {
                eprintln!("harness: keeping {}", dir.keep().display());
            } else if let Err(e) = dir.close() {
                eprintln!("harness: could not remove {}: {e}", self.base.display());
            }
        }
    }
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("read /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether this berthd has the `[runtime]` config table (asked once per test binary
/// through `berthd config default`): until the runtime lands, the key would be refused.
fn berthd_knows_runtime_table() -> bool {
    static KNOWS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWS.get_or_init(|| {
        let output = run_berthd_command(&["config", "default"]);
        String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == "[runtime]")
    })
}

/// `config_toml` with `cgroup_root` set in its `[runtime]` table, if berthd has one and
/// the test did not set the key itself. `BERTH_TEST_OCI_RUNTIME=/usr/sbin/runc` also sets
/// `default_runtime`, to run the suites on an external OCI runtime instead of the built-in.
fn with_cgroup_root(config_toml: &str, cgroup_root: &str) -> String {
    if !berthd_knows_runtime_table() || config_toml.contains("cgroup_root") {
        return config_toml.to_string();
    }
    let mut key = format!("cgroup_root = \"{cgroup_root}\"");
    let mut tail = String::new();
    if let Some(runtime) = std::env::var_os("BERTH_TEST_OCI_RUNTIME") {
        if !config_toml.contains("default_runtime") && !config_toml.contains("[runtime.runtimes]") {
            key.push_str("\ndefault_runtime = \"berth-test-oci\"");
            tail = format!("\n[runtime.runtimes]\nberth-test-oci = \"{}\"\n", runtime.to_string_lossy());
        }
    }
    let mut out = String::new();
    let mut inserted = false;
    for line in config_toml.lines() {
        out.push_str(line);
        out.push('\n');
        if !inserted && line.trim() == "[runtime]" {
            out.push_str(&key);
            out.push('\n');
            inserted = true;
        }
    }
    if !inserted {
        out.push_str(&format!("\n[runtime]\n{key}\n"));
    }
    out.push_str(&tail);
    out
}

/// Pod networking touches the host (a bridge, nft rules): only tests that configure a
/// network of their own (tests/src/network.rs) get one; the others get loopback only.
fn with_network_disabled_unless_configured(config_toml: String) -> String {
    if berthd_knows_network_table() && !config_toml.contains("[network]") {
        return format!("{config_toml}\n[network]\nenabled = false\n");
    }
    config_toml
}

/// Whether this berthd has the `[network]` config table (as for `[runtime]`).
fn berthd_knows_network_table() -> bool {
    static KNOWS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWS.get_or_init(|| {
        let output = run_berthd_command(&["config", "default"]);
        String::from_utf8_lossy(&output.stdout).lines().any(|line| line.trim() == "[network]")
    })
}

/// Sends `signal` and waits up to `timeout` for the child to exit.
fn stop_child(child: &mut Child, signal: Signal, timeout: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}

/// Runs `berthd` with `args` to completion (e.g. `config default`); returns its output.
pub fn run_berthd_command(args: &[&str]) -> std::process::Output {
    let bin = paths::berthd_bin();
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {} {args:?}: {e}", bin.display()))
}

