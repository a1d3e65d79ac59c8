//! PodSandboxStatus: the stored record as CRI status; with `verbose`, an `info` entry
//! holding JSON like containerd's (pid, namespaces, cgroup, the config as received).

use std::collections::HashMap;

use k8s_cri::v1::{
    LinuxPodSandboxStatus, Namespace, PodIp, PodSandboxNetworkStatus, PodSandboxStatus, PodSandboxStatusRequest,
    PodSandboxStatusResponse,
};

use crate::errors::RuntimeError;
use crate::runtime::context::RuntimeContext;
use crate::sandbox::filter::resolve_unique_prefix;
use crate::sandbox::namespaces;
use crate::store::{now_ns, SandboxRecord, SandboxState};

/// The record of `id` (or of the one pod a prefix names); NotFound otherwise.
pub fn find_sandbox(ctx: &RuntimeContext, id: &str) -> Result<SandboxRecord, RuntimeError> {
    if id.is_empty() {
        return Err(RuntimeError::InvalidArgument("pod_sandbox_id is required".into()));
    }
    if let Some(record) = ctx.store.sandbox(id)? {
        return Ok(record);
    }
    let records = ctx.store.sandboxes()?;
    resolve_unique_prefix(records.iter().map(|r| r.id.as_str()), id)
        .and_then(|full| records.into_iter().find(|r| r.id == full))
        .ok_or_else(|| RuntimeError::NotFound(format!("pod sandbox {id} not found")))
}

pub fn pod_sandbox_status(ctx: &RuntimeContext, request: PodSandboxStatusRequest) -> Result<PodSandboxStatusResponse, RuntimeError> {
    let record = find_sandbox(ctx, &request.pod_sandbox_id)?;
    let info = if request.verbose { verbose_info(&record) } else { HashMap::new() };
    Ok(PodSandboxStatusResponse { status: Some(status_of(&record)), info, containers_statuses: Vec::new(), timestamp: now_ns() })
}

fn status_of(record: &SandboxRecord) -> PodSandboxStatus {
    let namespace_options = record
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    // Always present, as containerd answers: empty for host-network and loopback-only pods.
    let network = Some(PodSandboxNetworkStatus {
        ip: record.ips.first().cloned().unwrap_or_default(),
        additional_ips: record.ips.iter().skip(1).map(|ip| PodIp { ip: ip.clone() }).collect(),
    });
    PodSandboxStatus {
        id: record.id.clone(),
        metadata: record.config.metadata.clone(),
        state: record.state.cri() as i32,
        created_at: record.created_at_ns,
        network,
        linux: Some(LinuxPodSandboxStatus { namespaces: Some(Namespace { options: namespace_options }) }),
        labels: record.config.labels.clone(),
        annotations: record.config.annotations.clone(),
        runtime_handler: record.runtime_handler.clone(),
    }
}

fn verbose_info(record: &SandboxRecord) -> HashMap<String, String> {
    let netns = record.namespace_path("net");
    let info = serde_json::json!({
        "id": record.id,
        "name": record.name,
        "pid": record.pid_holder_pid.unwrap_or(0),
        "processStatus": match record.state { SandboxState::Ready => "running", SandboxState::NotReady => "stopped" },
        "netns": netns.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
        "netNamespaceClosed": netns.as_ref().is_none_or(|p| !namespaces::is_pinned(p)),
        "namespaces": record.pinned_namespaces.iter().map(|k| (k.clone(), record.ns_dir.join(k).display().to_string())).collect::<HashMap<_, _>>(),
        "cgroupPath": record.cgroup_path,
        "cgroupCreatedByBerth": record.cgroup_created,
        "podDir": record.pod_dir.display().to_string(),
        "shm": record.shm_path.as_ref().map(|p| p.display().to_string()),
        "pidHolder": record.pid_holder,
        "ips": record.ips,
        "runtimeHandler": record.runtime_handler,
        "hostNetwork": record.host_network,
        "hostIPC": record.host_ipc,
        "hostPID": record.host_pid,
        "config": record.config,
    });
    HashMap::from([("info".to_string(), info.to_string())])
}
