//! Driving an external OCI runtime binary (runc, crun) on the same bundle:
//! `create --bundle B --pid-file P <id>` with the container's stdio, `start <id>`,
//! signals sent to the init pid directly, `delete --force <id>` at the end.
//! The runtime keeps its state under `<state-dir>/runtime` (`--root`) and logs JSON to
//! `<state-dir>/runtime.log`, where its error messages are read from.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::diag::log_warn;
use super::runtime::{ContainerRuntime, ExecChild, ExecCommand, StdioFds};
use crate::protocol::INIT_PID_FILE;

pub struct ExternalRuntime {
    binary: PathBuf,
    id: String,
    bundle: PathBuf,
    state_dir: PathBuf,
    /// `create` ran (so there is runtime state to delete).
    created: bool,
    /// The container has its own PID namespace: when its init dies the kernel kills the rest,
    /// so the exit path can skip a `kill --all` run.
    private_pid_ns: bool,
    oom: Box<dyn Fn() -> bool>,
}

impl ExternalRuntime {
    /// `oom` reads the container cgroup's OOM kill count (the runtime made the cgroup).
    pub fn new(
        binary: &Path,
        id: &str,
        bundle: &Path,
        state_dir: &Path,
        private_pid_ns: bool,
        oom: Box<dyn Fn() -> bool>,
    ) -> Self {
        ExternalRuntime {
            binary: binary.to_path_buf(),
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            created: false,
            private_pid_ns,
            oom,
        }
    }

    fn root(&self) -> PathBuf {
        self.state_dir.join("runtime")
    }

    fn log_file(&self) -> PathBuf {
        self.state_dir.join("runtime.log")
    }

    /// `<binary> --root R --log L --log-format json <args...>`
    fn command(&self, args: &[&OsStr]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--root")
            .arg(self.root())
            .arg("--log")
            .arg(self.log_file())
            .arg("--log-format")
            .arg("json")
            .args(args);
        command
    }

    /// Run the runtime to completion with its output captured; Err carries its message.
    fn run(&self, args: &[&OsStr]) -> Result<(), String> {
        let mut command = self.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = command
            .output()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        if output.status.success() {
            return Ok(());
        }
        Err(self.failure(args, &output.stderr, output.status))
    }

    /// The runtime's own words for a failure: the last error in its JSON log, else its stderr.
    fn failure(&self, args: &[&OsStr], stderr: &[u8], status: std::process::ExitStatus) -> String {
        let verb = args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        let message = last_logged_error(&self.log_file())
            .or_else(|| {
                let text = String::from_utf8_lossy(stderr).trim().to_string();
                (!text.is_empty()).then_some(text)
            })
            .unwrap_or_else(|| format!("exited with {status}"));
        format!("{} {verb}: {message}", self.binary.display())
    }
}

impl ContainerRuntime for ExternalRuntime {
    fn create(&mut self, stdio: StdioFds) -> Result<Pid, String> {
        let pid_file = self.state_dir.join(INIT_PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let bundle = self.bundle.clone().into_os_string();
        let id = OsString::from(&self.id);
        let pid_file_arg = pid_file.clone().into_os_string();
        let args: [&OsStr; 6] = [
            "create".as_ref(),
            "--bundle".as_ref(),
            &bundle,
            "--pid-file".as_ref(),
            &pid_file_arg,
            &id,
        ];
        // The runtime passes its own stdio on to the container: give it the container's pipes.
        // Its own error output then lands in the container log too; the message we report
        // comes from its JSON log file.
        let status = self
            .command(&args)
            .stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr))
            .status()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        // Even a failed create may have left state behind.
        self.created = true;
        if !status.success() {
            return Err(self.failure(&args, b"", status));
        }
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a pid: {text:?}", pid_file.display()))?;
        Ok(Pid::from_raw(pid))
    }

    fn start(&mut self) -> Result<(), String> {
        self.run(&["start".as_ref(), self.id.as_ref()])
    }

    fn signal(&mut self, init: Pid, signal: Signal, all: bool) -> Result<(), String> {
        if all {
            let number = (signal as i32).to_string();
            return self.run(&[
                "kill".as_ref(),
                "--all".as_ref(),
                self.id.as_ref(),
                number.as_ref(),
            ]);
        }
        kill(init, signal).map_err(|e| format!("kill {init} {signal}: {e}"))
    }

    fn spawn_exec(
        &self,
        _init: Pid,
        command: &ExecCommand<'_>,
        stdio: StdioFds,
    ) -> Result<ExecChild, String> {
        let pid_file = self
            .state_dir
            .join(format!("exec-{}.pid", std::process::id()));
        let mut runtime =
            self.command(&["exec".as_ref(), "--pid-file".as_ref(), pid_file.as_os_str()]);
        for variable in command.env {
            runtime.arg("--env").arg(variable);
        }
        if let Some(cwd) = command.cwd {
            runtime.arg("--cwd").arg(cwd);
        }
        runtime.arg(&self.id).args(command.args);
        let child = runtime
            .stdin(Stdio::from(stdio.stdin))
            .stdout(Stdio::from(stdio.stdout))
            .stderr(Stdio::from(stdio.stderr))
            .spawn()
            .map_err(|e| format!("{}: {e}", self.binary.display()))?;
        let waited = Pid::from_raw(child.id() as i32);
        // The exec helper reaps it itself; std's Child must not.
        std::mem::forget(child);
        Ok(ExecChild {
            waited,
            also_kill: Some(Box::new(move || {
                let text = std::fs::read_to_string(&pid_file).ok()?;
                text.trim().parse().ok().map(Pid::from_raw)
            })),
        })
    }

    fn kill_leftovers(&mut self) {
        if self.created && !self.private_pid_ns {
            // Fails with "container not running" when nothing is left; that is fine.
            let _ = self.run(&[
                "kill".as_ref(),
                "--all".as_ref(),
                self.id.as_ref(),
                "KILL".as_ref(),
            ]);
        }
    }

    fn oom_killed(&self) -> bool {
        (self.oom)()
    }

    fn destroy(&mut self) {
        if !self.created {
            return;
        }
        if let Err(message) = self.run(&["delete".as_ref(), "--force".as_ref(), self.id.as_ref()]) {
            log_warn!("{message}");
        } else {
            self.created = false;
        }
        let _ = std::fs::remove_dir_all(self.root());
    }
}

/// The `msg` of the last `"level":"error"` line of a runtime's JSON log.
fn last_logged_error(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        (value.get("level")?.as_str()? == "error")
            .then(|| value.get("msg")?.as_str().map(str::to_string))?
    })
}
