//! StartContainer: created -> running. The shim releases the held init to exec the
//! command; if that exec fails (no such binary, permission) the container is recorded as
//! exited with reason StartError, as containerd does, and the call fails with the reason.

use std::sync::Arc;

use berth_shim::client::ShimClientError;
use k8s_cri::v1::{StartContainerRequest, StartContainerResponse};

use crate::container::exit::{now_ns, Finished, REASON_START_ERROR, START_ERROR_EXIT_CODE};
use crate::container::lifecycle::{observe_end, persist_end_locked, watch_exit};
use crate::container::service::service;
use crate::container::shim;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::store::ContainerState;

pub async fn start_container(ctx: &Arc<RuntimeContext>, request: StartContainerRequest) -> Result<StartContainerResponse, RuntimeError> {
    let id = request.container_id.trim();
    let _lock = service(ctx).lock(id).await;
    let Some(mut record) = ctx.store.container(id)? else {
        return Err(RuntimeError::NotFound(format!("container {id} not found")));
    };
    if record.state != ContainerState::Created {
        return Err(RuntimeError::FailedPrecondition(format!(
            "container {id} is {}, not created: only a created container can be started",
            state_word(record.state)
        )));
    }
    if let Some(finished) = observe_end(&record) {
        persist_end_locked(ctx, id, &finished)?;
        return Err(RuntimeError::FailedPrecondition(format!(
            "container {id} exited before it was started ({}: {})",
            finished.reason, finished.message
        )));
    }
    match shim::call(&record.shim_dir, |client| client.start()).await {
        Ok(()) => {}
        Err(ShimClientError::Failed(message)) => {
            let finished = Finished {
                exit_code: START_ERROR_EXIT_CODE,
                finished_at_ns: now_ns(),
                started_at_ns: 0,
                reason: REASON_START_ERROR.to_string(),
                message: message.clone(),
            };
            persist_end_locked(ctx, id, &finished)?;
            return Err(RuntimeError::Internal(format!("starting container {id}: {message}")));
        }
        Err(ShimClientError::NotRunning) => {
            if let Some(finished) = observe_end(&record) {
                persist_end_locked(ctx, id, &finished)?;
            }
            return Err(RuntimeError::FailedPrecondition(format!("container {id} cannot be started: its shim is gone")));
        }
        Err(e) => return Err(RuntimeError::internal_ctx(format!("starting container {id}"), e)),
    }
    // The shim knows the start time and init pid; ask, but a racing exit is fine.
    let status = shim::call(&record.shim_dir, |client| client.status()).await.ok();
    record.state = ContainerState::Running;
    record.started_at_ns = status.as_ref().map(|s| s.started_at_ns).filter(|t| *t > 0).unwrap_or_else(now_ns);
    if let Some(pid) = status.as_ref().map(|s| s.pid).filter(|pid| *pid > 0) {
        record.pid = pid;
    }
    ctx.store.put_container(&record)?;
    tracing::info!(container = id, pid = record.pid, "container started");
    watch_exit(ctx.clone(), id.to_string(), record.shim_dir.clone());
    Ok(StartContainerResponse {})
}

pub fn state_word(state: ContainerState) -> &'static str {
    match state {
        ContainerState::Created => "created",
        ContainerState::Running => "running",
        ContainerState::Exited => "exited",
        ContainerState::Unknown => "in an unknown state",
    }
}
