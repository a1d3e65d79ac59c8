//! Exec requests run in a forked helper process so the shim's loop keeps serving: the helper
//! starts the command in the container, collects stdout and stderr (each capped), kills the
//! command when its timeout passes, writes the answer on the request's connection and exits.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use super::exit_file::exit_code_of;
use super::runtime::{ContainerRuntime, ExecCommand, StdioFds};
use crate::protocol::{ExecOutput, Response};

/// Each of stdout and stderr is cut at this size (the rest is read and dropped).
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;
/// After the command exited, how long output from processes it left behind is still awaited.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// The body of the exec helper (a fresh fork of the shim). Never returns.
pub fn run_helper(
    runtime: &dyn ContainerRuntime,
    init: Pid,
    conn: UnixStream,
    command: &ExecCommand<'_>,
    timeout_ms: u64,
) -> ! {
    // The fork inherited the shim's blocked signals and ignored SIGPIPE; both would be passed
    // on to the exec'd command, so put them back to defaults first.
    let _ =
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    // SAFETY: restoring the default disposition has no handler to race with.
    unsafe {
        let _ = nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl);
    }
    // Processes the command leaves behind are reparented to us, not to the shim.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let response = match run_command(runtime, init, command, timeout_ms) {
        Ok(output) => Response::Exec(output),
        Err(message) => Response::Error { message },
    };
    super::event_loop::send_response(&conn, &response);
    drop(conn);
    // SAFETY: _exit skips the shim's destructors and atexit handlers, which belong to the parent.
    unsafe { libc::_exit(0) }
}

fn run_command(
    runtime: &dyn ContainerRuntime,
    init: Pid,
    command: &ExecCommand<'_>,
    timeout_ms: u64,
) -> Result<ExecOutput, String> {
    let (stdout_r, stdout_w) = pipe()?;
    let (stderr_r, stderr_w) = pipe()?;
    let stdin = dev_null()?;
    let started = Instant::now();
    let child = runtime.spawn_exec(
        init,
        command,
        StdioFds {
            stdin,
            stdout: stdout_w,
            stderr: stderr_w,
        },
    )?;
    let deadline = (timeout_ms > 0).then(|| started + Duration::from_millis(timeout_ms));
    let pidfd = pidfd_open(child.waited);

    let mut outputs = [Some(stdout_r), Some(stderr_r)];
    let mut collected: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut status: Option<WaitStatus> = None;
    let mut timed_out = false;
    let mut drain_until: Option<Instant> = None;
    loop {
        if status.is_some()
            && (outputs.iter().all(Option::is_none)
                || drain_until.is_some_and(|t| Instant::now() >= t))
        {
            break;
        }
        if status.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
            timed_out = true;
            if let Some(also) = &child.also_kill {
                if let Some(pid) = also() {
                    let _ = kill(pid, Signal::SIGKILL);
                }
            }
            let _ = kill(child.waited, Signal::SIGKILL);
            status = Some(
                waitpid(child.waited, None)
                    .map_err(|e| format!("waiting for the exec'd process: {e}"))?,
            );
            // What is left of the output is not worth waiting for.
            drain_until = Some(Instant::now() + Duration::from_millis(100));
            continue;
        }
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(3);
        for fd in outputs.iter().flatten() {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let watch_exit = status.is_none() && pidfd.is_some();
        if let (true, Some(fd)) = (watch_exit, &pidfd) {
            fds.push(libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        let wake_at = if status.is_some() {
            drain_until
        } else {
            deadline
        };
        let mut timeout = wake_at.map_or(-1, |t| {
            t.saturating_duration_since(Instant::now())
                .as_millis()
                .min(60_000) as i32
                + 1
        });
        if status.is_none() && pidfd.is_none() {
            // No pidfd (old kernel): look at the process every 10 ms.
            timeout = if timeout < 0 { 10 } else { timeout.min(10) };
        }
        // SAFETY: fds is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {err}"));
        }
        for (index, slot) in outputs.iter_mut().enumerate() {
            let Some(fd) = slot else { continue };
            let Some(entry) = fds.iter().find(|p| p.fd == fd.as_raw_fd()) else {
                continue;
            };
            if entry.revents == 0 {
                continue;
            }
            if !read_some(fd, &mut collected[index]) {
                *slot = None;
            }
        }
        if status.is_none() {
            match waitpid(child.waited, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(done) => {
                    status = Some(done);
                    drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
                }
                Err(e) => return Err(format!("waiting for the exec'd process: {e}")),
            }
        }
    }
    let exit_code = match status.and_then(exit_code_of) {
        _ if timed_out => -1,
        Some((code, _)) => code,
        None => -1,
    };
    let [stdout, stderr] = collected;
    Ok(ExecOutput {
        exit_code,
        stdout,
        stderr,
        timed_out,
    })
}

/// Read what is there; false at EOF or error. Beyond the cap data is read and dropped so the
/// command never blocks on a full pipe.
fn read_some(fd: &OwnedFd, into: &mut Vec<u8>) -> bool {
    let mut buffer = [0u8; 16 * 1024];
    // SAFETY: ManuallyDrop keeps the borrowed fd open; `fd` outlives this call.
    let mut file =
        std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
    match file.read(&mut buffer) {
        Ok(0) => false,
        Ok(n) => {
            let room = MAX_EXEC_OUTPUT.saturating_sub(into.len());
            into.extend_from_slice(&buffer[..n.min(room)]);
            true
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::Interrupted
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            true
        }
        Err(_) => false,
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))
}

fn dev_null() -> Result<OwnedFd, String> {
    std::fs::File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| format!("/dev/null: {e}"))
}

/// A pidfd for `pid` (Linux 5.3+); None if the kernel has none.
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    // SAFETY: the fd was just returned by the kernel and is owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
