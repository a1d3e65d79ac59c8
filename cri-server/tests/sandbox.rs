//! Pod sandboxes against a real berthd (root needed: namespaces, mounts, cgroups).
//!
//! Each test runs its own berthd (temp root and state, a unique `cgroup_root`, so nothing
//! here touches the host's cgroups) through the `berth-tests` harness, whose Drop removes
//! whatever a failing test left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_tests::leaks;
use berth_tests::runtime::{assert_code, namespace_options, pod_security, share_pid_namespace};
use berth_tests::{Berthd, RuntimeClient};
use k8s_cri::v1::{
    DnsConfig, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, PodSandbox,
    PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxState, PodSandboxStateValue, PodSandboxStatus,
    PodSandboxStatusRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest,
};
use tonic::Code;

fn pod_config(name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: berth_tests::berthd::random_hex(8),
            namespace: "sandbox-test".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(NamespaceMode::Container)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn run(rt: &mut RuntimeClient, config: &PodSandboxConfig) -> Result<String, tonic::Status> {
    let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
    Ok(rt.run_pod_sandbox(request).await?.into_inner().pod_sandbox_id)
}

async fn status(rt: &mut RuntimeClient, id: &str) -> Result<(PodSandboxStatus, HashMap<String, String>), tonic::Status> {
    let response = rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: id.into(), verbose: true })
        .await?
        .into_inner();
    Ok((response.status.expect("status"), response.info))
}

async fn list(rt: &mut RuntimeClient, filter: Option<PodSandboxFilter>) -> Vec<PodSandbox> {
    rt.list_pod_sandbox(ListPodSandboxRequest { filter }).await.expect("ListPodSandbox").into_inner().items
}

async fn stop(rt: &mut RuntimeClient, id: &str) -> Result<(), tonic::Status> {
    rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.map(|_| ())
}

async fn remove(rt: &mut RuntimeClient, id: &str) -> Result<(), tonic::Status> {
    rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.map(|_| ())
}

