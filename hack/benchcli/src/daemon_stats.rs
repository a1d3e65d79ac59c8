//! Samples a daemon's memory and CPU time from /proc while a pull runs.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

#[derive(Debug, Clone, Copy, Default)]
pub struct MemorySample {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn read_memory(pid: u32) -> anyhow::Result<MemorySample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the daemon still running?)"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    Ok(MemorySample { rss_kib: field("VmRSS:"), hwm_kib: field("VmHWM:") })
}

/// utime + stime of the whole process (all threads), in seconds.
pub fn read_cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may contain spaces; fields after it start past the last ')'.
    let after_comm = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the comm: state is field 3 of stat, so utime (14) and stime (15) are at 11 and 12.
    let ticks = |index: usize| -> u64 { fields.get(index).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let clock_ticks = 100.0; // USER_HZ is 100 on every Linux ABI we run on.
    Ok((ticks(11) + ticks(12)) as f64 / clock_ticks)
}

/// Resets VmHWM to the current RSS so the peak measured covers only the coming pull.
/// Writing 5 to clear_refs does that (Linux >= 4.0); failure only makes the peak coarser.
pub fn reset_peak(pid: u32) -> bool {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Polls VmRSS on a plain thread so sampling never waits behind the async client.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<u64>,
}

impl RssSampler {
    pub fn start(pid: u32, interval: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                if let Ok(sample) = read_memory(pid) {
                    peak = peak.max(sample.rss_kib);
                }
                if stop_flag.load(Ordering::Relaxed) {
                    return peak;
                }
                std::thread::sleep(interval);
            }
        });
        Self { stop, handle }
    }

    /// Returns the highest VmRSS seen, in KiB.
    pub fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or(0)
    }
}
