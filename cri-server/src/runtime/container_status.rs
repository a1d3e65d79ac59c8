//! ContainerStatus: the record (refreshed from the shim's exit record) in CRI terms, and
//! with `verbose` a JSON `info` with the pid, the bundle, the OCI spec and the config.

use std::collections::HashMap;

use k8s_cri::v1::{Container, ContainerMetadata, ContainerStatus, ContainerStatusRequest, ContainerStatusResponse, ImageSpec};

use crate::container::lifecycle::refreshed;
use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::store::ContainerRecord;

pub async fn container_status(ctx: &RuntimeContext, request: ContainerStatusRequest) -> Result<ContainerStatusResponse, RuntimeError> {
    let record = find_container(ctx, &request.container_id)?;
    let record = refreshed(ctx, record);
    let image_ref = image_ref(ctx, &record);
    let info = if request.verbose { verbose_info(&record) } else { HashMap::new() };
    Ok(ContainerStatusResponse { status: Some(status_of(&record, image_ref)), info })
}

/// The record of `id` (full id, or a unique prefix as crictl and containerd allow).
pub fn find_container(ctx: &RuntimeContext, id: &str) -> Result<ContainerRecord, RuntimeError> {
    let id = id.trim();
    if id.is_empty() {
        return Err(RuntimeError::InvalidArgument("container_id is required".into()));
    }
    if let Some(record) = ctx.store.container(id)? {
        return Ok(record);
    }
    let mut matches = ctx.store.containers()?.into_iter().filter(|c| c.id.starts_with(id));
    match (matches.next(), matches.next()) {
        (Some(record), None) => Ok(record),
        (Some(_), Some(_)) => Err(RuntimeError::InvalidArgument(format!("container id prefix {id} is ambiguous"))),
        _ => Err(RuntimeError::NotFound(format!("container {id} not found"))),
    }
}

/// The digest reference of the container's image (repo digest), its id if it has none.
pub fn image_ref(ctx: &RuntimeContext, record: &ContainerRecord) -> String {
    ctx.images
        .resolve(&record.image_id)
        .ok()
        .flatten()
        .and_then(|image| image.repo_digests.first().cloned())
        .unwrap_or_else(|| record.image_id.clone())
}

pub fn metadata(record: &ContainerRecord) -> Option<ContainerMetadata> {
    record.config.metadata.clone()
}

pub fn status_of(record: &ContainerRecord, image_ref: String) -> ContainerStatus {
    ContainerStatus {
        id: record.id.clone(),
        metadata: metadata(record),
        state: record.state.cri() as i32,
        created_at: record.created_at_ns,
        started_at: record.started_at_ns,
        finished_at: record.finished_at_ns,
        exit_code: record.exit_code,
        image: Some(ImageSpec { image: record.image_ref.clone(), ..Default::default() }),
        image_ref,
        reason: record.reason.clone(),
        message: record.message.clone(),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        mounts: record.config.mounts.clone(),
        log_path: record.log_path.as_ref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default(),
        resources: None,
        image_id: record.image_id.clone(),
        user: None,
    }
}

/// The ListContainers entry of a record.
pub fn container_of(record: &ContainerRecord, image_ref: String) -> Container {
    Container {
        id: record.id.clone(),
        pod_sandbox_id: record.sandbox_id.clone(),
        metadata: metadata(record),
        image: Some(ImageSpec { image: record.image_ref.clone(), ..Default::default() }),
        image_ref,
        state: record.state.cri() as i32,
        created_at: record.created_at_ns,
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        image_id: record.image_id.clone(),
    }
}

fn verbose_info(record: &ContainerRecord) -> HashMap<String, String> {
    let spec: serde_json::Value = std::fs::read(record.bundle_dir.join(crate::runtime::spec::CONFIG_FILE_NAME))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(serde_json::Value::Null);
    let info = serde_json::json!({
        "sandboxID": record.sandbox_id,
        "name": record.name,
        "pid": record.pid,
        "bundle": record.bundle_dir,
        "rootfs": record.rootfs_dir,
        "shimDir": record.shim_dir,
        "cgroupsPath": record.cgroup_path,
        "runtime": record.runtime.clone().unwrap_or_else(|| "berth-shim (built-in)".to_string()),
        "oomKilled": record.oom_killed,
        "config": record.config,
        "runtimeSpec": spec,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}
