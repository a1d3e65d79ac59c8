//! `process.terminal`: the container's init gets a pseudo-terminal instead of pipes.
//!
//! The pair is allocated on the host (`/dev/ptmx`), not in the container's own devpts
//! instance: the caller (the shim) keeps the master and reads the container's output from
//! it; the slave becomes the init's fd 0, 1 and 2 and, through [`become_session_leader`],
//! its controlling terminal. An already-open fd stays valid across pivot_root and the new
//! devpts mount, so the container never needs to see the host's /dev/pts.
//!
//! Both ends are opened O_NOCTTY: the shim is a session leader without a terminal, and
//! opening a slave without O_NOCTTY would make it the shim's own controlling terminal.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;

use super::error::{ContainerError, StepExt};

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    pub rows: u16,
    pub cols: u16,
}

impl WindowSize {
    /// What a terminal emulator opens with, and what containerd gives a tty container
    /// before the first resize.
    pub const DEFAULT: WindowSize = WindowSize { rows: 24, cols: 80 };

    /// The spec's `process.consoleSize` (height = rows, width = columns), else
    /// [`WindowSize::DEFAULT`]. A zero or oversized dimension falls back to the default.
    pub fn of_process(process: &oci_spec::runtime::Process) -> WindowSize {
        let Some(size) = process.console_size() else {
            return WindowSize::DEFAULT;
        };
        match (u16::try_from(size.height()), u16::try_from(size.width())) {
            (Ok(rows), Ok(cols)) if rows > 0 && cols > 0 => WindowSize { rows, cols },
            _ => WindowSize::DEFAULT,
        }
    }
}

/// A pseudo-terminal pair.
#[derive(Debug)]
pub struct Pty {
    /// The side the shim reads output from (close-on-exec, blocking).
    pub master: OwnedFd,
    /// The side the container's init gets as its standard streams (close-on-exec).
    pub slave: OwnedFd,
    /// The slave's path on the host, e.g. `/dev/pts/3` (for messages).
    pub slave_path: PathBuf,
}

/// Allocate a pty pair on the host's devpts and give it `size`.
pub fn open_pty(size: WindowSize) -> Result<Pty, ContainerError> {
    // SAFETY: posix_openpt returns a new fd or -1; we own it from here on.
    let raw = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    let raw = Errno::result(raw).step(|| "opening /dev/ptmx".into())?;
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: grantpt/unlockpt on the master fd we own.
    Errno::result(unsafe { libc::grantpt(master.as_raw_fd()) }).step(|| "grantpt".into())?;
    Errno::result(unsafe { libc::unlockpt(master.as_raw_fd()) }).step(|| "unlockpt".into())?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes a NUL-terminated name of at most name.len() bytes.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(ContainerError::sys("ptsname", Errno::from_raw(rc)));
    }
    // SAFETY: ptsname_r succeeded, so `name` holds a NUL-terminated string.
    let slave_name = unsafe { CStr::from_ptr(name.as_ptr()) };
    let slave_path = PathBuf::from(slave_name.to_string_lossy().into_owned());
    // SAFETY: open of a NUL-terminated path; the fd is owned right below.
    let raw = unsafe {
        libc::open(
            slave_name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    let raw = Errno::result(raw).step(|| format!("opening {}", slave_path.display()))?;
    // SAFETY: a fresh fd nobody else owns.
    let slave = unsafe { OwnedFd::from_raw_fd(raw) };
    set_window_size(&master, size)?;
    Ok(Pty {
        master,
        slave,
        slave_path,
    })
}

/// TIOCSWINSZ on either end of a pty.
pub fn set_window_size(fd: &OwnedFd, size: WindowSize) -> Result<(), ContainerError> {
    let winsize = libc::winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one struct winsize from the pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &winsize) };
    Errno::result(rc)
        .map(drop)
        .step(|| format!("setting the terminal size {}x{}", size.cols, size.rows))
}

/// In the container's init, before exec: a new session whose controlling terminal is the
/// terminal on fd 0 (the slave, installed as the standard streams). Job control, `^C` and
/// SIGHUP on hangup then work as on a login terminal.
pub fn become_session_leader() -> Result<(), ContainerError> {
    // A fresh child is never a process group leader, so setsid cannot fail with EPERM.
    nix::unistd::setsid().step(|| "setsid for the container's terminal".into())?;
    // SAFETY: TIOCSCTTY takes an int argument; 0 = do not steal from another session.
    let rc = unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    match Errno::result(rc) {
        Ok(_) => Ok(()),
        Err(Errno::ENOTTY) => Err(ContainerError::Step(
            "process.terminal is set but the container's stdin is not a terminal".into(),
        )),
        Err(errno) => Err(ContainerError::sys(
            "making the terminal the container's controlling terminal (TIOCSCTTY)",
            errno,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{BoxBuilder, ProcessBuilder};

    #[test]
    fn size_from_the_spec_or_default() {
        let plain = ProcessBuilder::default().build().unwrap();
        assert_eq!(WindowSize::of_process(&plain), WindowSize::DEFAULT);
        let sized = ProcessBuilder::default()
            .console_size(
                BoxBuilder::default()
                    .height(50u64)
                    .width(132u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(
            WindowSize::of_process(&sized),
            WindowSize {
                rows: 50,
                cols: 132
            }
        );
        let zero = ProcessBuilder::default()
            .console_size(
                BoxBuilder::default()
                    .height(0u64)
                    .width(132u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        assert_eq!(WindowSize::of_process(&zero), WindowSize::DEFAULT);
    }

    #[test]
    fn pty_pair_carries_bytes_and_size() {
        let pty = match open_pty(WindowSize {
            rows: 33,
            cols: 101,
        }) {
            Ok(pty) => pty,
            Err(e) => {
                eprintln!("skipped: no pty here ({e})");
                return;
            }
        };
        assert!(
            pty.slave_path.starts_with("/dev/pts"),
            "{:?}",
            pty.slave_path
        );
        let mut got = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one struct winsize.
        let rc = unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut got) };
        assert_eq!(rc, 0);
        assert_eq!((got.ws_row, got.ws_col), (33, 101));
        // The line discipline turns "\n" into "\r\n" on the way to the master (ONLCR).
        nix::unistd::write(&pty.slave, b"hi\n").unwrap();
        let mut buffer = [0u8; 16];
        let n = nix::unistd::read(&pty.master, &mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"hi\r\n");
        // With every slave fd closed, the master reads EIO (the monitor's end of output).
        drop(pty.slave);
        assert_eq!(nix::unistd::read(&pty.master, &mut buffer), Err(Errno::EIO));
    }
}
