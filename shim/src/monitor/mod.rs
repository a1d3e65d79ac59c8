//! The shim process itself: `berth-shim create` detaches a daemon that creates the container,
//! is its subreaper and parent, writes its output to the CRI log, serves the control socket,
//! and records the exit in `exit.json` before it exits.
//!
//! - [`args`]: the command line.
//! - `daemon`: the detach dance and setup; `event_loop`: the poll(2) loop and exit sequence.
//! - [`cri_log`]: the CRI log format writer.
//! - [`exit_file`]: `exit.json`, written durably, read by berthd ([`read_exit_file`]).
//! - `runtime`, `builtin`, `external`: the built-in runtime or an external OCI runtime binary.
//! - `exec`: the forked helper that serves an Exec request.
//! - [`init`]: the built-in init for a pod's shared PID namespace.

pub mod args;
mod builtin;
pub mod cri_log;
mod daemon;
pub mod diag;
mod event_loop;
mod exec;
pub mod exit_file;
mod external;
pub mod init;
mod runtime;
pub mod time;

pub use daemon::run_create;
pub use exit_file::{read_exit_file, write_exit_file, ExitFileError};
