//! The JSON lines `pull` prints and `report` reads.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRun {
    pub runtime: String,
    pub run: u32,
    pub image: String,
    pub image_ref: String,
    pub seconds: f64,
    /// Time spent waiting for the previous image's content to be deleted (not measured).
    pub gc_wait_seconds: f64,
    /// Image size the runtime reports in ImageStatus (its own accounting).
    pub reported_size: u64,
    /// Highest VmRSS sampled during the pull, KiB.
    pub peak_rss_kib: Option<u64>,
    /// VmHWM after the pull, reset right before it, KiB.
    pub hwm_kib: Option<u64>,
    /// VmRSS right before the pull, KiB.
    pub rss_before_kib: Option<u64>,
    /// Daemon CPU time (user + system) spent during the pull, seconds.
    pub daemon_cpu_seconds: Option<f64>,
}
