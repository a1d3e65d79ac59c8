//! Driving an external OCI runtime binary (runc, crun) on the same bundle:
//! `create --bundle B --pid-file P <id>` with the container's stdio, `start <id>`,
//! signals sent to the init pid directly, `delete --force <id>` at the end.
//! The runtime keeps its state under `<state-dir>/runtime` (`--root`) and logs JSON to
//! `<state-dir>/runtime.log`, where its error messages are read from.

use std::ffi::{OsStr, OsString};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::diag::log_warn;
use super::runtime::{ContainerIo, ContainerRuntime, Created, ExecChild, ExecCommand, StdioFds};
use crate::container::terminal;
use crate::protocol::INIT_PID_FILE;

/// The socket in the state dir on which the runtime sends a terminal container's master
/// (`--console-socket`); it exists only during `create`.
const CONSOLE_SOCKET: &str = "console.sock";

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
    fn create(&mut self, io: ContainerIo) -> Result<Created, String> {
        let pid_file = self.state_dir.join(INIT_PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let bundle = self.bundle.clone().into_os_string();
        let id = OsString::from(&self.id);
        let pid_file_arg = pid_file.clone().into_os_string();
        let mut args: Vec<&OsStr> = vec![
            "create".as_ref(),
            "--bundle".as_ref(),
            &bundle,
            "--pid-file".as_ref(),
            &pid_file_arg,
        ];
        let console_path = self.state_dir.join(CONSOLE_SOCKET);
        let console_arg = console_path.clone().into_os_string();
        let (mut command, console) = match io {
            ContainerIo::Pipes(stdio) => {
                args.push(&id);
                // The runtime passes its own stdio on to the container: give it the
                // container's pipes. Its own error output then lands in the container log
                // too; the message we report comes from its JSON log file.
                let mut command = self.command(&args);
                command
                    .stdin(Stdio::from(stdio.stdin))
                    .stdout(Stdio::from(stdio.stdout))
                    .stderr(Stdio::from(stdio.stderr));
                (command, None)
            }
            ContainerIo::Terminal(size) => {
                // The runtime makes the terminal (inside the container's devpts) and sends
                // us its master over this socket (SCM_RIGHTS) during `create`.
                let _ = std::fs::remove_file(&console_path);
                let listener = UnixListener::bind(&console_path)
                    .map_err(|e| format!("console socket {}: {e}", console_path.display()))?;
                args.extend(["--console-socket".as_ref(), console_arg.as_os_str(), &id]);
                let mut command = self.command(&args);
                // Its own stdio reaches nothing of the container's here; errors are in its
                // JSON log.
                command
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                (command, Some((listener, size)))
            }
        };
        let status = command.status();
        if console.is_some() {
            let _ = std::fs::remove_file(&console_path);
        }
        let status = status.map_err(|e| format!("{}: {e}", self.binary.display()))?;
        // Even a failed create may have left state behind.
        self.created = true;
        if !status.success() {
            return Err(self.failure(&args, b"", status));
        }
        let terminal_master = match console {
            Some((listener, size)) => {
                let master = receive_terminal(&listener)
                    .map_err(|e| format!("{} create: {e}", self.binary.display()))?;
                terminal::set_window_size(&master, size).map_err(|e| e.to_string())?;
                Some(master)
            }
            None => None,
        };
        let text = std::fs::read_to_string(&pid_file)
            .map_err(|e| format!("{}: {e}", pid_file.display()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .map_err(|_| format!("{}: not a pid: {text:?}", pid_file.display()))?;
        Ok(Created {
            init: Pid::from_raw(pid),
            terminal_master,
        })
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

/// Take the terminal master the runtime sent on the console socket. By the time `create`
/// returned the runtime has connected and sent it, so the connection waits in the backlog
/// with the fd queued on it: no blocking accept is needed.
fn receive_terminal(listener: &UnixListener) -> Result<OwnedFd, String> {
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("console socket: {e}"))?;
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("the runtime sent no terminal on the console socket: {e}"))?;
    // runc sends the terminal's name as the data and the fd as SCM_RIGHTS.
    let mut name = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let message = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("receiving the terminal from the runtime: {e}"))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for cmsg in message
        .cmsgs()
        .map_err(|e| format!("receiving the terminal from the runtime: {e}"))?
    {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: SCM_RIGHTS installed these fds in this process; nobody else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    // Exactly one is expected; extra ones are closed with the Vec.
    if fds.is_empty() {
        return Err("the runtime sent no terminal fd on the console socket".into());
    }
    Ok(fds.swap_remove(0))
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
