//! The blocking client berthd uses to talk to one shim (call it from `spawn_blocking`).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::monitor::read_exit_file;
use crate::protocol::{
    self, ContainerStatus, ExecOutput, Request, Response, ShimState, CONTROL_SOCKET, INIT_PID_FILE,
    MAX_REQUEST_BYTES,
};

/// Largest answer accepted: two 16 MiB exec outputs in base64 plus JSON framing.
const MAX_RESPONSE_BYTES: usize = 48 << 20;
/// Extra time over a request's own timeout (wait, exec) for the shim to answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ShimClientError {
    /// The control socket is missing or refuses connections, or the shim closed the
    /// connection without an answer: the shim is gone (read exit.json).
    #[error("shim is not running")]
    NotRunning,
    /// The shim answered with an error.
    #[error("{0}")]
    Failed(String),
    #[error("shim I/O: {0}")]
    Io(#[from] io::Error),
    /// The shim answered something this client does not understand.
    #[error("shim protocol: {0}")]
    Protocol(String),
}

#[derive(Debug, Clone)]
pub struct ShimClient {
    state_dir: PathBuf,
    socket: PathBuf,
    /// Read/write timeout for requests without their own timeout.
    timeout: Duration,
}

impl ShimClient {
    /// A client for the shim whose state dir is `state_dir`.
    pub fn new(state_dir: impl AsRef<Path>) -> Self {
        ShimClient {
            state_dir: state_dir.as_ref().to_path_buf(),
            socket: state_dir.as_ref().join(CONTROL_SOCKET),
            timeout: Duration::from_secs(10),
        }
    }

    /// Change the timeout of requests that have none of their own (default 10 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// created -> running. Fails with the exec error (e.g. no such binary).
    pub fn start(&self) -> Result<(), ShimClientError> {
        self.expect_ok(&Request::Start, self.timeout)
    }

    /// Signal the init, or every process of the container with `all`.
    pub fn signal(&self, signal: i32, all: bool) -> Result<(), ShimClientError> {
        self.expect_ok(&Request::Signal { signal, all }, self.timeout)
    }

    /// The container's status. Once the shim has exited this is read from `exit.json`
    /// (state Stopped); `NotRunning` only when the shim is gone without an exit record.
    pub fn status(&self) -> Result<ContainerStatus, ShimClientError> {
        self.or_exit_file(self.expect_status(&Request::Status, self.timeout))
    }

    /// The status once the container exited, or after `timeout` (check `exit`). Like
    /// [`status`](Self::status), a shim that already exited answers through `exit.json`.
    pub fn wait(&self, timeout: Duration) -> Result<ContainerStatus, ShimClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.or_exit_file(self.expect_status(
            &Request::Wait { timeout_ms },
            timeout.saturating_add(self.timeout),
        ))
    }

    /// The shim exits right after it recorded the exit, so a request can race with its exit:
    /// NotRunning with an exit record is a stopped container, not a lost one.
    fn or_exit_file(
        &self,
        result: Result<ContainerStatus, ShimClientError>,
    ) -> Result<ContainerStatus, ShimClientError> {
        match result {
            Err(ShimClientError::NotRunning) => match read_exit_file(&self.state_dir) {
                Ok(Some(exit)) => Ok(ContainerStatus {
                    state: ShimState::Stopped,
                    pid: std::fs::read_to_string(self.state_dir.join(INIT_PID_FILE))
                        .ok()
                        .and_then(|text| text.trim().parse().ok())
                        .unwrap_or(0),
                    started_at_ns: exit.started_at_ns,
                    exit: Some(exit),
                }),
                Ok(None) => Err(ShimClientError::NotRunning),
                Err(e) => Err(ShimClientError::Protocol(e.to_string())),
            },
            other => other,
        }
    }

    /// Run a command in the container and collect its output. `timeout` zero = none.
    pub fn exec(
        &self,
        args: Vec<String>,
        env: Vec<String>,
        cwd: Option<String>,
        timeout: Duration,
    ) -> Result<ExecOutput, ShimClientError> {
        let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        let read_timeout = if timeout.is_zero() {
            None
        } else {
            Some(timeout.saturating_add(ANSWER_MARGIN))
        };
        match self.request(
            &Request::Exec {
                args,
                env,
                cwd,
                timeout_ms,
            },
            read_timeout,
        )? {
            Response::Exec(output) => Ok(output),
            other => Err(unexpected(other)),
        }
    }

    /// Reopen the container's log file (after kubelet renamed it).
    pub fn reopen_log(&self) -> Result<(), ShimClientError> {
        self.expect_ok(&Request::ReopenLog, self.timeout)
    }

    fn expect_ok(&self, request: &Request, timeout: Duration) -> Result<(), ShimClientError> {
        match self.request(request, Some(timeout))? {
            Response::Ok => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn expect_status(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<ContainerStatus, ShimClientError> {
        match self.request(request, Some(timeout))? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected(other)),
        }
    }

    /// One request on a fresh connection; `read_timeout` None waits for ever.
    pub fn request(
        &self,
        request: &Request,
        read_timeout: Option<Duration>,
    ) -> Result<Response, ShimClientError> {
        let mut stream = match UnixStream::connect(&self.socket) {
            Ok(stream) => stream,
            Err(e) if is_gone(&e) => return Err(ShimClientError::NotRunning),
            Err(e) => return Err(ShimClientError::Io(e)),
        };
        stream.set_write_timeout(Some(self.timeout))?;
        stream.set_read_timeout(read_timeout)?;
        let line =
            protocol::encode_line(request).map_err(|e| ShimClientError::Protocol(e.to_string()))?;
        if line.len() > MAX_REQUEST_BYTES {
            return Err(ShimClientError::Protocol(format!(
                "request is {} bytes, the shim accepts at most {MAX_REQUEST_BYTES}",
                line.len()
            )));
        }
        match stream.write_all(&line) {
            Ok(()) => {}
            // The shim closed between accept and our write: it is exiting.
            Err(e)
                if e.kind() == io::ErrorKind::BrokenPipe
                    || e.kind() == io::ErrorKind::ConnectionReset =>
            {
                return Err(ShimClientError::NotRunning)
            }
            Err(e) => return Err(ShimClientError::Io(e)),
        }
        // The answer is one line; do not wait for the close (it may come later than the line).
        let mut answer = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&chunk[..n]);
                    if chunk[..n].contains(&b'\n') {
                        break;
                    }
                    if answer.len() > MAX_RESPONSE_BYTES {
                        return Err(ShimClientError::Protocol("answer too large".into()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(ShimClientError::NotRunning)
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(ShimClientError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("shim at {} did not answer in time", self.socket.display()),
                    )))
                }
                Err(e) => return Err(ShimClientError::Io(e)),
            }
        }
        if answer.is_empty() {
            return Err(ShimClientError::NotRunning);
        }
        let response: Response = protocol::decode_line(&answer)
            .map_err(|e| ShimClientError::Protocol(format!("bad answer: {e}")))?;
        match response {
            Response::Error { message } => Err(ShimClientError::Failed(message)),
            other => Ok(other),
        }
    }
}

fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
    )
}

fn unexpected(response: Response) -> ShimClientError {
    ShimClientError::Protocol(format!("unexpected answer: {response:?}"))
}
