//! The shim's main loop: one thread, one poll(2) over the signalfd (SIGCHLD), the control
//! socket, the container's stdout/stderr pipes and the open control connections.
//! When the container's init exits, [`Monitor::finish`] runs the exit sequence and the
//! process exits.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{send, MsgFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

use super::cri_log::{CriLog, Stream};
use super::diag::{log_error, log_info, log_warn};
use super::exit_file::{exit_code_of, write_exit_file};
use super::runtime::{ContainerRuntime, ExecCommand};
use super::time::now_unix_ns;
use crate::protocol::{
    self, ContainerStatus, ExitInfo, Request, Response, ShimState, CONTROL_SOCKET,
    MAX_REQUEST_BYTES, SHIM_PID_FILE,
};

/// A client must send its request line within this time.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Answers are small; a client that does not take one in this time loses it.
const RESPONSE_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After the init exited, how long output from processes still holding the pipes is awaited
/// (they were SIGKILLed, so this only matters for processes that escaped the cgroup).
const FINAL_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// At most this much log output is taken from one stream per loop turn, so that one chatty
/// stream cannot starve the control socket.
const MAX_PUMP_PER_TURN: usize = 256 * 1024;

pub struct Monitor {
    pub state_dir: PathBuf,
    pub runtime: Box<dyn ContainerRuntime>,
    pub init: Pid,
    pub log: CriLog,
    /// Read ends of the container's stdout and stderr pipes (non-blocking); None after EOF.
    /// A terminal container has its terminal's master as stdout and no stderr.
    pub outputs: [Option<OwnedFd>; 2],
    pub listener: UnixListener,
    pub signals: SignalFd,
    pub state: ShimState,
    pub started_at_ns: i64,
    pub exit: Option<ExitInfo>,
    init_status: Option<WaitStatus>,
    conns: Vec<Connection>,
    waiters: Vec<Waiter>,
}

/// A control connection whose request line is still arriving.
struct Connection {
    stream: UnixStream,
    request: Vec<u8>,
    deadline: Instant,
}

/// A Wait request that answers when the container exits or at its deadline.
struct Waiter {
    stream: UnixStream,
    deadline: Instant,
}

impl Monitor {
    pub fn new(
        state_dir: PathBuf,
        runtime: Box<dyn ContainerRuntime>,
        init: Pid,
        log: CriLog,
        outputs: [Option<OwnedFd>; 2],
        listener: UnixListener,
        signals: SignalFd,
    ) -> Monitor {
        Monitor {
            state_dir,
            runtime,
            init,
            log,
            outputs,
            listener,
            signals,
            state: ShimState::Created,
            started_at_ns: 0,
            exit: None,
            init_status: None,
            conns: Vec::new(),
            waiters: Vec::new(),
        }
    }

