//! Several containers in one pod: they share the pod's UTS, IPC and network namespaces
//! (and /dev/shm), see the pod's hostname and DNS config, and share one PID namespace
//! only when the pod asks for it.

use std::time::Duration;

use berth_tests::runtime::{container_in_pod_pid_namespace, share_pid_namespace};
use berth_tests::{Pod, RuntimeEnv};
use k8s_cri::v1::{ContainerState, DnsConfig};

const RUNNING_WITHIN: Duration = Duration::from_secs(10);

async fn run_sleeper(env: &mut RuntimeEnv, pod: &Pod, name: &str, shared_pid: bool, seconds: &str) -> String {
    let mut config = env.container_config(name, &["sleep", seconds]);
    if shared_pid {
        container_in_pod_pid_namespace(&mut config);
    }
    let id = env.run_container_with(pod, config).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, RUNNING_WITHIN).await;
    id
}

#[tokio::test]
async fn containers_share_uts_ipc_and_net_of_their_pod_only() {
    let mut env = RuntimeEnv::start().await;
    let mut config = env.pod_config("shared");
    config.hostname = "shared-host".to_string();
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".to_string()],
        searches: vec!["berth-test.svc.cluster.local".to_string()],
        options: vec!["ndots:5".to_string()],
    });
    let pod = env.run_pod_with(config).await.expect("RunPodSandbox");
    let first = run_sleeper(&mut env, &pod, "first", false, "3600").await;
    let second = run_sleeper(&mut env, &pod, "second", false, "3600").await;
    let other_pod = env.run_pod("other").await;
    let outsider = run_sleeper(&mut env, &other_pod, "outsider", false, "3600").await;

    for id in [&first, &second] {
        assert_eq!(env.exec_ok(id, &["hostname"]).await, "shared-host");
        let resolv = env.exec_ok(id, &["cat", "/etc/resolv.conf"]).await;
        assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");
        assert!(resolv.contains("search berth-test.svc.cluster.local"), "{resolv}");
        assert!(resolv.contains("options ndots:5"), "{resolv}");
        let hosts = env.exec_ok(id, &["cat", "/etc/hosts"]).await;
        assert!(hosts.contains("127.0.0.1"), "{hosts}");
    }
    assert_eq!(env.exec_ok(&outsider, &["hostname"]).await, "other");

    for ns in ["ipc", "uts", "net"] {
        let path = format!("/proc/self/ns/{ns}");
        let a = env.exec_ok(&first, &["readlink", &path]).await;
        let b = env.exec_ok(&second, &["readlink", &path]).await;
        let c = env.exec_ok(&outsider, &["readlink", &path]).await;
        assert!(a.starts_with(&format!("{ns}:[")), "{a}");
        assert_eq!(a, b, "{ns} namespace is the pod's");
        assert_ne!(a, c, "{ns} namespace differs between pods");
    }
    // The mount namespace is each container's own.
    let a = env.exec_ok(&first, &["readlink", "/proc/self/ns/mnt"]).await;
    let b = env.exec_ok(&second, &["readlink", "/proc/self/ns/mnt"]).await;
    assert_ne!(a, b, "each container has its own mount namespace");
    env.finish().await;
}

#[tokio::test]
async fn dev_shm_is_shared_in_the_pod() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("shm").await;
    let writer = run_sleeper(&mut env, &pod, "writer", false, "3600").await;
    let reader = run_sleeper(&mut env, &pod, "reader", false, "3600").await;
    env.exec_ok(&writer, &["sh", "-c", "echo shared-memory > /dev/shm/segment"]).await;
    assert_eq!(env.exec_ok(&reader, &["cat", "/dev/shm/segment"]).await, "shared-memory");
    env.finish().await;
}

#[tokio::test]
async fn shared_pid_namespace_when_the_pod_asks() {
    let mut env = RuntimeEnv::start().await;
    let mut config = env.pod_config("pidshare");
    share_pid_namespace(&mut config);
    let pod = env.run_pod_with(config).await.expect("RunPodSandbox with a shared PID namespace");
    let first = run_sleeper(&mut env, &pod, "first", true, "3601").await;
    let second = run_sleeper(&mut env, &pod, "second", true, "3602").await;

    let ps = env.exec_ok(&second, &["ps", "-o", "pid,args"]).await;
    assert!(ps.contains("sleep 3601"), "the second container sees the first one's process: {ps}");
    assert!(ps.contains("sleep 3602"), "{ps}");
    let pid1 = env.exec_ok(&second, &["cat", "/proc/1/cmdline"]).await;
    assert!(!pid1.contains("3602"), "PID 1 of a shared PID namespace is the pod's init, not a container: {pid1:?}");
    let a = env.exec_ok(&first, &["readlink", "/proc/self/ns/pid"]).await;
    let b = env.exec_ok(&second, &["readlink", "/proc/self/ns/pid"]).await;
    assert_eq!(a, b);

    // A container of the pod that exits does not take the namespace with it.
    let quick = env.run_container(&pod, "quick", &["true"]).await;
    env.wait_exited(&quick).await;
    env.exec_ok(&second, &["true"]).await;
    env.finish().await;
}

#[tokio::test]
async fn separate_pid_namespaces_by_default() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("pidsep").await;
    let first = run_sleeper(&mut env, &pod, "first", false, "3601").await;
    let second = run_sleeper(&mut env, &pod, "second", false, "3602").await;

    let ps = env.exec_ok(&second, &["ps", "-o", "pid,args"]).await;
    assert!(!ps.contains("sleep 3601"), "the second container must not see the first one's process: {ps}");
    let pid1 = env.exec_ok(&second, &["cat", "/proc/1/cmdline"]).await;
    assert!(pid1.contains("3602"), "PID 1 is the container's own command: {pid1:?}");
    let a = env.exec_ok(&first, &["readlink", "/proc/self/ns/pid"]).await;
    let b = env.exec_ok(&second, &["readlink", "/proc/self/ns/pid"]).await;
    assert_ne!(a, b);
    env.finish().await;
}
