//! Running the berthctl binary against a test berthd.

#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The berthctl binary cargo built for these tests.
pub fn berthctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_berthctl"))
}

/// What a finished berthctl run printed and how it exited.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts exit code 0 and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "berthctl failed: {self:#?}");
        self.stdout
    }
}

/// A berthctl invocation against the berthd listening on `socket`, with pod log
/// directories of `run` under `log_dir`.
pub struct Ctl {
    pub socket: PathBuf,
    pub log_dir: PathBuf,
    pub envs: Vec<(String, String)>,
}

impl Ctl {
    pub fn new(socket: &Path, log_dir: &Path) -> Ctl {
        Ctl { socket: socket.to_path_buf(), log_dir: log_dir.to_path_buf(), envs: Vec::new() }
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(berthctl_bin());
        command
            .env("BERTH_ENDPOINT", format!("unix://{}", self.socket.display()))
            .env("BERTHCTL_POD_LOG_DIR", &self.log_dir)
            .env_remove("BERTHCTL_PROGRESS")
            .stdin(Stdio::null());
        for (key, value) in &self.envs {
            command.env(key, value);
        }
        command
    }

    /// Runs `berthctl ARGS` to completion (at most `timeout`; killed after).
    pub fn run_for(&self, args: &[&str], timeout: Duration) -> Run {
        let mut command = self.command();
        command.args(args);
        run_with_timeout(command, timeout)
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_for(args, Duration::from_secs(60))
    }
}

/// Runs `command` with piped output; kills it (and fails the test) after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> Run {
    let description = format!("{command:?}");
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (out, err) = (out_reader.join().unwrap_or_default(), err_reader.join().unwrap_or_default());
            panic!("{description} did not finish within {timeout:?}\nstdout: {out}\nstderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}
