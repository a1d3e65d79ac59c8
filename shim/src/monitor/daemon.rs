//! `berth-shim create`: the detach dance and the daemon's setup.
//!
//! The foreground process forks the daemon, which calls setsid. The foreground waits on a
//! "ready" pipe until the daemon writes `ok` (the container is created, `pid`, `shim.pid` and
//! `control.sock` exist) or an error message (nothing is left), and exits 0 or 1 accordingly;
//! its exit hands the daemon to init (or the nearest subreaper). The daemon lives on
//! detached: own session, stdio on /dev/null, child subreaper, parent of the container's init.
//!
//! One fork, not the classic two: the second fork only keeps a daemon from acquiring a
//! controlling terminal, and the shim opens terminals (a tty container's pty) only with
//! O_NOCTTY; each fork and hand-off costs milliseconds of CreateContainer on a loaded node.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, setsid, ForkResult};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::args::CreateArgs;
use super::builtin::{cgroup_manager, BuiltinRuntime};
use super::cri_log::CriLog;
use super::diag::{self, log_info};
use super::event_loop::Monitor;
use super::external::ExternalRuntime;
use super::runtime::{ContainerIo, ContainerRuntime, Created, StdioFds, WindowSize};
use crate::protocol::{CONTROL_SOCKET, EXIT_FILE, INIT_PID_FILE, SHIM_PID_FILE};

/// What the foreground checks before forking: errors here are reported directly.
struct Prepared {
    args: CreateArgs,
    spec: Spec,
    cgroups_path: String,
}

/// Run `berth-shim create`; the return value is the foreground process's exit code.
pub fn run_create(args: CreateArgs) -> i32 {
    let prepared = match prepare(args) {
        Ok(prepared) => prepared,
        Err(message) => {
            eprintln!("berth-shim: {message}");
            return 1;
        }
    };
    let (ready_read, ready_write) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(pipe) => pipe,
        Err(e) => {
            eprintln!("berth-shim: pipe: {e}");
            return 1;
        }
    };
    // SAFETY: single-threaded here (nothing has spawned a thread), so fork is safe.
    match unsafe { fork() } {
        Err(e) => {
            eprintln!("berth-shim: fork: {e}");
            1
        }
        Ok(ForkResult::Parent { child }) => {
            drop(ready_write);
            let code = wait_ready(ready_read);
            if code != 0 {
                // The daemon exits right after reporting a failure: reap it here, so a
                // caller that outlives us never sees it. A live daemon is left alone.
                let _ = waitpid(child, None);
            }
            code
        }
        Ok(ForkResult::Child) => {
            drop(ready_read);
            let _ = setsid();
            daemon(prepared, ready_write)
        }
    }
}

/// The foreground's side of the ready pipe: `ok` or an error message.
fn wait_ready(ready: OwnedFd) -> i32 {
    let mut message = String::new();
    let _ = std::fs::File::from(ready)
        .take(64 * 1024)
        .read_to_string(&mut message);
    let message = message.lines().next().unwrap_or("").trim();
    match message {
        "ok" => 0,
        "" => {
            eprintln!("berth-shim: the shim died while creating the container");
            1
        }
        _ => {
            eprintln!("berth-shim: {message}");
            1
        }
    }
}

fn report(ready: &OwnedFd, message: &str) {
    // One line: the foreground prints the first line only.
    let line = format!("{}\n", message.replace('\n', " "));
    let _ = nix::unistd::write(ready, line.as_bytes());
}

