//! What runs in the container's process between the fork and the exec, for a container's
//! init (`create`) and for a process exec'd into a running container (`exec_in`). Everything
//! here runs in a forked child: failures are sent to the caller as text and the child exits.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::CloneFlags;

use super::capabilities::CapSets;
use super::error::{ContainerError, StepExt};
use super::mounts::{CgroupMode, CgroupSource};
use super::namespaces::{self, NamespacePlan, OpenedNamespaces};
use super::process::{self, Command};
use super::rootfs::{self, RootfsPlan};
use super::seccomp::{self, SeccompProgram};
use super::sync::{recv_msg, send_msg, Msg};
use super::syscall::Syscall;
use super::terminal;
use super::user::{self, UserPlan};
use super::InitMode;

/// The process settings shared by a container's init and exec'd processes.
#[derive(Clone, Debug)]
pub struct ProcessPlan {
    pub command: Command,
    pub user: UserPlan,
    pub umask: u32,
    pub caps: Option<CapSets>,
    pub last_cap: u32,
    pub no_new_privs: bool,
    pub seccomp: Option<SeccompProgram>,
    pub rlimits: Vec<oci_spec::runtime::PosixRlimit>,
    pub oom_score_adj: Option<i32>,
}

/// Everything a container's init needs, prepared (and validated) before the fork.
#[derive(Clone, Debug)]
pub struct InitPlan {
    pub process: ProcessPlan,
    pub namespaces: NamespacePlan,
    pub rootfs: Option<RootfsPlan>,
    pub hostname: Option<String>,
    pub domainname: Option<String>,
    pub sysctls: Vec<(String, String)>,
    pub mode: InitMode,
    /// `process.terminal`: the standard streams are a terminal's slave, which becomes the
    /// controlling terminal of a new session.
    pub terminal: bool,
}

/// Waits for `want` from the caller (Go: it placed us in the cgroup; Start: run the
/// process); false when it hung up instead.
fn wait_for(sock: &OwnedFd, want: Msg) -> Result<bool, ContainerError> {
    match recv_msg(sock).step(|| "waiting for the runtime".into())? {
        Some(msg) if msg == want => Ok(true),
        None => Ok(false),
        Some(other) => Err(ContainerError::Step(format!(
            "unexpected message from the runtime: {other:?}"
        ))),
    }
}

/// Report `err` to the caller and exit.
fn fail(sock: &OwnedFd, err: ContainerError) -> ! {
    let _ = send_msg(sock, &Msg::Error(err.to_string()));
    // SAFETY: _exit never returns and runs no destructors of the caller's state.
    unsafe { libc::_exit(127) }
}

fn exit_quietly(code: i32) -> ! {
    // SAFETY: as in `fail`.
    unsafe { libc::_exit(code) }
}

/// Returns once the caller sent `want`. A caller that hung up instead dropped the
/// container: exit quietly. Anything else is reported, and the process exits.
fn wait_for_or_exit(sock: &OwnedFd, want: Msg) {
    match wait_for(sock, want) {
        Ok(true) => {}
        Ok(false) => exit_quietly(1),
        Err(e) => fail(sock, e),
    }
}

/// The container's init. Never returns: it execs, runs the built-in init, or exits.
pub fn container_init(
    sys: &dyn Syscall,
    plan: &InitPlan,
    opened: &OpenedNamespaces,
    sock: &OwnedFd,
) -> ! {
    wait_for_or_exit(sock, Msg::Go);
    // First, while nothing else has changed: a wrong stdio is the caller's bug, and
    // TIOCSCTTY needs no privilege that a later step (user switch, capabilities) drops.
    if plan.terminal {
        if let Err(e) = terminal::become_session_leader() {
            fail(sock, e);
        }
    }
    if let Err(e) = setup_init(sys, plan, opened) {
        fail(sock, e);
    }
    if let Err(errno) = send_msg(sock, &Msg::Ready) {
        fail(sock, ContainerError::sys("reporting ready", errno));
    }
    wait_for_or_exit(sock, Msg::Start);
    match plan.mode {
        InitMode::Exec => fail(sock, process::exec(&plan.process.command)),
        InitMode::Builtin(init) => {
            // Closing our end is the "started" answer the caller waits for.
            // SAFETY: the fd is ours; `sock` is not used after this (init() never returns).
            unsafe { libc::close(std::os::fd::AsRawFd::as_raw_fd(sock)) };
            init()
        }
    }
}

