//! Pod networking through CNI against a real berthd: each test has its own conflist (a
//! unique bridge and /24), run by Debian's reference plugins (exec'd) or by berth's
//! built-in ones (in-process). Pods get IPs and reach each other over TCP, hostNetwork
//! pods skip CNI, bad configs fail RunPodSandbox with the plugin's message and leave
//! nothing, and a berthd killed with SIGKILL still releases every IP.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::network::{
    cache_dir, reference_plugins_available, run_httpd, wget_in, PluginSet, TestNetwork, REFERENCE_PLUGIN_DIR,
};
use berth_tests::runtime::{assert_code, pod_security};
use berth_tests::{Pod, RuntimeEnv};
use k8s_cri::v1::{ContainerState, NamespaceMode, StatusRequest};

async fn start(net: &TestNetwork) -> RuntimeEnv {
    RuntimeEnv::start_with(&[], &net.config_toml()).await
}

async fn pod_ip(env: &mut RuntimeEnv, pod: &Pod) -> String {
    let status = env.pod_status(&pod.id).await.expect("PodSandboxStatus");
    status.network.expect("network status").ip
}

fn in_subnet(ip: &str, net: &TestNetwork) -> bool {
    let prefix = net.subnet.trim_end_matches("0/24");
    ip.starts_with(prefix)
}

