//! Per-step timings of an RPC at debug level (`<operation> step done`, `elapsed_us`), for
//! latency work: `--log-level debug` shows where a CreateContainer or a pod teardown
//! spends its time without a profiler.

use std::time::Instant;

/// Logs the time since the previous step (or since creation) each time a step is done.
pub struct StepTimer<'a> {
    operation: &'static str,
    id: &'a str,
    last: Instant,
}

impl<'a> StepTimer<'a> {
    /// `operation` names the RPC (e.g. "CreateContainer"), `id` the pod or container.
    pub fn new(operation: &'static str, id: &'a str) -> Self {
        StepTimer { operation, id, last: Instant::now() }
    }

    pub fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        tracing::debug!(
            operation = self.operation,
            id = self.id,
            step,
            elapsed_us = (now - self.last).as_micros() as u64,
            "step done"
        );
        self.last = now;
    }
}
