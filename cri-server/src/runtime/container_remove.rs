//! RemoveContainer: kill if it still runs, then take down everything it holds; an
//! unknown id is fine (kubelet retries removals).

use k8s_cri::v1::{RemoveContainerRequest, RemoveContainerResponse};

use crate::container::remove_container as remove;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;

pub async fn remove_container(ctx: &RuntimeContext, request: RemoveContainerRequest) -> Result<RemoveContainerResponse, RuntimeError> {
    let id = request.container_id.trim();
    if id.is_empty() {
        return Err(RuntimeError::InvalidArgument("container_id is required".into()));
    }
    remove(ctx, id).await?;
    Ok(RemoveContainerResponse {})
}
