//! What the monitor needs from "a runtime": the built-in one (`container` + `cgroups`
//! modules, see `builtin.rs`) or an external OCI runtime binary such as runc (`external.rs`).

use std::os::fd::OwnedFd;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

pub use crate::container::terminal::WindowSize;

/// The container's standard streams as the monitor hands them over.
pub struct StdioFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// How the container's init is connected to the monitor.
pub enum ContainerIo {
    /// Pipes the monitor reads (and /dev/null as stdin).
    Pipes(StdioFds),
    /// `process.terminal`: the runtime gives the init a terminal of this size as its stdin,
    /// stdout, stderr and controlling terminal, and hands back the terminal's master, which
    /// the monitor reads as the container's stdout (a terminal has one output stream).
    Terminal(WindowSize),
}

/// A created container as the runtime hands it over.
pub struct Created {
    /// The init's pid (blocked before exec until `start`).
    pub init: Pid,
    /// The terminal's master for [`ContainerIo::Terminal`], None for pipes.
    pub terminal_master: Option<OwnedFd>,
}

/// What to run for an Exec request.
pub struct ExecCommand<'a> {
    pub args: &'a [String],
    pub env: &'a [String],
    pub cwd: Option<&'a str>,
}

/// A process started for an Exec request.
pub struct ExecChild {
    /// The process whose wait status is the exec's result (a child of the exec helper,
    /// which is a subreaper so grandchildren are reparented to it).
    pub waited: Pid,
    /// Extra process to kill on timeout besides `waited` (runc exec: the real process).
    pub also_kill: Option<Box<dyn Fn() -> Option<Pid>>>,
}

pub trait ContainerRuntime {
    /// Create the container (init exists, blocked before exec) with its standard streams
    /// connected as `io` says.
    fn create(&mut self, io: ContainerIo) -> Result<Created, String>;
    /// Release the init to exec the container's process; an exec failure is an error.
    fn start(&mut self) -> Result<(), String>;
    /// Signal the init (`all` = every process of the container).
    fn signal(&mut self, init: Pid, signal: Signal, all: bool) -> Result<(), String>;
    /// Start an exec'd process in the running container (called in the exec helper process).
    fn spawn_exec(
        &self,
        init: Pid,
        command: &ExecCommand<'_>,
        stdio: StdioFds,
    ) -> Result<ExecChild, String>;
    /// After the init exited: SIGKILL what is left of the container.
    fn kill_leftovers(&mut self);
    /// Did the kernel OOM-kill a process of the container?
    fn oom_killed(&self) -> bool;
    /// Remove everything the runtime made (cgroup, runtime state). Idempotent.
    fn destroy(&mut self);
}
