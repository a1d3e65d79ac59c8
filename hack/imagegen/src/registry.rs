//! `LocalRegistry`: Debian's `docker-registry` (CNCF distribution 2.8) on a free port of
//! 127.0.0.1 with its storage in a temp dir, for tests.
//!
//! Cleanup: `Drop` stops the process and removes the temp dir. As a second line of defence
//! the registry is spawned from a helper thread that lives exactly as long as the
//! `LocalRegistry`, with `PR_SET_PDEATHSIG=SIGKILL`: the kernel delivers that signal when
//! the *thread* that forked the child exits, so a plain spawn from a test thread would kill
//! a registry shared across tests; a dedicated thread only dies with the fixture or with the
//! whole process (e.g. a test binary killed by a timeout), which is exactly when the
//! registry must go too.

use std::fs::{self, File};
use std::io::{self, Read};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Debian's distribution registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_GRACE: Duration = Duration::from_secs(3);
const START_ATTEMPTS: usize = 8;

/// How to run the registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Require HTTP Basic authentication with this (user, password) (htpasswd, bcrypt).
    pub htpasswd: Option<(String, String)>,
}

/// A running `docker-registry serve` owned by this process.
pub struct LocalRegistry {
    options: RegistryOptions,
    dir: Option<tempfile::TempDir>,
    port: u16,
    child: Option<Child>,
    spawner: Option<Spawner>,
}

impl LocalRegistry {
    /// Starts a registry on a free port of 127.0.0.1 and waits until `GET /v2/` answers
    /// (200, or 401 when authentication is on).
    pub fn start(options: RegistryOptions) -> Result<Self> {
        if !Path::new(REGISTRY_BIN).exists() {
            bail!("{REGISTRY_BIN} not found: install docker-registry (hack/install-deps)");
        }
        let dir = tempfile::Builder::new().prefix("berth-registry-").tempdir().context("creating registry temp dir")?;
        fs::create_dir_all(dir.path().join("storage"))?;
        if let Some((user, password)) = &options.htpasswd {
            write_htpasswd(&dir.path().join("htpasswd"), user, password)?;
        }
        let mut registry = Self { options, dir: Some(dir), port: 0, child: None, spawner: Some(Spawner::new()?) };
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match registry.spawn_on(port) {
                Ok(()) => return Ok(registry),
                // Another process took the port between our probe and the registry's bind.
                Err(SpawnError::PortTaken) => last_error = Some(anyhow::anyhow!("port {port} taken")),
                Err(SpawnError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("no attempt made"))).context("starting docker-registry")
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The registry's `rootdirectory`.
    pub fn storage_dir(&self) -> PathBuf {
        self.base_dir().join("storage")
    }

    /// The registry's log file (stdout and stderr).
    pub fn log_path(&self) -> PathBuf {
        self.base_dir().join("registry.log")
    }

    /// The credentials the registry requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.options.htpasswd.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>` or `<hex>`), so
    /// tests can corrupt or truncate it.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let prefix = hex.get(..2).unwrap_or(hex);
        self.storage_dir().join("docker/registry/v2/blobs/sha256").join(prefix).join(hex).join("data")
    }

    /// PID of the running registry process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops the registry (SIGTERM, then SIGKILL after a grace period) and reaps it.
    /// Storage is kept, so [`LocalRegistry::restart`] serves the same content.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// Kills the registry at once (SIGKILL, no graceful shutdown) and reaps it, as a crash
    /// or a pulled plug would. Storage is kept.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the registry if running and starts it again on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_on(self.port) {
                Ok(()) => return Ok(()),
                Err(SpawnError::PortTaken) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(SpawnError::PortTaken) => bail!("cannot restart registry: port {} is taken", self.port),
                Err(SpawnError::Other(e)) => return Err(e),
            }
        }
    }

    fn base_dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).expect("the temp dir lives as long as the registry")
    }

    fn spawn_on(&mut self, port: u16) -> Result<(), SpawnError> {
        let base = self.base_dir().to_path_buf();
        let config_path = base.join("config.yml");
        fs::write(&config_path, self.config_yaml(port, &base)).map_err(|e| SpawnError::Other(e.into()))?;
        let log_path = self.log_path();
        let log = File::create(&log_path).map_err(|e| SpawnError::Other(e.into()))?;
        let log_err = log.try_clone().map_err(|e| SpawnError::Other(e.into()))?;
        let mut command = Command::new(REGISTRY_BIN);
        command
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // The registry reads REGISTRY_* variables as config overrides; keep the caller's out.
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let spawner = self.spawner.as_ref().expect("spawner lives as long as the registry");
        let mut child = spawner.spawn(command).map_err(|e| SpawnError::Other(anyhow::Error::new(e).context("spawning docker-registry")))?;
        self.port = port;
        match wait_ready(&mut child, port) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                stop_child(&mut child);
                let log = read_tail(&log_path);
                if log.contains("address already in use") {
                    Err(SpawnError::PortTaken)
                } else {
                    Err(SpawnError::Other(e.context(format!("docker-registry log:\n{log}"))))
                }
            }
        }
    }

    fn config_yaml(&self, port: u16, base: &Path) -> String {
        let mut yaml = format!(
            "version: 0.1\n\
             log:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-registry\n",
            storage = base.join("storage").display(),
        );
        if self.options.htpasswd.is_some() {
            yaml.push_str(&format!("auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n", base.join("htpasswd").display()));
        }
        yaml
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        self.stop();
        // Dropping the spawner ends its thread; nothing is left for PDEATHSIG to kill.
        self.spawner.take();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

enum SpawnError {
    PortTaken,
    Other(anyhow::Error),
}

fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) on the PID of a child we have not reaped yet, so it cannot have
        // been recycled for another process.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_ready(child: &mut Child, port: u16) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}/v2/");
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited during startup: {status}");
        }
        if let Ok(response) = agent.get(&url).call() {
            let status = response.status().as_u16();
            if status == 200 || status == 401 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("docker-registry did not answer {url} within {READY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A port that was free a moment ago (the registry binds it right after; races are retried).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("probing for a free port")?;
    Ok(listener.local_addr()?.port())
}

fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    let output = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .context("running htpasswd (install apache2-utils: hack/install-deps)")?;
    if !output.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    fs::write(path, &output.stdout).with_context(|| format!("writing {}", path.display()))
}

fn read_tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len()).find(|i| text.is_char_boundary(*i)).unwrap_or(text.len());
    text[start..].to_string()
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// A thread that forks the registry and then just waits, so `PR_SET_PDEATHSIG` is tied to
/// the fixture's lifetime (see the module docs).
struct Spawner {
    requests: Option<mpsc::Sender<SpawnRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl Spawner {
    fn new() -> Result<Self> {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("registry-spawner".into())
            .spawn(move || {
                let parent_pid = std::process::id();
                for (mut command, reply) in rx {
                    // SAFETY: the closure only calls async-signal-safe functions (prctl, getppid).
                    unsafe {
                        command.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            // The parent may have died before prctl took effect.
                            if libc::getppid() as u32 != parent_pid {
                                return Err(io::Error::other("parent exited during spawn"));
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(command.spawn());
                }
            })
            .context("starting the registry spawner thread")?;
        Ok(Self { requests: Some(tx), thread: Some(thread) })
    }

    fn spawn(&self, command: Command) -> io::Result<Child> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let requests = self.requests.as_ref().ok_or_else(|| io::Error::other("spawner stopped"))?;
        requests.send((command, reply_tx)).map_err(|_| io::Error::other("spawner thread gone"))?;
        reply_rx.recv().map_err(|_| io::Error::other("spawner thread gone"))?
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
