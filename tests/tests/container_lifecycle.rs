//! Containers through their life: created, running, exited with exit codes and reasons,
//! stopped on time (a container that traps SIGTERM against one that ignores it), removed
//! (idempotently, also while running), and listed with filters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use berth_tests::cri_log::wait_for_log;
use berth_tests::runtime::assert_code;
use berth_tests::timing::secs;
use berth_tests::RuntimeEnv;
use k8s_cri::v1::{ContainerFilter, ContainerState, ContainerStateValue};
use tonic::Code;

const RUNNING_WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn create_start_exit_remove() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("pod").await;
    let config = env.container_config("hello", &["sh", "-c", "sleep 1; echo hello"]);
    let id = env.create_container(&pod, config).await;
    assert_eq!(id.len(), 64, "{id}");

    let created = env.container_status(&id).await.expect("ContainerStatus");
    assert_eq!(created.state, ContainerState::ContainerCreated as i32, "{created:#?}");
    assert!(created.created_at > 0);
    assert_eq!(created.started_at, 0, "{created:#?}");
    assert_eq!(created.metadata.as_ref().map(|m| m.name.as_str()), Some("hello"));
    assert!(!created.image_ref.is_empty(), "{created:#?}");
    assert!(created.log_path.ends_with("hello.log"), "{created:#?}");

    let before_start = now_ns();
    env.start_container(&id).await;
    let running = env.wait_container_state(&id, ContainerState::ContainerRunning, RUNNING_WITHIN).await;
    assert!(running.started_at >= before_start - 1_000_000_000, "{running:#?}");

    let exited = env.wait_exited(&id).await;
    assert_eq!(exited.exit_code, 0, "{exited:#?}");
    assert_eq!(exited.reason, "Completed", "{exited:#?}");
    assert!(exited.finished_at >= exited.started_at, "{exited:#?}");
    assert!(exited.finished_at - exited.started_at >= 900_000_000, "ran at least the 1 s sleep: {exited:#?}");

    env.remove_container(&id).await.expect("RemoveContainer");
    assert_code(env.container_status(&id).await, Code::NotFound);
    env.remove_container(&id).await.expect("RemoveContainer of a removed container is a no-op");
    // containerd answers NotFound here, CRI-O Ok; kubelet takes both.
    let stopped = env.stop_container(&id, 0).await;
    assert!(stopped.is_ok() || stopped.as_ref().err().map(|e| e.code()) == Some(Code::NotFound), "{stopped:?}");
    env.finish().await;
}

#[tokio::test]
async fn exit_codes_and_reasons() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("codes").await;
    let cases: [(&str, &[&str], i32, &str); 3] = [
        ("zero", &["sh", "-c", "exit 0"], 0, "Completed"),
        ("three", &["sh", "-c", "exit 3"], 3, "Error"),
        // PID 1 of a PID namespace cannot SIGKILL itself (the kernel ignores it); the shell
        // reports its child's SIGKILL as 137, and the real signal death is in the stop tests.
        ("killed", &["sh", "-c", "sleep 30 & kill -9 $!; wait $!"], 137, "Error"),
    ];
    let mut ids = Vec::new();
    for (name, command, _, _) in cases {
        ids.push(env.run_container(&pod, name, command).await);
    }
    for ((name, _, code, reason), id) in cases.iter().zip(&ids) {
        let status = env.wait_exited(id).await;
        assert_eq!(status.exit_code, *code, "{name}: {status:#?}");
        assert_eq!(status.reason, *reason, "{name}: {status:#?}");
        assert!(status.finished_at > 0, "{name}: {status:#?}");
    }
    env.finish().await;
}

#[tokio::test]
async fn missing_binary_fails_start_and_reports_error() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("nobin").await;
    let config = env.container_config("nobin", &["/no/such/binary"]);
    let id = env.create_container(&pod, config).await;
    let started = env.rt.start_container(k8s_cri::v1::StartContainerRequest { container_id: id.clone() }).await;
    let status = env.container_status(&id).await.expect("ContainerStatus");
    assert!(
        started.is_err() || status.state == ContainerState::ContainerExited as i32,
        "a container whose binary does not exist must not run: {started:?} {status:#?}"
    );
    env.remove_container(&id).await.expect("RemoveContainer");
    env.finish().await;
}

#[tokio::test]
async fn stop_trapping_container_returns_early_with_its_exit_code() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("trap").await;
    let config = env.container_config(
        "trapper",
        &["sh", "-c", "trap 'echo got TERM; exit 0' TERM; echo ready; while true; do sleep 0.1; done"],
    );
    let log = pod.log_file(&config);
    let id = env.run_container_with(&pod, config).await;
    wait_for_log(&log, "ready", secs(10)).await;

    let started = Instant::now();
    env.stop_container(&id, 30).await.expect("StopContainer");
    let took = started.elapsed();
    assert!(took < secs(10), "a container that exits on SIGTERM stops long before the 30 s timeout: {took:?}");
    let status = env.container_status(&id).await.expect("ContainerStatus");
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "StopContainer returns once it exited: {status:#?}");
    assert_eq!(status.exit_code, 0, "{status:#?}");
    assert_eq!(status.reason, "Completed", "{status:#?}");
    wait_for_log(&log, "got TERM", secs(5)).await;

    env.stop_container(&id, 30).await.expect("StopContainer of an exited container is a no-op");
    env.finish().await;
}

