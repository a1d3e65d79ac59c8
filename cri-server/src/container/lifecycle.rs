//! The container operations several RPCs share, and the two SANDBOX calls from
//! Stop/RemovePodSandbox: [`stop_container`] and [`remove_container`] (both idempotent).
//!
//! Every state change happens under the container's operation lock
//! ([`ContainerService::lock`](super::service::ContainerService::lock)) and re-reads the
//! record under it, so a removed container is never written back by a late exit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_shim::client::ShimClientError;
use berth_shim::protocol::SHIM_PID_FILE;

use super::exit::{finished_from_exit, finished_unknown, now_ns, Finished};
use super::rootfs;
use super::shim::{self, is_shim_process, read_pid_file};
use super::signal::stop_signal;
use super::step_timer::StepTimer;
use super::service::service;
use super::watch::{exit_record, wait_exit, WAIT_SLICE};
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::store::{Commit, ContainerRecord, ContainerState};

/// How long remove waits for a shim to exit after its container did (it removes the
/// container's cgroup on its way out) before killing it.
const SHIM_EXIT_PATIENCE: Duration = Duration::from_secs(5);

/// True for the states in which a container may still have processes.
pub fn may_run(state: ContainerState) -> bool {
    matches!(state, ContainerState::Created | ContainerState::Running)
}

/// Writes `finished` into `record`.
pub fn apply_finished(record: &mut ContainerRecord, finished: &Finished) {
    record.state = ContainerState::Exited;
    record.exit_code = finished.exit_code;
    record.finished_at_ns = finished.finished_at_ns;
    if record.started_at_ns == 0 && finished.started_at_ns > 0 {
        record.started_at_ns = finished.started_at_ns;
    }
    record.reason = finished.reason.clone();
    record.message = finished.message.clone();
    record.oom_killed = finished.reason == super::exit::REASON_OOM_KILLED;
}

/// What the disk says about a container its record calls created or running: its exit
/// record, or "unknown" when its shim is gone without one. None while it still runs.
/// Cheap (a file read, and a /proc read when there is no exit record).
pub fn observe_end(record: &ContainerRecord) -> Option<Finished> {
    if !may_run(record.state) {
        return None;
    }
    match exit_record(&record.shim_dir) {
        Ok(Some(exit)) => return Some(finished_from_exit(&exit)),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(container = %record.id, error = %e, "unreadable exit record");
            return None;
        }
    }
    if shim_alive(&record.shim_dir) {
        return None;
    }
    // The shim may have written its record between our two looks.
    if let Ok(Some(exit)) = exit_record(&record.shim_dir) {
        return Some(finished_from_exit(&exit));
    }
    Some(finished_unknown(now_ns(), &vanished_message(&record.shim_dir)))
}

fn vanished_message(shim_dir: &Path) -> String {
    format!("the container's shim vanished without recording an exit (state dir {})", shim_dir.display())
}

/// True when the shim of `shim_dir` is a live process.
pub fn shim_alive(shim_dir: &Path) -> bool {
    read_pid_file(shim_dir, SHIM_PID_FILE).is_some_and(|pid| is_shim_process(pid, shim_dir))
}

/// Persists `finished` for the container in `record` if the store still says it may
/// run. The caller holds the container's lock.
pub fn persist_end_locked(ctx: &RuntimeContext, id: &str, finished: &Finished) -> Result<Option<ContainerRecord>, RuntimeError> {
    persist_end_locked_with(ctx, id, finished, Commit::Durable)
}

/// [`persist_end_locked`] with the store commit chosen by the caller.
fn persist_end_locked_with(ctx: &RuntimeContext, id: &str, finished: &Finished, commit: Commit) -> Result<Option<ContainerRecord>, RuntimeError> {
    let Some(mut record) = ctx.store.container(id)? else {
        return Ok(None);
    };
    if may_run(record.state) {
        apply_finished(&mut record, finished);
        ctx.store.put_container_with(&record, commit)?;
        tracing::info!(container = id, exit_code = record.exit_code, reason = %record.reason, "container exited");
    }
    Ok(Some(record))
}

/// Persists an end observed outside any operation (exit watcher, status queries).
pub async fn record_end(ctx: &RuntimeContext, id: &str, finished: &Finished) -> Result<Option<ContainerRecord>, RuntimeError> {
    let _lock = service(ctx).lock(id).await;
    persist_end_locked(ctx, id, finished)
}

