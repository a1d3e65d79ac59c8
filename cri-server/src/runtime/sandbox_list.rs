//! ListPodSandbox: the stored pods through the filters, oldest first.

use k8s_cri::v1::{ListPodSandboxRequest, ListPodSandboxResponse, PodSandbox};

use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::sandbox::filter::filter_sandboxes;

pub fn list_pod_sandbox(ctx: &RuntimeContext, request: ListPodSandboxRequest) -> Result<ListPodSandboxResponse, RuntimeError> {
    let mut records = filter_sandboxes(ctx.store.sandboxes()?, request.filter.as_ref());
    records.sort_by(|a, b| a.created_at_ns.cmp(&b.created_at_ns).then_with(|| a.id.cmp(&b.id)));
    let items = records
        .into_iter()
        .map(|record| PodSandbox {
            id: record.id,
            metadata: record.config.metadata,
            state: record.state.cri() as i32,
            created_at: record.created_at_ns,
            labels: record.config.labels,
            annotations: record.config.annotations,
            runtime_handler: record.runtime_handler,
        })
        .collect();
    Ok(ListPodSandboxResponse { items })
}
