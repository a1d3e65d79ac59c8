//! Waits until a runtime's garbage collector has really deleted the previous run's layers.
//! containerd deletes content and snapshots after RemoveImage in its GC, which may finish
//! after the RPC returns; a pull that still finds the layers would measure nothing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn remaining_entries(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect(),
        // An absent dir holds no layers.
        Err(_) => Vec::new(),
    }
}

/// Returns how long it took until every dir was empty.
pub async fn wait_until_empty(dirs: &[PathBuf], timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        let leftovers: Vec<(PathBuf, Vec<String>)> = dirs
            .iter()
            .map(|dir| (dir.clone(), remaining_entries(dir)))
            .filter(|(_, entries)| !entries.is_empty())
            .collect();
        if leftovers.is_empty() {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            let detail: Vec<String> = leftovers
                .iter()
                .map(|(dir, entries)| format!("{} still holds {} entries", dir.display(), entries.len()))
                .collect();
            anyhow::bail!(
                "runtime did not garbage-collect the removed image within {:?}: {}",
                timeout,
                detail.join("; ")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fails when a dir that must hold the pulled layers is empty: a wrong path there would make
/// `wait_until_empty` pass trivially and let the next pull reuse cached layers unnoticed.
pub fn ensure_filled(dirs: &[PathBuf]) -> anyhow::Result<()> {
    for dir in dirs {
        if remaining_entries(dir).is_empty() {
            anyhow::bail!(
                "{} is empty after a successful pull: it is not where this runtime stores layers",
                dir.display()
            );
        }
    }
    Ok(())
}
