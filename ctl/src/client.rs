//! The connection to berthd: a tonic channel over its unix socket, and the errors that
//! decide berthctl's exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Code;

pub type RuntimeClient = RuntimeServiceClient<Channel>;
pub type ImageClient = ImageServiceClient<Channel>;

/// Exit codes scripts can rely on (also listed in `berthctl --help`).
pub mod exit_code {
    pub const OK: i32 = 0;
    pub const RUNTIME_ERROR: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const UNREACHABLE: i32 = 3;
    pub const NOT_FOUND: i32 = 4;
}

/// What went wrong, in words a person can act on; each kind has its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("berthd is not running at {}: start it with `hack/up` or `berthd --config ...` ({reason})", path.display())]
    Unreachable { path: PathBuf, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Usage(String),
    #[error("berthd: {0}")]
    Runtime(String),
    /// berthctl itself failed (e.g. could not render an answer).
    #[error("internal error: {0}")]
    Internal(String),
    /// berthctl will not do it in this state (e.g. remove a running pod without -f).
    #[error("{0}")]
    Refused(String),
    /// Errors already printed one by one (a command over several ids); only the exit code
    /// is left to give.
    #[error("{failed} of the given ids failed")]
    Reported { failed: usize, code: i32 },
}

impl CtlError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CtlError::Unreachable { .. } => exit_code::UNREACHABLE,
            CtlError::NotFound(_) => exit_code::NOT_FOUND,
            CtlError::Usage(_) => exit_code::USAGE,
            CtlError::Runtime(_) | CtlError::Refused(_) | CtlError::Internal(_) => exit_code::RUNTIME_ERROR,
            CtlError::Reported { code, .. } => *code,
        }
    }

    /// The error of a failed RPC: what berthd said, with `what` (e.g. "stop pod 1f73")
    /// in front; NotFound keeps its own exit code.
    pub fn from_status(what: &str, status: tonic::Status, socket: &Path) -> CtlError {
        let message = status.message();
        match status.code() {
            Code::NotFound => CtlError::NotFound(format!("{what}: {message}")),
            // berthd went away between connect and call (a registry that is unavailable
            // is also Unavailable, so the socket decides).
            Code::Unavailable if std::os::unix::net::UnixStream::connect(socket).is_err() => {
                CtlError::Unreachable { path: socket.to_path_buf(), reason: message.to_string() }
            }
            Code::DeadlineExceeded => {
                CtlError::Runtime(format!("{what}: no answer in time ({message}); a longer --timeout may help"))
            }
            Code::Unimplemented => CtlError::Runtime(format!("{what}: this berthd does not do that yet ({message})")),
            code => CtlError::Runtime(format!("{what}: {message} ({code:?})")),
        }
    }
}

/// The socket path of `endpoint`: `unix:///path`, `unix:/path` or a plain path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CtlError> {
    let path = if let Some(rest) = endpoint.strip_prefix("unix://") {
        rest
    } else if let Some(rest) = endpoint.strip_prefix("unix:") {
        rest
    } else if endpoint.contains("://") {
        return Err(CtlError::Usage(format!(
            "endpoint {endpoint}: berthd listens on a unix socket; use unix:///path/to/berth.sock"
        )));
    } else {
        endpoint
    };
    if path.is_empty() {
        return Err(CtlError::Usage(format!("endpoint {endpoint} names no socket path")));
    }
    Ok(PathBuf::from(path))
}

/// Where berthd listens and how long to wait for it.
#[derive(Debug, Clone)]
pub struct Connection {
    pub socket: PathBuf,
    /// For connecting, and for each request unless [`Connection::long`] lifted it.
    pub timeout: Duration,
    request_timeout: Option<Duration>,
}

impl Connection {
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Connection, CtlError> {
        Ok(Connection { socket: socket_path(endpoint)?, timeout, request_timeout: Some(timeout) })
    }

    /// The same connection without a request deadline, for calls that take as long as
    /// they take (a pull of a big image, an exec, a stop with a long grace period).
    pub fn long(&self) -> Connection {
        Connection { request_timeout: None, ..self.clone() }
    }

    /// Dials the socket now, so that a missing berthd is reported before anything else.
    pub async fn channel(&self) -> Result<Channel, CtlError> {
        let socket = self.socket.clone();
        // The URI is required by tonic but unused: the connector dials the socket.
        let mut endpoint = Endpoint::from_static("http://berthd.invalid").connect_timeout(self.timeout);
        if let Some(timeout) = self.request_timeout {
            endpoint = endpoint.timeout(timeout);
        }
        let connecting = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(socket).await?)) }
        }));
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(Ok(channel)) => Ok(channel),
            Ok(Err(e)) => Err(CtlError::Unreachable { path: self.socket.clone(), reason: root_cause(&e) }),
            Err(_) => Err(CtlError::Unreachable {
                path: self.socket.clone(),
                reason: format!("no connection within {:?}", self.timeout),
            }),
        }
    }

    pub async fn runtime(&self) -> Result<RuntimeClient, CtlError> {
        Ok(RuntimeServiceClient::new(self.channel().await?))
    }

    pub async fn images(&self) -> Result<ImageClient, CtlError> {
        Ok(ImageServiceClient::new(self.channel().await?))
    }

    /// The error of a failed RPC (see [`CtlError::from_status`]).
    pub fn error(&self, what: &str, status: tonic::Status) -> CtlError {
        CtlError::from_status(what, status, &self.socket)
    }
}

/// The innermost message of an error chain (e.g. "No such file or directory (os error 2)").
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(socket_path("unix:///run/berth/berth.sock").unwrap(), PathBuf::from("/run/berth/berth.sock"));
        assert_eq!(socket_path("/tmp/x.sock").unwrap(), PathBuf::from("/tmp/x.sock"));
        assert_eq!(socket_path("unix:/tmp/x.sock").unwrap(), PathBuf::from("/tmp/x.sock"));
        assert!(matches!(socket_path("tcp://1.2.3.4:5"), Err(CtlError::Usage(_))));
    }

    #[tokio::test]
    async fn missing_socket_is_unreachable() {
        let connection = Connection::new("unix:///nonexistent/berth.sock", Duration::from_secs(1)).unwrap();
        let error = connection.channel().await.unwrap_err();
        assert_eq!(error.exit_code(), exit_code::UNREACHABLE);
        assert!(error.to_string().starts_with("berthd is not running at /nonexistent/berth.sock: start it with"));
    }
}
