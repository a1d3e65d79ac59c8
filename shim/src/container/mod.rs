//! berth's built-in OCI runtime ("libcontainer"): builds a container from an OCI bundle.
//!
//! [`create`] forks the container's process, which is held before exec until
//! [`CreatedContainer::start`]; [`exec_in`] runs one more process in a running container.
//!
//! How a process is made (both cases): the caller forks an intermediate process that enters
//! the PID namespace (setns or unshare; it applies to children only) and clones the real
//! process with CLONE_PARENT, so that process is a direct child of the caller whatever the
//! namespace. The intermediate reports the pid and exits; the caller places the pid in the
//! cgroup and says "go"; the process joins or makes its other namespaces, sets up the root,
//! the user, capabilities, no_new_privs and seccomp, and reports "ready" (create) or execs
//! (exec_in). The caller's end of the socket pair sees EOF when the close-on-exec child end
//! goes away, so a successful exec is an EOF and a failed one an error message.
//!
//! Modules: [`namespaces`], [`rootfs`], [`mounts`], [`devices`], [`capabilities`],
//! [`user`], [`seccomp`], [`process`], [`init`] (the child side), [`syscall`] (the seam that
//! lets the step logic be unit-tested without root), [`terminal`] (`process.terminal`: the
//! caller allocates a pty with [`terminal::open_pty`] and passes its slave as all three
//! [`Stdio`] streams; the init makes it its controlling terminal).

pub mod capabilities;
pub mod devices;
mod error;
pub mod init;
pub mod mounts;
pub mod namespaces;
pub mod process;
pub mod rootfs;
pub mod seccomp;
mod sync;
pub mod syscall;
mod syscall_table;
pub mod terminal;
pub mod user;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxCapabilities, Spec};

pub use error::ContainerError;

use capabilities::CapSets;
use error::StepExt;
use init::{InitPlan, ProcessPlan};
use mounts::CgroupMode;
use namespaces::{NamespacePlan, OpenedNamespaces};
use process::Command;
use rootfs::RootfsPlan;
use sync::{recv_msg, send_msg, Msg};
use syscall::LinuxSyscall;
use user::UserPlan;

/// The container process's standard streams. `stdin` None: /dev/null.
pub struct Stdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// What the container's init runs once started.
#[derive(Clone, Copy, Debug)]
pub enum InitMode {
    /// exec `process.args`.
    Exec,
    /// Call this instead (a pod's shared PID namespace holder). `root.path` "/" is allowed
    /// in this mode only and means: no root change, no mounts.
    Builtin(fn() -> !),
}

/// A container whose init exists and waits before exec. Dropping it without `start` makes
/// the init exit (status 1); the caller still reaps it.
#[derive(Debug)]
pub struct CreatedContainer {
    pid: Pid,
    sync: OwnedFd,
}

impl CreatedContainer {
    /// The init's pid in the caller's PID namespace (a child of the caller).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Let the init exec. An exec failure (no such binary, permission denied...) is the
    /// error; the init has then exited with status 127 and is left for the caller to reap.
    pub fn start(self) -> Result<(), ContainerError> {
        if let Err(errno) = send_msg(&self.sync, &Msg::Start) {
            return Err(ContainerError::Step(format!(
                "starting the container: its process is gone ({errno})"
            )));
        }
        match recv_msg(&self.sync) {
            Ok(None) => Ok(()),
            Ok(Some(Msg::Error(message))) => Err(ContainerError::Child(message)),
            Ok(Some(other)) => Err(ContainerError::Step(format!(
                "starting the container: unexpected {other:?}"
            ))),
            Err(errno) => Err(ContainerError::sys("starting the container", errno)),
        }
    }
}

