//! `start`, `ps`, `inspect`, `stop`, `rm`.

use std::collections::HashMap;

use k8s_cri::v1::{
    ContainerFilter, ContainerStateValue, ContainerStatusRequest, ListContainersRequest, ListContainersResponse,
    RemoveContainerRequest, StartContainerRequest, StopContainerRequest,
};

use crate::cli::{IdsArgs, InspectArgs, PsArgs, RmArgs, StopArgs};
use crate::client::{Connection, CtlError, RuntimeClient};
use crate::commands::{
    for_each_id, internal, list_containers, list_pods, newest, parse_labels, resolve_container, resolve_pod,
};
use crate::output::{self, age, container_state, short_id, Table};

/// Container states by the names `ps --state` takes.
fn parse_state(state: &str) -> Result<i32, CtlError> {
    match state.to_ascii_lowercase().trim_start_matches("container_") {
        "created" => Ok(0),
        "running" => Ok(1),
        "exited" => Ok(2),
        "unknown" => Ok(3),
        other => Err(CtlError::Usage(format!("--state {other}: use created, running, exited or unknown"))),
    }
}

pub async fn list(conn: &Connection, args: &PsArgs) -> anyhow::Result<()> {
    let mut rt = conn.runtime().await?;
    let state = match &args.state {
        Some(state) => Some(parse_state(state)?),
        // Without -a, only running containers, as crictl and docker.
        None if !args.all => Some(1),
        None => None,
    };
    let pod_sandbox_id = match &args.pod {
        Some(pod) => resolve_pod(conn, &mut rt, pod).await?,
        None => String::new(),
    };
    let filter = ContainerFilter {
        id: args.id.clone().unwrap_or_default(),
        state: state.map(|state| ContainerStateValue { state }),
        pod_sandbox_id,
        label_selector: parse_labels(&args.label)?,
    };
    let request = ListContainersRequest { filter: Some(filter) };
    let mut containers =
        rt.list_containers(request).await.map_err(|s| conn.error("list containers", s))?.into_inner().containers;
    containers.retain(|c| {
        let name = c.metadata.as_ref().map_or("", |m| m.name.as_str());
        let image = c.image.as_ref().map_or("", |i| i.image.as_str());
        args.name.as_ref().is_none_or(|n| name.contains(n.as_str()))
            && args.image.as_ref().is_none_or(|i| image.contains(i.as_str()) || c.image_ref.contains(i.as_str()))
    });
    let containers = newest(containers, |c| c.created_at, args.latest, args.last);
    if args.quiet {
        output::print_str(&containers.iter().map(|c| format!("{}\n", c.id)).collect::<String>());
        return Ok(());
    }
    let response = ListContainersResponse { containers };
    if output::print_list_doc(&response, args.output)? {
        return Ok(());
    }
    let pod_names: HashMap<String, String> = list_pods(conn, &mut rt)
        .await?
        .into_iter()
        .map(|pod| (pod.id, pod.metadata.map(|m| m.name).unwrap_or_default()))
        .collect();
    let mut table = Table::new(&["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID", "POD"]);
    for c in &response.containers {
        let metadata = c.metadata.clone().unwrap_or_default();
        let image = c.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let image = if image.starts_with("sha256:") { short_id(&image, args.no_trunc) } else { image };
        table.row(vec![
            short_id(&c.id, args.no_trunc),
            image,
            age(c.created_at),
            container_state(c.state).to_string(),
            metadata.name,
            metadata.attempt.to_string(),
            short_id(&c.pod_sandbox_id, args.no_trunc),
            pod_names.get(&c.pod_sandbox_id).cloned().unwrap_or_default(),
        ]);
    }
    table.print();
    Ok(())
}

pub async fn start(conn: &Connection, args: &IdsArgs) -> anyhow::Result<()> {
    let mut rt = conn.long().runtime().await?;
    let started = for_each_id(&args.ids, async |given| {
        let id = resolve_container(conn, &mut rt, given).await?;
        let request = StartContainerRequest { container_id: id.clone() };
        rt.start_container(request).await.map_err(|s| conn.error(&format!("start container {id}"), s))?;
        output::print_str(&format!("{id}\n"));
        Ok(())
    });
    Ok(started.await?.finish()?)
}

pub async fn inspect(conn: &Connection, args: &InspectArgs) -> anyhow::Result<()> {
    let mut rt = conn.runtime().await?;
    let mut statuses = Vec::new();
    let failures = for_each_id(&args.ids, async |given| {
        let id = resolve_container(conn, &mut rt, given).await?;
        let request = ContainerStatusRequest { container_id: id.clone(), verbose: true };
        let status = rt.container_status(request).await.map_err(|s| conn.error(&format!("container {id}"), s))?;
        let status = status.into_inner();
        statuses.push(output::status_doc(&status.status, &status.info, &[]).map_err(internal)?);
        Ok(())
    })
    .await?;
    output::print_status_docs(statuses, args.output)?;
    Ok(failures.finish()?)
}

pub async fn stop(conn: &Connection, args: &StopArgs) -> anyhow::Result<()> {
    let mut rt = conn.long().runtime().await?;
    let stopped = for_each_id(&args.ids, async |given| {
        let id = resolve_container(conn, &mut rt, given).await?;
        stop_container(conn, &mut rt, &id, args.timeout).await?;
        output::print_str(&format!("{id}\n"));
        Ok(())
    });
    Ok(stopped.await?.finish()?)
}

pub async fn remove(conn: &Connection, args: &RmArgs) -> anyhow::Result<()> {
    let mut rt = conn.long().runtime().await?;
    let ids: Vec<String> = if args.all {
        list_containers(conn, &mut rt).await?.into_iter().map(|c| c.id).collect()
    } else if args.ids.is_empty() {
        return Err(CtlError::Usage("name the containers to remove, or use --all".to_string()).into());
    } else {
        args.ids.clone()
    };
    let removed = for_each_id(&ids, async |given| {
        let id = resolve_container(conn, &mut rt, given).await?;
        remove_container(conn, &mut rt, &id, args.force).await?;
        output::print_str(&format!("{id}\n"));
        Ok(())
    });
    Ok(removed.await?.finish()?)
}

pub async fn stop_container(conn: &Connection, rt: &mut RuntimeClient, id: &str, timeout: i64) -> Result<(), CtlError> {
    let request = StopContainerRequest { container_id: id.to_string(), timeout };
    rt.stop_container(request).await.map_err(|s| conn.error(&format!("stop container {id}"), s))?;
    Ok(())
}

/// Removes container `id`; a running one is refused unless `force`, which kills it first.
pub async fn remove_container(
    conn: &Connection,
    rt: &mut RuntimeClient,
    id: &str,
    force: bool,
) -> Result<(), CtlError> {
    let request = ContainerStatusRequest { container_id: id.to_string(), verbose: false };
    let status =
        rt.container_status(request).await.map_err(|s| conn.error(&format!("container {id}"), s))?.into_inner();
    let running = status.status.is_some_and(|s| s.state == 1);
    if running {
        if !force {
            return Err(CtlError::Refused(format!(
                "container {id} is running: stop it first (`berthctl stop {}`) or use `berthctl rm -f`",
                short_id(id, false)
            )));
        }
        stop_container(conn, rt, id, 0).await?;
    }
    let request = RemoveContainerRequest { container_id: id.to_string() };
    rt.remove_container(request).await.map_err(|s| conn.error(&format!("remove container {id}"), s))?;
    Ok(())
}
