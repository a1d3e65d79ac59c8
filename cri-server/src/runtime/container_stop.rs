//! StopContainer: the image's stop signal (or SIGTERM), `timeout` seconds, then SIGKILL
//! to every process of the container; idempotent (an exited container is fine).

use std::time::Duration;

use k8s_cri::v1::{StopContainerRequest, StopContainerResponse};

use crate::container::stop_container as stop;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;

pub async fn stop_container(ctx: &RuntimeContext, request: StopContainerRequest) -> Result<StopContainerResponse, RuntimeError> {
    let timeout = Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
    stop(ctx, request.container_id.trim(), timeout).await?;
    Ok(StopContainerResponse {})
}
