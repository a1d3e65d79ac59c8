//! The CRI RuntimeService calls the pod benchmark makes, kubelet-shaped: a hostNetwork pod
//! with one busybox container, its log under the pod's log directory.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, LinuxContainerConfig, LinuxContainerSecurityContext, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxFilter, PodSandboxMetadata, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StopPodSandboxRequest,
};
use tonic::transport::Channel;

/// Label on every pod of one benchmark run, so a failed run can find and remove its pods.
pub const RUN_LABEL: &str = "berth-bench/run";

pub struct CriRuntime {
    client: RuntimeServiceClient<Channel>,
}

/// What the benchmark needs to know to make pod number `index`.
pub struct PodTemplate {
    pub run_id: String,
    /// Pod log directories are `<log_root>/<pod name>`.
    pub log_root: PathBuf,
    /// Pod cgroups are `<cgroup_parent_prefix>/pod<index>` (kubelet gives one per pod).
    pub cgroup_parent_prefix: String,
    /// The workload image, as the runtime named it after the pull.
    pub image: String,
    pub command: Vec<String>,
}

#[derive(Clone)]
pub struct PodIds {
    pub sandbox_id: String,
    pub container_id: String,
}

/// Milliseconds spent in each step of a pod start (they add up to the start latency).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StartPhases {
    pub run_sandbox_ms: f64,
    pub create_container_ms: f64,
    pub start_container_ms: f64,
    pub until_running_ms: f64,
}

/// Milliseconds of StopPodSandbox and of RemovePodSandbox.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TeardownPhases {
    pub stop_sandbox_ms: f64,
    pub remove_sandbox_ms: f64,
}