/// Create the container of `spec` (bundle `bundle`: a relative `root.path` is relative to it).
/// `place_in_cgroup` is called with the init's pid before the init does anything of the
/// container's setup.
pub fn create(
    spec: &Spec,
    bundle: &Path,
    stdio: Stdio,
    place_in_cgroup: &mut dyn FnMut(Pid) -> Result<(), String>,
    mode: InitMode,
) -> Result<CreatedContainer, ContainerError> {
    let plan = init_plan(spec, bundle, mode)?;
    let opened = namespaces::open(&plan.namespaces)?;
    let (pid, sync) = spawn(
        &plan.namespaces,
        &opened,
        stdio,
        place_in_cgroup,
        |sys, sock| init::container_init(sys, &plan, &opened, sock),
    )?;
    match recv_msg(&sync) {
        Ok(Some(Msg::Ready)) => {
            tracing::debug!("container init {pid} is set up and waits for start");
            Ok(CreatedContainer { pid, sync })
        }
        other => {
            let err = failure("setting up the container", other);
            reap(pid);
            Err(err)
        }
    }
}

/// Run `args` in the running container whose init is `container_pid`: its namespaces,
/// `spec`'s user, capabilities, no_new_privs, seccomp, rlimits; `env` and `cwd` (default:
/// the spec's cwd). Returns once the process exec'd; it is a child of the caller.
pub fn exec_in(
    container_pid: Pid,
    spec: &Spec,
    args: &[String],
    env: &[String],
    cwd: Option<&str>,
    stdio: Stdio,
    place_in_cgroup: &mut dyn FnMut(Pid) -> Result<(), String>,
) -> Result<Pid, ContainerError> {
    let spec_process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ContainerError::InvalidSpec("no process in the spec".into()))?;
    let cwd = cwd
        .map(PathBuf::from)
        .unwrap_or_else(|| spec_process.cwd().clone());
    let command = Command::new(args, env, &cwd)?;
    let process = process_plan(spec, command)?;
    let linux_namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let ns_plan = namespaces::plan_exec(container_pid.as_raw(), &linux_namespaces)?;
    let opened = namespaces::open(&ns_plan)?;
    let (pid, sync) = spawn(&ns_plan, &opened, stdio, place_in_cgroup, |sys, sock| {
        init::exec_process(sys, &process, &ns_plan, &opened, sock)
    })?;
    match recv_msg(&sync) {
        Ok(None) => Ok(pid),
        other => {
            let err = failure("exec in the container", other);
            reap(pid);
            Err(err)
        }
    }
}

/// The error for an unexpected answer from the child.
fn failure(what: &str, got: Result<Option<Msg>, Errno>) -> ContainerError {
    match got {
        Ok(Some(Msg::Error(message))) => ContainerError::Child(message),
        Ok(None) => ContainerError::Step(format!("{what}: the process exited without saying why")),
        Ok(Some(other)) => ContainerError::Step(format!("{what}: unexpected {other:?}")),
        Err(errno) => ContainerError::sys(what, errno),
    }
}

/// The last step of both ways of making the container process: put it in its cgroup
/// before it sets itself up, then let it go on. On failure it is killed and reaped.
fn place_and_release(
    pid: Pid,
    parent_end: OwnedFd,
    place_in_cgroup: &mut dyn FnMut(Pid) -> Result<(), String>,
) -> Result<(Pid, OwnedFd), ContainerError> {
    if let Err(message) = place_in_cgroup(pid) {
        reap(pid);
        return Err(ContainerError::Cgroup(message));
    }
    if let Err(errno) = send_msg(&parent_end, &Msg::Go) {
        reap(pid);
        return Err(ContainerError::sys(
            "releasing the container process",
            errno,
        ));
    }
    Ok((pid, parent_end))
}

/// Wait for a child that failed (it exits right after reporting).
fn reap(pid: Pid) {
    let _ = kill(pid, Signal::SIGKILL);
    let _ = waitpid(pid, None);
}

