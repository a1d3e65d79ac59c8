//! ExecSync: run a command in a running container through its shim and return its exit
//! code and output. A timeout (seconds, 0 = none) kills the command and answers
//! DeadlineExceeded, which kubelet turns into a probe timeout (as with containerd).

use std::time::Duration;

use berth_shim::client::ShimClientError;
use k8s_cri::v1::{ExecSyncRequest, ExecSyncResponse};

use crate::container::lifecycle::refreshed;
use crate::container::shim;
use crate::errors::RuntimeError;
use crate::runtime::container_start::state_word;
use crate::runtime::container_status::find_container;
use crate::runtime::context::RuntimeContext;
use crate::store::ContainerState;

pub async fn exec_sync(ctx: &RuntimeContext, request: ExecSyncRequest) -> Result<ExecSyncResponse, RuntimeError> {
    if request.cmd.is_empty() {
        return Err(RuntimeError::InvalidArgument("ExecSync needs a command".into()));
    }
    let record = refreshed(ctx, find_container(ctx, &request.container_id)?);
    if record.state != ContainerState::Running {
        return Err(RuntimeError::FailedPrecondition(format!(
            "container {} is {}, not running: cannot exec in it",
            record.id,
            state_word(record.state)
        )));
    }
    let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
    let cmd = request.cmd.clone();
    let output = shim::call(&record.shim_dir, move |client| client.exec(cmd, Vec::new(), None, timeout)).await;
    match output {
        Ok(output) if output.timed_out => Err(RuntimeError::DeadlineExceeded(format!(
            "command {:?} in container {} timed out after {}s and was killed",
            request.cmd,
            record.id,
            timeout.as_secs()
        ))),
        Ok(output) => Ok(ExecSyncResponse { stdout: output.stdout, stderr: output.stderr, exit_code: output.exit_code }),
        Err(ShimClientError::NotRunning) => {
            Err(RuntimeError::FailedPrecondition(format!("container {} is not running: its shim is gone", record.id)))
        }
        Err(ShimClientError::Failed(message)) => {
            Err(RuntimeError::Internal(format!("exec {:?} in container {}: {message}", request.cmd, record.id)))
        }
        Err(e) => Err(RuntimeError::internal_ctx(format!("exec in container {}", record.id), e)),
    }
}