fn prepare(mut args: CreateArgs) -> Result<Prepared, String> {
    if args.builtin_init && args.runtime.is_some() {
        return Err("--builtin-init cannot be combined with --runtime".into());
    }
    args.bundle = std::fs::canonicalize(&args.bundle)
        .map_err(|e| format!("bundle {}: {e}", args.bundle.display()))?;
    std::fs::create_dir_all(&args.state_dir)
        .map_err(|e| format!("state dir {}: {e}", args.state_dir.display()))?;
    args.state_dir = std::fs::canonicalize(&args.state_dir)
        .map_err(|e| format!("state dir {}: {e}", args.state_dir.display()))?;
    if let Some(log) = &args.log_path {
        if log.is_relative() {
            let cwd = std::env::current_dir().map_err(|e| format!("current dir: {e}"))?;
            args.log_path = Some(cwd.join(log));
        }
    }
    if let Some(runtime) = &args.runtime {
        if !runtime.is_absolute() {
            args.runtime = Some(
                find_in_path(runtime)
                    .ok_or_else(|| format!("runtime {} not found in PATH", runtime.display()))?,
            );
        }
    }
    let config = args.bundle.join("config.json");
    let spec = Spec::load(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.cgroups_path().as_ref())
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("/berth/{}", args.id));
    refuse_live_shim(&args.state_dir)?;
    Ok(Prepared {
        args,
        spec,
        cgroups_path,
    })
}

