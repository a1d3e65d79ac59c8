//! Pod sandboxes as kubelet drives them: RunPodSandbox, PodSandboxStatus, ListPodSandbox
//! with filters, StopPodSandbox and RemovePodSandbox (idempotent), AlreadyExists for a taken
//! name, NotFound for unknown ids, and nothing left behind.

use std::collections::HashMap;

use berth_tests::runtime::assert_code;
use berth_tests::RuntimeEnv;
use k8s_cri::v1::{
    ContainerState, ListPodSandboxRequest, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    PodSandboxStatusRequest,
};
use tonic::Code;

async fn list_pods(env: &mut RuntimeEnv, filter: Option<PodSandboxFilter>) -> Vec<String> {
    let listed = env.rt.list_pod_sandbox(ListPodSandboxRequest { filter }).await.expect("ListPodSandbox");
    let mut ids: Vec<String> = listed.into_inner().items.into_iter().map(|p| p.id).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

#[tokio::test]
async fn run_status_stop_remove() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("lifecycle").await;
    assert_eq!(pod.id.len(), 64, "pod ids are 64 hex chars: {}", pod.id);
    assert!(pod.id.bytes().all(|b| b.is_ascii_hexdigit()), "{}", pod.id);

    let status = env.pod_status(&pod.id).await.expect("PodSandboxStatus");
    assert_eq!(status.id, pod.id);
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32, "{status:#?}");
    assert_eq!(status.metadata, pod.config.metadata, "{status:#?}");
    assert_eq!(status.labels, pod.config.labels);
    assert!(status.created_at > 0, "{status:#?}");
    let verbose = env
        .rt
        .pod_sandbox_status(PodSandboxStatusRequest { pod_sandbox_id: pod.id.clone(), verbose: true })
        .await
        .expect("verbose PodSandboxStatus")
        .into_inner();
    assert!(!verbose.info.is_empty(), "verbose PodSandboxStatus carries info");
    assert_eq!(list_pods(&mut env, None).await, vec![pod.id.clone()]);

    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    let status = env.pod_status(&pod.id).await.expect("PodSandboxStatus after stop");
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32, "{status:#?}");
    env.stop_pod(&pod.id).await.expect("StopPodSandbox again is a no-op");

    env.remove_pod(&pod.id).await.expect("RemovePodSandbox");
    assert_code(env.pod_status(&pod.id).await, Code::NotFound);
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox of a removed pod succeeds");
    env.stop_pod(&pod.id).await.expect("StopPodSandbox of a removed pod succeeds");
    assert!(list_pods(&mut env, None).await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn list_filters_by_id_state_and_labels() {
    let mut env = RuntimeEnv::start().await;
    let mut configs = Vec::new();
    for (name, tier) in [("web", "front"), ("api", "back"), ("db", "back")] {
        let mut config = env.pod_config(name);
        config.labels.insert("tier".to_string(), tier.to_string());
        configs.push(config);
    }
    let mut pods = Vec::new();
    for config in configs {
        pods.push(env.run_pod_with(config).await.expect("RunPodSandbox"));
    }
    let (web, api, db) = (pods[0].id.clone(), pods[1].id.clone(), pods[2].id.clone());
    env.stop_pod(&db).await.expect("StopPodSandbox db");

    assert_eq!(list_pods(&mut env, None).await, sorted(vec![web.clone(), api.clone(), db.clone()]));
    let by_id = PodSandboxFilter { id: api.clone(), ..Default::default() };
    assert_eq!(list_pods(&mut env, Some(by_id)).await, vec![api.clone()]);
    let by_prefix = PodSandboxFilter { id: api[..12].to_string(), ..Default::default() };
    let listed = list_pods(&mut env, Some(by_prefix)).await;
    assert!(listed == vec![api.clone()] || listed.is_empty(), "an id prefix matches the pod or nothing: {listed:?}");
    let unknown = PodSandboxFilter { id: "0".repeat(64), ..Default::default() };
    assert!(list_pods(&mut env, Some(unknown)).await.is_empty());

    let state = |s: PodSandboxState| Some(PodSandboxStateValue { state: s as i32 });
    let ready = PodSandboxFilter { state: state(PodSandboxState::SandboxReady), ..Default::default() };
    assert_eq!(list_pods(&mut env, Some(ready)).await, sorted(vec![web.clone(), api.clone()]));
    let not_ready = PodSandboxFilter { state: state(PodSandboxState::SandboxNotready), ..Default::default() };
    assert_eq!(list_pods(&mut env, Some(not_ready)).await, vec![db.clone()]);

    let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
    let back = PodSandboxFilter { label_selector: labels(&[("tier", "back")]), ..Default::default() };
    assert_eq!(list_pods(&mut env, Some(back)).await, sorted(vec![api.clone(), db.clone()]));
    let back_ready = PodSandboxFilter {
        label_selector: labels(&[("tier", "back")]),
        state: state(PodSandboxState::SandboxReady),
        ..Default::default()
    };
    assert_eq!(list_pods(&mut env, Some(back_ready)).await, vec![api.clone()]);
    let two_labels = PodSandboxFilter { label_selector: labels(&[("tier", "back"), ("app", "db")]), ..Default::default() };
    assert_eq!(list_pods(&mut env, Some(two_labels)).await, vec![db.clone()]);
    let no_match = PodSandboxFilter { label_selector: labels(&[("tier", "nowhere")]), ..Default::default() };
    assert!(list_pods(&mut env, Some(no_match)).await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn taken_name_is_already_exists_and_a_new_attempt_is_not() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("dup").await;
    let message = assert_code(env.run_pod_with(pod.config.clone()).await, Code::AlreadyExists);
    assert!(!message.is_empty());
    // The first pod is untouched by the refused one.
    let status = env.pod_status(&pod.id).await.expect("PodSandboxStatus");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    assert_eq!(list_pods(&mut env, None).await, vec![pod.id.clone()]);

    // kubelet's next attempt of the same pod is another sandbox.
    let mut next = pod.config.clone();
    next.metadata.as_mut().expect("metadata").attempt = 1;
    let second = env.run_pod_with(next).await.expect("RunPodSandbox attempt 1");
    assert_ne!(second.id, pod.id);

    // Once removed, the name is free again.
    env.stop_pod(&pod.id).await.expect("stop");
    env.remove_pod(&pod.id).await.expect("remove");
    let again = env.run_pod_with(pod.config.clone()).await.expect("RunPodSandbox after removal");
    assert_ne!(again.id, pod.id);
    env.finish().await;
}

#[tokio::test]
async fn unknown_pod_ids() {
    let mut env = RuntimeEnv::start().await;
    let unknown = "ab".repeat(32);
    assert_code(env.pod_status(&unknown).await, Code::NotFound);
    let empty = berth_tests::runtime::error_code(env.pod_status("").await);
    assert!(matches!(empty, Code::NotFound | Code::InvalidArgument), "empty id: {empty:?}");
    env.remove_pod(&unknown).await.expect("RemovePodSandbox of an unknown id is a no-op");
    env.stop_pod(&unknown).await.expect("StopPodSandbox of an unknown id is a no-op");
    env.finish().await;
}

#[tokio::test]
async fn remove_without_stop_takes_running_containers_along() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("busy").await;
    let first = env.run_container(&pod, "first", &["sleep", "3600"]).await;
    let second = env.run_container(&pod, "second", &["sleep", "3600"]).await;
    env.wait_container_state(&first, ContainerState::ContainerRunning, std::time::Duration::from_secs(10)).await;
    env.wait_container_state(&second, ContainerState::ContainerRunning, std::time::Duration::from_secs(10)).await;

    env.remove_pod(&pod.id).await.expect("RemovePodSandbox of a pod with running containers");
    assert_code(env.container_status(&first).await, Code::NotFound);
    assert_code(env.container_status(&second).await, Code::NotFound);
    env.finish().await;
}

#[tokio::test]
async fn stop_pod_stops_its_containers() {
    let mut env = RuntimeEnv::start().await;
    let pod = env.run_pod("stopper").await;
    let id = env.run_container(&pod, "sleeper", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, std::time::Duration::from_secs(10)).await;
    env.stop_pod(&pod.id).await.expect("StopPodSandbox");
    let status = env.container_status(&id).await.expect("ContainerStatus after StopPodSandbox");
    assert_eq!(status.state, ContainerState::ContainerExited as i32, "{status:#?}");
    env.finish().await;
}