fn elapsed_ms(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn host_network_namespaces() -> NamespaceOption {
    // hostNetwork: networking belongs to a later issue and must not be measured here.
    // PID per container and IPC per pod, as kubelet asks for an ordinary pod.
    NamespaceOption {
        network: NamespaceMode::Node as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl PodTemplate {
    pub fn pod_name(&self, index: usize) -> String {
        format!("bench-{index}")
    }

    pub fn log_directory(&self, index: usize) -> PathBuf {
        self.log_root.join(self.pod_name(index))
    }

    pub fn sandbox_config(&self, index: usize) -> PodSandboxConfig {
        let name = self.pod_name(index);
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.clone(),
                uid: format!("{}-{index}", self.run_id),
                namespace: "berth-bench".into(),
                attempt: 0,
            }),
            log_directory: self.log_directory(index).to_string_lossy().into_owned(),
            labels: HashMap::from([(RUN_LABEL.to_string(), self.run_id.clone())]),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod{index}", self.cgroup_parent_prefix),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn container_config(&self) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata { name: "sleep".into(), attempt: 0 }),
            image: Some(ImageSpec { image: self.image.clone(), ..Default::default() }),
            command: self.command.clone(),
            // Relative to the pod's log directory, as kubelet does.
            log_path: "sleep/0.log".into(),
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(host_network_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

impl CriRuntime {
    pub fn with_channel(channel: Channel) -> Self {
        Self { client: RuntimeServiceClient::new(channel) }
    }

    /// RunPodSandbox + CreateContainer + StartContainer, then ContainerStatus until RUNNING.
    /// On failure after the sandbox exists, returns its id too so the caller can remove it.
    pub async fn start_pod(
        &mut self,
        template: &PodTemplate,
        index: usize,
        running_timeout: Duration,
    ) -> Result<(PodIds, StartPhases), (anyhow::Error, Option<String>)> {
        let sandbox_config = template.sandbox_config(index);
        let mut phases = StartPhases::default();
        let step = std::time::Instant::now();
        let sandbox_id = self
            .client
            .run_pod_sandbox(RunPodSandboxRequest { config: Some(sandbox_config.clone()), runtime_handler: String::new() })
            .await
            .map_err(|e| (anyhow::Error::new(e).context(format!("RunPodSandbox {}", template.pod_name(index))), None))?
            .into_inner()
            .pod_sandbox_id;
        phases.run_sandbox_ms = elapsed_ms(step);
        let step = std::time::Instant::now();
        let with_sandbox = |e: anyhow::Error| (e, Some(sandbox_id.clone()));
        let container_id = self
            .client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(template.container_config()),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .map_err(|e| with_sandbox(anyhow::Error::new(e).context("CreateContainer")))?
            .into_inner()
            .container_id;
        phases.create_container_ms = elapsed_ms(step);
        let step = std::time::Instant::now();
        self.client
            .start_container(StartContainerRequest { container_id: container_id.clone() })
            .await
            .map_err(|e| with_sandbox(anyhow::Error::new(e).context("StartContainer")))?;
        phases.start_container_ms = elapsed_ms(step);
        let step = std::time::Instant::now();
        self.wait_running(&container_id, running_timeout).await.map_err(with_sandbox)?;
        phases.until_running_ms = elapsed_ms(step);
        Ok((PodIds { sandbox_id, container_id }, phases))
    }

    async fn wait_running(&mut self, container_id: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self
                .client
                .container_status(ContainerStatusRequest { container_id: container_id.to_string(), verbose: false })
                .await
                .context("ContainerStatus")?
                .into_inner()
                .status
                .context("ContainerStatus answered without a status")?;
            match ContainerState::try_from(status.state) {
                Ok(ContainerState::ContainerRunning) => return Ok(()),
                Ok(ContainerState::ContainerExited) => anyhow::bail!(
                    "container {container_id} exited (code {}, reason {:?}, message {:?}) instead of running",
                    status.exit_code,
                    status.reason,
                    status.message
                ),
                _ if tokio::time::Instant::now() >= deadline => {
                    anyhow::bail!("container {container_id} not RUNNING within {timeout:?} (state {})", status.state)
                }
                _ => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        }
    }

    /// StopPodSandbox + RemovePodSandbox: what kubelet does to delete a pod whose containers
    /// it does not stop one by one first (the runtime stops them).
    pub async fn stop_and_remove_pod(&mut self, sandbox_id: &str) -> anyhow::Result<TeardownPhases> {
        let step = std::time::Instant::now();
        self.client
            .stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: sandbox_id.to_string() })
            .await
            .with_context(|| format!("StopPodSandbox {sandbox_id}"))?;
        let stop_sandbox_ms = elapsed_ms(step);
        let step = std::time::Instant::now();
        self.client
            .remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.to_string() })
            .await
            .with_context(|| format!("RemovePodSandbox {sandbox_id}"))?;
        Ok(TeardownPhases { stop_sandbox_ms, remove_sandbox_ms: elapsed_ms(step) })
    }

    /// Runs `cmd` with ExecSync; fails unless it exits 0.
    pub async fn exec_sync(&mut self, container_id: &str, cmd: &[String], timeout_secs: i64) -> anyhow::Result<()> {
        let response = self
            .client
            .exec_sync(ExecSyncRequest { container_id: container_id.to_string(), cmd: cmd.to_vec(), timeout: timeout_secs })
            .await
            .with_context(|| format!("ExecSync {cmd:?}"))?
            .into_inner();
        anyhow::ensure!(
            response.exit_code == 0,
            "ExecSync {cmd:?} exited {} (stderr {:?})",
            response.exit_code,
            String::from_utf8_lossy(&response.stderr)
        );
        Ok(())
    }

    /// Ids of the sandboxes of benchmark run `run_id` still known to the runtime.
    pub async fn pods_of_run(&mut self, run_id: &str) -> anyhow::Result<Vec<String>> {
        let response = self
            .client
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(PodSandboxFilter {
                    label_selector: HashMap::from([(RUN_LABEL.to_string(), run_id.to_string())]),
                    ..Default::default()
                }),
            })
            .await
            .context("ListPodSandbox")?;
        Ok(response.into_inner().items.into_iter().map(|pod| pod.id).collect())
    }
}

/// Creates the pod's log directory (kubelet does this before RunPodSandbox).
pub fn prepare_log_directory(template: &PodTemplate, index: usize) -> anyhow::Result<()> {
    let dir = template.log_directory(index);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))
}

