//! Container recovery at berthd's start: what berthd finds after it was killed (even
//! with `kill -9`) at any moment. Run once, before the socket serves, after the pods
//! were recovered.
//!
//! The contract, for every container record in the store:
//!
//! | record says        | shim                         | becomes                                       |
//! |--------------------|------------------------------|-----------------------------------------------|
//! | created / running  | alive, container still there | unchanged; running ones are watched for exit  |
//! | created / running  | alive, reports an exit       | EXITED with that exit code and time           |
//! | created / running  | gone, `exit.json` present    | EXITED with its real exit code and time       |
//! | created / running  | gone, no `exit.json`         | EXITED, exit code 255, reason Unknown, message saying the shim vanished |
//! | exited / unknown   | (not asked)                  | unchanged                                     |
//!
//! Every record's name is held again in the name reservations.
//!
//! Orphans, left when berthd died in the middle of a CreateContainer or a removal (the
//! record is written last on create and deleted last on remove):
//! - a shim state dir under `<state>/shims/` that belongs to no container record and to no
//!   pod (a pod's shared-PID holder): its container is killed, its shim reaped, the dir removed;
//! - a container dir under `<root>/containers/` without a record: its rootfs is unmounted,
//!   its image lease released, the dir removed.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use berth_shim::client::ShimClientError;

use crate::container::exit::{finished_from_exit, finished_unknown, now_ns};
use crate::container::lifecycle::{may_run, persist_end_locked, reap_shim, shim_alive, watch_exit};
use crate::container::service::service;
use crate::container::{rootfs, shim};
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::store::ContainerState;

/// What recovery found, for the startup log and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Containers found running (or created) with a live shim.
    pub alive: usize,
    /// Containers whose exit happened while berthd was down (recorded now).
    pub exited_meanwhile: usize,
    /// Containers whose shim vanished without an exit record.
    pub lost: usize,
    pub orphan_shims: usize,
    pub orphan_container_dirs: usize,
}

/// Recovers every container; see the module doc.
pub async fn recover_containers(ctx: &Arc<RuntimeContext>) -> Result<RecoveryReport, RuntimeError> {
    let mut report = RecoveryReport::default();
    let records = ctx.store.containers()?;
    for record in &records {
        if !record.name.is_empty() {
            ctx.container_names.hold(&record.name, &record.id);
        }
        if !may_run(record.state) {
            continue;
        }
        let id = record.id.as_str();
        let _lock = service(ctx).lock(id).await;
        if shim_alive(&record.shim_dir) {
            match shim::call(&record.shim_dir, |client| client.status()).await {
                Ok(status) => {
                    if let Some(exit) = status.exit {
                        persist_end_locked(ctx, id, &finished_from_exit(&exit))?;
                        report.exited_meanwhile += 1;
                        continue;
                    }
                    report.alive += 1;
                    if record.state == ContainerState::Running {
                        watch_exit(ctx.clone(), record.id.clone(), record.shim_dir.clone());
                    }
                    tracing::info!(container = id, pid = status.pid, "container recovered: its shim is alive");
                    continue;
                }
                Err(ShimClientError::NotRunning) => {} // exited between our two looks
                Err(e) => {
                    // Alive but not answering: keep it, the watcher and later queries retry.
                    tracing::warn!(container = id, error = %e, "shim alive but not answering; keeping the container as it is");
                    report.alive += 1;
                    if record.state == ContainerState::Running {
                        watch_exit(ctx.clone(), record.id.clone(), record.shim_dir.clone());
                    }
                    continue;
                }
            }
        }
        match crate::container::watch::exit_record(&record.shim_dir) {
            Ok(Some(exit)) => {
                persist_end_locked(ctx, id, &finished_from_exit(&exit))?;
                report.exited_meanwhile += 1;
                tracing::info!(container = id, exit_code = exit.exit_code, "container exited while berthd was down");
            }
            other => {
                if let Err(e) = other {
                    tracing::warn!(container = id, error = %e, "unreadable exit record");
                }
                let message = format!(
                    "the container's shim vanished while berthd was down and left no exit record (state dir {})",
                    record.shim_dir.display()
                );
                persist_end_locked(ctx, id, &finished_unknown(now_ns(), &message))?;
                report.lost += 1;
                tracing::warn!(container = id, "container lost: shim gone without an exit record");
            }
        }
    }

    let known: HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let mut pid_holders: HashSet<String> = HashSet::new();
    for sandbox in ctx.store.sandboxes()? {
        if let Some(holder) = sandbox.pid_holder {
            pid_holders.insert(holder);
        }
    }
    let shims_dir = ctx.config.state.join("shims");
    for id in dir_names(&shims_dir) {
        if known.contains(&id) || pid_holders.contains(&id) {
            continue;
        }
        let dir = shims_dir.join(&id);
        tracing::warn!(shim_dir = %dir.display(), "orphan shim state (no record): killing and removing it");
        let _ = shim::call(&dir, |client| client.signal(libc::SIGKILL, true)).await;
        let remove = dir.clone();
        tokio::task::spawn_blocking(move || {
            reap_shim(&remove);
            if let Err(e) = berth_images::snapshot::remove_tree(&remove) {
                tracing::warn!(dir = %remove.display(), error = %e, "removing orphan shim dir");
            }
        })
        .await?;
        report.orphan_shims += 1;
    }
    let containers_dir = ctx.config.root.join("containers");
    for id in dir_names(&containers_dir) {
        if known.contains(&id) {
            continue;
        }
        let dir = containers_dir.join(&id);
        tracing::warn!(dir = %dir.display(), "orphan container dir (no record): unmounting and removing it");
        let images = ctx.images.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = rootfs::unmount_rootfs(&images, &id, &dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "unmounting orphan rootfs");
            }
            if let Err(e) = rootfs::remove_container_dir(&dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing orphan container dir");
            }
        })
        .await?;
        report.orphan_container_dirs += 1;
    }
    tracing::info!(
        containers = records.len(),
        alive = report.alive,
        exited_meanwhile = report.exited_meanwhile,
        lost = report.lost,
        orphan_shims = report.orphan_shims,
        orphan_container_dirs = report.orphan_container_dirs,
        "containers recovered"
    );
    Ok(report)
}

/// Names of the subdirectories of `dir` (none if it does not exist).
fn dir_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}
