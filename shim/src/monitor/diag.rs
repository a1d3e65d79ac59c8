//! The shim's own diagnostics: after detaching its stdio is /dev/null, so what it has to say
//! (failures, exits) goes as timestamped lines to `<state-dir>/shim.log`. No logging framework:
//! a per-container process stays small.

use std::io::Write;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use super::time::{format_rfc3339_nano, now_unix_ns};

/// Name of the diagnostics file inside the state dir.
pub const SHIM_LOG: &str = "shim.log";

static LOG_FD: AtomicI32 = AtomicI32::new(-1);

/// Send diagnostics to `<state_dir>/shim.log` from now on (before: stderr).
pub fn init(state_dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(state_dir.join(SHIM_LOG))
    {
        let old = LOG_FD.swap(file.into_raw_fd(), Ordering::SeqCst);
        if old >= 0 {
            // SAFETY: `old` came from into_raw_fd above and nothing else owns it.
            drop(unsafe { std::fs::File::from_raw_fd(old) });
        }
    }
}

/// Write one line; errors are ignored (diagnostics must never stop the shim).
pub fn write(level: &str, message: std::fmt::Arguments<'_>) {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(&format_rfc3339_nano(now_unix_ns()));
    let _ = writeln!(line, " {level} [{}] {message}", std::process::id());
    let fd = LOG_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: LOG_FD stays open for the life of the process; ManuallyDrop keeps it open.
        let mut file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let _ = file.write_all(&line);
    } else {
        let _ = std::io::stderr().write_all(&line);
    }
}

#[macro_export]
#[doc(hidden)]
macro_rules! shim_diag {
    ($level:literal, $($arg:tt)*) => {
        $crate::monitor::diag::write($level, format_args!($($arg)*))
    };
}

/// `log_info!("...")` / `log_warn!("...")` / `log_error!("...")` into shim.log.
macro_rules! log_info { ($($arg:tt)*) => { $crate::shim_diag!("INFO", $($arg)*) }; }
macro_rules! log_warn { ($($arg:tt)*) => { $crate::shim_diag!("WARN", $($arg)*) }; }
macro_rules! log_error { ($($arg:tt)*) => { $crate::shim_diag!("ERROR", $($arg)*) }; }
pub(crate) use {log_error, log_info, log_warn};