fn setup_init(
    sys: &dyn Syscall,
    plan: &InitPlan,
    opened: &OpenedNamespaces,
) -> Result<(), ContainerError> {
    // Through the host's /proc, before any namespace or root change.
    if let Some(value) = plan.process.oom_score_adj {
        process::set_oom_score_adj(sys, value)?;
    }
    namespaces::enter_others(sys, &plan.namespaces, opened)?;
    if let Some(root) = &plan.rootfs {
        let cgroup_source = cgroup_source(
            root.cgroups,
            plan.namespaces.has_new(CloneFlags::CLONE_NEWCGROUP),
        )?;
        rootfs::prepare(sys, root, &cgroup_source)?;
        rootfs::pivot(sys, root)?;
    }
    if plan.namespaces.has_new(CloneFlags::CLONE_NEWUTS) {
        if let Some(name) = &plan.hostname {
            sys.sethostname(name)
                .step(|| format!("sethostname {name:?}"))?;
        }
        if let Some(name) = &plan.domainname {
            sys.setdomainname(name)
                .step(|| format!("setdomainname {name:?}"))?;
        }
    }
    for (key, value) in &plan.sysctls {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        sys.write_file(&path, value.as_bytes())
            .step(|| format!("sysctl {key}={value}"))?;
    }
    if let Some(root) = &plan.rootfs {
        rootfs::readonly_paths(sys, root)?;
        rootfs::masked_paths(sys, root)?;
        rootfs::readonly_root(sys, root)?;
    }
    finish_process(sys, &plan.process, plan.rootfs.is_some())
}

/// Where a v2 `cgroup` mount comes from (read before pivot_root, from the host's /proc).
fn cgroup_source(mode: CgroupMode, new_cgroup_ns: bool) -> Result<CgroupSource, ContainerError> {
    if mode == CgroupMode::V1 || new_cgroup_ns {
        return Ok(CgroupSource::Namespace);
    }
    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| ContainerError::Step(format!("reading /proc/self/cgroup: {e}")))?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("/");
    Ok(CgroupSource::Bind(
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/')),
    ))
}

/// umask, rlimits, cwd, user and capabilities, no_new_privs, seccomp: the common tail of an
/// init and an exec'd process.
fn finish_process(
    sys: &dyn Syscall,
    plan: &ProcessPlan,
    create_cwd: bool,
) -> Result<(), ContainerError> {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(plan.umask as libc::mode_t) };
    process::set_rlimits(sys, &plan.rlimits)?;
    // As root first (a directory only root can enter, such as a volume); again as the user
    // when root was refused (a root-squashed network volume).
    let cwd_later = match process::enter_cwd(sys, &plan.command.cwd, create_cwd) {
        Ok(()) => false,
        Err(ContainerError::Sys {
            errno: Errno::EACCES | Errno::EPERM,
            ..
        }) => true,
        Err(e) => return Err(e),
    };
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN, which the user switch may
    // drop: load it now (runc's order). With it, as late as possible.
    if !plan.no_new_privs {
        if let Some(program) = &plan.seccomp {
            seccomp::load(program)?;
        }
    }
    user::switch_user(sys, &plan.user, plan.caps.as_ref(), plan.last_cap)?;
    if cwd_later {
        process::enter_cwd(sys, &plan.command.cwd, false)?;
    }
    if plan.no_new_privs {
        sys.set_no_new_privs()
            .step(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
        if let Some(program) = &plan.seccomp {
            seccomp::load(program)?;
        }
    }
    Ok(())
}

/// A process exec'd into a running container. Never returns.
pub fn exec_process(
    sys: &dyn Syscall,
    plan: &ProcessPlan,
    namespaces: &NamespacePlan,
    opened: &OpenedNamespaces,
    sock: &OwnedFd,
) -> ! {
    wait_for_or_exit(sock, Msg::Go);
    let setup = || -> Result<(), ContainerError> {
        if let Some(value) = plan.oom_score_adj {
            process::set_oom_score_adj(sys, value)?;
        }
        namespaces::enter_others(sys, namespaces, opened)?;
        finish_process(sys, plan, false)
    };
    if let Err(e) = setup() {
        fail(sock, e);
    }
    fail(sock, process::exec(&plan.command))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::syscall::RecordingSyscall;

    #[test]
    fn finish_order_without_and_with_no_new_privs() {
        let plan = ProcessPlan {
            command: Command::new(&["sh".into()], &[], Path::new("/work")).unwrap(),
            user: UserPlan {
                uid: 1,
                gid: 2,
                additional_gids: vec![],
            },
            umask: 0o022,
            caps: None,
            last_cap: 40,
            no_new_privs: true,
            seccomp: None,
            rlimits: vec![],
            oom_score_adj: None,
        };
        let sys = RecordingSyscall::default();
        finish_process(&sys, &plan, true).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mkdir_all /work",
                "chdir /work",
                "setgroups []",
                "setresgid 2",
                "setresuid 1",
                "no_new_privs"
            ]
        );

        // A refused chdir is retried after the user switch.
        let sys = RecordingSyscall::default();
        *sys.fail.borrow_mut() = Some(("chdir".into(), Errno::EACCES));
        let err = finish_process(&sys, &plan, false).unwrap_err();
        assert_eq!(
            sys.calls(),
            [
                "chdir /work",
                "setgroups []",
                "setresgid 2",
                "setresuid 1",
                "chdir /work"
            ]
        );
        assert_eq!(
            err.to_string(),
            "chdir to the working directory /work: EACCES: Permission denied"
        );
    }
}
