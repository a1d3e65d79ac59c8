//! `exit.json`: the durable record of how the container ended, written once by the shim
//! before it exits and read by berthd (also after its own restart).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::protocol::{ExitInfo, EXIT_FILE};

#[derive(Debug, thiserror::Error)]
pub enum ExitFileError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: not an exit record: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// The exit record in `state_dir`, or None while the container has not exited (or the shim
/// died before writing it).
pub fn read_exit_file(state_dir: &Path) -> Result<Option<ExitInfo>, ExitFileError> {
    let path = state_dir.join(EXIT_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ExitFileError::Io { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| ExitFileError::Corrupt { path, source })
}

/// Write the exit record so that a crash at any point leaves either no file or the whole
/// record: temp file, fsync, rename, fsync of the directory.
pub fn write_exit_file(state_dir: &Path, exit: &ExitInfo) -> Result<(), ExitFileError> {
    let path = state_dir.join(EXIT_FILE);
    let temp = state_dir.join(format!(".{EXIT_FILE}.tmp"));
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExitFileError::Io { path, source }
    };
    let bytes = serde_json::to_vec(exit).map_err(|source| ExitFileError::Corrupt {
        path: path.clone(),
        source,
    })?;
    let mut file = File::create(&temp).map_err(io_err(&temp))?;
    file.write_all(&bytes).map_err(io_err(&temp))?;
    file.sync_all().map_err(io_err(&temp))?;
    drop(file);
    fs::rename(&temp, &path).map_err(io_err(&path))?;
    File::open(state_dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err(state_dir))?;
    Ok(())
}

/// Shell convention for a wait status: the exit code, or 128 + the signal that killed it.
/// Returns (exit_code, signal).
pub fn exit_code_of(status: nix::sys::wait::WaitStatus) -> Option<(i32, i32)> {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => Some((code, 0)),
        WaitStatus::Signaled(_, signal, _) => Some((128 + signal as i32, signal as i32)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_is_none_and_written_file_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_exit_file(dir.path()).unwrap(), None);
        let exit = ExitInfo {
            exit_code: 137,
            exited_at_ns: 20,
            started_at_ns: 10,
            oom_killed: true,
            signal: 9,
        };
        write_exit_file(dir.path(), &exit).unwrap();
        assert_eq!(read_exit_file(dir.path()).unwrap(), Some(exit));
        // The temp file is gone; the record has the contract's field names.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("exit.json")]);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join("exit.json")).unwrap()).unwrap();
        for key in [
            "exit_code",
            "exited_at_ns",
            "started_at_ns",
            "oom_killed",
            "signal",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("exit.json"), b"{\"exit_code\":").unwrap();
        assert!(matches!(
            read_exit_file(dir.path()),
            Err(ExitFileError::Corrupt { .. })
        ));
    }

    #[test]
    fn wait_status_to_exit_code() {
        use nix::sys::signal::Signal;
        use nix::sys::wait::WaitStatus;
        use nix::unistd::Pid;
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code_of(WaitStatus::Exited(pid, 3)), Some((3, 0)));
        assert_eq!(
            exit_code_of(WaitStatus::Signaled(pid, Signal::SIGTERM, false)),
            Some((143, 15))
        );
        assert_eq!(exit_code_of(WaitStatus::StillAlive), None);
    }
}
