//! Containers against a real berthd and a local registry with busybox: the lifecycle
//! (create, start, status, stop, remove), logs in the CRI format, exit codes and reasons,
//! ExecSync (output, exit code, timeout), failures that leave nothing, and recovery after
//! `kill -9` of berthd (a running container is found running, an exit that happened while
//! berthd was down carries its real code).
//!
//! Runs on berth-shim's built-in runtime, or on runc with `BERTH_TEST_OCI_RUNTIME=/usr/sbin/runc`.
//! Needs root (mounts, namespaces, cgroups) and the `berth-shim` binary next to `berthd`.

use std::time::{Duration, Instant};

use berth_tests::cri_log::{joined_lines, wait_for_log};
use berth_tests::runtime::assert_code;
use berth_tests::timing::secs;
use berth_tests::RuntimeEnv;
use k8s_cri::v1::{ContainerFilter, ContainerState, ContainerStateValue, ContainerStatusRequest, Mount};
use tonic::Code;

fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn lifecycle_logs_exec_stop_remove() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("life").await;
    let config = env.container_config(
        "app",
        &["sh", "-c", "echo out-line; echo err-line >&2; exec sleep 3600"],
    );
    let log_file = pod.log_file(&config);
    let id = env.create_container(&pod, config).await;
    assert_eq!(id.len(), 64);

    let created = env.container_status(&id).await.expect("status of created");
    assert_eq!(created.state, ContainerState::ContainerCreated as i32, "{created:#?}");
    assert!(created.created_at > 0 && created.started_at == 0, "{created:#?}");
    assert_eq!(created.log_path, log_file.to_string_lossy());
    assert!(!created.image_ref.is_empty() && !created.image_id.is_empty(), "{created:#?}");
    assert_eq!(created.labels.get("container").map(String::as_str), Some("app"));

    env.start_container(&id).await;
    let running = env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    assert!(running.started_at >= running.created_at, "{running:#?}");
    assert_code(env.rt.start_container(k8s_cri::v1::StartContainerRequest { container_id: id.clone() }).await, Code::FailedPrecondition);

    // Logs: both streams, in the CRI format, full lines tagged F.
    let records = wait_for_log(&log_file, "err-line", secs(10)).await;
    assert_eq!(joined_lines(&records, "stdout").first().map(String::as_str), Some("out-line"), "{records:#?}");
    assert_eq!(joined_lines(&records, "stderr"), vec!["err-line".to_string()], "{records:#?}");
    assert!(records.iter().any(|r| r.content == "out-line" && r.is_full()), "{records:#?}");

    // ExecSync: output of both streams and the exit code.
    let out = env.exec(&id, &["sh", "-c", "echo hi; echo ho >&2; exit 3"], 0).await;
    assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code), (&b"hi\n"[..], &b"ho\n"[..], 3));
    assert_eq!(env.exec_ok(&id, &["sh", "-c", "echo $BERTH_TEST"]).await, "1");

    // Verbose status carries the pid and the OCI spec.
    let verbose = env
        .rt
        .container_status(ContainerStatusRequest { container_id: id.clone(), verbose: true })
        .await
        .expect("verbose status")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&verbose.info["info"]).expect("info is JSON");
    assert!(info["pid"].as_i64().unwrap_or(0) > 0, "{info}");
    assert!(info["runtimeSpec"]["process"]["args"].is_array(), "{info}");

    // ReopenContainerLog on a running container.
    std::fs::rename(&log_file, log_file.with_extension("log.1")).expect("rotate the log");
    env.rt
        .reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest { container_id: id.clone() })
        .await
        .expect("ReopenContainerLog");
    env.exec_ok(&id, &["true"]).await;

    // Stop: sleep as PID 1 ignores SIGTERM, so the timeout passes and SIGKILL ends it.
    let started = Instant::now();
    env.stop_container(&id, 2).await.expect("StopContainer");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "SIGKILL came before the timeout: {took:?}");
    let stopped = env.container_status(&id).await.expect("status after stop");
    assert_eq!(stopped.state, ContainerState::ContainerExited as i32, "{stopped:#?}");
    assert_eq!((stopped.exit_code, stopped.reason.as_str()), (137, "Error"), "{stopped:#?}");
    assert!(stopped.finished_at >= stopped.started_at, "{stopped:#?}");
    env.stop_container(&id, 2).await.expect("StopContainer is idempotent");
    assert_code(
        env.rt.reopen_container_log(k8s_cri::v1::ReopenContainerLogRequest { container_id: id.clone() }).await,
        Code::FailedPrecondition,
    );

    env.remove_container(&id).await.expect("RemoveContainer");
    env.remove_container(&id).await.expect("RemoveContainer is idempotent");
    assert_code(env.container_status(&id).await, Code::NotFound);
    assert!(entries(&env.berthd.root().join("containers")).is_empty(), "container dir left");
    assert!(env.list_container_ids(None).await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn exit_codes_reasons_and_filters() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("exits").await;
    let ok = env.run_container(&pod, "ok", &["true"]).await;
    let three = env.run_container(&pod, "three", &["sh", "-c", "exit 3"]).await;
    let runs = env.run_container(&pod, "runs", &["sleep", "3600"]).await;
    let created = env.create_container(&pod, env.container_config("created", &["true"])).await;

    let done = env.wait_exited(&ok).await;
    assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"), "{done:#?}");
    assert!(done.finished_at > 0 && done.finished_at >= done.started_at, "{done:#?}");
    let failed = env.wait_exited(&three).await;
    assert_eq!((failed.exit_code, failed.reason.as_str()), (3, "Error"), "{failed:#?}");

    // Filters: state, id prefix, pod, labels.
    let state = |s: ContainerState| Some(ContainerFilter { state: Some(ContainerStateValue { state: s as i32 }), ..Default::default() });
    let mut exited = vec![ok.clone(), three.clone()];
    exited.sort();
    assert_eq!(env.list_container_ids(state(ContainerState::ContainerExited)).await, exited);
    assert_eq!(env.list_container_ids(state(ContainerState::ContainerRunning)).await, vec![runs.clone()]);
    assert_eq!(env.list_container_ids(state(ContainerState::ContainerCreated)).await, vec![created.clone()]);
    let by_prefix = Some(ContainerFilter { id: runs[..12].to_string(), ..Default::default() });
    assert_eq!(env.list_container_ids(by_prefix).await, vec![runs.clone()]);
    let by_label = Some(ContainerFilter {
        label_selector: [("container".to_string(), "three".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(env.list_container_ids(by_label).await, vec![three.clone()]);
    let other_pod = Some(ContainerFilter { pod_sandbox_id: "0".repeat(64), ..Default::default() });
    assert!(env.list_container_ids(other_pod).await.is_empty());
    assert_eq!(env.list_container_ids(Some(ContainerFilter { pod_sandbox_id: pod.id.clone(), ..Default::default() })).await.len(), 4);

    // A command that cannot be exec'd: runc refuses it at create, the built-in runtime at
    // start; either way the call fails, and a container that was created ends EXITED.
    match env.create_container_with(&pod, env.container_config("bad", &["/no/such/binary"])).await {
        Err(status) => assert!(status.message().contains("/no/such/binary"), "{status:?}"),
        Ok(bad) => {
            let start = env.rt.start_container(k8s_cri::v1::StartContainerRequest { container_id: bad.clone() }).await;
            assert!(start.is_err(), "starting a missing binary must fail: {start:?}");
            let status = env.container_status(&bad).await.expect("status");
            assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:#?}");
            assert_ne!(status.exit_code, 0, "{status:#?}");
            assert_eq!(status.reason, "StartError", "{status:#?}");
        }
    }

    // Exec in a container that does not run; unknown ids.
    assert!(env.try_exec(&created, &["true"], 0).await.is_err());
    assert!(env.try_exec(&ok, &["true"], 0).await.is_err());
    assert_code(env.try_exec(&"e".repeat(64), &["true"], 0).await, Code::NotFound);
    env.stop_container(&"e".repeat(64), 0).await.expect("stopping an unknown (removed) id is fine");
    env.remove_container(&"e".repeat(64)).await.expect("removing an unknown id is fine");

    // Removing a created (never started) container and a running one.
    env.remove_container(&created).await.expect("remove created");
    env.remove_container(&runs).await.expect("remove running");
    env.finish().await;
}

#[tokio::test]
async fn exec_timeout_kills_the_command() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("exectimeout").await;
    let id = env.run_container(&pod, "target", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    let started = Instant::now();
    let result = env.try_exec(&id, &["sleep", "37"], 1).await;
    let took = started.elapsed();
    assert_code(result, Code::DeadlineExceeded);
    assert!(took >= Duration::from_millis(900) && took < secs(6), "{took:?}");
    let deadline = Instant::now() + secs(5);
    while env.exec_ok(&id, &["ps", "-o", "args"]).await.contains("sleep 37") {
        assert!(Instant::now() < deadline, "the timed-out command still runs");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.finish().await;
}

#[tokio::test]
async fn failed_creates_leave_nothing_and_names_are_unique() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("bad").await;

    let mut missing_image = env.container_config("noimage", &["true"]);
    missing_image.image = Some(berth_tests::cri::image_spec(&env.image("nope:latest")));
    let message = assert_code(env.create_container_with(&pod, missing_image).await, Code::NotFound);
    assert!(message.contains("pull it first"), "{message}");

    let mut bad_mount = env.container_config("badmount", &["true"]);
    bad_mount.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: "/nonexistent/berth-test-source".into(),
        ..Default::default()
    });
    assert_code(env.create_container_with(&pod, bad_mount).await, Code::InvalidArgument);

    let mut unnamed = env.container_config("x", &["true"]);
    unnamed.metadata = None;
    assert_code(env.create_container_with(&pod, unnamed).await, Code::InvalidArgument);
    assert_code(
        env.rt
            .create_container(k8s_cri::v1::CreateContainerRequest {
                pod_sandbox_id: "f".repeat(64),
                config: Some(env.container_config("x", &["true"])),
                sandbox_config: Some(pod.config.clone()),
            })
            .await,
        Code::NotFound,
    );
    // Nothing of the failed creates is left: no container dir, no shim dir, and the names are free.
    assert!(entries(&env.berthd.root().join("containers")).is_empty(), "container dirs left");
    let shims: Vec<String> = entries(&env.berthd.state().join("shims")).into_iter().filter(|n| !n.contains("pid")).collect();
    assert!(shims.is_empty(), "shim dirs left: {shims:?}");

    let config = env.container_config("same", &["sleep", "3600"]);
    let first = env.create_container(&pod, config.clone()).await;
    assert_code(env.create_container_with(&pod, config.clone()).await, Code::AlreadyExists);
    env.remove_container(&first).await.expect("remove");
    let second = env.create_container(&pod, config).await;
    assert_ne!(first, second);
    env.finish().await;
}

#[tokio::test]
async fn kill9_of_berthd_then_recovery() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("recover").await;
    let keeps_running =
        env.run_container(&pod, "runs", &["sh", "-c", "while [ ! -f /tmp/stop ]; do sleep 0.1; done; exit 5"]).await;
    let exits_meanwhile = env.run_container(&pod, "exits", &["sh", "-c", "sleep 2; exit 7"]).await;
    let created = env.create_container(&pod, env.container_config("created", &["true"])).await;
    env.wait_container_state(&keeps_running, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    let before = env.container_status(&exits_meanwhile).await.expect("status");
    assert_eq!(before.state, ContainerState::ContainerRunning as i32, "{before:#?}");

    env.berthd.kill9();
    tokio::time::sleep(secs(3)).await;
    env.berthd.restart().await;
    env.rt = env.berthd.runtime().await;

    let running = env.container_status(&keeps_running).await.expect("status after restart");
    assert_eq!(running.state, ContainerState::ContainerRunning as i32, "{running:#?}");
    assert_eq!(env.exec_ok(&keeps_running, &["echo", "alive"]).await, "alive");
    let exited = env.container_status(&exits_meanwhile).await.expect("status after restart");
    assert_eq!(exited.state, ContainerState::ContainerExited as i32, "{exited:#?}");
    assert_eq!((exited.exit_code, exited.reason.as_str()), (7, "Error"), "{exited:#?}");
    assert!(exited.finished_at - exited.started_at >= 1_500_000_000, "finish time is the real one: {exited:#?}");
    let still_created = env.container_status(&created).await.expect("status after restart");
    assert_eq!(still_created.state, ContainerState::ContainerCreated as i32, "{still_created:#?}");

    // The recovered container still works and its later exit is recorded with its code.
    env.exec_ok(&keeps_running, &["touch", "/tmp/stop"]).await;
    let ended = env.wait_exited(&keeps_running).await;
    assert_eq!((ended.exit_code, ended.reason.as_str()), (5, "Error"), "{ended:#?}");

    // Names survive the restart.
    assert_code(env.create_container_with(&pod, env.container_config("runs", &["true"])).await, Code::AlreadyExists);
    env.finish().await;
}