fn find_in_path(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return std::fs::canonicalize(name).ok();
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A state dir is for one shim: if a shim answers on its socket, do not take it over.
fn refuse_live_shim(state_dir: &Path) -> Result<(), String> {
    if UnixStream::connect(state_dir.join(CONTROL_SOCKET)).is_ok() {
        return Err(format!(
            "a shim is already running in {}",
            state_dir.display()
        ));
    }
    Ok(())
}

/// The detached daemon: set up, tell the foreground, serve. Never returns.
fn daemon(prepared: Prepared, ready: OwnedFd) -> ! {
    let state_dir = prepared.args.state_dir.clone();
    match setup(prepared) {
        Ok(monitor) => {
            report(&ready, "ok");
            drop(ready);
            log_info!("container created, init pid {}", monitor.init);
            monitor.run()
        }
        Err(message) => {
            diag::write("ERROR", format_args!("create failed: {message}"));
            for name in [CONTROL_SOCKET, SHIM_PID_FILE, INIT_PID_FILE] {
                let _ = std::fs::remove_file(state_dir.join(name));
            }
            report(&ready, &message);
            // SAFETY: _exit is always safe to call.
            unsafe { libc::_exit(1) }
        }
    }
}

fn setup(prepared: Prepared) -> Result<Monitor, String> {
    let Prepared {
        args,
        spec,
        cgroups_path,
    } = prepared;
    let _ = std::env::set_current_dir("/");
    redirect_stdio_to_dev_null()?;
    diag::init(&args.state_dir);
    log_info!(
        "berth-shim {} for container {}",
        env!("CARGO_PKG_VERSION"),
        args.id
    );
    // Orphans of the container (and runc's init after `runc create` exits) become our children.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "PR_SET_CHILD_SUBREAPER: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Rust ignores SIGPIPE; an ignored signal stays ignored across exec, so give the container
    // the default while it is created (the shim uses MSG_NOSIGNAL and EPIPE afterwards).
    set_sigpipe(SigHandler::SigDfl);
    for name in [EXIT_FILE, CONTROL_SOCKET, SHIM_PID_FILE, INIT_PID_FILE] {
        let _ = std::fs::remove_file(args.state_dir.join(name));
    }

    let log = CriLog::open(args.log_path.as_deref()).map_err(|e| {
        format!(
            "log file {}: {e}",
            args.log_path.as_deref().unwrap_or(Path::new("")).display()
        )
    })?;
    // process.terminal: one terminal instead of the pipes; the runtime makes it.
    let terminal = spec
        .process()
        .as_ref()
        .filter(|process| process.terminal() == Some(true) && !args.builtin_init)
        .map(WindowSize::of_process);
    let (io, pipes) = match terminal {
        Some(size) => (ContainerIo::Terminal(size), None),
        None => {
            let (stdio, read_ends) = output_pipes()?;
            (ContainerIo::Pipes(stdio), Some(read_ends))
        }
    };

    let private_pid_namespace = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|ns| ns.typ() == LinuxNamespaceType::Pid && ns.path().is_none())
        });
    let mut runtime: Box<dyn ContainerRuntime> = match &args.runtime {
        Some(binary) => {
            let oom_path = cgroups_path.clone();
            Box::new(ExternalRuntime::new(
                binary,
                &args.id,
                &args.bundle,
                &args.state_dir,
                private_pid_namespace,
                Box::new(move || {
                    cgroup_manager(&oom_path)
                        .and_then(|m| m.oom_kill_count().ok())
                        .is_some_and(|n| n > 0)
                }),
            ))
        }
        None => Box::new(BuiltinRuntime::new(
            spec,
            &args.bundle,
            &cgroups_path,
            args.builtin_init,
        )?),
    };
    let (init, terminal_master) = match runtime.create(io) {
        Ok(Created {
            init,
            terminal_master,
        }) => (init, terminal_master),
        Err(message) => {
            runtime.destroy();
            return Err(message);
        }
    };
    // From here on a failure must take the created container down again.
    let fail = |runtime: &mut Box<dyn ContainerRuntime>, message: String| {
        let _ = kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        runtime.destroy();
        message
    };
    let finish_setup = || -> Result<(UnixListener, SignalFd, [Option<OwnedFd>; 2]), String> {
        // A terminal's output is the container's stdout; it has no stderr.
        let outputs = match (terminal_master, pipes) {
            (Some(master), _) => {
                set_nonblocking(&master)?;
                [Some(master), None]
            }
            (None, Some([stdout_read, stderr_read])) => [Some(stdout_read), Some(stderr_read)],
            (None, None) => return Err("the runtime made no terminal for the container".into()),
        };
        write_atomically(&args.state_dir.join(INIT_PID_FILE), &init.to_string())?;
        write_atomically(
            &args.state_dir.join(SHIM_PID_FILE),
            &std::process::id().to_string(),
        )?;
        let socket = args.state_dir.join(CONTROL_SOCKET);
        let listener = UnixListener::bind(&socket)
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("control socket {}: {e}", socket.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("control socket: {e}"))?;
        let mut mask = SigSet::empty();
        for signal in [
            Signal::SIGCHLD,
            Signal::SIGTERM,
            Signal::SIGINT,
            Signal::SIGHUP,
        ] {
            mask.add(signal);
        }
        mask.thread_block()
            .map_err(|e| format!("blocking signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("signalfd: {e}"))?;
        Ok((listener, signals, outputs))
    };
    let (listener, signals, outputs) = match finish_setup() {
        Ok(parts) => parts,
        Err(message) => return Err(fail(&mut runtime, message)),
    };
    set_sigpipe(SigHandler::SigIgn);
    Ok(Monitor::new(
        args.state_dir,
        runtime,
        init,
        log,
        outputs,
        listener,
        signals,
    ))
}

/// The container's stdio as pipes: /dev/null, stdout and stderr write ends for the
/// container, and the non-blocking read ends (stdout, stderr) for the monitor.
fn output_pipes() -> Result<(StdioFds, [OwnedFd; 2]), String> {
    let (stdout_read, stdout_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (stderr_read, stderr_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    for fd in [&stdout_read, &stderr_read] {
        set_nonblocking(fd)?;
    }
    let stdin = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let stdio = StdioFds {
        stdin: stdin.into(),
        stdout: stdout_write,
        stderr: stderr_write,
    };
    Ok((stdio, [stdout_read, stderr_read]))
}

fn set_sigpipe(handler: SigHandler) {
    // SAFETY: switching between SIG_DFL and SIG_IGN installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, handler);
    }
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), String> {
    use nix::fcntl::{fcntl, FcntlArg};
    let flags = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("fcntl: {e}"))?;
    fcntl(
        fd,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("fcntl: {e}"))?;
    Ok(())
}

fn redirect_stdio_to_dev_null() -> Result<(), String> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        if unsafe { libc::dup2(null.as_raw_fd(), target) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Temp file + rename, so readers never see half a pid.
fn write_atomically(path: &Path, contents: &str) -> Result<(), String> {
    let temp = path.with_extension("tmp");
    let result = std::fs::File::create(&temp)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .and_then(|()| std::fs::rename(&temp, path));
    result.map_err(|e| format!("{}: {e}", path.display()))
}
