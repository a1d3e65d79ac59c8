//! How a container ended, in the words kubelet expects in ContainerStatus: reason
//! `Completed` (exit 0), `Error` (anything else), `OOMKilled` (the cgroup OOM killer
//! killed it), `StartError` (its process could not be exec'd), `Unknown` (berth lost
//! track of it), with the exit code and finish time.

use berth_shim::protocol::ExitInfo;

pub const REASON_COMPLETED: &str = "Completed";
pub const REASON_ERROR: &str = "Error";
pub const REASON_OOM_KILLED: &str = "OOMKilled";
pub const REASON_START_ERROR: &str = "StartError";
pub const REASON_UNKNOWN: &str = "Unknown";

/// The exit code of a container whose end berth cannot know (its shim vanished without
/// an exit record), as containerd reports it.
pub const UNKNOWN_EXIT_CODE: i32 = 255;
/// The exit code of a container whose process could not be started (containerd and
/// Docker use 128: "invalid argument to exit", the command never ran).
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// The end of a container as berthd records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub exit_code: i32,
    pub finished_at_ns: i64,
    /// 0 when the container never started.
    pub started_at_ns: i64,
    pub reason: String,
    pub message: String,
}

/// From the shim's exit record.
pub fn finished_from_exit(exit: &ExitInfo) -> Finished {
    let (reason, message) = if exit.oom_killed {
        (REASON_OOM_KILLED, String::new())
    } else if exit.exit_code == 0 {
        (REASON_COMPLETED, String::new())
    } else {
        (REASON_ERROR, String::new())
    };
    Finished {
        exit_code: exit.exit_code,
        finished_at_ns: exit.exited_at_ns,
        started_at_ns: exit.started_at_ns,
        reason: reason.to_string(),
        message,
    }
}

/// The container's shim is gone and left no exit record.
pub fn finished_unknown(now_ns: i64, detail: &str) -> Finished {
    Finished {
        exit_code: UNKNOWN_EXIT_CODE,
        finished_at_ns: now_ns,
        started_at_ns: 0,
        reason: REASON_UNKNOWN.to_string(),
        message: detail.to_string(),
    }
}

/// Unix time in nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32, oom: bool) -> ExitInfo {
        ExitInfo { exit_code: code, exited_at_ns: 20, started_at_ns: 10, oom_killed: oom, signal: 0 }
    }

    #[test]
    fn reasons() {
        assert_eq!(finished_from_exit(&exit(0, false)).reason, "Completed");
        assert_eq!(finished_from_exit(&exit(3, false)).reason, "Error");
        assert_eq!(finished_from_exit(&exit(137, true)).reason, "OOMKilled");
        let f = finished_from_exit(&exit(137, false));
        assert_eq!((f.exit_code, f.finished_at_ns, f.started_at_ns), (137, 20, 10));
        let u = finished_unknown(5, "gone");
        assert_eq!((u.exit_code, u.reason.as_str(), u.message.as_str()), (255, "Unknown", "gone"));
    }
}
