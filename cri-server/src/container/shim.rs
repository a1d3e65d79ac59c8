//! Starting a `berth-shim` and talking to it.
//!
//! `berth-shim create ...` returns only once the container is created (exit 0, the shim
//! daemon lives on detached) or failed (exit != 0, a one-line message on stderr, nothing
//! left behind). The shim's control client is blocking; [`call`] runs it on tokio's
//! blocking pool so a slow shim never stalls berthd's reactor.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_shim::client::{ShimClient, ShimClientError};
use tokio::io::AsyncReadExt;

/// How long `berth-shim create` may take before berthd gives up on it. Creating a
/// container takes milliseconds; this guards against a hung shim, not a slow one.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The file name of the shim binary berthd looks for next to its own executable.
pub const SHIM_BINARY_NAME: &str = "berth-shim";

/// One `berth-shim create` invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    pub id: String,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    /// Where the container's stdout and stderr go in the CRI log format (None: discarded).
    pub log_path: Option<PathBuf>,
    /// An external OCI runtime binary (runc, crun) instead of the shim's built-in one.
    pub runtime: Option<PathBuf>,
    /// The container's PID 1 is the shim's tiny init (a pod's shared PID namespace holder).
    pub builtin_init: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnShimError {
    #[error("starting the shim {path}: {source}")]
    Exec {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The shim ran and reported why the container could not be created.
    #[error("{message}")]
    CreateFailed { message: String },
    #[error("the shim {path} did not report within {timeout:?}")]
    Timeout { path: PathBuf, timeout: Duration },
}

impl ShimCommand {
    /// The command line after the program name.
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            "create".into(),
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--state-dir".into(),
            self.state_dir.clone().into(),
        ];
        if let Some(log_path) = &self.log_path {
            args.push("--log-path".into());
            args.push(log_path.clone().into());
        }
        if let Some(runtime) = &self.runtime {
            args.push("--runtime".into());
            args.push(runtime.clone().into());
        }
        if self.builtin_init {
            args.push("--builtin-init".into());
        }
        args
    }
}

/// Runs `shim_path create ...` and waits until the container is created or failed.
/// On failure the shim's own message (its stderr) is the error.
pub async fn spawn_shim(shim_path: &Path, command: &ShimCommand) -> Result<(), SpawnShimError> {
    let started = std::time::Instant::now();
    let mut child = tokio::process::Command::new(shim_path)
        .args(command.args())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // The shim runs from "/" so it never pins berthd's working directory.
        .current_dir("/")
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SpawnShimError::Exec { path: shim_path.to_path_buf(), source })?;
    let mut stderr = child.stderr.take();
    let outcome = tokio::time::timeout(CREATE_TIMEOUT, async {
        let mut text = String::new();
        if let Some(stderr) = stderr.as_mut() {
            // Bounded: a runaway shim must not make berthd buffer without end.
            let _ = stderr.take(64 * 1024).read_to_string(&mut text).await;
        }
        (child.wait().await, text)
    })
    .await;
    let (status, stderr_text) = match outcome {
        Ok(done) => done,
        Err(_) => {
            // kill_on_drop takes the foreground process down; the daemon, if it got that
            // far, is found as an orphan by recovery or by the caller's undo.
            return Err(SpawnShimError::Timeout { path: shim_path.to_path_buf(), timeout: CREATE_TIMEOUT });
        }
    };
    let status = status.map_err(|source| SpawnShimError::Exec { path: shim_path.to_path_buf(), source })?;
    if status.success() {
        tracing::debug!(container = %command.id, elapsed_ms = started.elapsed().as_millis() as u64, "shim created the container");
        return Ok(());
    }
    let message = stderr_text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line.strip_prefix("berth-shim: ").unwrap_or(line).to_string())
        .unwrap_or_else(|| format!("berth-shim exited with {status} and no message"));
    Err(SpawnShimError::CreateFailed { message })
}

/// Runs a blocking shim client call on the blocking pool.
pub async fn call<T, F>(state_dir: &Path, request: F) -> Result<T, ShimClientError>
where
    T: Send + 'static,
    F: FnOnce(&ShimClient) -> Result<T, ShimClientError> + Send + 'static,
{
    let client = ShimClient::new(state_dir);
    match tokio::task::spawn_blocking(move || request(&client)).await {
        Ok(result) => result,
        Err(join) => Err(ShimClientError::Io(std::io::Error::other(format!("shim client task failed: {join}")))),
    }
}

/// The shim daemon's pid from `shim.pid`, if the file is there and sane.
pub fn read_pid_file(state_dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(state_dir.join(name)).ok()?.trim().parse().ok().filter(|pid: &i32| *pid > 0)
}

/// True when `pid` is a live process whose command line is a berth-shim for `state_dir`
/// (pids are reused: a bare `kill(pid, 0)` could hit some other process).
pub fn is_shim_process(pid: i32, state_dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let state = state_dir.as_os_str().as_encoded_bytes();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    args.windows(2).any(|pair| pair[0] == b"--state-dir" && pair[1] == state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_every_flag() {
        let command = ShimCommand {
            id: "c1".into(),
            bundle: "/b".into(),
            state_dir: "/s".into(),
            log_path: Some("/l".into()),
            runtime: Some("/usr/sbin/runc".into()),
            builtin_init: true,
        };
        let args: Vec<String> = command.args().into_iter().map(|a| a.into_string().unwrap()).collect();
        assert_eq!(
            args,
            ["create", "--id", "c1", "--bundle", "/b", "--state-dir", "/s", "--log-path", "/l", "--runtime", "/usr/sbin/runc", "--builtin-init"]
        );
        let minimal = ShimCommand { log_path: None, runtime: None, builtin_init: false, ..command };
        assert_eq!(minimal.args().len(), 7);
    }

    #[tokio::test]
    async fn failure_message_is_the_shims_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-shim");
        std::fs::write(&fake, "#!/bin/sh\necho 'berth-shim: no such binary: /bin/nope' >&2\nexit 1\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let command = ShimCommand {
            id: "c1".into(),
            bundle: "/b".into(),
            state_dir: dir.path().join("s"),
            log_path: None,
            runtime: None,
            builtin_init: false,
        };
        let err = spawn_shim(&fake, &command).await.unwrap_err();
        assert_eq!(err.to_string(), "no such binary: /bin/nope");
        let err = spawn_shim(&dir.path().join("missing"), &command).await.unwrap_err();
        assert!(matches!(err, SpawnShimError::Exec { .. }), "{err}");
        std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
        spawn_shim(&fake, &command).await.unwrap();
    }
}
