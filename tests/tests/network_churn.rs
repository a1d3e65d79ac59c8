//! Network churn against a real berthd: 50 pods, each with a hostPort, created and then
//! stopped and removed in parallel batches, with berth's built-in plugins and with
//! Debian's reference plugins (same conflist shape, a network of the test's own). After
//! the last pod is gone no veth, no host-local IP file, no CNI cache entry, no hostPort
//! rule or chain (nft table or the reference portmap's iptables chains) and no pinned
//! network namespace of theirs is left.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::network::{
    cache_dir, free_tcp_port, pod_netns, reference_dnat_chain, reference_plugins_available, reference_portmap_lock,
    PluginSet, ReferenceHostportChains, TestNetwork, REFERENCE_PLUGIN_DIR,
};
use berth_tests::RuntimeEnv;
use k8s_cri::v1::{PortMapping, Protocol, RemovePodSandboxRequest, RunPodSandboxRequest, StopPodSandboxRequest};

const PODS: usize = 50;
/// Pods started (or stopped and removed) at the same time.
const BATCH: usize = 10;

/// Whether network device `name` exists on the host.
fn link_exists(name: &str) -> bool {
    Command::new("ip").args(["link", "show", "dev", name]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().is_ok_and(|s| s.success())
}

/// Network namespaces pinned under `dir` (nsfs mounts at `.../ns/net`; the pods' ipc and
/// uts pins are nsfs mounts too).
fn netns_mounts_under(dir: &std::path::Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let mount_point = *fields.get(4)?;
            let fs_type = fields.iter().position(|f| *f == "-").and_then(|i| fields.get(i + 1))?;
            (*fs_type == "nsfs" && mount_point.starts_with(&prefix) && mount_point.ends_with("/ns/net")).then(|| mount_point.to_string())
        })
        .collect()
}

fn mean_ms(durations: &[Duration]) -> f64 {
    durations.iter().map(Duration::as_secs_f64).sum::<f64>() * 1000.0 / durations.len().max(1) as f64
}

