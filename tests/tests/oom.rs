//! A container over its memory limit is OOM-killed: ContainerStatus says reason OOMKilled
//! and exit code 137, and the pod and berthd carry on.

use std::time::Duration;

use berth_tests::RuntimeEnv;
use k8s_cri::v1::{ContainerState, LinuxContainerResources};

const LIMIT: i64 = 32 << 20;

#[tokio::test]
async fn memory_hog_is_oom_killed() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("oom").await;
    // The shell (PID 1 of the container) keeps 64 MiB of output in a variable: it is the
    // biggest process in the cgroup, so the OOM killer picks it.
    let mut config = env.container_config(
        "hog",
        &["sh", "-c", "echo start; x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}"],
    );
    config.linux.get_or_insert_with(Default::default).resources = Some(LinuxContainerResources {
        memory_limit_in_bytes: LIMIT,
        // kubelet without node swap: no swap beyond the limit either.
        memory_swap_limit_in_bytes: LIMIT,
        ..Default::default()
    });
    let log = pod.log_file(&config);
    let id = env.run_container_with(&pod, config).await;
    let status = env.wait_container_state(&id, ContainerState::ContainerExited, Duration::from_secs(60)).await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!logged.contains("survived"), "the allocation succeeded despite the 32 MiB limit: {logged}");
    assert_eq!(status.reason, "OOMKilled", "{status:#?}");
    assert_eq!(status.exit_code, 137, "{status:#?}");

    // Under the limit the same pod runs things normally.
    let fine = env.run_container(&pod, "fine", &["sh", "-c", "x=$(head -c 1048576 /dev/zero | tr '\\0' a); echo ${#x}"]).await;
    let status = env.wait_exited(&fine).await;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"), "{status:#?}");
    env.finish().await;
}
