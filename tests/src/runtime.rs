//! crictl-style flows against a real berthd: run a pod, create and start busybox
//! containers in it, wait for states, exec, read logs, tear everything down and check
//! that nothing is left.
//!
//! [`RuntimeEnv`] bundles what a pod test needs: a local registry holding the standard
//! images, a berthd (with its own temp root/state and cgroup root) that has pulled them,
//! and a RuntimeService client. Configs are plain CRI structs made by [`RuntimeEnv::pod_config`]
//! and [`RuntimeEnv::container_config`]; tests change their fields directly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_imagegen::LocalRegistry;
use k8s_cri::v1::{
    ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState, ContainerStatus, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, ExecSyncResponse, KeyValue, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext, ListContainersRequest,
    ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatus,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
};

use crate::berthd::random_hex;
use crate::cri::{self, ImageClient, RuntimeClient};
use crate::fixtures;
use crate::timing::{scaled, secs};
use crate::Berthd;

/// The CRI namespace of every test pod.
pub const POD_NAMESPACE: &str = "berth-test";

/// A pod the test started: its id and the config it was started with (CreateContainer
/// needs it again, as kubelet sends it).
#[derive(Clone, Debug)]
pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
}

impl Pod {
    /// The pod's log directory (`log_directory`).
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }

    /// Where a container with `config` in this pod logs: `log_directory/log_path`.
    pub fn log_file(&self, config: &ContainerConfig) -> PathBuf {
        self.log_dir().join(&config.log_path)
    }
}

/// A registry with images (shared by the test binary), a berthd of its own that pulled
/// them, and a RuntimeService client.
/// Dropping it stops berthd and removes whatever the test left (shims, cgroups, mounts);
/// [`RuntimeEnv::finish`] instead removes every pod through CRI and asserts nothing leaked.
pub struct RuntimeEnv {
    pub berthd: Berthd,
    /// The test binary's shared registry ([`fixtures::shared_registry`]).
    pub registry: &'static LocalRegistry,
    pub rt: RuntimeClient,
    pub images: ImageClient,
    /// `127.0.0.1:PORT/busybox:latest` on `registry`, pulled.
    pub busybox: String,
}

impl RuntimeEnv {
    /// busybox pulled into a fresh berthd with a default config.
    pub async fn start() -> RuntimeEnv {
        Self::start_with(&[], "").await
    }

    /// busybox and the standard images `extra_images` (by repo name, e.g. `nonroot`)
    /// pulled into a fresh berthd started with `config_toml`.
    pub async fn start_with(extra_images: &[&str], config_toml: &str) -> RuntimeEnv {
        let registry = fixtures::shared_registry();
        for name in extra_images {
            fixtures::push_std(registry, name);
        }
        let berthd = Berthd::start_with(config_toml).await;
        let rt = berthd.runtime().await;
        let mut images = berthd.images().await;
        let busybox = fixtures::reference(registry, "busybox:latest");
        cri::pull(&mut images, &busybox).await.unwrap_or_else(|e| panic!("pull {busybox}: {e:?}"));
        for name in extra_images {
            let reference = fixtures::reference(registry, &format!("{name}:latest"));
            cri::pull(&mut images, &reference).await.unwrap_or_else(|e| panic!("pull {reference}: {e:?}"));
        }
        RuntimeEnv { berthd, registry, rt, images, busybox }
    }

    /// `127.0.0.1:PORT/<repo_and_tag>` on this env's registry.
    pub fn image(&self, repo_and_tag: &str) -> String {
        fixtures::reference(self.registry, repo_and_tag)
    }

    /// A pod config as kubelet sends it: metadata `name` with a random uid in
    /// [`POD_NAMESPACE`], hostname `name`, a log directory in the test's temp dir (created
    /// here, as kubelet does), no cgroup parent (berthd then uses its `cgroup_root`), and
    /// namespace options network POD, pid CONTAINER, ipc POD (kubelet's defaults).
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = random_hex(8);
        let log_directory = self.berthd.base_dir().join("logs").join(format!("{name}-{uid}"));
        std::fs::create_dir_all(&log_directory).expect("create pod log directory");
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid,
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: log_directory.to_string_lossy().into_owned(),
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

    /// RunPodSandbox with `config`.
    pub async fn run_pod_with(&mut self, config: PodSandboxConfig) -> Result<Pod, tonic::Status> {
        let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
        let id = self.rt.run_pod_sandbox(request).await?.into_inner().pod_sandbox_id;
        Ok(Pod { id, config })
    }

