//! RemovePodSandbox: stop the pod if needed, remove every container, the pod cgroup (if
//! berth created it), the pod's files and state dirs, the record, and free the name.
//! Idempotent: an unknown id is success, as kubelet expects.

use std::sync::Arc;

use k8s_cri::v1::RemovePodSandboxRequest;

use crate::container::step_timer::StepTimer;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::sandbox::{cgroup, files, pid_holder};
use crate::store::Commit;

pub async fn remove_pod_sandbox_rpc(ctx: &Arc<RuntimeContext>, request: RemovePodSandboxRequest) -> Result<(), RuntimeError> {
    if request.pod_sandbox_id.is_empty() {
        return Err(RuntimeError::InvalidArgument("RemovePodSandbox: pod_sandbox_id is required".into()));
    }
    remove_pod_sandbox(ctx, &request.pod_sandbox_id).await
}

pub async fn remove_pod_sandbox(ctx: &RuntimeContext, id: &str) -> Result<(), RuntimeError> {
    let _pod = ctx.lock_pod(id).await;
    let Some(record) = ctx.store.sandbox(id)? else {
        tracing::debug!(sandbox = id, "RemovePodSandbox of an unknown pod: nothing to do");
        return Ok(());
    };
    let mut steps = StepTimer::new("RemovePodSandbox", id);
    // Always run the (idempotent) stop: it also finishes a stop that a crash interrupted.
    super::sandbox_stop::stop_locked(ctx, record.clone()).await?;
    steps.done("stop");
    // The container records go with the pod's durable delete below: one fdatasync.
    for container in ctx.store.containers_of(id)? {
        crate::container::remove_container_with(ctx, &container.id, Commit::Deferred)
            .await
            .map_err(|err| RuntimeError::Internal(format!("removing container {} of pod {id}: {err}", container.id)))?;
    }
    steps.done("containers");
    if let Some(holder) = &record.pid_holder {
        pid_holder::remove_shim_dir(&ctx.shim_dir(holder)).await;
        steps.done("pid holder");
    }
    {
        let cgroup_path = record.cgroup_path.clone();
        let cgroup_created = record.cgroup_created;
        let pod_dir = record.pod_dir.clone();
        let state_dir = ctx.pod_state_dir(id);
        tokio::task::spawn_blocking(move || -> Result<(), RuntimeError> {
            if cgroup_created {
                cgroup::remove_pod_cgroup(&cgroup_path)?;
            }
            files::remove_pod_files(&pod_dir)?;
            // Only empty dirs are left there once the namespaces are unpinned; never
            // remove_dir_all here: a still-mounted nsfs file would be followed.
            match std::fs::remove_dir(&state_dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(RuntimeError::internal_ctx(format!("removing {}", state_dir.display()), e)),
            }
        })
        .await??;
    }
    steps.done("cgroup and files");
    ctx.store.delete_sandbox(id)?;
    steps.done("record");
    ctx.sandbox_names.release(&record.name, id);
    tracing::info!(sandbox = id, name = %record.name, "pod sandbox removed");
    Ok(())
}
