//! Container logs in the CRI format kubelet reads: both streams, full (F) and partial (P)
//! records, a long line split into parts, and ReopenContainerLog after log rotation.

use std::time::Duration;

use berth_tests::cri_log::{joined_lines, read_log, wait_for_log, LogLine};
use berth_tests::timing::secs;
use berth_tests::RuntimeEnv;
use k8s_cri::v1::{ContainerState, ReopenContainerLogRequest};

fn of_stream<'a>(records: &'a [LogLine], stream: &str) -> Vec<&'a LogLine> {
    records.iter().filter(|r| r.stream == stream).collect()
}

#[tokio::test]
async fn stdout_and_stderr_full_and_partial_lines() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("logs").await;
    let config = env.container_config(
        "talker",
        &["sh", "-c", "echo out one; echo err one >&2; echo 'out two  with  spaces'; echo; echo err two >&2; printf no-newline"],
    );
    let log = pod.log_file(&config);
    let id = env.run_container_with(&pod, config).await;
    let status = env.wait_exited(&id).await;
    assert_eq!(status.exit_code, 0, "{status:#?}");
    assert_eq!(status.log_path, log.to_string_lossy(), "ContainerStatus names the log file");

    let records = read_log(&log);
    let mut stdout: Vec<(char, String)> = of_stream(&records, "stdout").iter().map(|r| (r.tag, r.content.clone())).collect();
    // Output that ends without a newline is one record either way; containerd tags it F at
    // EOF, conmon P. kubelet reads both.
    let last = stdout.pop().expect("stdout records");
    assert_eq!(last.1, "no-newline", "the unterminated last line is its own record: {records:#?}");
    assert_eq!(
        stdout,
        vec![('F', "out one".to_string()), ('F', "out two  with  spaces".to_string()), ('F', String::new())],
        "stdout records: {records:#?}"
    );
    let stderr: Vec<(char, String)> = of_stream(&records, "stderr").iter().map(|r| (r.tag, r.content.clone())).collect();
    assert_eq!(stderr, vec![('F', "err one".to_string()), ('F', "err two".to_string())], "{records:#?}");
    let times: Vec<&str> = records.iter().map(|r| r.time.as_str()).collect();
    for pair in times.windows(2) {
        assert!(pair[0] <= pair[1], "timestamps never go back: {times:?}");
    }
    assert!(records.iter().all(|r| r.time.ends_with('Z') && r.time.len() >= 27), "nanosecond UTC timestamps: {times:?}");
    env.finish().await;
}

#[tokio::test]
async fn long_line_is_split_into_partial_records() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("long").await;
    let config = env.container_config("long", &["sh", "-c", "head -c 20480 /dev/zero | tr '\\0' a; echo; echo after"]);
    let log = pod.log_file(&config);
    let id = env.run_container_with(&pod, config).await;
    env.wait_exited(&id).await;

    let records = read_log(&log);
    let stdout = of_stream(&records, "stdout");
    assert!(stdout.len() >= 3, "a 20 KiB line takes more than one record: {} records", stdout.len());
    let last_of_long = stdout.iter().position(|r| r.is_full()).expect("a full record ends the long line");
    assert!(last_of_long >= 1, "the long line starts with P records");
    assert!(stdout[..last_of_long].iter().all(|r| r.tag == 'P'));
    let lines = joined_lines(&records, "stdout");
    assert_eq!(lines.len(), 2, "{} lines", lines.len());
    assert_eq!(lines[0].len(), 20480);
    assert!(lines[0].bytes().all(|b| b == b'a'));
    assert_eq!(lines[1], "after");
    env.finish().await;
}

#[tokio::test]
async fn reopen_log_after_rotation() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("rotate").await;
    let config = env.container_config("ticker", &["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done"]);
    let log = pod.log_file(&config);
    let id = env.run_container_with(&pod, config).await;
    wait_for_log(&log, "tick2", secs(10)).await;

    // What kubelet's log rotation does: rename, then ask the runtime to reopen.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rename log");
    env.rt
        .reopen_container_log(ReopenContainerLogRequest { container_id: id.clone() })
        .await
        .expect("ReopenContainerLog");
    let fresh = wait_for_log(&log, "tick", secs(10)).await;
    let old = read_log(&rotated);
    let last_old: u64 = old.last().and_then(|r| r.content.trim_start_matches("tick").parse().ok()).expect("ticks in the old file");
    let first_new: u64 = fresh[0].content.trim_start_matches("tick").parse().expect("a tick in the new file");
    assert!(first_new > last_old, "the new file continues where the old one ended: {last_old} then {first_new}");
    // Nothing lands in the rotated file any more.
    let old_len = std::fs::metadata(&rotated).expect("rotated log").len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(std::fs::metadata(&rotated).expect("rotated log").len(), old_len, "the old file is closed");

    env.stop_container(&id, 0).await.expect("StopContainer");
    env.wait_container_state(&id, ContainerState::ContainerExited, Duration::from_secs(10)).await;
    let stopped = env.rt.reopen_container_log(ReopenContainerLogRequest { container_id: id.clone() }).await;
    assert!(stopped.is_err(), "ReopenContainerLog of a stopped container is an error");
    let unknown = env.rt.reopen_container_log(ReopenContainerLogRequest { container_id: "0".repeat(64) }).await;
    assert_eq!(unknown.expect_err("unknown container").code(), tonic::Code::NotFound);
    env.finish().await;
}
