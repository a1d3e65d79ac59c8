//! The JSON line `pods` prints (one per runtime) and `pods-report` reads.

use serde::{Deserialize, Serialize};

use crate::cri_runtime::{StartPhases, TeardownPhases};
use crate::proc_memory::ProcessMemory;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodSample {
    pub index: usize,
    /// RunPodSandbox + CreateContainer + StartContainer + ContainerStatus until RUNNING.
    pub start_ms: f64,
    /// StopPodSandbox + RemovePodSandbox.
    pub teardown_ms: Option<f64>,
    #[serde(default)]
    pub start_phases: Option<StartPhases>,
    #[serde(default)]
    pub teardown_phases: Option<TeardownPhases>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodBenchResult {
    pub runtime: String,
    /// Pods ran with hostNetwork (no CNI), so networking is not measured.
    pub host_network: bool,
    /// The first `count` samples are the reported ones; later pods only fill the node.
    pub count: usize,
    pub pods_running_for_memory: usize,
    pub samples: Vec<PodSample>,
    pub exec_ms: Vec<f64>,
    /// The runtime's shims with all pods running.
    pub shims: Vec<ProcessMemory>,
    /// The daemon's VmRSS with all pods running, KiB.
    pub daemon_rss_kib: Option<u64>,
    /// 1-minute load average when memory was read (others' work skews the timings).
    pub load_average: Option<f64>,
}

impl PodBenchResult {
    pub fn start_ms(&self) -> Vec<f64> {
        self.samples.iter().take(self.count).map(|s| s.start_ms).collect()
    }

    /// One start phase of the reported pods.
    pub fn start_phase_ms(&self, phase: fn(&StartPhases) -> f64) -> Vec<f64> {
        self.samples.iter().take(self.count).filter_map(|s| s.start_phases.as_ref().map(phase)).collect()
    }

    /// One teardown phase of the reported pods.
    pub fn teardown_phase_ms(&self, phase: fn(&TeardownPhases) -> f64) -> Vec<f64> {
        self.samples.iter().take(self.count).filter_map(|s| s.teardown_phases.as_ref().map(phase)).collect()
    }

    pub fn teardown_ms(&self) -> Vec<f64> {
        self.samples.iter().take(self.count).filter_map(|s| s.teardown_ms).collect()
    }

    /// Sum of shim PSS divided by running pods: what one more pod costs in shims.
    pub fn shim_pss_per_pod_kib(&self) -> f64 {
        self.shims.iter().map(|s| s.pss_kib).sum::<u64>() as f64 / self.pods_running_for_memory.max(1) as f64
    }

    pub fn shim_rss_per_pod_kib(&self) -> f64 {
        self.shims.iter().map(|s| s.rss_kib).sum::<u64>() as f64 / self.pods_running_for_memory.max(1) as f64
    }

    /// PSS of the shims' direct children (container processes: pause, sleep) per pod.
    pub fn container_processes_pss_per_pod_kib(&self) -> f64 {
        let total: u64 = self.shims.iter().flat_map(|s| s.children.iter()).map(|c| c.pss_kib).sum();
        total as f64 / self.pods_running_for_memory.max(1) as f64
    }
}
