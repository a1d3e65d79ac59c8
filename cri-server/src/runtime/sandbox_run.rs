//! RunPodSandbox: a pod is its pinned namespaces, its network, its files, its cgroup and,
//! when the pod shares one PID namespace, a pid-holder shim. No image is pulled.
//!
//! The work runs under the pod name's reservation in a spawned task
//! ([`Reservations::run_reserved`](crate::store::Reservations::run_reserved)): a kubelet that
//! times out and retries gets the same pod. Each step registers its undo as soon as it
//! changed something; a failing step undoes all of them, so a failed RunPodSandbox leaves
//! nothing behind. The record is stored READY before the answer.

use std::path::Path;
use std::sync::Arc;

use k8s_cri::v1::{NamespaceMode, PodSandboxConfig, PodSandboxMetadata, RunPodSandboxRequest};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::container::step_timer::StepTimer;
use crate::container::undo::Undo;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::runtime::spec::{self, PodNamespaceModes};
use crate::sandbox::namespaces::{self, NamespaceSetup, PodNamespace};
use crate::sandbox::network::PodNetworkRequest;
use crate::sandbox::{cgroup, files};
use crate::store::reservations::Cleanup;
use crate::store::{new_id, now_ns, SandboxRecord, SandboxState};

/// Size of the pod's shared /dev/shm, as Docker and containerd default it.
const POD_SHM_SIZE: &str = "size=65536k";

/// The CRI name a pod is reserved under: `<name>_<namespace>_<uid>_<attempt>`.
pub fn sandbox_name(meta: &PodSandboxMetadata) -> String {
    format!("{}_{}_{}_{}", meta.name, meta.namespace, meta.uid, meta.attempt)
}

/// Checks what kubelet must always send.
fn validate(config: &PodSandboxConfig) -> Result<&PodSandboxMetadata, RuntimeError> {
    let meta = config
        .metadata
        .as_ref()
        .ok_or_else(|| RuntimeError::InvalidArgument("RunPodSandbox: config.metadata is required".into()))?;
    for (field, value) in [("name", &meta.name), ("uid", &meta.uid), ("namespace", &meta.namespace)] {
        if value.is_empty() {
            return Err(RuntimeError::InvalidArgument(format!("RunPodSandbox: config.metadata.{field} is required")));
        }
    }
    Ok(meta)
}

pub async fn run_pod_sandbox(ctx: &Arc<RuntimeContext>, request: RunPodSandboxRequest) -> Result<String, RuntimeError> {
    let config = request
        .config
        .ok_or_else(|| RuntimeError::InvalidArgument("RunPodSandbox: config is required".into()))?;
    let name = sandbox_name(validate(&config)?);
    // An unknown handler is refused before anything is reserved.
    ctx.runtime_for_handler(&request.runtime_handler)?;
    let id = new_id();
    let work = {
        let ctx = ctx.clone();
        let id = id.clone();
        let name = name.clone();
        let handler = request.runtime_handler.clone();
        async move { create_sandbox(&ctx, id, name, config, handler).await }
    };
    let cleanup: Cleanup = {
        let ctx = ctx.clone();
        Box::new(move |id: String| {
            Box::pin(async move {
                if let Err(err) = super::sandbox_remove::remove_pod_sandbox(&ctx, &id).await {
                    tracing::error!(sandbox = %id, error = %err, "could not remove an unclaimed pod sandbox");
                }
            })
        })
    };
    ctx.sandbox_names.run_reserved(&name, &id, work, cleanup).await
}

/// Runs on its own task: never interrupted by a cancelled call.
async fn create_sandbox(ctx: &Arc<RuntimeContext>, id: String, name: String, config: PodSandboxConfig, handler: String) -> Result<String, RuntimeError> {
    let started = std::time::Instant::now();
    let mut undo = Undo::new(format!("run pod sandbox {id}"));
    match assemble(ctx, &id, name, config, handler, &mut undo).await {
        Ok(record) => {
            undo.dismiss();
            tracing::info!(
                sandbox = %id, name = %record.name, cgroup = %record.cgroup_path,
                elapsed_ms = started.elapsed().as_millis() as u64, "pod sandbox ready"
            );
            Ok(id)
        }
        Err(err) => {
            tracing::warn!(sandbox = %id, error = %err, "RunPodSandbox failed; undoing what was done");
            undo.run().await;
            Err(err)
        }
    }
}

