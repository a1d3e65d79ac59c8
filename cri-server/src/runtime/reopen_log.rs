//! ReopenContainerLog: kubelet renamed the log file to rotate it; the shim opens a new one
//! at the same path. Only a running container has a log writer to reopen.

use k8s_cri::v1::{ReopenContainerLogRequest, ReopenContainerLogResponse};

use crate::container::lifecycle::refreshed;
use crate::container::shim;
use crate::errors::RuntimeError;
use crate::runtime::container_start::state_word;
use crate::runtime::container_status::find_container;
use crate::runtime::context::RuntimeContext;
use crate::store::ContainerState;

pub async fn reopen_container_log(
    ctx: &RuntimeContext,
    request: ReopenContainerLogRequest,
) -> Result<ReopenContainerLogResponse, RuntimeError> {
    let record = refreshed(ctx, find_container(ctx, &request.container_id)?);
    if record.state != ContainerState::Running {
        return Err(RuntimeError::FailedPrecondition(format!(
            "container {} is {}, not running: its log cannot be reopened",
            record.id,
            state_word(record.state)
        )));
    }
    shim::call(&record.shim_dir, |client| client.reopen_log())
        .await
        .map_err(|e| RuntimeError::internal_ctx(format!("reopening the log of container {}", record.id), e))?;
    Ok(ReopenContainerLogResponse {})
}