/// The record with what the disk says about its end, persisted when no operation holds
/// the container (else the operation will persist it). For status and list queries.
pub fn refreshed(ctx: &RuntimeContext, mut record: ContainerRecord) -> ContainerRecord {
    let Some(finished) = observe_end(&record) else {
        return record;
    };
    if let Some(_lock) = service(ctx).try_lock(&record.id) {
        match persist_end_locked(ctx, &record.id, &finished) {
            Ok(Some(updated)) => return updated,
            Ok(None) => {}
            Err(e) => tracing::warn!(container = %record.id, error = %e, "persisting an observed exit"),
        }
    }
    apply_finished(&mut record, &finished);
    record
}

/// Watches a running container for its exit and persists it at once. One task per
/// container (idempotent), blocked in the shim's Wait on an async socket.
pub fn watch_exit(ctx: Arc<RuntimeContext>, id: String, shim_dir: PathBuf) {
    if !service(&ctx).begin_watch(&id) {
        return;
    }
    tokio::spawn(async move {
        loop {
            let finished = match wait_exit(&shim_dir, WAIT_SLICE).await {
                Ok(Some(exit)) => finished_from_exit(&exit),
                Ok(None) => continue,
                Err(ShimClientError::NotRunning) => finished_unknown(now_ns(), &vanished_message(&shim_dir)),
                Err(e) => {
                    tracing::debug!(container = %id, error = %e, "waiting for the container's exit; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    match ctx.store.container(&id) {
                        Ok(Some(record)) if may_run(record.state) => continue,
                        _ => break,
                    }
                }
            };
            if let Err(e) = record_end(&ctx, &id, &finished).await {
                tracing::error!(container = %id, error = %e, "persisting the container's exit");
            }
            break;
        }
        service(&ctx).end_watch(&id);
    });
}

/// The image's stop signal (StopSignal of its config), SIGTERM if it names none or the
/// image is gone.
fn stop_signal_of(ctx: &RuntimeContext, record: &ContainerRecord) -> i32 {
    let image_signal = ctx.images.resolve(&record.image_id).ok().flatten().and_then(|image| image.config.stop_signal);
    stop_signal(image_signal.as_deref())
}

/// Sends `signal` through the shim; a shim that is gone or a container that already
/// exited is not an error here (the wait that follows tells).
async fn send_signal(record: &ContainerRecord, signal: i32, all: bool) {
    match shim::call(&record.shim_dir, move |client| client.signal(signal, all)).await {
        Ok(()) => tracing::debug!(container = %record.id, signal, all, "signalled"),
        Err(e) => tracing::debug!(container = %record.id, signal, all, error = %e, "signal not delivered"),
    }
}

/// Stops a container: its image's stop signal (or SIGTERM), up to `timeout` for it to
/// exit, then SIGKILL to every process in it. Zero timeout: SIGKILL at once. Returns once
/// the exit is recorded. Already exited, or unknown (already removed): Ok, as the CRI
/// contract and containerd have it ("must not return an error if already stopped").
pub async fn stop_container(ctx: &RuntimeContext, id: &str, timeout: Duration) -> Result<(), RuntimeError> {
    stop_container_with(ctx, id, timeout, Commit::Durable).await
}

/// [`stop_container`] whose exit record is committed as `commit` says (Deferred: the
/// caller commits durably before it answers, e.g. StopPodSandbox).
pub async fn stop_container_with(ctx: &RuntimeContext, id: &str, timeout: Duration, commit: Commit) -> Result<(), RuntimeError> {
    let _lock = service(ctx).lock(id).await;
    let Some(record) = ctx.store.container(id)? else {
        tracing::debug!(container = id, "StopContainer of an unknown container: nothing to stop");
        return Ok(());
    };
    stop_locked(ctx, &record, timeout, commit).await
}

