//! `process.terminal = true` through the shim, with the built-in runtime and with runc
//! (`--console-socket`): the init has a terminal as stdin/stdout/stderr and as its
//! controlling terminal, of the spec's size (or 80x24), and everything it writes lands in
//! the CRI log as `stdout` entries. Needs root; skipped (with a note) otherwise.

mod monitor_support;
use std::path::Path;
use std::time::Duration;

use monitor_support::*;
use oci_spec::runtime::{BoxBuilder, Spec};

fn root() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root");
    }
    is_root()
}

fn runc_available() -> bool {
    let there = Path::new(RUNC).exists();
    if !there {
        eprintln!("skipped: {RUNC} not installed");
    }
    there
}

/// A busybox bundle running `script` with `process.terminal = true` and, if given,
/// `process.consoleSize` (rows, cols).
fn terminal_bundle(script: &str, size: Option<(u64, u64)>, runtime: Option<&str>) -> Bundle {
    let bundle = Bundle::new(&["sh", "-c", script], runtime);
    for applet in ["stty", "tty", "seq"] {
        let link = bundle.bundle.join("rootfs/bin").join(applet);
        std::os::unix::fs::symlink("busybox", link).unwrap();
    }
    let config = bundle.bundle.join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    if let Some((height, width)) = size {
        process.set_console_size(Some(
            BoxBuilder::default()
                .height(height)
                .width(width)
                .build()
                .unwrap(),
        ));
    }
    spec.set_process(Some(process));
    spec.save(&config).unwrap();
    bundle
}

/// Create, start, wait for the exit; returns the exit code and the log's entries.
fn run_to_exit(bundle: &Bundle) -> (i32, Vec<(String, String, String)>) {
    let (shim_pid, init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let exit = wait_exit(&client, Duration::from_secs(20));
    bundle.assert_nothing_left(shim_pid, init_pid);
    (exit.exit_code, entries(&bundle.log_text()))
}

fn contents(entries: &[(String, String, String)]) -> Vec<&str> {
    entries.iter().map(|(_, _, c)| c.as_str()).collect()
}

/// What every runtime must do for a terminal container.
fn terminal_streams(runtime: Option<&str>) {
    // Field 7 of /proc/self/stat is the controlling terminal (0: none); `read` splits it
    // out without any applet (the shell's comm "(sh)" has no space).
    let script = "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; \
                  stty size; \
                  read pid comm state ppid pgrp session tty_nr rest < /proc/self/stat; \
                  [ \"$tty_nr\" != 0 ] && echo has-ctty; \
                  [ \"$session\" = \"$pid\" ] && echo session-leader; \
                  echo to-stderr >&2; \
                  printf 'cr\\r\\nno newline at the end'";
    let bundle = terminal_bundle(script, None, runtime);
    let (code, entries) = run_to_exit(&bundle);
    let text = bundle.log_text();
    assert_eq!(code, 0, "log:\n{text}");
    assert!(
        entries.iter().all(|(stream, _, _)| stream == "stdout"),
        "a terminal has one stream, logged as stdout:\n{text}"
    );
    for line in [
        "all-tty",
        "24 80",
        "has-ctty",
        "session-leader",
        "to-stderr",
        "cr",
    ] {
        assert!(
            has_entry(&text, "stdout", "F", line),
            "{line:?} in the log:\n{text}"
        );
    }
    // The unterminated last line is flushed when the terminal hangs up.
    assert_eq!(
        entries.last().map(|(_, tag, c)| (tag.as_str(), c.as_str())),
        Some(("F", "no newline at the end")),
        "log:\n{text}"
    );
}

fn console_size_from_spec(runtime: Option<&str>) {
    let bundle = terminal_bundle("stty size", Some((50, 132)), runtime);
    let (code, entries) = run_to_exit(&bundle);
    assert_eq!(code, 0);
    assert_eq!(contents(&entries), ["50 132"]);
}

/// Output written just before the init exits is all there (the master reads EIO only after
/// the buffered data).
fn all_output_arrives(runtime: Option<&str>) {
    let bundle = terminal_bundle("seq 1 3000", None, runtime);
    let (code, entries) = run_to_exit(&bundle);
    assert_eq!(code, 0);
    let expected: Vec<String> = (1..=3000).map(|n| n.to_string()).collect();
    assert_eq!(contents(&entries), expected);
}

/// ExecSync has no terminal: an exec in a terminal container gets pipes.
fn exec_has_pipes(runtime: Option<&str>) {
    let bundle = terminal_bundle("echo up; while true; do sleep 0.05; done", None, runtime);
    let (_shim_pid, _init_pid) = bundle.create_ok();
    let client = bundle.client();
    client.start().unwrap();
    let output = client
        .exec(
            vec![
                "sh".into(),
                "-c".into(),
                "[ -t 1 ] && echo tty || echo pipe; echo e >&2".into(),
            ],
            vec![],
            None,
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(output.exit_code, 0);
    assert_eq!(output.stdout, b"pipe\n");
    assert_eq!(output.stderr, b"e\n");
    client.signal(9, false).unwrap();
    wait_exit(&client, Duration::from_secs(10));
    assert!(has_entry(&bundle.log_text(), "stdout", "F", "up"));
}

#[test]
fn builtin_terminal_streams() {
    if root() {
        terminal_streams(None);
    }
}

#[test]
fn builtin_console_size_from_spec() {
    if root() {
        console_size_from_spec(None);
    }
}

#[test]
fn builtin_terminal_all_output_arrives() {
    if root() {
        all_output_arrives(None);
    }
}

#[test]
fn builtin_terminal_exec_has_pipes() {
    if root() {
        exec_has_pipes(None);
    }
}

#[test]
fn runc_terminal_streams() {
    if root() && runc_available() {
        terminal_streams(Some(RUNC));
    }
}

#[test]
fn runc_console_size_from_spec() {
    if root() && runc_available() {
        console_size_from_spec(Some(RUNC));
    }
}

#[test]
fn runc_terminal_all_output_arrives() {
    if root() && runc_available() {
        all_output_arrives(Some(RUNC));
    }
}

#[test]
fn runc_terminal_exec_has_pipes() {
    if root() && runc_available() {
        exec_has_pipes(Some(RUNC));
    }
}