    /// RunPodSandbox of [`RuntimeEnv::pod_config`]`(name)`; panics on failure.
    pub async fn run_pod(&mut self, name: &str) -> Pod {
        let config = self.pod_config(name);
        self.run_pod_with(config).await.unwrap_or_else(|e| panic!("RunPodSandbox {name}: {e:?}"))
    }

    /// A busybox container config: metadata `name`, `command` as the command (empty:
    /// the image's `sh`), log path `<name>.log` in the pod's log directory, and an empty
    /// Linux security context (the defaults kubelet would send).
    pub fn container_config(&self, name: &str, command: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: name.to_string(), attempt: 0 }),
            image: Some(cri::image_spec(&self.busybox)),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            labels: HashMap::from([("container".to_string(), name.to_string())]),
            envs: vec![KeyValue { key: "BERTH_TEST".to_string(), value: "1".to_string() }],
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options(NamespaceMode::Container)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// CreateContainer of `config` in `pod`.
    pub async fn create_container_with(&mut self, pod: &Pod, config: ContainerConfig) -> Result<String, tonic::Status> {
        let request = CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        };
        Ok(self.rt.create_container(request).await?.into_inner().container_id)
    }

    /// CreateContainer; panics on failure.
    pub async fn create_container(&mut self, pod: &Pod, config: ContainerConfig) -> String {
        let name = config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        self.create_container_with(pod, config).await.unwrap_or_else(|e| panic!("CreateContainer {name}: {e:?}"))
    }

    /// StartContainer; panics on failure.
    pub async fn start_container(&mut self, id: &str) {
        let request = StartContainerRequest { container_id: id.to_string() };
        if let Err(e) = self.rt.start_container(request).await {
            panic!("StartContainer {id}: {e:?}");
        }
    }

    /// Create + start `config` in `pod`; returns the container id.
    pub async fn run_container_with(&mut self, pod: &Pod, config: ContainerConfig) -> String {
        let id = self.create_container(pod, config).await;
        self.start_container(&id).await;
        id
    }

    /// Create + start a busybox container named `name` running `command` in `pod`.
    pub async fn run_container(&mut self, pod: &Pod, name: &str, command: &[&str]) -> String {
        let config = self.container_config(name, command);
        self.run_container_with(pod, config).await
    }

    /// ContainerStatus of `id` (not verbose).
    pub async fn container_status(&mut self, id: &str) -> Result<ContainerStatus, tonic::Status> {
        let request = ContainerStatusRequest { container_id: id.to_string(), verbose: false };
        let response = self.rt.container_status(request).await?.into_inner();
        response.status.ok_or_else(|| tonic::Status::internal("ContainerStatus answered without a status"))
    }

    /// Polls ContainerStatus until the container is in `state`; panics with the last
    /// status after `timeout` (scaled).
    pub async fn wait_container_state(&mut self, id: &str, state: ContainerState, timeout: Duration) -> ContainerStatus {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(id).await.unwrap_or_else(|e| panic!("ContainerStatus {id}: {e:?}"));
            if status.state == state as i32 {
                return status;
            }
            if Instant::now() > deadline {
                panic!("container {id} not {state:?} within {timeout:?}: {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to 30 s, scaled) for `id` to exit; returns its status.
    pub async fn wait_exited(&mut self, id: &str) -> ContainerStatus {
        self.wait_container_state(id, ContainerState::ContainerExited, Duration::from_secs(30)).await
    }

    /// ExecSync of `cmd` in `id` with `timeout_secs` (0: none); panics on an RPC error.
    pub async fn exec(&mut self, id: &str, cmd: &[&str], timeout_secs: i64) -> ExecSyncResponse {
        self.try_exec(id, cmd, timeout_secs).await.unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {e:?}"))
    }

    /// ExecSync of `cmd` in `id` with `timeout_secs`.
    pub async fn try_exec(&mut self, id: &str, cmd: &[&str], timeout_secs: i64) -> Result<ExecSyncResponse, tonic::Status> {
        let request = ExecSyncRequest {
            container_id: id.to_string(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: timeout_secs,
        };
        Ok(self.rt.exec_sync(request).await?.into_inner())
    }

    /// ExecSync of `cmd` that must exit 0; returns its stdout as text (trimmed).
    pub async fn exec_ok(&mut self, id: &str, cmd: &[&str]) -> String {
        let out = self.exec(id, cmd, 0).await;
        assert_eq!(
            out.exit_code,
            0,
            "{cmd:?} in {id} exited {}: stdout {:?} stderr {:?}",
            out.exit_code,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// StopContainer with `timeout_secs`.
    pub async fn stop_container(&mut self, id: &str, timeout_secs: i64) -> Result<(), tonic::Status> {
        self.rt.stop_container(StopContainerRequest { container_id: id.to_string(), timeout: timeout_secs }).await?;
        Ok(())
    }

    /// RemoveContainer.
    pub async fn remove_container(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt.remove_container(RemoveContainerRequest { container_id: id.to_string() }).await?;
        Ok(())
    }

    /// StopPodSandbox.
    pub async fn stop_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.to_string() }).await?;
        Ok(())
    }

    /// RemovePodSandbox.
    pub async fn remove_pod(&mut self, id: &str) -> Result<(), tonic::Status> {
        self.rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.to_string() }).await?;
        Ok(())
    }

    /// PodSandboxStatus of `id`.
    pub async fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatus, tonic::Status> {
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: false };
        let response = self.rt.pod_sandbox_status(request).await?.into_inner();
        response.status.ok_or_else(|| tonic::Status::internal("PodSandboxStatus answered without a status"))
    }

    /// ListContainers with `filter`; returns the ids, sorted.
    pub async fn list_container_ids(&mut self, filter: Option<ContainerFilter>) -> Vec<String> {
        let listed = self.rt.list_containers(ListContainersRequest { filter }).await.expect("ListContainers");
        let mut ids: Vec<String> = listed.into_inner().containers.into_iter().map(|c| c.id).collect();
        ids.sort();
        ids
    }

    /// Stops and removes every pod berthd lists (which stops and removes its containers).
    pub async fn remove_all_pods(&mut self) {
        let pods = self.rt.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await.expect("ListPodSandbox");
        for pod in pods.into_inner().items {
            self.stop_pod(&pod.id).await.unwrap_or_else(|e| panic!("StopPodSandbox {}: {e:?}", pod.id));
            self.remove_pod(&pod.id).await.unwrap_or_else(|e| panic!("RemovePodSandbox {}: {e:?}", pod.id));
        }
        let left = self.list_container_ids(None).await;
        assert!(left.is_empty(), "containers listed after every pod was removed: {left:?}");
    }

    /// The end of a test: removes every pod through CRI, waits (a little) for shims to
    /// exit, asserts that nothing is left (mounts, pinned namespaces, cgroups, shims), then
    /// stops berthd and asserts it exited cleanly.
    pub async fn finish(mut self) {
        self.remove_all_pods().await;
        self.assert_no_runtime_leaks_soon().await;
        self.berthd.stop();
        self.berthd.assert_no_leaks();
    }

    /// Asserts [`Berthd::assert_no_runtime_leaks`], giving exiting shims up to 5 s (scaled)
    /// to go: a shim removes its container's cgroup and exits just after the RPC answered.
    pub async fn assert_no_runtime_leaks_soon(&self) {
        let deadline = Instant::now() + secs(5);
        loop {
            let found = self.berthd.runtime_leaks();
            if found.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!("left behind after every pod was removed: {found:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Namespace options with network and ipc POD, pid `pid`.
pub fn namespace_options(pid: NamespaceMode) -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: pid as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The pod's Linux security context, created if missing.
pub fn pod_security(config: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The container's Linux security context, created if missing.
pub fn container_security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// Shares one PID namespace among the pod's containers (`shareProcessNamespace: true`):
/// pid POD in the pod's and in `containers`' namespace options.
pub fn share_pid_namespace(pod: &mut PodSandboxConfig) {
    pod_security(pod).namespace_options = Some(namespace_options(NamespaceMode::Pod));
}

/// The same for a container config.
pub fn container_in_pod_pid_namespace(config: &mut ContainerConfig) {
    container_security(config).namespace_options = Some(namespace_options(NamespaceMode::Pod));
}

/// The gRPC code of `result`'s error; panics if it succeeded.
pub fn error_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> tonic::Code {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(status) => status.code(),
    }
}

/// Asserts that `result` failed with `code`; returns the message.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: tonic::Code) -> String {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "expected {code:?}: {status:?}");
            status.message().to_string()
        }
    }
}

/// A file under `dir` holding `text`; for bind-mount sources.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write test file");
    path
}