async fn stop_locked(ctx: &RuntimeContext, record: &ContainerRecord, timeout: Duration, commit: Commit) -> Result<(), RuntimeError> {
    let id = record.id.as_str();
    if !may_run(record.state) {
        return Ok(());
    }
    if let Some(finished) = observe_end(record) {
        persist_end_locked_with(ctx, id, &finished, commit)?;
        tracing::debug!(container = id, "stop: the container had already exited");
        return Ok(());
    }
    let started = Instant::now();
    if record.state == ContainerState::Running && !timeout.is_zero() {
        let signal = stop_signal_of(ctx, record);
        send_signal(record, signal, false).await;
        match wait_exit(&record.shim_dir, timeout).await {
            Ok(Some(exit)) => {
                persist_end_locked_with(ctx, id, &finished_from_exit(&exit), commit)?;
                tracing::info!(container = id, signal, elapsed_ms = started.elapsed().as_millis() as u64, "container stopped");
                return Ok(());
            }
            Ok(None) => tracing::info!(container = id, signal, ?timeout, "container did not stop in time; killing it"),
            Err(e) => tracing::debug!(container = id, error = %e, "waiting after the stop signal"),
        }
    }
    kill_and_wait(ctx, record, commit).await?;
    tracing::info!(container = id, elapsed_ms = started.elapsed().as_millis() as u64, "container killed");
    Ok(())
}

/// SIGKILL to every process of the container, then wait (stop_timeout_grace) for the exit.
async fn kill_and_wait(ctx: &RuntimeContext, record: &ContainerRecord, commit: Commit) -> Result<(), RuntimeError> {
    let id = record.id.as_str();
    let mut steps = StepTimer::new("kill container", id);
    send_signal(record, libc::SIGKILL, true).await;
    steps.done("signal");
    let grace = Duration::from_secs(ctx.config.runtime.stop_timeout_grace.max(1));
    match wait_exit(&record.shim_dir, grace).await {
        Ok(Some(exit)) => {
            steps.done("wait exit");
            persist_end_locked_with(ctx, id, &finished_from_exit(&exit), commit)?;
            steps.done("record");
            Ok(())
        }
        Ok(None) => Err(RuntimeError::Internal(format!(
            "container {id} did not exit within {}s after SIGKILL (processes in uninterruptible sleep?)",
            grace.as_secs()
        ))),
        Err(ShimClientError::NotRunning) => {
            persist_end_locked_with(ctx, id, &finished_unknown(now_ns(), &vanished_message(&record.shim_dir)), commit)?;
            Ok(())
        }
        Err(e) => Err(RuntimeError::internal_ctx(format!("waiting for container {id} to exit"), e)),
    }
}

/// Removes a container: kills it if it still runs, waits for its shim to go, unmounts
/// its rootfs, releases its image lease, removes its bundle and shim dirs, its record and
/// its name. Unknown id: Ok (kubelet retries removals).
pub async fn remove_container(ctx: &RuntimeContext, id: &str) -> Result<(), RuntimeError> {
    remove_container_with(ctx, id, Commit::Durable).await
}

/// [`remove_container`] whose record deletion (and exit record, if it still ran) is
/// committed as `commit` says (Deferred: the caller commits durably before it answers,
/// e.g. RemovePodSandbox).
pub async fn remove_container_with(ctx: &RuntimeContext, id: &str, commit: Commit) -> Result<(), RuntimeError> {
    let mut steps = StepTimer::new("RemoveContainer", id);
    let _lock = service(ctx).lock(id).await;
    let Some(record) = ctx.store.container(id)? else {
        service(ctx).forget(id);
        return Ok(());
    };
    steps.done("lock");
    if may_run(record.state) {
        // A removal does not wait out a grace period: kubelet stops first when it cares.
        if let Err(e) = stop_locked(ctx, &record, Duration::ZERO, commit).await {
            tracing::warn!(container = id, error = %e, "killing the container before removal");
        }
        steps.done("kill");
    }
    release_resources(ctx, &record).await?;
    steps.done("release resources");
    ctx.store.delete_container_with(id, commit)?;
    steps.done("record");
    ctx.container_names.release(&record.name, id);
    service(ctx).forget(id);
    tracing::info!(container = id, name = %record.name, "container removed");
    Ok(())
}

/// Everything a container holds outside the store, taken down in order: shim process,
/// cgroup, rootfs mount and lease, bundle dir, shim dir. Idempotent; also used by
/// recovery for orphans.
pub async fn release_resources(ctx: &RuntimeContext, record: &ContainerRecord) -> Result<(), RuntimeError> {
    let id = record.id.clone();
    let shim_dir = record.shim_dir.clone();
    let bundle_dir = record.bundle_dir.clone();
    let cgroup_path = record.cgroup_path.clone();
    let images = ctx.images.clone();
    tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
        let mut steps = StepTimer::new("release container", &id);
        reap_shim(&shim_dir);
        steps.done("reap shim");
        destroy_cgroup(&cgroup_path);
        steps.done("cgroup");
        rootfs::unmount_rootfs(&images, &id, &bundle_dir)?;
        steps.done("unmount rootfs");
        rootfs::remove_container_dir(&bundle_dir)
            .map_err(|e| RuntimeError::internal_ctx(format!("removing {}", bundle_dir.display()), e))?;
        steps.done("container dir");
        berth_images::snapshot::remove_tree(&shim_dir)
            .map_err(|e| RuntimeError::internal_ctx(format!("removing {}", shim_dir.display()), e))?;
        steps.done("shim dir");
        Ok(())
    })
    .await?
}