    /// Serve until the container's init exits, then run the exit sequence and exit.
    pub fn run(mut self) -> ! {
        // SIGCHLDs that came before the signalfd existed were discarded: look once now.
        self.reap_children();
        loop {
            if let Some(status) = self.init_status {
                self.finish(status);
            }
            if let Err(e) = self.turn() {
                log_error!("main loop: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// One poll and everything it reported.
    fn turn(&mut self) -> std::io::Result<()> {
        const SIGNALS: usize = 0;
        const LISTENER: usize = 1;
        let mut fds = vec![
            pollin(self.signals.as_fd().as_raw_fd()),
            pollin(self.listener.as_raw_fd()),
        ];
        let mut output_slots = [usize::MAX; 2];
        for (index, output) in self.outputs.iter().enumerate() {
            if let Some(fd) = output {
                output_slots[index] = fds.len();
                fds.push(pollin(fd.as_raw_fd()));
            }
        }
        let first_conn = fds.len();
        fds.extend(self.conns.iter().map(|c| pollin(c.stream.as_raw_fd())));

        let next_deadline = self
            .conns
            .iter()
            .map(|c| c.deadline)
            .chain(self.waiters.iter().map(|w| w.deadline))
            .min();
        let timeout = next_deadline.map_or(-1, |d| {
            d.saturating_duration_since(Instant::now())
                .as_millis()
                .min(i32::MAX as u128 - 1) as i32
                + 1
        });
        // SAFETY: fds is a valid array of pollfd of the given length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            return if err.kind() == ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(err)
            };
        }

        if fds[SIGNALS].revents != 0 {
            self.take_signals();
        }
        for (index, &slot) in output_slots.iter().enumerate() {
            if slot != usize::MAX && fds[slot].revents != 0 {
                self.pump(index, MAX_PUMP_PER_TURN);
            }
        }
        // Connections: read what arrived; complete requests are handled.
        let conns = std::mem::take(&mut self.conns);
        let now = Instant::now();
        for (index, mut conn) in conns.into_iter().enumerate() {
            if fds[first_conn + index].revents != 0 {
                match read_request(&mut conn) {
                    ReadOutcome::Pending => {}
                    ReadOutcome::Line => {
                        let line = std::mem::take(&mut conn.request);
                        self.handle(conn.stream, &line);
                        continue;
                    }
                    ReadOutcome::Closed => continue,
                    ReadOutcome::TooLong => {
                        send_response(&conn.stream, &error_response("request too long"));
                        continue;
                    }
                }
            }
            if now >= conn.deadline {
                continue; // dropped: the client never sent a whole request
            }
            self.conns.push(conn);
        }
        if fds[LISTENER].revents != 0 {
            self.accept_all();
        }
        // Waits whose time is up answer with the current status.
        let now = Instant::now();
        let (due, waiting): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| now >= w.deadline);
        self.waiters = waiting;
        let status = self.status();
        for waiter in due {
            send_response(&waiter.stream, &status);
        }
        Ok(())
    }

    fn take_signals(&mut self) {
        loop {
            match self.signals.read_signal() {
                Ok(Some(info)) => {
                    let signal = info.ssi_signo as i32;
                    if signal != Signal::SIGCHLD as i32 {
                        // The shim stays with its container; only SIGKILL ends it early.
                        log_info!("ignoring signal {signal}");
                    }
                }
                Ok(None) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log_warn!("reading the signalfd: {e}");
                    break;
                }
            }
        }
        self.reap_children();
    }

    /// Reap every exited child: the init (remembered), exec helpers and reparented orphans.
    fn reap_children(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return,
                Ok(status) => {
                    if status.pid() == Some(self.init) && exit_code_of(status).is_some() {
                        self.init_status = Some(status);
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return, // ECHILD: no children left
            }
        }
    }