/// Fork the intermediate, get the process's pid, place it in the cgroup, say go. `body`
/// runs in the container's process and never returns.
fn spawn(
    ns_plan: &NamespacePlan,
    opened: &OpenedNamespaces,
    stdio: Stdio,
    place_in_cgroup: &mut dyn FnMut(Pid) -> Result<(), String>,
    body: impl FnOnce(&LinuxSyscall, &OwnedFd),
) -> Result<(Pid, OwnedFd), ContainerError> {
    let (parent_end, child_end) = sync::pair().step(|| "socketpair".into())?;
    let stdin = match stdio.stdin {
        Some(fd) => fd,
        None => std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| ContainerError::Step(format!("opening /dev/null: {e}")))?,
    };
    let (stdout, stderr) = (stdio.stdout, stdio.stderr);

    if let Some(flags) = direct_clone_flags(&ns_plan.pid) {
        return spawn_direct(
            flags,
            opened,
            (parent_end, child_end),
            [stdin, stdout, stderr],
            place_in_cgroup,
            body,
        );
    }

    // SAFETY: the child runs only `intermediate`, which never returns; glibc's fork makes
    // malloc usable in the child even if the caller has other threads.
    let forked = unsafe { libc::fork() };
    if forked < 0 {
        return Err(ContainerError::sys("fork", Errno::last()));
    }
    if forked == 0 {
        let mut keep: Vec<RawFd> = vec![
            child_end.as_raw_fd(),
            stdin.as_raw_fd(),
            stdout.as_raw_fd(),
            stderr.as_raw_fd(),
        ];
        keep.extend(opened.pid.iter().map(|fd| fd.as_raw_fd()));
        keep.extend(opened.join.iter().map(|(_, fd)| fd.as_raw_fd()));
        process::close_fds_except(&keep);
        std::mem::forget(parent_end);
        intermediate(ns_plan, opened, child_end, [stdin, stdout, stderr], body);
    }
    let intermediate_pid = Pid::from_raw(forked);
    drop(child_end);
    drop((stdin, stdout, stderr));

    let answer = recv_msg(&parent_end);
    // It exits right after answering.
    let _ = waitpid(intermediate_pid, None);
    let pid = match answer {
        Ok(Some(Msg::Pid(pid))) => Pid::from_raw(pid),
        other => return Err(failure("starting the container process", other)),
    };
    place_and_release(pid, parent_end, place_in_cgroup)
}

/// The clone flags for making the process straight from the caller, without the
/// intermediate: possible when it gets a new PID namespace or the caller's, and the caller
/// is single-threaded (a raw clone does not take glibc's malloc locks as fork does, so a
/// lock another thread holds would stay locked in the child). Joining a PID namespace
/// always needs the intermediate: setns(CLONE_NEWPID) would change the caller's own
/// later children. One process and one hand-off fewer is milliseconds of CreateContainer.
fn direct_clone_flags(pid: &namespaces::PidNamespace) -> Option<libc::c_int> {
    let flags = match pid {
        namespaces::PidNamespace::New => libc::CLONE_NEWPID,
        namespaces::PidNamespace::Inherit => 0,
        namespaces::PidNamespace::Join(_) => return None,
    };
    single_threaded().then_some(flags)
}

/// True when the calling process has one thread (the shim daemon; not a test harness).
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}