async fn two_pods_reach_each_other(plugins: PluginSet) {
    let net = TestNetwork::new(plugins);
    let mut env = start(&net).await;

    let started = Instant::now();
    let server_pod = env.run_pod("server").await;
    let first_pod_ms = started.elapsed().as_millis();
    let server_ip = pod_ip(&mut env, &server_pod).await;
    assert!(in_subnet(&server_ip, &net), "pod IP {server_ip} in {}", net.subnet);
    let started = Instant::now();
    let client_pod = env.run_pod("client").await;
    let second_pod_ms = started.elapsed().as_millis();
    let client_ip = pod_ip(&mut env, &client_pod).await;
    assert!(in_subnet(&client_ip, &net) && client_ip != server_ip, "{client_ip} vs {server_ip}");
    assert_eq!(net.veths().len(), 2, "one veth per pod on {}", net.bridge);
    assert_eq!(net.allocated_ips(), { let mut v = vec![server_ip.clone(), client_ip.clone()]; v.sort(); v });

    run_httpd(&mut env, &server_pod, 8080, "hello-from-berth").await;
    let client = env.run_container(&client_pod, "client", &["sleep", "3600"]).await;
    env.wait_container_state(&client, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    // The pod sees its own address on eth0, and lo is up.
    let addrs = env.exec_ok(&client, &["ip", "-o", "addr"]).await;
    assert!(addrs.contains(&format!("eth0    inet {client_ip}/24")) || addrs.contains(&format!("inet {client_ip}/24")), "{addrs}");
    assert!(addrs.contains("lo    inet 127.0.0.1/8") || addrs.contains("inet 127.0.0.1/8"), "{addrs}");
    assert_eq!(wget_in(&mut env, &client, &format!("http://{server_ip}:8080/index.html")).await, "hello-from-berth");

    // Stop tears the network down; a second stop is a no-op.
    let started = Instant::now();
    env.stop_pod(&client_pod.id).await.expect("StopPodSandbox");
    let stop_ms = started.elapsed().as_millis();
    env.stop_pod(&client_pod.id).await.expect("second StopPodSandbox");
    assert_eq!(net.veths().len(), 1);
    assert_eq!(net.allocated_ips(), vec![server_ip.clone()]);
    eprintln!("{plugins:?}: RunPodSandbox {first_pod_ms} ms (first, makes the bridge), {second_pod_ms} ms (second); StopPodSandbox {stop_ms} ms");

    env.remove_all_pods().await;
    net.assert_clean(&cache_dir(env.berthd.root()));
    let log = env.berthd.log();
    eprintln!(
        "{plugins:?}: network setup per pod {:?} us, teardown {:?} us",
        logged_elapsed_us(&log, "pod network set up"),
        logged_elapsed_us(&log, "pod network torn down")
    );
    env.finish().await;
}

/// `elapsed_us` of berthd's log lines holding `message`.
fn logged_elapsed_us(log: &str, message: &str) -> Vec<u64> {
    log.lines()
        .filter(|line| line.contains(message))
        .filter_map(|line| line.split("elapsed_us=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

#[tokio::test]
async fn reference_plugins_two_pods_reach_each_other_over_tcp() {
    assert!(reference_plugins_available(), "containernetworking-plugins must be installed in {REFERENCE_PLUGIN_DIR}");
    two_pods_reach_each_other(PluginSet::Reference).await;
}

#[tokio::test]
async fn builtin_plugins_two_pods_reach_each_other_over_tcp() {
    two_pods_reach_each_other(PluginSet::Builtin).await;
}

#[tokio::test]
async fn host_network_pod_skips_cni() {
    let net = TestNetwork::new(PluginSet::Reference);
    let mut env = start(&net).await;
    let mut config = env.pod_config("hostnet");
    pod_security(&mut config).namespace_options.get_or_insert_with(Default::default).network = NamespaceMode::Node as i32;
    let pod = env.run_pod_with(config).await.expect("RunPodSandbox hostNetwork");
    assert_eq!(pod_ip(&mut env, &pod).await, "", "host network: no pod IP");
    assert!(net.veths().is_empty() && net.allocated_ips().is_empty(), "CNI was called for a hostNetwork pod");
    let id = env.run_container(&pod, "c", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    let theirs = env.exec_ok(&id, &["readlink", "/proc/self/ns/net"]).await;
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our netns").to_string_lossy().into_owned();
    assert_eq!(theirs, ours, "a hostNetwork pod is in the host's network namespace");
    env.finish().await;
}

#[tokio::test]
async fn bad_configs_fail_run_pod_sandbox_with_the_plugins_message_and_leave_nothing() {
    let net = TestNetwork::new(PluginSet::Reference);
    let mut env = start(&net).await;
    let cache = cache_dir(env.berthd.root());

    // A broken first conflist (by name) is the network: its error, naming the file.
    net.write_conflist("05-broken.conflist", "{ not json");
    let config = env.pod_config("broken");
    let message = assert_code(env.run_pod_with(config).await, tonic::Code::FailedPrecondition);
    assert!(message.contains("05-broken.conflist"), "{message}");
    let status = env.rt.status(StatusRequest { verbose: false }).await.expect("Status").into_inner();
    let network = status.status.expect("status").conditions.into_iter().find(|c| c.r#type == "NetworkReady").expect("NetworkReady");
    assert!(!network.status && network.message.contains("05-broken.conflist"), "{network:?}");

    // A plugin that is not installed: named, nothing runs.
    let mut missing = net.conflist();
    missing["plugins"][1]["type"] = "nosuchplugin".into();
    net.write_conflist("05-broken.conflist", &missing.to_string());
    let config = env.pod_config("missing");
    let message = assert_code(env.run_pod_with(config).await, tonic::Code::FailedPrecondition);
    assert!(message.contains("nosuchplugin"), "{message}");

    // A plugin that fails after the bridge and IPAM ran: both undone, IP released.
    // (Before the IPAM failure below: a bridge that the reference plugin created in a
    // failed ADD keeps a zero MAC, and its next ADD fails "could not set bridge's mac".)
    let mut late_failure = net.conflist();
    late_failure["plugins"][1]["type"] = "bandwidth".into();
    late_failure["plugins"][1]["ingressRate"] = 1000.into(); // without ingressBurst: refused
    net.write_conflist("05-broken.conflist", &late_failure.to_string());
    let config = env.pod_config("late");
    let message = assert_code(env.run_pod_with(config).await, tonic::Code::Internal);
    assert!(message.contains("bandwidth"), "{message}");

    // A plugin's own error (host-local, delegated to by bridge, refuses the range) is the
    // RPC's message, and the bridge's veth is undone.
    let mut bad_range = net.conflist();
    bad_range["plugins"][0]["ipam"]["ranges"] = serde_json::json!([[{ "subnet": "not-a-cidr" }]]);
    net.write_conflist("05-broken.conflist", &bad_range.to_string());
    let config = env.pod_config("badrange");
    let message = assert_code(env.run_pod_with(config).await, tonic::Code::Internal);
    assert!(message.contains("bridge") && message.contains("not-a-cidr"), "{message}");

    let listed = env.rt.list_pod_sandbox(k8s_cri::v1::ListPodSandboxRequest { filter: None }).await.expect("List").into_inner();
    assert!(listed.items.is_empty(), "failed pods are not listed: {:?}", listed.items);
    net.assert_clean(&cache);
    env.assert_no_runtime_leaks_soon().await;

    // Fixed: pods work again.
    std::fs::remove_file(net.conf_dir().join("05-broken.conflist")).expect("remove broken conflist");
    let pod = env.run_pod("fixed").await;
    assert!(in_subnet(&pod_ip(&mut env, &pod).await, &net));
    env.remove_all_pods().await;
    net.assert_clean(&cache);
    env.finish().await;
}

#[tokio::test]
async fn kill9_restart_then_remove_still_releases_the_network() {
    let net = TestNetwork::new(PluginSet::Reference);
    let mut env = start(&net).await;
    let pod = env.run_pod("survivor").await;
    let ip = pod_ip(&mut env, &pod).await;
    env.berthd.kill9();
    env.berthd.restart().await;
    env.rt = env.berthd.runtime().await;
    assert_eq!(pod_ip(&mut env, &pod).await, ip, "the pod keeps its IP across the restart");
    assert_eq!(net.allocated_ips(), vec![ip]);
    env.stop_pod(&pod.id).await.expect("StopPodSandbox after restart");
    env.remove_pod(&pod.id).await.expect("RemovePodSandbox after restart");
    net.assert_clean(&cache_dir(env.berthd.root()));
    env.finish().await;
}

/// An attachment berthd knows only from its cache (its pod is gone: a crash between the
/// network's ADD and the pod's record) is DEL'd at startup, and its IP released, although
/// its netns is gone too.
#[tokio::test]
async fn startup_releases_networks_of_pods_that_no_longer_exist() {
    let net = TestNetwork::new(PluginSet::Reference);
    let mut env = start(&net).await;
    env.berthd.stop();

    // ADD by hand with the reference bridge into a netns of a short-lived process.
    let mut holder = Command::new("unshare").args(["-n", "sleep", "600"]).spawn().expect("unshare -n sleep");
    let netns = format!("/proc/{}/ns/net", holder.id());
    std::thread::sleep(Duration::from_millis(100));
    let ghost = "ghost0123456789";
    let list = net.conflist();
    let mut bridge_conf = list["plugins"][0].clone();
    bridge_conf["name"] = list["name"].clone();
    bridge_conf["cniVersion"] = list["cniVersion"].clone();
    let mut add = Command::new(format!("{REFERENCE_PLUGIN_DIR}/bridge"))
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", ghost)
        .env("CNI_NETNS", &netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", REFERENCE_PLUGIN_DIR)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the bridge plugin");
    {
        use std::io::Write;
        add.stdin.take().expect("stdin").write_all(bridge_conf.to_string().as_bytes()).expect("write config");
    }
    let out = add.wait_with_output().expect("bridge ADD");
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(out.status.success(), "bridge ADD: {}", String::from_utf8_lossy(&out.stdout));
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ADD result");
    assert_eq!(net.allocated_ips().len(), 1, "the ghost holds an IP");

    let cache = cache_dir(env.berthd.root());
    std::fs::create_dir_all(&cache).expect("cache dir");
    let entry = serde_json::json!({
        "kind": "berthCniCacheV1",
        "network_name": net.name,
        "container_id": ghost,
        "ifname": "eth0",
        "netns": netns,
        "args": [],
        "conflist": list,
        "result": result,
    });
    std::fs::write(cache.join(format!("{}-{ghost}-eth0.json", net.name)), entry.to_string()).expect("write cache entry");

    env.berthd.restart().await;
    env.rt = env.berthd.runtime().await;
    net.assert_clean(&cache);
    assert!(env.berthd.log().contains("released the network of a pod that no longer exists"));
    env.finish().await;
}
