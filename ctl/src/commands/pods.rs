//! `pods`, `inspectp`, `stopp`, `rmp`.

use k8s_cri::v1::{
    ListPodSandboxRequest, ListPodSandboxResponse, PodSandboxFilter, PodSandboxStateValue, PodSandboxStatusRequest,
    RemovePodSandboxRequest, StopPodSandboxRequest,
};

use crate::cli::{IdsArgs, InspectArgs, PodsArgs, RmpArgs};
use crate::client::{Connection, CtlError, RuntimeClient};
use crate::commands::{for_each_id, internal, list_pods, newest, parse_labels, resolve_pod};
use crate::output::{self, age, pod_state, short_id, Table};

pub async fn list(conn: &Connection, args: &PodsArgs) -> anyhow::Result<()> {
    let mut rt = conn.runtime().await?;
    let state = match args.state.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("ready" | "sandbox_ready") => Some(0),
        Some("notready" | "not_ready" | "sandbox_notready") => Some(1),
        Some(other) => return Err(CtlError::Usage(format!("--state {other}: use ready or notready")).into()),
    };
    let filter = PodSandboxFilter {
        id: args.id.clone().unwrap_or_default(),
        state: state.map(|state| PodSandboxStateValue { state }),
        label_selector: parse_labels(&args.label)?,
    };
    let request = ListPodSandboxRequest { filter: Some(filter) };
    let mut pods = rt.list_pod_sandbox(request).await.map_err(|s| conn.error("list pods", s))?.into_inner().items;
    pods.retain(|pod| {
        let metadata = pod.metadata.clone().unwrap_or_default();
        args.name.as_ref().is_none_or(|name| metadata.name.contains(name.as_str()))
            && args.namespace.as_ref().is_none_or(|ns| metadata.namespace.contains(ns.as_str()))
    });
    let pods = newest(pods, |pod| pod.created_at, args.latest, args.last);
    if args.quiet {
        output::print_str(&pods.iter().map(|p| format!("{}\n", p.id)).collect::<String>());
        return Ok(());
    }
    let response = ListPodSandboxResponse { items: pods };
    if output::print_list_doc(&response, args.output)? {
        return Ok(());
    }
    let mut table = Table::new(&["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT", "RUNTIME"]);
    for pod in &response.items {
        let metadata = pod.metadata.clone().unwrap_or_default();
        let runtime = if pod.runtime_handler.is_empty() { "(default)" } else { pod.runtime_handler.as_str() };
        table.row(vec![
            short_id(&pod.id, args.no_trunc),
            age(pod.created_at),
            pod_state(pod.state).to_string(),
            metadata.name,
            metadata.namespace,
            metadata.attempt.to_string(),
            runtime.to_string(),
        ]);
    }
    table.print();
    Ok(())
}

pub async fn inspect(conn: &Connection, args: &InspectArgs) -> anyhow::Result<()> {
    let mut rt = conn.runtime().await?;
    let mut statuses = Vec::new();
    let failures = for_each_id(&args.ids, async |given| {
        let id = resolve_pod(conn, &mut rt, given).await?;
        let request = PodSandboxStatusRequest { pod_sandbox_id: id.clone(), verbose: true };
        let status = rt.pod_sandbox_status(request).await.map_err(|s| conn.error(&format!("pod {id}"), s))?;
        let status = status.into_inner();
        statuses.push(output::status_doc(&status.status, &status.info, &[]).map_err(internal)?);
        Ok(())
    })
    .await?;
    output::print_status_docs(statuses, args.output)?;
    Ok(failures.finish()?)
}

pub async fn stop(conn: &Connection, args: &IdsArgs) -> anyhow::Result<()> {
    let mut rt = conn.long().runtime().await?;
    let stopped = for_each_id(&args.ids, async |given| {
        let id = resolve_pod(conn, &mut rt, given).await?;
        stop_pod(conn, &mut rt, &id).await?;
        output::print_str(&format!("Stopped sandbox {id}\n"));
        Ok(())
    });
    Ok(stopped.await?.finish()?)
}

pub async fn remove(conn: &Connection, args: &RmpArgs) -> anyhow::Result<()> {
    let mut rt = conn.long().runtime().await?;
    let ids: Vec<String> = if args.all {
        list_pods(conn, &mut rt).await?.into_iter().map(|pod| pod.id).collect()
    } else if args.ids.is_empty() {
        return Err(CtlError::Usage("name the pods to remove, or use --all".to_string()).into());
    } else {
        args.ids.clone()
    };
    let removed = for_each_id(&ids, async |given| {
        let id = resolve_pod(conn, &mut rt, given).await?;
        remove_pod(conn, &mut rt, &id, args.force).await?;
        output::print_str(&format!("Removed sandbox {id}\n"));
        Ok(())
    });
    Ok(removed.await?.finish()?)
}

pub async fn stop_pod(conn: &Connection, rt: &mut RuntimeClient, id: &str) -> Result<(), CtlError> {
    let request = StopPodSandboxRequest { pod_sandbox_id: id.to_string() };
    rt.stop_pod_sandbox(request).await.map_err(|s| conn.error(&format!("stop pod {id}"), s))?;
    Ok(())
}

/// Removes pod `id`; a ready pod is refused unless `force`, which stops it first (CRI
/// would remove it anyway; crictl asks for -f so a running pod is not removed by mistake).
pub async fn remove_pod(conn: &Connection, rt: &mut RuntimeClient, id: &str, force: bool) -> Result<(), CtlError> {
    let request = PodSandboxStatusRequest { pod_sandbox_id: id.to_string(), verbose: false };
    let status = rt.pod_sandbox_status(request).await.map_err(|s| conn.error(&format!("pod {id}"), s))?.into_inner();
    let ready = status.status.is_some_and(|s| s.state == 0);
    if ready {
        if !force {
            return Err(CtlError::Refused(format!(
                "pod {id} is running: stop it first (`berthctl stopp {}`) or use `berthctl rmp -f`",
                short_id(id, false)
            )));
        }
        stop_pod(conn, rt, id).await?;
    }
    let request = RemovePodSandboxRequest { pod_sandbox_id: id.to_string() };
    rt.remove_pod_sandbox(request).await.map_err(|s| conn.error(&format!("remove pod {id}"), s))?;
    Ok(())
}
