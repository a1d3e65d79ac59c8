//! The built-in runtime: `crate::container` builds the container, `crate::cgroups` holds it.
//! This is the only file of the monitor that calls into those two modules.

use std::path::{Path, PathBuf};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

use super::diag::log_warn;
use super::runtime::{ContainerIo, ContainerRuntime, Created, ExecChild, ExecCommand, StdioFds};
use crate::cgroups::{self, CgroupManager};
use crate::container::{self, terminal, InitMode};

pub struct BuiltinRuntime {
    bundle: PathBuf,
    cgroup: Box<dyn CgroupManager>,
    /// The spec is needed only to create and for execs; execs reload it from the bundle so
    /// the idle shim does not keep it in memory.
    spec: Option<Spec>,
    builtin_init: bool,
    /// The created container, until Start lets its init exec.
    created: Option<container::CreatedContainer>,
    cgroup_made: bool,
}

impl BuiltinRuntime {
    pub fn new(
        spec: Spec,
        bundle: &Path,
        cgroups_path: &str,
        builtin_init: bool,
    ) -> Result<Self, String> {
        let cgroup = cgroups::manager(cgroups_path).map_err(|e| e.to_string())?;
        Ok(BuiltinRuntime {
            bundle: bundle.to_path_buf(),
            cgroup,
            spec: Some(spec),
            builtin_init,
            created: None,
            cgroup_made: false,
        })
    }
}

/// The cgroup of a spec, also used by the external runtime for its OOM count.
pub fn cgroup_manager(cgroups_path: &str) -> Option<Box<dyn CgroupManager>> {
    cgroups::manager(cgroups_path).ok()
}

impl ContainerRuntime for BuiltinRuntime {
    fn create(&mut self, io: ContainerIo) -> Result<Created, String> {
        let spec = self.spec.take().ok_or("container already created")?;
        // The pty is the host's (see container::terminal); the shim keeps only the master,
        // the slave goes to the init and is closed here once the init has it.
        let (stdio, terminal_master) = match io {
            ContainerIo::Pipes(stdio) => (container_stdio(stdio), None),
            ContainerIo::Terminal(size) => {
                let pty = terminal::open_pty(size).map_err(|e| e.to_string())?;
                (terminal_stdio(pty.slave)?, Some(pty.master))
            }
        };
        self.cgroup
            .create()
            .map_err(|e| format!("creating cgroup {}: {e}", self.cgroup.path()))?;
        self.cgroup_made = true;
        if let Some(resources) = spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().as_ref())
        {
            self.cgroup
                .apply(resources)
                .map_err(|e| format!("cgroup {}: {e}", self.cgroup.path()))?;
        }
        let cgroup = &self.cgroup;
        let mut place = |pid: Pid| cgroup.add_task(pid).map_err(|e| e.to_string());
        let mode = if self.builtin_init {
            InitMode::Builtin(builtin_init_main)
        } else {
            InitMode::Exec
        };
        let created = container::create(&spec, &self.bundle, stdio, &mut place, mode)
            .map_err(|e| e.to_string())?;
        let init = created.pid();
        self.created = Some(created);
        Ok(Created {
            init,
            terminal_master,
        })
    }

    fn start(&mut self) -> Result<(), String> {
        let created = self.created.take().ok_or("container was already started")?;
        created.start().map_err(|e| e.to_string())
    }

    fn signal(&mut self, init: Pid, signal: Signal, all: bool) -> Result<(), String> {
        if all {
            return self.cgroup.kill_all(signal).map_err(|e| e.to_string());
        }
        kill(init, signal).map_err(|e| format!("kill {init} {signal}: {e}"))
    }

    fn spawn_exec(
        &self,
        init: Pid,
        command: &ExecCommand<'_>,
        stdio: StdioFds,
    ) -> Result<ExecChild, String> {
        let spec = Spec::load(self.bundle.join("config.json"))
            .map_err(|e| format!("loading the bundle's config.json: {e}"))?;
        let cgroup = &self.cgroup;
        let mut place = |pid: Pid| cgroup.add_task(pid).map_err(|e| e.to_string());
        // As `runc exec --env`: the container's environment, with the request's entries
        // added or overriding (CRI's ExecSync carries none; the command still gets PATH).
        let env = merged_env(
            spec.process()
                .as_ref()
                .and_then(|p| p.env().as_deref())
                .unwrap_or(&[]),
            command.env,
        );
        let pid = container::exec_in(
            init,
            &spec,
            command.args,
            &env,
            command.cwd,
            container_stdio(stdio),
            &mut place,
        )
        .map_err(|e| e.to_string())?;
        Ok(ExecChild {
            waited: pid,
            also_kill: None,
        })
    }

    fn kill_leftovers(&mut self) {
        if let Err(e) = self.cgroup.kill_all(Signal::SIGKILL) {
            log_warn!("killing what is left in cgroup {}: {e}", self.cgroup.path());
        }
    }

    fn oom_killed(&self) -> bool {
        match self.cgroup.oom_kill_count() {
            Ok(count) => count > 0,
            Err(e) => {
                log_warn!("reading the OOM kill count of {}: {e}", self.cgroup.path());
                false
            }
        }
    }

    fn destroy(&mut self) {
        // A container that never started: its init is still blocked; destroy kills it too.
        self.created = None;
        if self.cgroup_made {
            if let Err(e) = self.cgroup.destroy() {
                log_warn!("removing cgroup {}: {e}", self.cgroup.path());
            }
        }
    }
}

/// `base` with `overrides` applied: same variable name replaces, new names are appended.
fn merged_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let name = |entry: &str| {
        entry
            .split_once('=')
            .map_or(entry, |(name, _)| name)
            .to_string()
    };
    let mut env: Vec<String> = base
        .iter()
        .filter(|entry| !overrides.iter().any(|o| name(o) == name(entry)))
        .cloned()
        .collect();
    env.extend(overrides.iter().cloned());
    env
}

/// The monitor's pipes as the container's stdio.
fn container_stdio(stdio: StdioFds) -> container::Stdio {
    container::Stdio {
        stdin: Some(stdio.stdin),
        stdout: stdio.stdout,
        stderr: stdio.stderr,
    }
}

/// A terminal's slave as all three standard streams.
fn terminal_stdio(slave: std::os::fd::OwnedFd) -> Result<container::Stdio, String> {
    let copy = |fd: &std::os::fd::OwnedFd| {
        fd.try_clone()
            .map_err(|e| format!("duplicating the terminal: {e}"))
    };
    Ok(container::Stdio {
        stdin: Some(copy(&slave)?),
        stdout: copy(&slave)?,
        stderr: slave,
    })
}

/// The init of a `--builtin-init` container (a pod's pid holder).
fn builtin_init_main() -> ! {
    super::init::builtin_init()
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_env_overrides_the_containers() {
        let base = [
            "PATH=/bin".to_string(),
            "A=1".to_string(),
            "B=2".to_string(),
        ];
        let overrides = ["A=9".to_string(), "C=3".to_string()];
        assert_eq!(
            super::merged_env(&base, &overrides),
            ["PATH=/bin", "B=2", "A=9", "C=3"]
        );
        assert_eq!(super::merged_env(&base, &[]), base);
    }
}
