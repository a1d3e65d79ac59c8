//! What the monitor needs from "a runtime": the built-in one (`container` + `cgroups`
//! modules, see `builtin.rs`) or an external OCI runtime binary such as runc (`external.rs`).

use std::os::fd::OwnedFd;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// The container's standard streams as the monitor hands them over.
pub struct StdioFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
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
    /// Create the container (init exists, blocked before exec) and return the init's pid.
    fn create(&mut self, stdio: StdioFds) -> Result<Pid, String>;
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
