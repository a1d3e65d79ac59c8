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

/// How long berthd may take from exec to accepting connections on its socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// berthd's own crates at debug, the gRPC and HTTP/2 machinery quiet.
pub const LOG_LEVEL: &str = "info,berth_cri=debug,berth_images=debug";
/// How long berthd may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running berthd under test. Its directories live in one temp dir:
/// `root/` (`--root`), `state/` (`--state`, holding `berth.sock`), `config.toml` and
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
    child: Option<Child>,
}

impl Berthd {
    /// Starts berthd with an empty config file.
    pub async fn start() -> Berthd {
        Self::start_with("").await
    }

    /// Starts berthd with `config_toml` as its config file (`--config`); root, state and
    /// address always come from flags.
    pub async fn start_with(config_toml: &str) -> Berthd {
        let dir = tempfile::Builder::new().prefix("berth-test-").tempdir().expect("create temp dir for berthd");
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let state = base.join("state");
        for d in [&root, &state] {
            std::fs::create_dir_all(d).expect("create berthd dirs");
        }
        let config = base.join("config.toml");
        std::fs::write(&config, config_toml).expect("write berthd config");
        let mut berthd = Berthd {
            dir: Some(dir),
            socket: state.join("berth.sock"),
            log: base.join("berthd.log"),
            base,
            root,
            state,
            config,
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
        match stop_child(&mut child, signal, STOP_TIMEOUT) {
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
        let deadline = Instant::now() + START_TIMEOUT;
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
            if stop_child(&mut child, Signal::SIGTERM, STOP_TIMEOUT).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
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

