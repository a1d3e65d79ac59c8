//! ListContainers with CRI's filters: id (a prefix, as containerd matches it), state,
//! pod sandbox id (prefix) and labels (all must match). States are refreshed from the
//! shims' exit records first, so a container that just exited is listed as exited.

use k8s_cri::v1::{ContainerFilter, ListContainersRequest, ListContainersResponse};

use crate::container::lifecycle::refreshed;
use crate::errors::RuntimeError;
use crate::runtime::container_status::{container_of, image_ref};
use crate::runtime::context::RuntimeContext;
use crate::store::ContainerRecord;

pub async fn list_containers(ctx: &RuntimeContext, request: ListContainersRequest) -> Result<ListContainersResponse, RuntimeError> {
    let filter = request.filter.unwrap_or_default();
    let mut containers = Vec::new();
    for record in ctx.store.containers()? {
        if !matches_static(&record, &filter) {
            continue;
        }
        let record = refreshed(ctx, record);
        if let Some(state) = &filter.state {
            if record.state.cri() as i32 != state.state {
                continue;
            }
        }
        let image_ref = image_ref(ctx, &record);
        containers.push(container_of(&record, image_ref));
    }
    containers.sort_by_key(|c| c.created_at);
    Ok(ListContainersResponse { containers })
}

/// The filters that do not depend on the (refreshed) state.
fn matches_static(record: &ContainerRecord, filter: &ContainerFilter) -> bool {
    (filter.id.is_empty() || record.id.starts_with(&filter.id))
        && (filter.pod_sandbox_id.is_empty() || record.sandbox_id.starts_with(&filter.pod_sandbox_id))
        && filter.label_selector.iter().all(|(key, value)| record.config.labels.get(key) == Some(value))
}