/// The hostname of a pod: kubelet's, else the node's for host-network pods, else the pod
/// name (cut to the 63 characters a hostname may have).
fn pod_hostname(config: &PodSandboxConfig, host_network: bool) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    if host_network {
        return nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
    }
    let name = config.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or_default();
    name.chars().take(63).collect()
}

async fn assemble(
    ctx: &Arc<RuntimeContext>,
    id: &str,
    name: String,
    config: PodSandboxConfig,
    handler: String,
    undo: &mut Undo,
) -> Result<SandboxRecord, RuntimeError> {
    let modes = PodNamespaceModes::of(&config);
    let linux = config.linux.clone().unwrap_or_default();
    let namespace_options = linux.security_context.as_ref().and_then(|s| s.namespace_options.clone()).unwrap_or_default();
    let shared_pid = !modes.host_pid && namespace_options.pid == NamespaceMode::Pod as i32;
    let sysctls = spec::validate_sysctls(&linux.sysctls, modes).map_err(spec_error)?;
    let hostname = pod_hostname(&config, modes.host_network);

    let mut steps = StepTimer::new("RunPodSandbox", id);
    let state_dir = ctx.pod_state_dir(id);
    let ns_dir = state_dir.join("ns");
    let pod_dir = ctx.pod_dir(id);
    let mut record = SandboxRecord {
        id: id.to_string(),
        name,
        config: config.clone(),
        state: SandboxState::Ready,
        created_at_ns: now_ns(),
        runtime_handler: handler,
        ns_dir: ns_dir.clone(),
        pod_dir: pod_dir.clone(),
        cgroup_path: cgroup::pod_cgroup_path(&linux.cgroup_parent, &ctx.config.runtime.cgroup_root, id),
        cgroup_created: false,
        host_network: modes.host_network,
        host_pid: modes.host_pid,
        host_ipc: modes.host_ipc,
        pid_holder: None,
        pid_holder_pid: None,
        ips: Vec::new(),
        pinned_namespaces: Vec::new(),
        shm_path: None,
        stopped_at_ns: 0,
    };

    // The pod cgroup is made on the blocking pool while the namespaces, the network and the
    // files are set up; both must be done (and their undo registered) before either error
    // is returned.
    let cgroup_task = {
        let path = record.cgroup_path.clone();
        tokio::task::spawn_blocking(move || cgroup::ensure_pod_cgroup(&path))
    };
    let isolated: Result<(), RuntimeError> = async {
        // Namespaces (and the pod's state dir they live in).
        let mut kinds = Vec::new();
        if !modes.host_network {
            kinds.extend([PodNamespace::Net, PodNamespace::Uts]);
        }
        if !modes.host_ipc {
            kinds.push(PodNamespace::Ipc);
        }
        {
            let state_dir = state_dir.clone();
            let ns_dir = ns_dir.clone();
            undo.push_blocking("unpin namespaces", move || {
                namespaces::unpin_all(&ns_dir);
                let _ = std::fs::remove_dir_all(&state_dir);
            });
        }
        let setup = NamespaceSetup {
            hostname: (!modes.host_network).then(|| hostname.clone()),
            sysctls: sysctls.iter().map(|(name, value)| (spec::sysctl::sysctl_proc_path(name), value.clone())).collect(),
        };
        {
            let ns_dir = ns_dir.clone();
            let kinds = kinds.clone();
            tokio::task::spawn_blocking(move || namespaces::pin_namespaces(&ns_dir, &kinds, &setup)).await??;
        }
        record.pinned_namespaces = kinds.iter().map(|k| k.name().to_string()).collect();
        steps.done("namespaces");

        // The pod's /dev/shm, shared by its containers as its IPC namespace is.
        if !modes.host_ipc {
            let shm = state_dir.join("shm");
            undo.push_blocking("unmount shm", {
                let shm = shm.clone();
                move || unmount_shm(&shm)
            });
            let target = shm.clone();
            tokio::task::spawn_blocking(move || mount_shm(&target)).await??;
            record.shm_path = Some(shm);
            steps.done("shm");
        }

        // Network.
        if !modes.host_network {
            let network_request = PodNetworkRequest { sandbox_id: id.to_string(), config: config.clone(), netns_path: ns_dir.join("net") };
            let status = ctx.network.setup(&network_request).await?;
            let network = ctx.network.clone();
            undo.push("network teardown", async move {
                if let Err(err) = network.teardown(&network_request).await {
                    tracing::warn!(sandbox = %network_request.sandbox_id, error = %err, "network teardown failed");
                }
            });
            record.ips = status.ips;
            steps.done("network");
        }

        // Files.
        undo.push_blocking("remove pod files", {
            let pod_dir = pod_dir.clone();
            move || {
                let _ = files::remove_pod_files(&pod_dir);
            }
        });
        {
            let pod_dir = pod_dir.clone();
            let dns = config.dns_config.clone();
            let hostname = hostname.clone();
            let ips = record.ips.clone();
            let host_network = modes.host_network;
            tokio::task::spawn_blocking(move || {
                files::write_pod_files(&pod_dir, &files::PodFilesInput { hostname: &hostname, host_network, dns: dns.as_ref(), ips: &ips })
            })
            .await??;
            steps.done("files");
        }

        Ok(())
    }
    .await;
    match cgroup_task.await {
        Ok(Ok(created)) => {
            record.cgroup_created = created;
            if created {
                let path = record.cgroup_path.clone();
                undo.push_blocking("remove pod cgroup", move || {
                    if let Err(err) = cgroup::remove_pod_cgroup(&path) {
                        tracing::warn!(cgroup = %path, error = %err, "could not remove the pod cgroup");
                    }
                });
            }
            steps.done("cgroup");
        }
        Ok(Err(err)) => {
            isolated?;
            return Err(err);
        }
        Err(join) => {
            isolated?;
            return Err(join.into());
        }
    }
    isolated?;

    // Shared PID namespace.
    if shared_pid {
        let holder = crate::sandbox::pid_holder::start_pid_holder(ctx, &record, undo).await?;
        record.pid_holder = Some(holder.id);
        record.pid_holder_pid = Some(holder.pid);
        steps.done("pid holder");
    }

    ctx.store.put_sandbox(&record)?;
    steps.done("record");
    Ok(record)
}

