//! The one error type of container creation. Its message names the step that failed, because
//! it ends up verbatim in CRI errors (e.g. "mount /data: source /nope does not exist").

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// The spec asks for something this runtime cannot do, or is malformed.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// A system call of a named step failed.
    #[error("{step}: {errno}")]
    Sys { step: String, errno: Errno },
    /// A step failed for a reason that is not an errno (the message says it all).
    #[error("{0}")]
    Step(String),
    /// The caller's `place_in_cgroup` failed.
    #[error("placing the container process in its cgroup: {0}")]
    Cgroup(String),
    /// The container's process reported this failure before it exec'd (its own step message).
    #[error("{0}")]
    Child(String),
}

impl ContainerError {
    pub(crate) fn sys(step: impl Into<String>, errno: Errno) -> Self {
        ContainerError::Sys {
            step: step.into(),
            errno,
        }
    }
}

/// `result.step("mount /proc")?` turns an errno into a [`ContainerError::Sys`] naming the step.
pub(crate) trait StepExt<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, ContainerError>;
}

impl<T> StepExt<T> for Result<T, Errno> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, ContainerError> {
        self.map_err(|errno| ContainerError::sys(step(), errno))
    }
}
