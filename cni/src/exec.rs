//! Running a plugin executable: the `CNI_*` environment, the config on stdin, the result
//! (or error object) on stdout, and a deadline after which the plugin's process group is
//! killed.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::types::{error_code, PluginEnv, PluginError};

/// How much of a plugin's stderr goes into an error message.
const STDERR_TAIL: usize = 2048;

/// Runs `binary` with `env` and `stdin`; returns stdout on exit 0. A non-zero exit is the
/// plugin's error object from stdout (or, for plugins that print none, its stderr).
pub fn exec_plugin(binary: &Path, env: &PluginEnv, stdin: &[u8], timeout: Duration) -> Result<Vec<u8>, PluginError> {
    let mut process = Process::new(binary);
    process
        .env_clear()
        // Plugins (iptables, nft, modprobe) need a PATH of their own.
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
        .envs(env.to_env_vars())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills the plugin and what it exec'd (IPAM).
        .process_group(0);
    let started = Instant::now();
    let mut child = process.spawn().map_err(|err| {
        PluginError::new(error_code::IO_FAILURE, format!("starting CNI plugin {}", binary.display())).with_details(err.to_string())
    })?;
    let pid = child.id() as libc::pid_t;

    // Pipes are drained on threads so a plugin that writes much before reading (or never
    // reads) cannot deadlock us; stdout's EOF is the plugin being done.
    let mut stdin_pipe = child.stdin.take();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        if let Some(pipe) = stdin_pipe.as_mut() {
            // A plugin that exits without reading is not an error of ours.
            let _ = pipe.write_all(&input);
        }
    });
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let stdout_reader = spawn_reader(child.stdout.take(), Some(done_tx));
    let stderr_reader = spawn_reader(child.stderr.take(), None);

    let deadline = started + timeout;
    let timed_out = match done_rx.recv_timeout(timeout) {
        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => false,
        Err(mpsc::RecvTimeoutError::Timeout) => true,
    };
    // stdout closed; the process may still be running briefly (or forever, if it kept
    // stdout's write end in a daemon child: then only the deadline ends it).
    let status = if timed_out {
        None
    } else {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                _ => break None,
            }
        }
    };
    let status = match status {
        Some(status) => status,
        None => {
            // Not reaped yet, so the pid (and group) is still ours to kill.
            // SAFETY: kill(2) with integer arguments only.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            tracing::warn!(plugin = %binary.display(), command = %env.command, timeout_ms = timeout.as_millis() as u64, "CNI plugin timed out: killed");
            return Err(PluginError::new(
                error_code::TRY_AGAIN_LATER,
                format!("CNI plugin {} {} timed out after {:?}", binary.display(), env.command, timeout),
            ));
        }
    };
    let _ = writer.join();
    let stdout = stdout_reader.join().unwrap_or_default();
    let stderr = stderr_reader.join().unwrap_or_default();
    tracing::debug!(
        plugin = %binary.display(), command = %env.command, container = %env.container_id,
        exit = ?status.code(), elapsed_us = started.elapsed().as_micros() as u64, "CNI plugin ran"
    );
    if status.success() {
        return Ok(stdout);
    }
    Err(plugin_failure(binary, &status, &stdout, &stderr))
}

fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>, done: Option<mpsc::Sender<()>>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut out);
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
        out
    })
}

/// The error of a failed plugin: its error object when it printed one, else a message
/// with its exit status and the end of its stderr.
pub fn plugin_failure(binary: &Path, status: &std::process::ExitStatus, stdout: &[u8], stderr: &[u8]) -> PluginError {
    if let Some(err) = parse_error_object(stdout) {
        return err;
    }
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    let tail = if text.len() > STDERR_TAIL {
        let mut cut = text.len() - STDERR_TAIL;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        &text[cut..]
    } else {
        text
    };
    let out = String::from_utf8_lossy(stdout);
    let detail = if !tail.is_empty() { tail.to_string() } else { out.trim().to_string() };
    PluginError::new(error_code::PLUGIN_INTERNAL, format!("CNI plugin {} failed ({status})", binary.display())).with_details(detail)
}

/// A CNI error object (`code` and `msg` at least) in `bytes`, if there is one.
pub fn parse_error_object(bytes: &[u8]) -> Option<PluginError> {
    let value: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let code = value.get("code")?.as_u64()?;
    let msg = value.get("msg").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    let details = value.get("details").and_then(|m| m.as_str()).unwrap_or_default().to_string();
    Some(PluginError { code: u32::try_from(code).unwrap_or(error_code::PLUGIN_INTERNAL), msg, details })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn env() -> PluginEnv {
        PluginEnv {
            command: Command::Add,
            container_id: "ctr1".into(),
            netns: "/proc/self/ns/net".into(),
            ifname: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "p".into())],
            path: vec!["/x".into()],
        }
    }

    #[test]
    fn env_and_stdin_reach_the_plugin() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "echo", r#"printf '%s|%s|%s|%s|%s|%s|' "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH"; cat"#);
        let out = exec_plugin(&bin, &env(), b"{\"a\":1}", Duration::from_secs(10)).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "ADD|ctr1|/proc/self/ns/net|eth0|K8S_POD_NAME=p|/x|{\"a\":1}");
    }

    #[test]
    fn error_object_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let bin = script(dir.path(), "err", r#"echo '{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no bridge"}'; exit 1"#);
        let err = exec_plugin(&bin, &env(), b"{}", Duration::from_secs(10)).unwrap_err();
        assert_eq!((err.code, err.msg.as_str(), err.details.as_str()), (7, "bad config", "no bridge"));
        let bin = script(dir.path(), "crash", "echo 'panic: boom' >&2; exit 2");
        let err = exec_plugin(&bin, &env(), b"{}", Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("panic: boom"), "{err}");
    }

    #[test]
    fn timeout_kills_the_plugin_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let bin = script(dir.path(), "hang", &format!("sleep 30 & echo $! > {}; wait", marker.display()));
        let started = Instant::now();
        let err = exec_plugin(&bin, &env(), b"{}", Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.msg.contains("timed out"), "{err}");
        let pid: i32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        // The sleep was in the plugin's group: killed too (a zombie reaped by init, or gone).
        std::thread::sleep(Duration::from_millis(100));
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(state.is_empty() || state.contains(") Z"), "grandchild still running: {state}");
    }

    #[test]
    fn missing_binary() {
        let err = exec_plugin(Path::new("/nonexistent/plugin"), &env(), b"{}", Duration::from_secs(1)).unwrap_err();
        assert!(err.msg.contains("/nonexistent/plugin"));
    }
}