/// Waits for the shim of `shim_dir` to exit (it does right after its container); kills it
/// if it lingers. Blocking.
pub fn reap_shim(shim_dir: &Path) {
    let Some(pid) = read_pid_file(shim_dir, SHIM_PID_FILE) else {
        return;
    };
    let deadline = Instant::now() + SHIM_EXIT_PATIENCE;
    while is_shim_process(pid, shim_dir) {
        if Instant::now() > deadline {
            tracing::warn!(pid, shim_dir = %shim_dir.display(), "shim did not exit after its container; killing it");
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(50));
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes the container's cgroup if its shim could not (killed, vanished). Blocking.
fn destroy_cgroup(cgroup_path: &str) {
    if cgroup_path.is_empty() {
        return;
    }
    match berth_shim::cgroups::manager(cgroup_path) {
        Ok(manager) if manager.exists() => {
            if let Err(e) = manager.destroy() {
                tracing::warn!(cgroup = cgroup_path, error = %e, "removing a container cgroup its shim left");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(cgroup = cgroup_path, error = %e, "no cgroup manager"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_shim::monitor::write_exit_file;
    use berth_shim::protocol::ExitInfo;

    fn record(shim_dir: &Path, state: ContainerState) -> ContainerRecord {
        ContainerRecord {
            id: "c".repeat(64),
            sandbox_id: "p".repeat(64),
            name: "app_pod_ns_uid_0".into(),
            config: Default::default(),
            image_ref: "busybox".into(),
            image_id: "sha256:00".into(),
            state,
            created_at_ns: 1,
            started_at_ns: 0,
            finished_at_ns: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: None,
            bundle_dir: shim_dir.join("bundle"),
            rootfs_dir: shim_dir.join("bundle/rootfs"),
            shim_dir: shim_dir.to_path_buf(),
            cgroup_path: String::new(),
            runtime: None,
            pid: 0,
            oom_killed: false,
        }
    }

    #[test]
    fn exit_record_wins_and_a_vanished_shim_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        // No shim.pid, no exit.json: the shim vanished.
        let lost = observe_end(&record(dir.path(), ContainerState::Running)).expect("an end");
        assert_eq!((lost.exit_code, lost.reason.as_str()), (255, "Unknown"));
        assert!(lost.message.contains("vanished"), "{}", lost.message);
        // Exited records are not looked at.
        assert!(observe_end(&record(dir.path(), ContainerState::Exited)).is_none());

        let exit = ExitInfo { exit_code: 7, exited_at_ns: 300, started_at_ns: 100, oom_killed: false, signal: 0 };
        write_exit_file(dir.path(), &exit).unwrap();
        let mut rec = record(dir.path(), ContainerState::Created);
        let finished = observe_end(&rec).expect("an end");
        apply_finished(&mut rec, &finished);
        assert_eq!(rec.state, ContainerState::Exited);
        assert_eq!((rec.exit_code, rec.finished_at_ns, rec.started_at_ns, rec.reason.as_str()), (7, 300, 100, "Error"));
        assert!(!rec.oom_killed);
    }

    #[test]
    fn a_live_shim_without_exit_is_still_running() {
        let dir = tempfile::tempdir().unwrap();
        // A process whose command line names this state dir stands in for the shim. (Not a
        // lone `sleep 30`: sh would exec it, and the command line would lose the dir.)
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30; exit 0", "sh", "--state-dir"])
            .arg(dir.path())
            .spawn()
            .unwrap();
        // Until sh has exec'd, the child's command line is still this test binary's.
        let cmdline = format!("/proc/{}/cmdline", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read(&cmdline).unwrap_or_default().windows(11).any(|w| w == b"--state-dir")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::write(dir.path().join(SHIM_PID_FILE), child.id().to_string()).unwrap();
        let running = observe_end(&record(dir.path(), ContainerState::Running));
        let _ = child.kill();
        let _ = child.wait();
        assert!(running.is_none(), "{running:?}");
    }
}
