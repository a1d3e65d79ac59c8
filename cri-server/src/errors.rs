//! The one place where image store errors become gRPC status codes.
//!
//! The image store classifies each error by [`ErrorKind`] where it understands it; here we
//! only translate the kind. The message is the error's own text, which names the
//! reference, registry or digest and says what went wrong.
//!
//! | ErrorKind         | gRPC code          | why                                                   |
//! |-------------------|--------------------|-------------------------------------------------------|
//! | NotFound          | NotFound           | unknown image, tag, manifest or platform              |
//! | InvalidArgument   | InvalidArgument    | malformed reference: the caller must fix the request  |
//! | Unavailable       | Unavailable        | registry down or 5xx: retrying later may succeed      |
//! | Unauthenticated   | Unauthenticated    | the registry refused the credentials                  |
//! | BadContent        | FailedPrecondition | see below                                             |
//! | NoSpace           | ResourceExhausted  | the image filesystem is full: free space, then retry  |
//! | Internal          | Internal           | permissions, database, bugs: the node's problem       |
//!
//! BadContent (digest or size mismatch, truncated, corrupt or hostile layer, unsupported
//! media type) maps to FailedPrecondition, not DataLoss: the request was valid and the
//! registry reachable, but what the registry serves cannot be accepted, and retrying will
//! not help until that content is fixed, which is FailedPrecondition's contract. DataLoss
//! would tell an operator that berth lost or corrupted *its own* data, which it did not:
//! a rejected pull leaves nothing behind.
//!
//! Pods and containers fail with a [`RuntimeError`], whose variant is the gRPC code; its
//! message says what is wrong and what to fix (the id, the name, the path).

use berth_images::{Error, ErrorKind};
use tonic::{Code, Status};

/// The error of every pod and container operation. The variant decides the gRPC code (in
/// [`RuntimeError::code`], the one place); the text is the message the caller sees.
/// Clone: one result of in-flight work may be handed to several waiting retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// An unknown pod, container or image id.
    #[error("{0}")]
    NotFound(String),
    /// A pod or container name that is taken.
    #[error("{0}")]
    AlreadyExists(String),
    /// A request the caller must fix: missing metadata, bad mount source, bad option.
    #[error("{0}")]
    InvalidArgument(String),
    /// A valid request in the wrong state (start of a container that is not created).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The operation ran out of time (ExecSync timeout, shim not answering).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The node's problem: mounts, namespaces, database, shim crashes, bugs.
    #[error("{0}")]
    Internal(String),
}

impl RuntimeError {
    pub fn code(&self) -> Code {
        match self {
            RuntimeError::NotFound(_) => Code::NotFound,
            RuntimeError::AlreadyExists(_) => Code::AlreadyExists,
            RuntimeError::InvalidArgument(_) => Code::InvalidArgument,
            RuntimeError::FailedPrecondition(_) => Code::FailedPrecondition,
            RuntimeError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            RuntimeError::Internal(_) => Code::Internal,
        }
    }

    pub fn internal(message: impl std::fmt::Display) -> Self {
        RuntimeError::Internal(message.to_string())
    }

    /// `context: error` as an Internal error.
    pub fn internal_ctx(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Self {
        RuntimeError::Internal(format!("{context}: {err}"))
    }
}

impl From<RuntimeError> for Status {
    fn from(err: RuntimeError) -> Status {
        if err.code() == Code::Internal {
            tracing::error!(error = %err, "request failed");
        }
        Status::new(err.code(), err.to_string())
    }
}

impl From<crate::store::StoreError> for RuntimeError {
    fn from(err: crate::store::StoreError) -> Self {
        RuntimeError::Internal(err.to_string())
    }
}

impl From<tokio::task::JoinError> for RuntimeError {
    fn from(err: tokio::task::JoinError) -> Self {
        RuntimeError::Internal(format!("a berthd task failed unexpectedly: {err}; see berthd's log"))
    }
}

/// Image store errors inside pod and container operations keep their code.
impl From<berth_images::Error> for RuntimeError {
    fn from(err: berth_images::Error) -> Self {
        let message = err.to_string();
        match code_for(err.kind()) {
            Code::NotFound => RuntimeError::NotFound(message),
            Code::InvalidArgument => RuntimeError::InvalidArgument(message),
            Code::FailedPrecondition => RuntimeError::FailedPrecondition(message),
            _ => RuntimeError::Internal(message),
        }
    }
}

pub fn code_for(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::BadContent => Code::FailedPrecondition,
        ErrorKind::NoSpace => Code::ResourceExhausted,
        ErrorKind::Internal => Code::Internal,
    }
}

/// The status a CRI caller sees for an image store error.
pub fn image_error_status(err: &Error) -> Status {
    Status::new(code_for(err.kind()), err.to_string())
}

/// A blocking store call run with `spawn_blocking` died (panicked or was cancelled).
/// That is a bug in berth, not the caller's fault.
pub fn task_failed_status(what: &str, err: tokio::task::JoinError) -> Status {
    tracing::error!(error = %err, "{what} failed unexpectedly");
    Status::internal(format!("{what} failed unexpectedly: {err}; see berthd's log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_code() {
        assert_eq!(code_for(ErrorKind::NotFound), Code::NotFound);
        assert_eq!(code_for(ErrorKind::InvalidArgument), Code::InvalidArgument);
        assert_eq!(code_for(ErrorKind::Unavailable), Code::Unavailable);
        assert_eq!(code_for(ErrorKind::Unauthenticated), Code::Unauthenticated);
        assert_eq!(code_for(ErrorKind::BadContent), Code::FailedPrecondition);
        assert_eq!(code_for(ErrorKind::NoSpace), Code::ResourceExhausted);
        assert_eq!(code_for(ErrorKind::Internal), Code::Internal);
    }

    #[test]
    fn runtime_errors_map_to_their_codes() {
        let cases = [
            (RuntimeError::NotFound("pod x not found".into()), Code::NotFound),
            (RuntimeError::AlreadyExists("name taken".into()), Code::AlreadyExists),
            (RuntimeError::InvalidArgument("no metadata".into()), Code::InvalidArgument),
            (RuntimeError::FailedPrecondition("not created".into()), Code::FailedPrecondition),
            (RuntimeError::DeadlineExceeded("timeout".into()), Code::DeadlineExceeded),
            (RuntimeError::Internal("mount failed".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let message = err.to_string();
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
        }
        let err = RuntimeError::from(Error::ImageNotFound("busybox".into()));
        assert_eq!(err.code(), Code::NotFound);
    }

    #[test]
    fn status_carries_the_errors_message() {
        let status = image_error_status(&Error::ImageNotFound("docker.io/library/nope:latest".into()));
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("docker.io/library/nope:latest"), "{}", status.message());

        let status = image_error_status(&Error::InvalidReference { reference: "UPPER/x".into(), reason: "uppercase".into() });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("UPPER/x"));

        let status = image_error_status(&Error::RegistryUnavailable { registry: "127.0.0.1:1".into(), reason: "connection refused".into() });
        assert_eq!(status.code(), Code::Unavailable);

        let status = image_error_status(&Error::Unauthorized { registry: "r".into(), reason: "401".into() });
        assert_eq!(status.code(), Code::Unauthenticated);

        let status = image_error_status(&Error::DigestMismatch { expected: "sha256:aa".into(), actual: "sha256:bb".into() });
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(status.message().contains("sha256:aa") && status.message().contains("sha256:bb"));

        let status = image_error_status(&Error::Database("disk full".into()));
        assert_eq!(status.code(), Code::Internal);
    }
}
