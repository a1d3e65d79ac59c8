//! The pod network seam. RunPodSandbox calls [`PodNetwork::setup`] once the pod's network
//! namespace is pinned, StopPodSandbox calls [`PodNetwork::teardown`]. CNI is behind this
//! trait ([`super::cni_network::CniNetwork`]); with networking disabled by config,
//! [`LoopbackNetwork`] only brings `lo` up.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use k8s_cri::v1::PodSandboxConfig;

use crate::errors::RuntimeError;

/// What the network needs to know about a pod.
#[derive(Debug, Clone)]
pub struct PodNetworkRequest {
    pub sandbox_id: String,
    pub config: PodSandboxConfig,
    /// The pinned network namespace file (`<state>/pods/<id>/ns/net`).
    pub netns_path: PathBuf,
}

/// The result of a network setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNetworkStatus {
    /// The pod's IPs, primary first (empty for a loopback-only pod).
    pub ips: Vec<String>,
}

pub type NetworkFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, RuntimeError>> + Send + 'a>>;

/// A pod network implementation. Never called for host-network pods.
pub trait PodNetwork: Send + Sync {
    /// Connects the pod's network namespace. On error nothing must be left configured.
    fn setup<'a>(&'a self, pod: &'a PodNetworkRequest) -> NetworkFuture<'a, PodNetworkStatus>;
    /// Disconnects it. Idempotent: called again after a restart or a failed stop.
    fn teardown<'a>(&'a self, pod: &'a PodNetworkRequest) -> NetworkFuture<'a, ()>;
    /// Whether the network is ready for pods (CRI Status' NetworkReady).
    fn ready(&self) -> bool {
        true
    }
    /// [`PodNetwork::ready`] with the reason when it is not (Status' message).
    fn readiness(&self) -> Result<(), String> {
        if self.ready() {
            Ok(())
        } else {
            Err("pod networking is not configured".to_string())
        }
    }
    /// kubelet's pod CIDR(s) from UpdateRuntimeConfig (comma-separated for dual stack).
    fn update_pod_cidr(&self, _pod_cidr: &str) -> Result<(), RuntimeError> {
        Ok(())
    }
    /// At startup: tears down what the network still holds for pods that no longer exist
    /// (`live` = every stored pod id). Returns how many were torn down.
    fn reconcile<'a>(&'a self, _live: &'a std::collections::HashSet<String>) -> NetworkFuture<'a, usize> {
        Box::pin(async { Ok(0) })
    }
}

/// Loopback only: `lo` up inside the pod's network namespace, nothing else.
#[derive(Debug, Default)]
pub struct LoopbackNetwork;

impl PodNetwork for LoopbackNetwork {
    fn setup<'a>(&'a self, pod: &'a PodNetworkRequest) -> NetworkFuture<'a, PodNetworkStatus> {
        Box::pin(async move {
            let netns = pod.netns_path.clone();
            tokio::task::spawn_blocking(move || super::namespaces::bring_loopback_up(&netns)).await??;
            Ok(PodNetworkStatus::default())
        })
    }

    fn teardown<'a>(&'a self, _pod: &'a PodNetworkRequest) -> NetworkFuture<'a, ()> {
        // lo goes away with the namespace.
        Box::pin(async { Ok(()) })
    }

    /// Pods get no connectivity beyond themselves: not a pod network kubelet can rely on.
    fn ready(&self) -> bool {
        false
    }

    fn readiness(&self) -> Result<(), String> {
        Err("pod networking is disabled ([network] enabled = false): pods get only loopback".to_string())
    }
}
