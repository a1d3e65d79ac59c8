//! berthd killed with SIGKILL while containers run: shims carry on, and after a restart
//! running containers are RUNNING, a container that exited meanwhile carries its real exit
//! code and finish time, and everything can be stopped and removed.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_tests::cri_log::wait_for_log;
use berth_tests::timing::secs;
use berth_tests::RuntimeEnv;
use k8s_cri::v1::{ContainerState, PodSandboxState};

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// Waits until the shim of `container_id` recorded its exit (`exit.json`), or `timeout`.
async fn wait_exit_file(state: &Path, container_id: &str, timeout: Duration) {
    let path = state.join("shims").join(container_id).join("exit.json");
    let deadline = Instant::now() + timeout;
    while !path.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kill9_then_restart_recovers_running_and_exited_containers() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("survivor").await;
    let running = env.run_container(&pod, "running", &["sleep", "3600"]).await;
    let before = env.wait_container_state(&running, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    // It must outlive the next two containers' creation and exit while berthd is down.
    let script = format!("echo waiting; sleep {}; exit 5", secs(3).as_secs().max(3));
    let config = env.container_config("exits", &["sh", "-c", &script]);
    let exits_log = pod.log_file(&config);
    let exits = env.run_container_with(&pod, config).await;
    wait_for_log(&exits_log, "waiting", secs(10)).await;
    let done_before = env.run_container(&pod, "done-before", &["sh", "-c", "exit 2"]).await;
    let done_status = env.wait_exited(&done_before).await;
    let created_config = env.container_config("created", &["sleep", "3600"]);
    let created = env.create_container(&pod, created_config).await;

    let killed_at = now_ns();
    env.berthd.kill9();
    wait_exit_file(env.berthd.state(), &exits, secs(15)).await;
    // Let the exit be clearly before the restart.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let restarted_at = now_ns();
    env.berthd.restart().await;
    env.rt = env.berthd.runtime().await;

    let pod_status = env.pod_status(&pod.id).await.expect("PodSandboxStatus after restart");
    assert_eq!(pod_status.state, PodSandboxState::SandboxReady as i32, "{pod_status:#?}");

    let after = env.container_status(&running).await.expect("ContainerStatus after restart");
    assert_eq!(after.state, ContainerState::ContainerRunning as i32, "{after:#?}");
    assert_eq!(after.started_at, before.started_at, "the same process, not a new one");
    assert_eq!(env.exec_ok(&running, &["echo", "alive"]).await, "alive");

    let exited = env.container_status(&exits).await.expect("ContainerStatus of the container that exited meanwhile");
    assert_eq!(exited.state, ContainerState::ContainerExited as i32, "{exited:#?}");
    assert_eq!(exited.exit_code, 5, "{exited:#?}");
    assert_eq!(exited.reason, "Error", "{exited:#?}");
    assert!(
        exited.finished_at >= killed_at && exited.finished_at <= restarted_at,
        "finished_at is when it exited ({}), between the kill ({killed_at}) and the restart ({restarted_at})",
        exited.finished_at
    );

    let done_after = env.container_status(&done_before).await.expect("ContainerStatus");
    assert_eq!((done_after.state, done_after.exit_code, done_after.finished_at), (done_status.state, 2, done_status.finished_at));
    let created_after = env.container_status(&created).await.expect("ContainerStatus of the created container");
    assert_eq!(created_after.state, ContainerState::ContainerCreated as i32, "{created_after:#?}");
    // A created container survives the restart well enough to start.
    env.start_container(&created).await;
    env.wait_container_state(&created, ContainerState::ContainerRunning, Duration::from_secs(10)).await;

    // A new pod works next to the recovered one, and everything is removable.
    let fresh = env.run_pod("fresh").await;
    let id = env.run_container(&fresh, "new", &["true"]).await;
    env.wait_exited(&id).await;
    env.finish().await;
}

#[tokio::test]
async fn repeated_kill9_during_lifecycle() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("crashy").await;
    let id = env.run_container(&pod, "sleeper", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    for _ in 0..2 {
        env.berthd.kill9();
        env.berthd.restart().await;
        env.rt = env.berthd.runtime().await;
        let status = env.container_status(&id).await.expect("ContainerStatus");
        assert_eq!(status.state, ContainerState::ContainerRunning as i32, "{status:#?}");
    }
    env.stop_container(&id, 1).await.expect("StopContainer after restarts");
    let status = env.container_status(&id).await.expect("ContainerStatus");
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 137), "{status:#?}");
    env.berthd.kill9();
    env.berthd.restart().await;
    env.rt = env.berthd.runtime().await;
    let status = env.container_status(&id).await.expect("ContainerStatus");
    assert_eq!((status.state, status.exit_code), (ContainerState::ContainerExited as i32, 137), "{status:#?}");
    env.finish().await;
}