/// `nsenter --<kind>=<file> <command...>`'s stdout, trimmed.
fn nsenter(kind: &str, file: &Path, command: &[&str]) -> String {
    let output = Command::new("nsenter")
        .arg(format!("--{kind}={}", file.display()))
        .args(command)
        .output()
        .expect("run nsenter");
    assert!(output.status.success(), "nsenter --{kind} {command:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn ns_dir(berthd: &Berthd, id: &str) -> PathBuf {
    berthd.state().join("pods").join(id).join("ns")
}

fn pod_dir(berthd: &Berthd, id: &str) -> PathBuf {
    berthd.root().join("pods").join(id)
}

fn pod_cgroup(berthd: &Berthd, id: &str) -> String {
    format!("{}/pod-{id}", berthd.cgroup_root())
}

fn state_filter(state: PodSandboxState) -> PodSandboxFilter {
    PodSandboxFilter { state: Some(PodSandboxStateValue { state: state as i32 }), ..Default::default() }
}

#[tokio::test]
async fn pod_lifecycle_namespaces_files_cgroup_and_idempotent_teardown() {
    let berthd = Berthd::start().await;
    let mut rt = berthd.runtime().await;

    let mut config = pod_config("web");
    let linux = config.linux.get_or_insert_with(Default::default);
    // One sysctl per pinned namespace: net and ipc.
    linux.sysctls = HashMap::from([
        ("net.ipv4.ping_group_range".to_string(), "0 2147483647".to_string()),
        ("kernel.shmmni".to_string(), "1234".to_string()),
    ]);
    config.dns_config = Some(DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["sandbox-test.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let id = run(&mut rt, &config).await.expect("RunPodSandbox");
    assert_eq!(id.len(), 64, "{id}");

    // Status and verbose info.
    let (st, info) = status(&mut rt, &id).await.expect("PodSandboxStatus");
    assert_eq!(st.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(st.metadata, config.metadata);
    assert_eq!(st.labels, config.labels);
    assert!(st.created_at > 0);
    let info: serde_json::Value = serde_json::from_str(&info["info"]).expect("info is JSON");
    assert_eq!(info["netns"], ns_dir(&berthd, &id).join("net").display().to_string());
    assert_eq!(info["netNamespaceClosed"], false);
    assert_eq!(info["config"]["hostname"], "web-host");

    // Pinned namespaces are nsfs mounts, distinct from berthd's own.
    let dir = ns_dir(&berthd, &id);
    let mut pinned = leaks::ns_mounts_under(&dir);
    pinned.sort();
    assert_eq!(pinned, [dir.join("ipc"), dir.join("net"), dir.join("uts")]);
    assert_eq!(nsenter("uts", &dir.join("uts"), &["hostname"]), "web-host");
    assert_eq!(nsenter("net", &dir.join("net"), &["cat", "/proc/sys/net/ipv4/ping_group_range"]).split_whitespace().collect::<Vec<_>>(), ["0", "2147483647"]);
    assert_eq!(nsenter("ipc", &dir.join("ipc"), &["cat", "/proc/sys/kernel/shmmni"]), "1234");
    assert_ne!(std::fs::read_to_string("/proc/sys/kernel/shmmni").unwrap().trim(), "1234", "the host's value must not change");
    let lo = nsenter("net", &dir.join("net"), &["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "lo must be up in the pod: {lo}");
    let links = nsenter("net", &dir.join("net"), &["ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "loopback only: {links}");

    // The pod's files.
    let files = pod_dir(&berthd, &id);
    assert_eq!(std::fs::read_to_string(files.join("hostname")).unwrap(), "web-host\n");
    let hosts = std::fs::read_to_string(files.join("hosts")).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n") && hosts.contains("\tweb-host\n"), "{hosts}");
    assert_eq!(
        std::fs::read_to_string(files.join("resolv.conf")).unwrap(),
        "search sandbox-test.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );

    // The pod cgroup, under this test's cgroup root only.
    let cgroup_dirs = leaks::cgroup_dirs(&pod_cgroup(&berthd, &id));
    assert!(cgroup_dirs.iter().any(|d| d.exists()), "pod cgroup missing in {cgroup_dirs:?}");

    // Filters.
    let other = run(&mut rt, &pod_config("db")).await.expect("second pod");
    assert_eq!(list(&mut rt, None).await.len(), 2);
    let by_prefix = list(&mut rt, Some(PodSandboxFilter { id: id[..12].to_string(), ..Default::default() })).await;
    assert_eq!(by_prefix.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [id.as_str()]);
    let by_label = PodSandboxFilter { label_selector: HashMap::from([("app".to_string(), "db".to_string())]), ..Default::default() };
    assert_eq!(list(&mut rt, Some(by_label)).await.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [other.as_str()]);

    // A duplicate name is refused, naming the pod that holds it.
    let message = assert_code(run(&mut rt, &config).await, Code::AlreadyExists);
    assert!(message.contains(&id), "{message}");

    // Stop: NOTREADY, namespaces unpinned; again: still fine.
    stop(&mut rt, &id).await.expect("StopPodSandbox");
    stop(&mut rt, &id).await.expect("second StopPodSandbox");
    assert!(leaks::ns_mounts_under(&dir).is_empty());
    let (st, info) = status(&mut rt, &id).await.unwrap();
    assert_eq!(st.state, PodSandboxState::SandboxNotready as i32);
    assert!(info["info"].contains("\"netNamespaceClosed\":true"), "{}", info["info"]);
    let ready = list(&mut rt, Some(state_filter(PodSandboxState::SandboxReady))).await;
    assert_eq!(ready.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [other.as_str()]);

    // Remove: gone everywhere; again, and for unknown ids: fine.
    remove(&mut rt, &id).await.expect("RemovePodSandbox");
    remove(&mut rt, &id).await.expect("second RemovePodSandbox");
    remove(&mut rt, "0123456789abcdef").await.expect("RemovePodSandbox of an unknown id");
    stop(&mut rt, "0123456789abcdef").await.expect("StopPodSandbox of an unknown id");
    assert_code(status(&mut rt, &id).await, Code::NotFound);
    assert!(!files.exists());
    assert!(!berthd.state().join("pods").join(&id).exists());
    assert!(cgroup_dirs.iter().all(|d| !d.exists()), "pod cgroup left: {cgroup_dirs:?}");
    // The name is free again.
    let again = run(&mut rt, &config).await.expect("same name after removal");
    assert_ne!(again, id);

    // Removing a READY pod stops it first.
    for pod in [again, other] {
        remove(&mut rt, &pod).await.expect("remove ready pod");
    }
    assert!(list(&mut rt, None).await.is_empty());
    berthd.assert_no_runtime_leaks();
}

#[tokio::test]
async fn host_network_and_ipc_pin_nothing_and_copy_the_nodes_files() {
    let berthd = Berthd::start().await;
    let mut rt = berthd.runtime().await;
    let mut config = pod_config("hostnet");
    pod_security(&mut config).namespace_options = Some(k8s_cri::v1::NamespaceOption {
        network: NamespaceMode::Node as i32,
        ipc: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ..Default::default()
    });
    config.dns_config = Some(DnsConfig { servers: vec!["10.96.0.10".into()], ..Default::default() });
    let id = run(&mut rt, &config).await.expect("RunPodSandbox host network");
    assert!(leaks::ns_mounts_under(berthd.state()).is_empty(), "host namespaces are not pinned");
    let files = pod_dir(&berthd, &id);
    assert_eq!(std::fs::read(files.join("hosts")).unwrap(), std::fs::read("/etc/hosts").unwrap_or_default());
    assert_eq!(std::fs::read(files.join("resolv.conf")).unwrap(), std::fs::read("/etc/resolv.conf").unwrap_or_default());
    let (st, _) = status(&mut rt, &id).await.unwrap();
    assert_eq!(st.network.expect("network status").ip, "", "host network: no pod IP");
    remove(&mut rt, &id).await.expect("remove");
    berthd.assert_no_runtime_leaks();
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing() {
    let berthd = Berthd::start().await;
    let mut rt = berthd.runtime().await;

    assert_code(rt.run_pod_sandbox(RunPodSandboxRequest::default()).await, Code::InvalidArgument);
    let mut no_uid = pod_config("x");
    no_uid.metadata.as_mut().unwrap().uid.clear();
    let message = assert_code(run(&mut rt, &no_uid).await, Code::InvalidArgument);
    assert!(message.contains("uid"), "{message}");

    // A sysctl that is not namespaced, and a net sysctl on the host network.
    let mut config = pod_config("sysctl");
    config.linux.as_mut().unwrap().sysctls = HashMap::from([("vm.swappiness".to_string(), "1".to_string())]);
    assert_code(run(&mut rt, &config).await, Code::InvalidArgument);
    // A namespaced sysctl the kernel does not have: refused after the namespaces were made,
    // which must all be undone.
    config.linux.as_mut().unwrap().sysctls = HashMap::from([("net.ipv4.no_such_knob".to_string(), "1".to_string())]);
    let message = assert_code(run(&mut rt, &config).await, Code::InvalidArgument);
    assert!(message.contains("no_such_knob"), "{message}");
    assert!(list(&mut rt, None).await.is_empty());
    berthd.assert_no_runtime_leaks();
    assert!(std::fs::read_dir(berthd.state().join("pods")).map(|d| d.count()).unwrap_or(0) == 0);

    // A cgroup parent berth cannot use (made while the namespaces are pinned: both undone).
    config.linux.as_mut().unwrap().sysctls.clear();
    for parent in ["/kubepods/../escape", "kubepods-besteffort.slice:cri-containerd:x"] {
        config.linux.as_mut().unwrap().cgroup_parent = parent.to_string();
        let message = assert_code(run(&mut rt, &config).await, Code::InvalidArgument);
        assert!(message.contains("cgroup"), "{message}");
    }
    config.linux.as_mut().unwrap().cgroup_parent.clear();
    assert!(list(&mut rt, None).await.is_empty());
    berthd.assert_no_runtime_leaks();

    // The failed name is free.
    let id = run(&mut rt, &config).await.expect("same name after a failure");

    // Unknown ids.
    assert_code(status(&mut rt, "feedface").await, Code::NotFound);
    assert_code(
        rt.run_pod_sandbox(RunPodSandboxRequest { config: Some(pod_config("h")), runtime_handler: "nope".into() }).await,
        Code::InvalidArgument,
    );
    remove(&mut rt, &id).await.unwrap();
    berthd.assert_no_runtime_leaks();
}

#[tokio::test]
async fn pods_survive_kill_9_of_berthd() {
    let mut berthd = Berthd::start().await;
    let mut rt = berthd.runtime().await;
    let config = pod_config("survivor");
    let id = run(&mut rt, &config).await.expect("RunPodSandbox");
    let stopped = run(&mut rt, &pod_config("stopped")).await.expect("RunPodSandbox");
    stop(&mut rt, &stopped).await.unwrap();
    let mut shared_config = pod_config("sharedpid");
    share_pid_namespace(&mut shared_config);
    let shared = run(&mut rt, &shared_config).await.expect("RunPodSandbox shared pid");
    let holder_pid = |info: &HashMap<String, String>| serde_json::from_str::<serde_json::Value>(&info["info"]).unwrap()["pid"].as_i64().unwrap();
    let pid_before = holder_pid(&status(&mut rt, &shared).await.unwrap().1);

    berthd.kill9();
    berthd.restart().await;
    let mut rt = berthd.runtime().await;

    let pods = list(&mut rt, None).await;
    let state_of = |pid: &str| pods.iter().find(|p| p.id == pid).map(|p| p.state);
    assert_eq!(state_of(&id), Some(PodSandboxState::SandboxReady as i32), "{pods:?}");
    assert_eq!(state_of(&stopped), Some(PodSandboxState::SandboxNotready as i32), "{pods:?}");
    let dir = ns_dir(&berthd, &id);
    assert_eq!(nsenter("uts", &dir.join("uts"), &["hostname"]), "survivor-host");
    // The name is still taken after the restart.
    assert_code(run(&mut rt, &config).await, Code::AlreadyExists);
    // The PID namespace holder outlived berthd.
    assert_eq!(state_of(&shared), Some(PodSandboxState::SandboxReady as i32), "{pods:?}");
    let (_, info) = status(&mut rt, &shared).await.unwrap();
    assert_eq!(holder_pid(&info), pid_before);
    assert!(Path::new(&format!("/proc/{pid_before}")).exists());

    for pod in [id, stopped, shared] {
        remove(&mut rt, &pod).await.expect("remove after restart");
    }
    berthd.assert_no_runtime_leaks();
}

#[tokio::test]
async fn shared_pid_namespace_has_a_holder_that_goes_with_the_pod() {
    let berthd = Berthd::start().await;
    let mut rt = berthd.runtime().await;
    let mut config = pod_config("sharedpid");
    share_pid_namespace(&mut config);
    let id = run(&mut rt, &config).await.expect("RunPodSandbox with a shared PID namespace");
    let (_, info) = status(&mut rt, &id).await.unwrap();
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    let pid = info["pid"].as_i64().expect("pid");
    assert!(pid > 0, "{info}");
    let pod_pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("holder alive");
    assert_ne!(pod_pidns, std::fs::read_link("/proc/self/ns/pid").unwrap(), "a new PID namespace");
    // PID 1 of that namespace is the holder.
    let status_text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let nspid = status_text.lines().find(|l| l.starts_with("NSpid:")).unwrap();
    assert!(nspid.split_whitespace().last() == Some("1"), "{nspid}");

    stop(&mut rt, &id).await.expect("stop");
    assert!(!Path::new(&format!("/proc/{pid}")).exists() || std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() != Some(pod_pidns));
    remove(&mut rt, &id).await.expect("remove");
    berthd.assert_no_runtime_leaks();
}

/// kubelet's RunPodSandbox deadline passing while berthd works: the work goes on, the retry
/// gets the same pod; a pod nobody comes back for is removed after the TTL.
#[tokio::test]
async fn a_run_whose_caller_gave_up_goes_to_the_retry_or_is_cleaned_up() {
    let berthd = Berthd::start_with("[runtime]\nunclaimed_resource_ttl_secs = 2\n").await;
    let mut rt = berthd.runtime().await;
    let impatient = |config: &PodSandboxConfig| {
        let mut request = tonic::Request::new(RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() });
        // The deadline travels as grpc-timeout; berthd's server drops the handler at it.
        request.set_timeout(std::time::Duration::from_millis(1));
        request
    };

    let config = pod_config("impatient");
    let gave_up = rt.run_pod_sandbox(impatient(&config)).await;
    assert!(matches!(gave_up.as_ref().map_err(|s| s.code()), Err(Code::DeadlineExceeded | Code::Cancelled)), "{gave_up:?}");
    let id = run(&mut rt, &config).await.expect("the retry gets the pod");
    let pods = list(&mut rt, None).await;
    assert_eq!(pods.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), [id.as_str()], "one pod, not two");
    // Claimed: it outlives the TTL.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(list(&mut rt, None).await.len(), 1);

    let abandoned = pod_config("abandoned");
    let _ = rt.run_pod_sandbox(impatient(&abandoned)).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut seen = false;
    loop {
        let count = list(&mut rt, None).await.len();
        seen |= count == 2;
        if seen && count == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the abandoned pod was not cleaned up (seen: {seen})");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Its name is free again.
    let fresh = run(&mut rt, &abandoned).await.expect("name free after the clean-up");
    for pod in [id, fresh] {
        remove(&mut rt, &pod).await.unwrap();
    }
    berthd.assert_no_runtime_leaks();
}

#[tokio::test]
async fn twenty_pods_in_parallel() {
    let berthd = Berthd::start().await;
    let rt = berthd.runtime().await;
    let runs = (0..20).map(|i| {
        let mut rt = rt.clone();
        async move { run(&mut rt, &pod_config(&format!("par{i}"))).await }
    });
    let ids: Vec<String> = futures::future::join_all(runs).await.into_iter().map(|r| r.expect("RunPodSandbox")).collect();
    let mut rt = rt;
    let pods = list(&mut rt, Some(state_filter(PodSandboxState::SandboxReady))).await;
    assert_eq!(pods.len(), 20);
    for id in &ids {
        let dir = ns_dir(&berthd, id);
        assert_eq!(leaks::ns_mounts_under(&dir).len(), 3, "{id}");
    }
    let removes = ids.iter().map(|id| {
        let mut rt = rt.clone();
        async move { remove(&mut rt, id).await }
    });
    for result in futures::future::join_all(removes).await {
        result.expect("RemovePodSandbox");
    }
    assert!(list(&mut rt, None).await.is_empty());
    berthd.assert_no_runtime_leaks();
}
