//! [`RuntimeContext`]: what every pod and container RPC works with, shared by the
//! RuntimeService handlers and the tasks they spawn (`Arc<RuntimeContext>`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_images::ImageStore;

use crate::config::Config;
use crate::sandbox::network::PodNetwork;
use crate::store::{Reservations, RuntimeStore};

pub struct RuntimeContext {
    /// berthd's effective configuration.
    pub config: Config,
    /// The configuration as JSON, for verbose Status.
    pub config_json: String,
    pub store: RuntimeStore,
    pub images: Arc<ImageStore>,
    /// Pod names `<name>_<namespace>_<uid>_<attempt>` -> pod id.
    pub sandbox_names: Reservations,
    /// Container names `<name>_<pod name>_<pod namespace>_<pod uid>_<attempt>` -> container id.
    pub container_names: Reservations,
    /// The pod network (CNI, or loopback only when networking is disabled).
    pub network: Arc<dyn PodNetwork>,
    /// The berth-shim binary.
    pub shim_path: PathBuf,
    /// The lowest oom_score_adj berthd may give a process (its own; see
    /// `spec::resources::current_oom_score_adj`).
    pub host_min_oom_score_adj: i32,
    /// Per-container locks and exit watchers (CONTAINERS).
    pub containers: crate::container::ContainerService,
    pod_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl RuntimeContext {
    pub fn new(config: Config, config_json: String, store: RuntimeStore, images: Arc<ImageStore>, network: Arc<dyn PodNetwork>) -> Self {
        let ttl = Duration::from_secs(config.runtime.unclaimed_resource_ttl_secs);
        let shim_path = config.runtime.shim_binary();
        RuntimeContext {
            config_json,
            store,
            images,
            sandbox_names: Reservations::new("pod sandbox", ttl),
            container_names: Reservations::new("container", ttl),
            network,
            shim_path,
            host_min_oom_score_adj: crate::runtime::spec::resources::current_oom_score_adj(),
            containers: crate::container::ContainerService::new(),
            pod_locks: Mutex::default(),
            config,
        }
    }

    /// A lock per pod: Run/Stop/RemovePodSandbox of one pod, and CreateContainer into it,
    /// take it so that no container is created in a pod being stopped or removed.
    pub async fn lock_pod(&self, sandbox_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.pod_locks.lock().unwrap_or_else(|p| p.into_inner());
            // Drop locks nobody holds or waits for, so the map does not grow with every pod.
            locks.retain(|_, lock| Arc::strong_count(lock) > 1);
            locks.entry(sandbox_id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// `<state>/pods/<id>`: the pod's runtime state (pinned namespaces, shm).
    pub fn pod_state_dir(&self, sandbox_id: &str) -> PathBuf {
        self.config.state.join("pods").join(sandbox_id)
    }

    /// `<root>/pods/<id>`: the pod's files (hostname, hosts, resolv.conf).
    pub fn pod_dir(&self, sandbox_id: &str) -> PathBuf {
        self.config.root.join("pods").join(sandbox_id)
    }

    /// `<root>/containers/<id>`: a container's OCI bundle.
    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.config.root.join("containers").join(container_id)
    }

    /// `<state>/shims/<id>`: a shim's state dir (control socket, pid files, exit.json).
    pub fn shim_dir(&self, id: &str) -> PathBuf {
        self.config.state.join("shims").join(id)
    }

    /// The OCI runtime binary for a RuntimeClass handler: None = the shim's built-in
    /// runtime. An unknown handler is the caller's error.
    pub fn runtime_for_handler(&self, handler: &str) -> Result<Option<PathBuf>, crate::errors::RuntimeError> {
        let name = if handler.is_empty() { self.config.runtime.default_runtime.as_str() } else { handler };
        if name.is_empty() {
            return Ok(None);
        }
        match self.config.runtime.runtimes.get(name) {
            Some(path) => Ok(Some(path.clone())),
            None => Err(crate::errors::RuntimeError::InvalidArgument(format!(
                "unknown runtime handler {name:?}: configure it under [runtime.runtimes] in berthd's config"
            ))),
        }
    }
}