/// Clone the container's process straight from the caller (see [`direct_clone_flags`]),
/// place it in the cgroup, say go.
fn spawn_direct(
    flags: libc::c_int,
    opened: &OpenedNamespaces,
    (parent_end, child_end): (OwnedFd, OwnedFd),
    stdio: [OwnedFd; 3],
    place_in_cgroup: &mut dyn FnMut(Pid) -> Result<(), String>,
    body: impl FnOnce(&LinuxSyscall, &OwnedFd),
) -> Result<(Pid, OwnedFd), ContainerError> {
    // SAFETY: a raw clone without CLONE_VM is a fork (copy-on-write memory, same stack
    // address) and the caller is single-threaded (checked by `direct_clone_flags`); the
    // child runs only the code below and never returns.
    let cloned = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if cloned < 0 {
        return Err(ContainerError::sys(
            "clone of the container process",
            Errno::last(),
        ));
    }
    if cloned == 0 {
        let mut keep: Vec<RawFd> = vec![child_end.as_raw_fd()];
        keep.extend(stdio.iter().map(|fd| fd.as_raw_fd()));
        keep.extend(opened.join.iter().map(|(_, fd)| fd.as_raw_fd()));
        process::close_fds_except(&keep);
        std::mem::forget(parent_end);
        let sys = LinuxSyscall;
        reset_signals();
        let [stdin, stdout, stderr] = stdio;
        if let Err(e) = process::install_stdio(stdin, stdout, stderr) {
            let _ = send_msg(&child_end, &Msg::Error(e.to_string()));
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(127) }
        }
        body(&sys, &child_end);
        // SAFETY: _exit in a forked child; the bodies never return.
        unsafe { libc::_exit(127) }
    }
    let pid = Pid::from_raw(cloned as i32);
    drop(child_end);
    drop(stdio);
    place_and_release(pid, parent_end, place_in_cgroup)
}

