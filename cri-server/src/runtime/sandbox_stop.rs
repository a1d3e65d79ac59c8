//! StopPodSandbox: kill every container of the pod, stop the PID namespace holder, tear
//! the network down and unpin the namespaces; the record becomes NOTREADY. Idempotent:
//! every step tolerates having been done already, so a stop interrupted by a crash is
//! finished by the next one, and an unknown id is success (kubelet expects it).

use std::sync::Arc;
use std::time::Duration;

use k8s_cri::v1::StopPodSandboxRequest;

use crate::container::step_timer::StepTimer;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::sandbox::namespaces;
use crate::sandbox::network::PodNetworkRequest;
use crate::sandbox::pid_holder;
use crate::store::{now_ns, Commit, SandboxRecord, SandboxState};

pub async fn stop_pod_sandbox_rpc(ctx: &Arc<RuntimeContext>, request: StopPodSandboxRequest) -> Result<(), RuntimeError> {
    if request.pod_sandbox_id.is_empty() {
        return Err(RuntimeError::InvalidArgument("StopPodSandbox: pod_sandbox_id is required".into()));
    }
    stop_pod_sandbox(ctx, &request.pod_sandbox_id).await
}

/// Stops pod `id`; an unknown pod is already stopped.
pub async fn stop_pod_sandbox(ctx: &RuntimeContext, id: &str) -> Result<(), RuntimeError> {
    let _pod = ctx.lock_pod(id).await;
    let Some(record) = ctx.store.sandbox(id)? else {
        tracing::debug!(sandbox = id, "StopPodSandbox of an unknown pod: nothing to do");
        return Ok(());
    };
    stop_locked(ctx, record).await
}

/// The stop itself; the caller holds the pod lock.
pub(crate) async fn stop_locked(ctx: &RuntimeContext, mut record: SandboxRecord) -> Result<(), RuntimeError> {
    let id = record.id.clone();
    let mut steps = StepTimer::new("StopPodSandbox", &id);
    let containers = ctx.store.containers_of(&id)?;
    for container in &containers {
        // kubelet stops containers with their grace period before it stops the pod; what is
        // still running here gets SIGKILL at once, as containerd does. Their exit records are
        // made durable by the pod's commit below, one fdatasync for the whole pod.
        match crate::container::stop_container_with(ctx, &container.id, Duration::ZERO, Commit::Deferred).await {
            Ok(()) | Err(RuntimeError::NotFound(_)) => {}
            Err(err) => {
                return Err(RuntimeError::Internal(format!("stopping container {} of pod {id}: {err}", container.id)));
            }
        }
    }
    steps.done("containers");
    if let Some(holder) = &record.pid_holder {
        pid_holder::stop_pid_holder(&ctx.shim_dir(holder)).await;
        steps.done("pid holder");
    }
    if !record.host_network {
        let network_request = PodNetworkRequest {
            sandbox_id: id.clone(),
            config: record.config.clone(),
            netns_path: record.ns_dir.join("net"),
        };
        ctx.network.teardown(&network_request).await?;
        steps.done("network");
    }
    let ns_dir = record.ns_dir.clone();
    let shm = record.shm_path.clone();
    tokio::task::spawn_blocking(move || {
        namespaces::unpin_all(&ns_dir);
        if let Some(shm) = shm {
            super::sandbox_run::unmount_shm(&shm);
        }
    })
    .await?;
    steps.done("namespaces");
    if record.state != SandboxState::NotReady {
        record.state = SandboxState::NotReady;
        record.stopped_at_ns = now_ns();
        ctx.store.put_sandbox(&record)?;
        steps.done("record");
        tracing::info!(sandbox = %id, "pod sandbox stopped");
    } else if containers.iter().any(|c| crate::container::lifecycle::may_run(c.state)) {
        // No pod record to write, but container exits may have been deferred.
        ctx.store.flush()?;
        steps.done("flush");
    }
    Ok(())
}
