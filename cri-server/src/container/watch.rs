//! Talking to a shim without a thread: the long `Wait` request on tokio's own unix
//! socket, so berthd can watch every running container for its exit at the cost of one
//! idle task and one socket each (the blocking client would hold a thread per container).

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_shim::client::ShimClientError;
use berth_shim::monitor::read_exit_file;
use berth_shim::protocol::{self, ExitInfo, Request, Response, CONTROL_SOCKET, MAX_REQUEST_BYTES};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How long one Wait request lasts before the watcher asks again (the shim answers at
/// once when the container exits; this only bounds a connection's life).
pub const WAIT_SLICE: Duration = Duration::from_secs(600);
/// Extra time over the request's own timeout for the shim's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(10);
/// Longest status line accepted.
const MAX_STATUS_LINE: u64 = 64 * 1024;

/// Waits up to `timeout` for the container to exit. `Ok(Some(exit))` once it exited
/// (from the shim or, when the shim already went, from `exit.json`), `Ok(None)` when it
/// still runs after `timeout`, `Err(NotRunning)` when the shim is gone without a record.
pub async fn wait_exit(shim_dir: &Path, timeout: Duration) -> Result<Option<ExitInfo>, ShimClientError> {
    match wait_request(shim_dir, timeout).await {
        Ok(answer) => Ok(answer),
        Err(ShimClientError::NotRunning) => exit_record(shim_dir).and_then(|exit| exit.map(Some).ok_or(ShimClientError::NotRunning)),
        // The shim exits right after writing its exit record and may drop our connection
        // (reset) on its way out: the record, if there, is the answer.
        Err(e) => match exit_record(shim_dir) {
            Ok(Some(exit)) => Ok(Some(exit)),
            _ => Err(e),
        },
    }
}

/// Errors that mean the shim's socket is gone or closed under us.
fn is_gone(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
    )
}

/// `exit.json` of the shim in `shim_dir`, if it wrote one.
pub fn exit_record(shim_dir: &Path) -> Result<Option<ExitInfo>, ShimClientError> {
    read_exit_file(shim_dir).map_err(|e| ShimClientError::Protocol(e.to_string()))
}

async fn wait_request(shim_dir: &Path, timeout: Duration) -> Result<Option<ExitInfo>, ShimClientError> {
    let socket: PathBuf = shim_dir.join(CONTROL_SOCKET);
    let mut stream = match tokio::net::UnixStream::connect(&socket).await {
        Ok(stream) => stream,
        Err(e) if is_gone(&e) => return Err(ShimClientError::NotRunning),
        Err(e) => return Err(ShimClientError::Io(e)),
    };
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let line = protocol::encode_line(&Request::Wait { timeout_ms }).map_err(|e| ShimClientError::Protocol(e.to_string()))?;
    debug_assert!(line.len() < MAX_REQUEST_BYTES);
    if let Err(e) = stream.write_all(&line).await {
        return Err(if is_gone(&e) { ShimClientError::NotRunning } else { ShimClientError::Io(e) });
    }
    let mut answer = Vec::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(stream, MAX_STATUS_LINE));
    let read = tokio::time::timeout(timeout + ANSWER_MARGIN, reader.read_until(b'\n', &mut answer)).await;
    match read {
        Err(_) => {
            return Err(ShimClientError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("shim at {} did not answer Wait in time", socket.display()),
            )))
        }
        Ok(Err(e)) if is_gone(&e) => return Err(ShimClientError::NotRunning),
        Ok(Err(e)) => return Err(ShimClientError::Io(e)),
        Ok(Ok(_)) => {}
    }
    if answer.is_empty() {
        return Err(ShimClientError::NotRunning);
    }
    match protocol::decode_line::<Response>(&answer).map_err(|e| ShimClientError::Protocol(format!("bad answer: {e}")))? {
        Response::Status(status) => Ok(status.exit),
        Response::Error { message } => Err(ShimClientError::Failed(message)),
        other => Err(ShimClientError::Protocol(format!("unexpected answer to Wait: {other:?}"))),
    }
}
