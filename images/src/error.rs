//! Errors of the image store. Each error knows its [`ErrorKind`], which is what the CRI
//! server maps to a gRPC status code; messages say what failed and what to do.

use std::path::PathBuf;

/// What kind of failure this is, independent of where it happened. The CRI layer maps
/// these to gRPC codes (NotFound, InvalidArgument, Unavailable, Unauthenticated, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image, tag, manifest or blob does not exist (locally or in the registry).
    NotFound,
    /// The request itself is malformed (bad reference, bad digest string).
    InvalidArgument,
    /// The registry could not be reached or answered with a server error.
    Unavailable,
    /// The registry refused our credentials.
    Unauthenticated,
    /// The registry served content that is wrong: digest mismatch, truncated or hostile
    /// layer, unsupported media type.
    BadContent,
    /// The disk (or quota) under the store is full: the node must free space.
    NoSpace,
    /// Permission denied, database trouble, a bug: the node's problem.
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    #[error("image {0:?} not found")]
    ImageNotFound(String),

    #[error("{reference}: not found in registry {registry}")]
    NotInRegistry { reference: String, registry: String },

    #[error("registry {registry} is unreachable: {reason}")]
    RegistryUnavailable { registry: String, reason: String },

    #[error("registry {registry} refused the credentials: {reason}")]
    Unauthorized { registry: String, reason: String },

    #[error("registry {registry}: {reason}")]
    Registry { registry: String, reason: String },

    #[error("content {expected} failed verification: got {actual}")]
    DigestMismatch { expected: String, actual: String },

    #[error("blob {digest} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch { digest: String, expected: u64, actual: u64 },

    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),

    #[error("no manifest for platform {platform} in index {reference}")]
    NoMatchingPlatform { reference: String, platform: String },

    #[error("layer {digest} is refused: {reason}")]
    HostileLayer { digest: String, reason: String },

    #[error("layer {digest} could not be read: {reason}")]
    CorruptLayer { digest: String, reason: String },

    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("metadata database: {0}")]
    Database(String),

    #[error("overlay mount at {target}: {reason}")]
    Mount { target: PathBuf, reason: String },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidReference { .. } => ErrorKind::InvalidArgument,
            Error::ImageNotFound(_) | Error::NotInRegistry { .. } => ErrorKind::NotFound,
            Error::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Error::RegistryUnavailable { .. } => ErrorKind::Unavailable,
            Error::Unauthorized { .. } => ErrorKind::Unauthenticated,
            Error::Registry { .. }
            | Error::DigestMismatch { .. }
            | Error::SizeMismatch { .. }
            | Error::UnsupportedMediaType(_)
            | Error::HostileLayer { .. }
            | Error::CorruptLayer { .. } => ErrorKind::BadContent,
            Error::Io { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) =>
            {
                ErrorKind::NoSpace
            }
            Error::Io { .. } | Error::Database(_) | Error::Mount { .. } => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(context: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { context, path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
