//! Twenty pods with a container each, created at the same time over separate
//! connections as kubelet's pod workers do: all run, all are removed, nothing is left.

use std::time::Duration;

use berth_tests::runtime::RuntimeEnv;
use berth_tests::timing::scaled;
use k8s_cri::v1::{
    ContainerState, CreateContainerRequest, ListPodSandboxRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopPodSandboxRequest,
};

const PODS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_pods_in_parallel() {
    let mut env = RuntimeEnv::start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..PODS {
        let pod_config = env.pod_config(&format!("parallel-{index}"));
        let container_config = env.container_config("sleeper", &["sleep", "3600"]);
        let mut rt = env.berthd.runtime().await;
        tasks.spawn(async move {
            let request = RunPodSandboxRequest { config: Some(pod_config.clone()), runtime_handler: String::new() };
            let pod_id = rt.run_pod_sandbox(request).await.map_err(|e| format!("pod {index}: RunPodSandbox: {e:?}"))?.into_inner().pod_sandbox_id;
            let request = CreateContainerRequest {
                pod_sandbox_id: pod_id.clone(),
                config: Some(container_config),
                sandbox_config: Some(pod_config),
            };
            let container_id = rt.create_container(request).await.map_err(|e| format!("pod {index}: CreateContainer: {e:?}"))?.into_inner().container_id;
            rt.start_container(StartContainerRequest { container_id: container_id.clone() })
                .await
                .map_err(|e| format!("pod {index}: StartContainer: {e:?}"))?;
            Ok::<_, String>((pod_id, container_id))
        });
    }
    let mut started = Vec::new();
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.expect("task panicked") {
            Ok(ids) => started.push(ids),
            Err(message) => failures.push(message),
        }
    }
    assert!(failures.is_empty(), "{} of {PODS} pods failed: {failures:#?}", failures.len());

    let mut pod_ids: Vec<&String> = started.iter().map(|(pod, _)| pod).collect();
    pod_ids.sort();
    pod_ids.dedup();
    assert_eq!(pod_ids.len(), PODS, "every pod has its own id");
    for (_, container_id) in &started {
        env.wait_container_state(container_id, ContainerState::ContainerRunning, Duration::from_secs(30)).await;
    }
    let listed = env.rt.list_pod_sandbox(ListPodSandboxRequest { filter: None }).await.expect("ListPodSandbox");
    assert_eq!(listed.into_inner().items.len(), PODS);
    assert_eq!(env.list_container_ids(None).await.len(), PODS);

    // Tear down in parallel too.
    let mut tasks = tokio::task::JoinSet::new();
    for (pod_id, _) in started {
        let mut rt = env.berthd.runtime().await;
        tasks.spawn(async move {
            rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: pod_id.clone() })
                .await
                .map_err(|e| format!("StopPodSandbox {pod_id}: {e:?}"))?;
            rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: pod_id.clone() })
                .await
                .map_err(|e| format!("RemovePodSandbox {pod_id}: {e:?}"))?;
            Ok::<_, String>(())
        });
    }
    let teardown = tokio::time::timeout(scaled(Duration::from_secs(60)), async {
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            if let Err(message) = joined.expect("task panicked") {
                failures.push(message);
            }
        }
        failures
    })
    .await
    .expect("parallel teardown finished");
    assert!(teardown.is_empty(), "{teardown:#?}");
    env.finish().await;
}