#[tokio::test]
async fn stop_ignoring_container_is_killed_after_the_timeout() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("stubborn").await;
    // PID 1 of a PID namespace ignores signals it has no handler for: SIGTERM does nothing.
    let id = env.run_container(&pod, "sleeper", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, RUNNING_WITHIN).await;

    let timeout = 2;
    let started = Instant::now();
    env.stop_container(&id, timeout).await.expect("StopContainer");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "SIGKILL came before the {timeout} s timeout: {took:?}");
    assert!(took < Duration::from_secs(timeout as u64) + secs(5), "StopContainer took {took:?} for a {timeout} s timeout");
    let status = env.container_status(&id).await.expect("ContainerStatus");
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:#?}");
    assert_eq!(status.exit_code, 137, "{status:#?}");
    assert_eq!(status.reason, "Error", "{status:#?}");
    env.finish().await;
}

#[tokio::test]
async fn remove_running_container_forcibly() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("force").await;
    let id = env.run_container(&pod, "sleeper", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, RUNNING_WITHIN).await;
    let started = Instant::now();
    env.remove_container(&id).await.expect("RemoveContainer of a running container");
    assert!(started.elapsed() < secs(10), "RemoveContainer kills, it does not wait out a grace period");
    assert_code(env.container_status(&id).await, Code::NotFound);

    // A created, never started container is removable too.
    let config = env.container_config("never", &["true"]);
    let never = env.create_container(&pod, config).await;
    env.remove_container(&never).await.expect("RemoveContainer of a created container");
    assert!(env.list_container_ids(None).await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn same_name_in_pod_is_already_exists_until_removed() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("names").await;
    let config = env.container_config("one", &["sleep", "3600"]);
    let id = env.create_container(&pod, config.clone()).await;
    assert_code(env.create_container_with(&pod, config.clone()).await, Code::AlreadyExists);
    env.remove_container(&id).await.expect("RemoveContainer");
    let again = env.create_container(&pod, config).await;
    assert_ne!(again, id);
    env.finish().await;
}

#[tokio::test]
async fn list_filters() {
    let mut env = RuntimeEnv::start().await;
    let pod_a = env.run_pod("a").await;
    let pod_b = env.run_pod("b").await;
    let mut running_config = env.container_config("runner", &["sleep", "3600"]);
    running_config.labels.insert("role".to_string(), "server".to_string());
    let running = env.run_container_with(&pod_a, running_config).await;
    let exited = env.run_container(&pod_a, "done", &["true"]).await;
    let created_config = env.container_config("created", &["sleep", "3600"]);
    let created = env.create_container(&pod_b, created_config).await;
    env.wait_container_state(&running, ContainerState::ContainerRunning, RUNNING_WITHIN).await;
    env.wait_exited(&exited).await;

    let mut all = vec![running.clone(), exited.clone(), created.clone()];
    all.sort();
    assert_eq!(env.list_container_ids(None).await, all);
    let filter = |f: ContainerFilter| Some(f);
    let state = |s: ContainerState| Some(ContainerStateValue { state: s as i32 });
    assert_eq!(env.list_container_ids(filter(ContainerFilter { id: exited.clone(), ..Default::default() })).await, vec![exited.clone()]);
    let mut in_a = vec![running.clone(), exited.clone()];
    in_a.sort();
    let by_pod = ContainerFilter { pod_sandbox_id: pod_a.id.clone(), ..Default::default() };
    assert_eq!(env.list_container_ids(filter(by_pod)).await, in_a);
    for (s, expected) in [
        (ContainerState::ContainerRunning, &running),
        (ContainerState::ContainerExited, &exited),
        (ContainerState::ContainerCreated, &created),
    ] {
        let by_state = ContainerFilter { state: state(s), ..Default::default() };
        assert_eq!(env.list_container_ids(filter(by_state)).await, vec![expected.clone()], "{s:?}");
    }
    let by_label = ContainerFilter {
        label_selector: HashMap::from([("role".to_string(), "server".to_string())]),
        ..Default::default()
    };
    assert_eq!(env.list_container_ids(filter(by_label)).await, vec![running.clone()]);
    let pod_and_state = ContainerFilter {
        pod_sandbox_id: pod_b.id.clone(),
        state: state(ContainerState::ContainerRunning),
        ..Default::default()
    };
    assert!(env.list_container_ids(filter(pod_and_state)).await.is_empty());
    let unknown = ContainerFilter { id: "f".repeat(64), ..Default::default() };
    assert!(env.list_container_ids(filter(unknown)).await.is_empty());
    env.finish().await;
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// `tty: true`: the container's streams are a terminal (the shim's pty), and what it writes
/// lands in the CRI log as `stdout`, stderr included, as containerd logs tty containers.
#[tokio::test]
async fn tty_container_has_a_terminal_logged_as_stdout() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("tty").await;
    let mut config =
        env.container_config("tty", &["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty; echo on-stderr >&2"]);
    config.tty = true;
    let log = pod.log_file(&config);
    let id = env.run_container_with(&pod, config).await;
    let exited = env.wait_exited(&id).await;
    assert_eq!(exited.exit_code, 0, "{exited:#?}");
    let records = wait_for_log(&log, "on-stderr", secs(10)).await;
    let texts: Vec<(&str, char, &str)> =
        records.iter().map(|r| (r.stream.as_str(), r.tag, r.content.as_str())).collect();
    assert_eq!(texts, [("stdout", 'F', "tty"), ("stdout", 'F', "on-stderr")], "{records:#?}");
    env.finish().await;
}
