//! The process part of the spec: rlimits, oom_score_adj, standard streams, open files, the
//! executable's lookup in the container's PATH and the exec itself.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use oci_spec::runtime::{PosixRlimit, PosixRlimitType};

use super::error::{ContainerError, StepExt};
use super::syscall::Syscall;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command to exec, prepared before the fork.
#[derive(Clone, Debug)]
pub struct Command {
    pub args: Vec<CString>,
    pub env: Vec<CString>,
    /// PATH from `env` (or the default) for the lookup of args[0].
    pub path_env: String,
    pub cwd: PathBuf,
}

impl Command {
    pub fn new(args: &[String], env: &[String], cwd: &Path) -> Result<Command, ContainerError> {
        if args.is_empty() || args[0].is_empty() {
            return Err(ContainerError::InvalidSpec("process.args is empty".into()));
        }
        let cstrings = |list: &[String], what: &str| {
            list.iter()
                .map(|s| {
                    CString::new(s.as_bytes()).map_err(|_| {
                        ContainerError::InvalidSpec(format!("{what} {s:?} contains a NUL byte"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let path_env = env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
            .to_string();
        if !cwd.is_absolute() {
            return Err(ContainerError::InvalidSpec(format!(
                "process.cwd {} is not absolute",
                cwd.display()
            )));
        }
        Ok(Command {
            args: cstrings(args, "argument")?,
            env: cstrings(env, "environment variable")?,
            path_env,
            cwd: cwd.to_path_buf(),
        })
    }
}

// The libc constants are u32 on glibc, i32 on musl.
#[allow(clippy::unnecessary_cast)]
pub fn rlimit_resource(typ: PosixRlimitType) -> u32 {
    (match typ {
        PosixRlimitType::RlimitCpu => libc::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => libc::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => libc::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => libc::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => libc::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => libc::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => libc::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => libc::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => libc::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => libc::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => libc::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => libc::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => libc::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => libc::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => libc::RLIMIT_RTTIME,
    }) as u32
}

pub fn set_rlimits(sys: &dyn Syscall, rlimits: &[PosixRlimit]) -> Result<(), ContainerError> {
    for limit in rlimits {
        sys.setrlimit(rlimit_resource(limit.typ()), limit.soft(), limit.hard())
            .step(|| {
                format!(
                    "setrlimit {} soft {} hard {}",
                    limit.typ(),
                    limit.soft(),
                    limit.hard()
                )
            })?;
    }
    Ok(())
}

/// Write oom_score_adj. Lowering it needs CAP_SYS_RESOURCE; where that is missing (as on
/// this kind of host) the value is clamped to the current one instead of failing
/// (containerd's restrict_oom_score_adj).
pub fn set_oom_score_adj(sys: &dyn Syscall, value: i32) -> Result<(), ContainerError> {
    let path = Path::new("/proc/self/oom_score_adj");
    match sys.write_file(path, value.to_string().as_bytes()) {
        Ok(()) => Ok(()),
        Err(Errno::EACCES | Errno::EPERM) => {
            let current = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            match current {
                Some(current) if value < current => {
                    tracing::debug!(
                        "oom_score_adj {value} is not permitted here; keeping {current}"
                    );
                    Ok(())
                }
                _ => Err(ContainerError::sys(
                    format!("writing oom_score_adj {value}"),
                    Errno::EACCES,
                )),
            }
        }
        Err(errno) => Err(ContainerError::sys(
            format!("writing oom_score_adj {value}"),
            errno,
        )),
    }
}

/// Make `stdin`, `stdout`, `stderr` the fds 0, 1, 2 (any of them may already be one of
/// 0..=2, so they are first moved above 2).
pub fn install_stdio(
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<(), ContainerError> {
    let moved: Vec<RawFd> = [stdin, stdout, stderr]
        .into_iter()
        .map(|fd| {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an fd we own; the original is closed with `fd`.
            let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
            Errno::result(new).step(|| "moving a standard stream".into())
        })
        .collect::<Result<_, _>>()?;
    for (target, fd) in moved.iter().enumerate() {
        // SAFETY: dup2 onto 0..=2 (without CLOEXEC) and close of the temporary fd we made.
        unsafe {
            Errno::result(libc::dup2(*fd, target as RawFd))
                .step(|| format!("dup2 onto fd {target}"))?;
            libc::close(*fd);
        }
    }
    Ok(())
}

/// Close every fd except `keep` (the caller's other files must not reach the container, and
/// a copy of another container's sync socket would keep that one from seeing EOF).
pub fn close_fds_except(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    let mut first: u32 = 0;
    for fd in keep.iter().copied().filter(|fd| *fd >= 0) {
        let fd = fd as u32;
        if fd > first {
            close_range(first, fd - 1);
        }
        first = fd + 1;
    }
    close_range(first, u32::MAX);
}

fn close_range(first: u32, last: u32) {
    // SAFETY: closes fds no Rust object of this (forked) process relies on; kept fds are excluded.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if rc != 0 {
        // Kernels before 5.9: one by one, up to the fd limit.
        let max = (last as u64).min(4096) as u32;
        for fd in first..=max {
            // SAFETY: as above.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}

/// args[0] looked up in PATH as the container sees it (run inside the new root), with the
/// messages users know from runc.
pub fn find_executable(arg0: &CString, path_env: &str) -> Result<CString, ContainerError> {
    let name = arg0.to_string_lossy();
    if name.contains('/') {
        return Ok(arg0.clone());
    }
    let mut saw_non_executable = false;
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(&*name);
        let Ok(meta) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let c = CString::new(candidate.as_os_str().as_bytes())
            .map_err(|_| ContainerError::Step(format!("exec {name:?}: bad path")))?;
        // SAFETY: c is a valid NUL-terminated path.
        if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0 {
            return Ok(c);
        }
        saw_non_executable = true;
    }
    if saw_non_executable {
        return Err(ContainerError::Step(format!(
            "exec {name:?}: permission denied"
        )));
    }
    Err(ContainerError::Step(format!(
        "exec {name:?}: executable file not found in $PATH"
    )))
}

/// execve; returns only on failure.
pub fn exec(command: &Command) -> ContainerError {
    let path = match find_executable(&command.args[0], &command.path_env) {
        Ok(path) => path,
        Err(e) => return e,
    };
    let errno = match nix::unistd::execve(&path, &command.args, &command.env) {
        Err(errno) => errno,
        Ok(never) => match never {},
    };
    let shown = command.args[0].to_string_lossy();
    let reason = match errno {
        Errno::ENOENT => "no such file or directory".to_string(),
        Errno::EACCES => "permission denied".to_string(),
        Errno::ENOEXEC => "exec format error".to_string(),
        other => other.to_string(),
    };
    ContainerError::Step(format!("exec {shown:?}: {reason}"))
}

/// chdir to the process's working directory inside the container. Like runc, a directory
/// that is missing is made first (inside the new root, so the path cannot escape it).
pub fn enter_cwd(sys: &dyn Syscall, cwd: &Path, create: bool) -> Result<(), ContainerError> {
    if create && sys.file_kind(cwd).is_none() {
        if let Err(errno) = sys.mkdir_all(cwd, 0o755) {
            tracing::debug!("creating the working directory {}: {errno}", cwd.display());
        }
    }
    sys.chdir(cwd)
        .step(|| format!("chdir to the working directory {}", cwd.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_in_path() {
        let sh = CString::new("sh").unwrap();
        assert!(find_executable(&sh, "/nonexistent:/bin:/usr/bin")
            .unwrap()
            .to_str()
            .unwrap()
            .ends_with("/sh"));
        let missing = CString::new("nosuch").unwrap();
        assert_eq!(
            find_executable(&missing, "/bin").unwrap_err().to_string(),
            "exec \"nosuch\": executable file not found in $PATH"
        );
        let with_slash = CString::new("/x/y").unwrap();
        assert_eq!(find_executable(&with_slash, "/bin").unwrap(), with_slash);
    }

    #[test]
    fn command_takes_path_from_env() {
        let cmd = Command::new(
            &["ls".into()],
            &["A=1".into(), "PATH=/opt/bin".into()],
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(cmd.path_env, "/opt/bin");
        assert!(Command::new(&[], &[], Path::new("/")).is_err());
        assert!(Command::new(&["x".into()], &[], Path::new("rel")).is_err());
    }
}