fn spec_error(err: spec::SpecError) -> RuntimeError {
    match err.code() {
        tonic::Code::NotFound => RuntimeError::NotFound(err.to_string()),
        tonic::Code::InvalidArgument => RuntimeError::InvalidArgument(err.to_string()),
        _ => RuntimeError::Internal(err.to_string()),
    }
}

fn mount_shm(target: &Path) -> Result<(), RuntimeError> {
    std::fs::create_dir_all(target).map_err(|e| RuntimeError::internal_ctx(format!("creating {}", target.display()), e))?;
    let options = format!("mode=1777,{POD_SHM_SIZE}");
    mount(
        Some("shm"),
        target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(options.as_str()),
    )
    .map_err(|e| RuntimeError::internal_ctx(format!("mounting the pod's shm at {}", target.display()), e))
}

/// Unmounts and removes the pod's shm dir. Idempotent.
pub fn unmount_shm(target: &Path) {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(err) => tracing::warn!(path = %target.display(), error = %err, "could not unmount the pod's shm"),
    }
    if let Err(err) = std::fs::remove_dir(target) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %target.display(), error = %err, "could not remove the pod's shm dir");
        }
    }
}

/// At startup, before serving: every stored pod name (and container name) is held again;
/// a READY pod whose pinned namespaces are gone (a reboot cleared `/run`) becomes NOTREADY;
/// leftovers of a RunPodSandbox that a crash interrupted (the record is written last) are
/// removed: pinned namespaces, shm, dirs, and a `<cgroup_root>/pod-<id>` cgroup.
/// Returns the number of pods.
pub async fn restore_sandboxes(ctx: &Arc<RuntimeContext>) -> Result<usize, RuntimeError> {
    let records = ctx.store.sandboxes()?;
    for record in &records {
        ctx.sandbox_names.hold(&record.name, &record.id);
        if record.state == SandboxState::Ready {
            let lost: Vec<&String> = record
                .pinned_namespaces
                .iter()
                .filter(|kind| !namespaces::is_pinned(&record.ns_dir.join(kind.as_str())))
                .collect();
            let holder_gone = match &record.pid_holder {
                Some(holder) => !crate::sandbox::pid_holder::is_running(&ctx.shim_dir(holder)).await,
                None => false,
            };
            if !lost.is_empty() || holder_gone {
                tracing::warn!(
                    sandbox = %record.id, namespaces = ?lost, pid_holder_gone = holder_gone,
                    "the pod lost namespaces while berthd was down (reboot?): pod is NOTREADY"
                );
                let mut record = record.clone();
                record.state = SandboxState::NotReady;
                record.stopped_at_ns = now_ns();
                ctx.store.put_sandbox(&record)?;
            }
        }
    }
    for record in ctx.store.containers()? {
        if !record.name.is_empty() {
            ctx.container_names.hold(&record.name, &record.id);
        }
    }
    let known: std::collections::HashSet<String> = records.iter().map(|r| r.id.clone()).collect();
    let state_pods = ctx.config.state.join("pods");
    let root_pods = ctx.config.root.join("pods");
    let cgroup_root = ctx.config.runtime.cgroup_root.clone();
    tokio::task::spawn_blocking(move || {
        for (dir, is_state) in [(state_pods, true), (root_pods, false)] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if known.contains(&id) {
                    continue;
                }
                let path = entry.path();
                tracing::warn!(dir = %path.display(), "leftover of an interrupted RunPodSandbox: removing it");
                if is_state {
                    namespaces::unpin_all(&path.join("ns"));
                    unmount_shm(&path.join("shm"));
                    if let Err(err) = std::fs::remove_dir(&path) {
                        tracing::warn!(dir = %path.display(), error = %err, "could not remove");
                    }
                    // Only the cgroup berth names after the pod can be known to be berth's.
                    let cgroup_path = cgroup::pod_cgroup_path("", &cgroup_root, &id);
                    if let Ok(manager) = berth_shim::cgroups::manager(&cgroup_path) {
                        if manager.exists() {
                            if let Err(err) = manager.destroy() {
                                tracing::warn!(cgroup = %cgroup_path, error = %err, "could not remove a leftover pod cgroup");
                            }
                        }
                    }
                } else if let Err(err) = files::remove_pod_files(&path) {
                    tracing::warn!(dir = %path.display(), error = %err, "could not remove");
                }
            }
        }
    })
    .await?;
    Ok(records.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validation() {
        let meta = PodSandboxMetadata { name: "web".into(), uid: "u1".into(), namespace: "default".into(), attempt: 2 };
        assert_eq!(sandbox_name(&meta), "web_default_u1_2");
        let mut config = PodSandboxConfig { metadata: Some(meta), ..Default::default() };
        assert!(validate(&config).is_ok());
        config.metadata.as_mut().unwrap().uid.clear();
        let err = validate(&config).unwrap_err();
        assert!(matches!(&err, RuntimeError::InvalidArgument(m) if m.contains("uid")), "{err:?}");
        assert!(validate(&PodSandboxConfig::default()).is_err());
    }

    #[test]
    fn hostname_defaults() {
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata { name: "x".repeat(70), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(pod_hostname(&config, false).len(), 63);
        let config = PodSandboxConfig { hostname: "h".into(), ..config };
        assert_eq!(pod_hostname(&config, true), "h");
    }
}