    /// Move container output from pipe `index` into the log; false once the pipe is at EOF.
    fn pump(&mut self, index: usize, budget: usize) -> bool {
        let stream = if index == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        };
        let Some(fd) = &self.outputs[index] else {
            return false;
        };
        let raw_fd = fd.as_raw_fd();
        let mut buffer = [0u8; 16 * 1024];
        let mut taken = 0;
        while taken < budget {
            // SAFETY: raw_fd stays open (owned by self.outputs) during the call; buffer is valid.
            let n = unsafe { libc::read(raw_fd, buffer.as_mut_ptr().cast(), buffer.len()) };
            let result = if n < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(n as usize)
            };
            match result {
                Ok(0) => {
                    if let Err(e) = self.log.finish(stream) {
                        log_warn!("writing the container log: {e}");
                    }
                    self.outputs[index] = None;
                    return false;
                }
                Ok(n) => {
                    taken += n;
                    if let Err(e) = self.log.feed(stream, &buffer[..n]) {
                        log_warn!("writing the container log: {e}");
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                // A terminal's master reads EIO, not EOF, once every slave fd is closed
                // (after the data still buffered has been read).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    if let Err(e) = self.log.finish(stream) {
                        log_warn!("writing the container log: {e}");
                    }
                    self.outputs[index] = None;
                    return false;
                }
                Err(e) => {
                    log_warn!("reading container output: {e}");
                    self.outputs[index] = None;
                    return false;
                }
            }
        }
        true
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.conns.push(Connection {
                            stream,
                            request: Vec::new(),
                            deadline: Instant::now() + REQUEST_READ_TIMEOUT,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    log_warn!("accept on the control socket: {e}");
                    return;
                }
            }
        }
    }

    fn status(&self) -> Response {
        Response::Status(ContainerStatus {
            state: self.state,
            pid: self.init.as_raw(),
            started_at_ns: self.started_at_ns,
            exit: self.exit,
        })
    }

    fn handle(&mut self, stream: UnixStream, line: &[u8]) {
        let request: Request = match protocol::decode_line(line) {
            Ok(request) => request,
            Err(e) => {
                send_response(&stream, &error_response(&format!("bad request: {e}")));
                return;
            }
        };
        let response = match request {
            Request::Status => self.status(),
            Request::Start => self.start(),
            Request::Signal { signal, all } => self.signal(signal, all),
            Request::Wait { timeout_ms } => {
                if self.state == ShimState::Stopped || timeout_ms == 0 {
                    self.status()
                } else {
                    let deadline =
                        Instant::now() + Duration::from_millis(timeout_ms.min(u64::MAX / 4));
                    self.waiters.push(Waiter { stream, deadline });
                    return;
                }
            }
            Request::ReopenLog => match self.log.reopen() {
                Ok(()) => Response::Ok,
                Err(e) => error_response(&format!("reopening the container log: {e}")),
            },
            Request::Exec {
                args,
                env,
                cwd,
                timeout_ms,
            } => {
                if self.state != ShimState::Running {
                    error_response(&format!(
                        "cannot exec in a container that is {}",
                        state_name(self.state)
                    ))
                } else if args.is_empty() {
                    error_response("exec needs a command")
                } else {
                    let command = ExecCommand {
                        args: &args,
                        env: &env,
                        cwd: cwd.as_deref(),
                    };
                    self.spawn_exec_helper(stream, &command, timeout_ms);
                    return;
                }
            }
        };
        send_response(&stream, &response);
    }

    fn start(&mut self) -> Response {
        if self.state != ShimState::Created {
            return error_response(&format!(
                "cannot start a container that is {}",
                state_name(self.state)
            ));
        }
        match self.runtime.start() {
            Ok(()) => {
                self.state = ShimState::Running;
                self.started_at_ns = now_unix_ns();
                log_info!("container started");
                Response::Ok
            }
            Err(message) => {
                log_warn!("start failed: {message}");
                error_response(&message)
            }
        }
    }

    fn signal(&mut self, signal: i32, all: bool) -> Response {
        let Ok(signal) = Signal::try_from(signal) else {
            return error_response(&format!("invalid signal {signal}"));
        };
        if self.state == ShimState::Stopped || self.init_status.is_some() {
            return error_response("the container has exited");
        }
        match self.runtime.signal(self.init, signal, all) {
            Ok(()) => Response::Ok,
            Err(message) => error_response(&message),
        }
    }

    fn spawn_exec_helper(
        &mut self,
        stream: UnixStream,
        command: &ExecCommand<'_>,
        timeout_ms: u64,
    ) {
        // SAFETY: the shim is single-threaded, so the child may do anything after fork.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Other clients' connections must not stay open in the helper: their clients
                // read until the shim closes them. The listener is not the helper's either.
                self.conns.clear();
                self.waiters.clear();
                let _ = nix::unistd::close(self.listener.as_raw_fd());
                let _ = stream.set_nonblocking(false);
                super::exec::run_helper(
                    self.runtime.as_ref(),
                    self.init,
                    stream,
                    command,
                    timeout_ms,
                )
            }
            Ok(ForkResult::Parent { child }) => {
                // The helper answers on its copy of the connection; it is reaped on SIGCHLD.
                log_info!("exec helper {child} runs {:?}", command.args);
            }
            Err(e) => send_response(
                &stream,
                &error_response(&format!("fork of the exec helper: {e}")),
            ),
        }
    }

    /// The exit sequence: leftovers killed, logs drained, OOM checked, cgroup removed,
    /// exit.json written durably, waiting clients answered, socket removed; then exit.
    fn finish(&mut self, status: WaitStatus) -> ! {
        let exited_at_ns = now_unix_ns();
        let (exit_code, signal) = exit_code_of(status).unwrap_or((255, 0));
        self.state = ShimState::Stopped;
        self.runtime.kill_leftovers();
        self.drain_outputs();
        let oom_killed = self.runtime.oom_killed();
        // The cgroup goes before exit.json: whoever sees the exit record may remove the pod
        // cgroup right away, which fails while a child cgroup exists.
        self.runtime.destroy();
        let exit = ExitInfo {
            exit_code,
            exited_at_ns,
            started_at_ns: self.started_at_ns,
            oom_killed,
            signal,
        };
        if let Err(e) = write_exit_file(&self.state_dir, &exit) {
            log_error!("writing the exit record: {e}");
        }
        self.exit = Some(exit);
        log_info!("container exited: code {exit_code}, signal {signal}, oom_killed {oom_killed}");
        let status = self.status();
        for waiter in std::mem::take(&mut self.waiters) {
            send_response(&waiter.stream, &status);
        }
        // Requests that come now find no socket (NotRunning) and read exit.json instead.
        let _ = std::fs::remove_file(self.state_dir.join(CONTROL_SOCKET));
        let _ = std::fs::remove_file(self.state_dir.join(SHIM_PID_FILE));
        std::process::exit(0)
    }

    /// Take the rest of the output until both pipes are at EOF (or a deadline passes).
    fn drain_outputs(&mut self) {
        let deadline = Instant::now() + FINAL_DRAIN_TIMEOUT;
        loop {
            let mut fds: Vec<(usize, libc::pollfd)> = Vec::new();
            for (index, output) in self.outputs.iter().enumerate() {
                if let Some(fd) = output {
                    fds.push((index, pollin(fd.as_raw_fd())));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if fds.is_empty() || left.is_zero() {
                break;
            }
            let mut raw: Vec<libc::pollfd> = fds.iter().map(|(_, p)| *p).collect();
            // SAFETY: raw is a valid array of pollfd of the given length.
            let ready = unsafe {
                libc::poll(
                    raw.as_mut_ptr(),
                    raw.len() as libc::nfds_t,
                    left.as_millis() as i32 + 1,
                )
            };
            if ready < 0 && std::io::Error::last_os_error().kind() != ErrorKind::Interrupted {
                break;
            }
            for ((index, _), polled) in fds.iter().zip(&raw) {
                if polled.revents != 0 {
                    self.pump(*index, usize::MAX);
                }
            }
        }
        for index in 0..2 {
            if self.outputs[index].take().is_some() {
                log_warn!(
                    "output pipe {index} still open after the init exited; stopped reading it"
                );
                let stream = if index == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                };
                let _ = self.log.finish(stream);
            }
        }
    }
}