/// The intermediate process: enter the PID namespace, clone the real process as a sibling
/// (CLONE_PARENT), report its pid, exit.
fn intermediate(
    ns_plan: &NamespacePlan,
    opened: &OpenedNamespaces,
    sock: OwnedFd,
    stdio: [OwnedFd; 3],
    body: impl FnOnce(&LinuxSyscall, &OwnedFd),
) -> ! {
    let sys = LinuxSyscall;
    reset_signals();
    if let Err(e) = namespaces::enter_pid(&sys, ns_plan, opened) {
        let _ = send_msg(&sock, &Msg::Error(e.to_string()));
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: a raw clone without CLONE_VM is a fork (copy-on-write memory, same stack
    // address); this process is single-threaded. CLONE_PARENT makes the child the caller's.
    let cloned = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if cloned == 0 {
        let [stdin, stdout, stderr] = stdio;
        if let Err(e) = process::install_stdio(stdin, stdout, stderr) {
            let _ = send_msg(&sock, &Msg::Error(e.to_string()));
            // SAFETY: _exit in a forked child.
            unsafe { libc::_exit(127) }
        }
        body(&sys, &sock);
        // The bodies never return; should one, it must not run the intermediate's tail.
        // SAFETY: _exit in a forked child.
        unsafe { libc::_exit(127) }
    }
    let msg = if cloned < 0 {
        Msg::Error(ContainerError::sys("clone of the container process", Errno::last()).to_string())
    } else {
        Msg::Pid(cloned as i32)
    };
    let _ = send_msg(&sock, &msg);
    // SAFETY: _exit in a forked child.
    unsafe { libc::_exit(0) }
}

/// The caller (the shim) blocks signals it reads from a signalfd and ignores SIGPIPE; a
/// container must start with neither.
fn reset_signals() {
    for signal in Signal::iterator() {
        if matches!(signal, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: restoring default dispositions in a fresh single-threaded child.
        unsafe {
            let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
        }
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The spec's process part, for init and exec alike.
fn process_plan(spec: &Spec, command: Command) -> Result<ProcessPlan, ContainerError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ContainerError::InvalidSpec("no process in the spec".into()))?;
    // process.terminal concerns the init only (see `init_plan`): an exec'd process gets
    // the streams its caller passes (CRI's ExecSync has no terminal).
    let user = process.user();
    let last_cap = capabilities::last_cap();
    let caps: Option<CapSets> = process
        .capabilities()
        .as_ref()
        .map(|c: &LinuxCapabilities| CapSets::from_spec(c, last_cap));
    let seccomp = match spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(profile) => Some(seccomp::compile(profile)?),
        None => None,
    };
    Ok(ProcessPlan {
        command,
        user: UserPlan {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        },
        umask: user.umask().unwrap_or(0o022),
        caps,
        last_cap,
        no_new_privs: process.no_new_privileges().unwrap_or(false),
        seccomp,
        rlimits: process.rlimits().clone().unwrap_or_default(),
        oom_score_adj: process.oom_score_adj(),
    })
}

/// Validate the spec and turn it into the init's plan (everything that can be checked
/// before the fork is checked here, so bad input fails without a process).
pub fn init_plan(spec: &Spec, bundle: &Path, mode: InitMode) -> Result<InitPlan, ContainerError> {
    let spec_process = spec
        .process()
        .as_ref()
        .ok_or_else(|| ContainerError::InvalidSpec("no process in the spec".into()))?;
    let args = spec_process.args().clone().unwrap_or_default();
    let env = spec_process.env().clone().unwrap_or_default();
    let command = match mode {
        InitMode::Exec => Command::new(&args, &env, spec_process.cwd())?,
        // The built-in init execs nothing; args are informative only.
        InitMode::Builtin(_) => {
            Command::new(&["berth-init".to_string()], &env, spec_process.cwd())?
        }
    };
    let process = process_plan(spec, command)?;
    let linux = spec.linux().as_ref();
    let ns_plan = namespaces::plan(
        &linux
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default(),
    )?;

    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| ContainerError::InvalidSpec("no root in the spec".into()))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = if root_path == Path::new("/") {
        if !matches!(mode, InitMode::Builtin(_)) {
            return Err(ContainerError::InvalidSpec(
                "root.path \"/\" is allowed only with the built-in init".into(),
            ));
        }
        None
    } else {
        if !ns_plan.has_mount_namespace() {
            return Err(ContainerError::InvalidSpec(
                "a rootfs needs a mount namespace".into(),
            ));
        }
        if !root_path.is_dir() {
            return Err(ContainerError::Step(format!(
                "rootfs {} does not exist",
                root_path.display()
            )));
        }
        let spec_mounts = spec.mounts().clone().unwrap_or_default();
        let dev_bound = devices::dev_is_bind_mounted(&spec_mounts);
        let devices = if dev_bound {
            None
        } else {
            Some(devices::device_list(
                linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]),
            )?)
        };
        let has_devpts = spec_mounts.iter().any(|m| {
            m.destination() == Path::new("/dev/pts") && m.typ().as_deref() == Some("devpts")
        });
        let (root_propagation, final_propagation) =
            rootfs::root_propagation(linux.and_then(|l| l.rootfs_propagation().as_deref()))?;
        Some(RootfsPlan {
            rootfs: root_path,
            readonly: root.readonly().unwrap_or(false),
            root_propagation,
            final_propagation,
            mounts: spec_mounts,
            devices,
            has_devpts,
            cgroups: CgroupMode::detect(),
            masked_paths: linux
                .and_then(|l| l.masked_paths().clone())
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            readonly_paths: linux
                .and_then(|l| l.readonly_paths().clone())
                .unwrap_or_default()
                .into_iter()
                .map(PathBuf::from)
                .collect(),
        })
    };
    let mut sysctls: Vec<(String, String)> = linux
        .and_then(|l| l.sysctl().clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    sysctls.sort();
    for (key, _) in &sysctls {
        if key.is_empty()
            || key.contains('/')
            || key.split('.').any(|part| part.is_empty() || part == "..")
        {
            return Err(ContainerError::InvalidSpec(format!(
                "sysctl {key:?} is not a sysctl name"
            )));
        }
    }
    if rootfs.is_none() && !sysctls.is_empty() {
        return Err(ContainerError::InvalidSpec(
            "sysctls need the container's own root (its /proc)".into(),
        ));
    }
    Ok(InitPlan {
        process,
        namespaces: ns_plan,
        rootfs,
        hostname: spec.hostname().clone(),
        domainname: spec.domainname().clone(),
        sysctls,
        mode,
        // The caller passes the terminal's slave as the streams (see `terminal`).
        terminal: matches!(mode, InitMode::Exec) && spec_process.terminal() == Some(true),
    })
}