async fn churn(plugins: PluginSet) {
    let _serialized = (plugins == PluginSet::Reference).then(reference_portmap_lock);
    let net = TestNetwork::new(plugins);
    let _reference_chains = (plugins == PluginSet::Reference).then(|| ReferenceHostportChains::new(&net));
    let mut env = RuntimeEnv::start_with(&[], &net.config_toml()).await;
    let cache = cache_dir(env.berthd.root());

    // One distinct free hostPort per pod.
    let mut ports = HashSet::new();
    while ports.len() < PODS {
        ports.insert(free_tcp_port());
    }
    let configs: Vec<_> = ports
        .into_iter()
        .enumerate()
        .map(|(i, port)| {
            let mut config = env.pod_config(&format!("churn{i}"));
            config.port_mappings = vec![PortMapping {
                protocol: Protocol::Tcp as i32,
                container_port: 80,
                host_port: port as i32,
                host_ip: String::new(),
            }];
            config
        })
        .collect();

    let started = Instant::now();
    let mut ids = Vec::new();
    let mut setup_times = Vec::new();
    for batch in configs.chunks(BATCH) {
        let mut tasks = tokio::task::JoinSet::new();
        for config in batch {
            let mut rt = env.rt.clone();
            let request = RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() };
            tasks.spawn(async move {
                let started = Instant::now();
                let id = rt.run_pod_sandbox(request).await.map(|r| r.into_inner().pod_sandbox_id);
                (id, started.elapsed())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (id, elapsed) = joined.expect("RunPodSandbox task");
            ids.push(id.unwrap_or_else(|e| panic!("RunPodSandbox in a batch of {BATCH}: {e:?}")));
            setup_times.push(elapsed);
        }
    }
    let run_all = started.elapsed();

    // Everything is there: one veth, one IP, one cache entry, one pinned netns, hostPort
    // rules per pod.
    let veths = net.veths();
    assert_eq!(veths.len(), PODS, "veths on {}: {veths:?}", net.bridge);
    assert_eq!(net.allocated_ips().len(), PODS, "{:?}", net.allocated_ips());
    // One `<network>-<pod>-eth0.json` entry per pod (its ADD result sits beside it as
    // `.json.result`).
    let entries = std::fs::read_dir(&cache)
        .expect("cache dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .count();
    assert_eq!(entries, PODS, "CNI cache entries");
    let netns: Vec<PathBuf> = ids.iter().map(|id| pod_netns(env.berthd.state(), id)).collect();
    assert!(netns.iter().all(|p| p.exists()), "every pod has its pinned netns");
    assert_eq!(netns_mounts_under(env.berthd.base_dir()).len(), PODS, "pinned network namespaces");
    let rules = net.hostport_rules(&ids);
    assert!(rules.len() >= PODS, "hostPort rules for {PODS} pods: {} found: {rules:#?}", rules.len());
    let mut ips = HashSet::new();
    for id in &ids {
        let status = env.pod_status(id).await.expect("PodSandboxStatus");
        let ip = status.network.expect("network status").ip;
        assert!(ips.insert(ip.clone()), "IP {ip} given twice");
    }

    let started = Instant::now();
    let mut teardown_times = Vec::new();
    for batch in ids.chunks(BATCH) {
        let mut tasks = tokio::task::JoinSet::new();
        for id in batch {
            let mut rt = env.rt.clone();
            let id = id.clone();
            tasks.spawn(async move {
                let started = Instant::now();
                let stopped = rt.stop_pod_sandbox(StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                let elapsed = started.elapsed();
                let removed = rt.remove_pod_sandbox(RemovePodSandboxRequest { pod_sandbox_id: id.clone() }).await;
                (id, stopped.and(removed), elapsed)
            });
        }
        while let Some(joined) = tasks.join_next().await {
            let (id, result, elapsed) = joined.expect("Stop/RemovePodSandbox task");
            result.unwrap_or_else(|e| panic!("Stop/RemovePodSandbox {id}: {e:?}"));
            teardown_times.push(elapsed);
        }
    }
    let remove_all = started.elapsed();

    // Nothing of them is left.
    let left: Vec<&String> = veths.iter().filter(|v| link_exists(v)).collect();
    assert!(left.is_empty(), "veths left: {left:?}");
    net.assert_clean(&cache);
    let rules = net.hostport_rules(&ids);
    assert!(rules.is_empty(), "hostPort rules left: {rules:#?}");
    if plugins == PluginSet::Reference {
        let chains: HashSet<String> = ids.iter().map(|id| reference_dnat_chain(&net.name, id)).collect();
        let nat = berth_tests::network::iptables_nat(false);
        let left: Vec<&String> = nat.iter().filter(|l| chains.iter().any(|c| l.contains(c.as_str()))).collect();
        assert!(left.is_empty(), "CNI-DN chains left: {left:#?}");
    }
    let left: Vec<&PathBuf> = netns.iter().filter(|p| p.exists()).collect();
    assert!(left.is_empty(), "netns pins left: {left:?}");
    let mounts = netns_mounts_under(env.berthd.base_dir());
    assert!(mounts.is_empty(), "netns mounts left: {mounts:?}");
    eprintln!(
        "{plugins:?}: {PODS} pods in batches of {BATCH}: RunPodSandbox all {run_all:?} (mean {:.1} ms each), \
         Stop/RemovePodSandbox all {remove_all:?} (StopPodSandbox mean {:.1} ms each)",
        mean_ms(&setup_times),
        mean_ms(&teardown_times)
    );
    env.finish().await;
}

#[tokio::test]
async fn builtin_plugins_50_pods_leave_nothing() {
    churn(PluginSet::Builtin).await;
}

#[tokio::test]
async fn reference_plugins_50_pods_leave_nothing() {
    assert!(reference_plugins_available(), "containernetworking-plugins must be installed in {REFERENCE_PLUGIN_DIR}");
    churn(PluginSet::Reference).await;
}