enum ReadOutcome {
    Pending,
    Line,
    Closed,
    TooLong,
}

fn read_request(conn: &mut Connection) -> ReadOutcome {
    let mut buffer = [0u8; 4096];
    loop {
        match conn.stream.read(&mut buffer) {
            Ok(0) => {
                // A client may half-close after its request instead of sending '\n'.
                return if conn.request.is_empty() {
                    ReadOutcome::Closed
                } else {
                    ReadOutcome::Line
                };
            }
            Ok(n) => {
                conn.request.extend_from_slice(&buffer[..n]);
                if conn.request.contains(&b'\n') {
                    return ReadOutcome::Line;
                }
                if conn.request.len() > MAX_REQUEST_BYTES {
                    return ReadOutcome::TooLong;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return ReadOutcome::Pending,
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

/// Write one answer line; a client that went away or does not read is given up on.
/// MSG_NOSIGNAL: the exec helper runs with SIGPIPE at its default action.
pub fn send_response(stream: &UnixStream, response: &Response) {
    let line = match protocol::encode_line(response) {
        Ok(line) => line,
        Err(e) => {
            log_error!("encoding an answer: {e}");
            return;
        }
    };
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(RESPONSE_WRITE_TIMEOUT));
    let mut rest = &line[..];
    while !rest.is_empty() {
        match send(stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return,
            Ok(n) => rest = &rest[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

fn error_response(message: &str) -> Response {
    Response::Error {
        message: message.to_string(),
    }
}

fn state_name(state: ShimState) -> &'static str {
    match state {
        ShimState::Created => "created, not started",
        ShimState::Running => "running",
        ShimState::Stopped => "stopped",
    }
}

fn pollin(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
