//! hostPorts, dual-stack, DNS config and hostNetwork against a real berthd, once with
//! berth's built-in plugins (in-process) and once with Debian's reference plugins (exec'd
//! from /usr/lib/cni), with the same conflist: every test has its own bridge, subnets, conf
//! dir, host-local data dir and (built-in portmap) nft table.
//!
//! Traffic goes only to 127.0.0.1, to the host's own address on the test's bridge and to
//! the test pods' addresses. The reference portmap keeps global iptables chains
//! (CNI-HOSTPORT-*): [`ReferenceHostportChains`] removes them when the test created them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_tests::network::{
    cache_dir, free_tcp_port, free_udp_port, pod_netns, reference_plugins_available, reference_portmap_lock, run_httpd,
    wget_in, PluginSet,
    ReferenceHostportChains, TestNetwork, REFERENCE_PLUGIN_DIR,
};
use berth_tests::runtime::pod_security;
use berth_tests::timing::secs;
use berth_tests::{Pod, RuntimeEnv};
use k8s_cri::v1::{ContainerState, DnsConfig, NamespaceMode, PodSandboxNetworkStatus, PortMapping, Protocol};

async fn start(net: &TestNetwork) -> RuntimeEnv {
    RuntimeEnv::start_with(&[], &net.config_toml()).await
}

fn require_reference_plugins() {
    assert!(reference_plugins_available(), "containernetworking-plugins must be installed in {REFERENCE_PLUGIN_DIR}");
}

async fn network_status(env: &mut RuntimeEnv, pod: &Pod) -> PodSandboxNetworkStatus {
    env.pod_status(&pod.id).await.expect("PodSandboxStatus").network.expect("network status")
}

async fn run_sleeper(env: &mut RuntimeEnv, pod: &Pod) -> String {
    let id = env.run_container(pod, "sleeper", &["sleep", "3600"]).await;
    env.wait_container_state(&id, ContainerState::ContainerRunning, Duration::from_secs(10)).await;
    id
}

/// One HTTP/1.0 GET of `/` from this process (the host); the body.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: berth-test\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| std::io::Error::other(format!("no HTTP response: {response:?}")))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(std::io::Error::other(format!("HTTP status: {head:?}")));
    }
    Ok(body.trim().to_string())
}

/// [`http_get`] until it answers or 10 s (scaled) pass.
async fn http_get_from_host(addr: SocketAddr) -> String {
    let deadline = Instant::now() + secs(10);
    loop {
        match tokio::task::spawn_blocking(move || http_get(addr)).await.expect("http_get task") {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("GET http://{addr}/ from the host: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A UDP echo server bound to `port` inside the network namespace at `netns` (a pod's),
/// served by a thread of this process that moved into that namespace. Stops on drop.
struct UdpEcho {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    fn start(netns: &Path, port: u16) -> UdpEcho {
        let shown = netns.display().to_string();
        let netns: PathBuf = netns.to_path_buf();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let bound = (|| -> std::io::Result<UdpSocket> {
                let ns = std::fs::File::open(&netns)?;
                // Only this thread moves; the socket stays in the pod's namespace.
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                let socket = UdpSocket::bind(("0.0.0.0", port))?;
                socket.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(socket)
            })();
            let socket = match bound {
                Ok(socket) => {
                    let _ = ready_tx.send(Ok(()));
                    socket
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let mut buf = [0u8; 1500];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(&buf[..n], peer);
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => UdpEcho { stop, thread: Some(thread) },
            Ok(Err(e)) => panic!("UDP echo server on port {port} in {shown}: {e}"),
            Err(_) => panic!("UDP echo server thread died"),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `payload` from the host to `addr` until the same bytes come back (10 s, scaled).
async fn udp_round_trip(addr: SocketAddr, payload: &'static [u8]) {
    let answered = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
        let deadline = Instant::now() + secs(10);
        let mut buf = [0u8; 1500];
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            socket.send_to(payload, addr).map_err(|e| e.to_string())?;
            match socket.recv_from(&mut buf) {
                Ok((n, _)) if &buf[..n] == payload => return Ok(()),
                Ok((n, from)) => last = format!("{:?} from {from}", String::from_utf8_lossy(&buf[..n])),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    })
    .await
    .expect("udp task");
    if let Err(e) = answered {
        panic!("UDP {addr} from the host: {e}");
    }
}

fn host_network(config: &mut k8s_cri::v1::PodSandboxConfig) {
    pod_security(config).namespace_options.get_or_insert_with(Default::default).network = NamespaceMode::Node as i32;
}

/// The host's interface names right now.
fn host_interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .expect("/sys/class/net")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A pod with hostPorts (TCP 80 -> a free port, UDP 5353 -> a free port) and a DNSConfig;
/// another pod; a hostNetwork pod. The hostPort answers on 127.0.0.1 and on the host's
/// address on the bridge from the host, from the other pod, from the pod itself (hairpin)
/// and from the hostNetwork pod; UDP comes back from the pod. The pod's resolv.conf is its
/// DNSConfig; the hostNetwork pod sees the host's interfaces. Removing the pods removes
/// their hostPort rules, veths and IPs.
async fn host_ports(plugins: PluginSet) {
    // Declared first, dropped last: after berthd and the network are gone.
    let _serialized = (plugins == PluginSet::Reference).then(reference_portmap_lock);
    let net = TestNetwork::new(plugins);
    let _reference_chains = (plugins == PluginSet::Reference).then(|| ReferenceHostportChains::new(&net));
    let mut env = start(&net).await;

    let (tcp_port, udp_port) = (free_tcp_port(), free_udp_port());
    let mut config = env.pod_config("web");
    config.port_mappings = vec![
        PortMapping { protocol: Protocol::Tcp as i32, container_port: 80, host_port: tcp_port as i32, host_ip: String::new() },
        PortMapping { protocol: Protocol::Udp as i32, container_port: 5353, host_port: udp_port as i32, host_ip: String::new() },
    ];
    // TEST-NET addresses: written to resolv.conf, never queried.
    config.dns_config = Some(DnsConfig {
        servers: vec!["192.0.2.53".into(), "192.0.2.54".into()],
        searches: vec!["berth-test.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into(), "timeout:1".into()],
    });
    let started = Instant::now();
    let web = env.run_pod_with(config).await.expect("RunPodSandbox with hostPorts");
    let web_setup = started.elapsed();
    let web_ip = network_status(&mut env, &web).await.ip;
    assert!(web_ip.starts_with(net.subnet.trim_end_matches("0/24")), "{web_ip} in {}", net.subnet);
    let rules = net.hostport_rules(std::slice::from_ref(&web.id));
    assert!(rules.iter().any(|r| r.contains(&tcp_port.to_string())), "no DNAT rule for hostPort {tcp_port}: {rules:#?}");
    let httpd = run_httpd(&mut env, &web, 80, "hello-through-the-hostport").await;

    // DNS config -> resolv.conf; the pod's own name and IP in /etc/hosts.
    let resolv = env.exec_ok(&httpd, &["cat", "/etc/resolv.conf"]).await;
    assert!(resolv.contains("search berth-test.svc.cluster.local svc.cluster.local"), "{resolv}");
    assert!(resolv.contains("nameserver 192.0.2.53\nnameserver 192.0.2.54"), "{resolv}");
    assert!(resolv.contains("options ndots:5 timeout:1"), "{resolv}");
    let hosts = env.exec_ok(&httpd, &["cat", "/etc/hosts"]).await;
    assert!(hosts.contains(&web_ip), "pod IP {web_ip} in /etc/hosts: {hosts}");

    // From the host: loopback and the host's address on the bridge.
    let page = "hello-through-the-hostport";
    for host in ["127.0.0.1", net.gateway.as_str()] {
        let addr: SocketAddr = format!("{host}:{tcp_port}").parse().expect("address");
        assert_eq!(http_get_from_host(addr).await, page, "from the host to {addr}");
    }
    // UDP from the host, answered by an echo socket in the pod's namespace.
    {
        let _echo = UdpEcho::start(&pod_netns(env.berthd.state(), &web.id), 5353);
        udp_round_trip(format!("127.0.0.1:{udp_port}").parse().expect("address"), b"berth-udp-hostport").await;
    }

    // From another pod (to the host's address on the bridge) and hairpin (the pod itself).
    let other = env.run_pod("other").await;
    let client = run_sleeper(&mut env, &other).await;
    let url = format!("http://{}:{tcp_port}/", net.gateway);
    assert_eq!(wget_in(&mut env, &client, &url).await, page, "from another pod");
    assert_eq!(wget_in(&mut env, &httpd, &url).await, page, "hairpin: the pod through its own hostPort");

    // A hostNetwork pod: the host's interfaces (the test's bridge among them), and the
    // hostPort on 127.0.0.1 as the host sees it.
    let mut config = env.pod_config("hostnet");
    host_network(&mut config);
    let hostnet = env.run_pod_with(config).await.expect("RunPodSandbox hostNetwork");
    assert_eq!(network_status(&mut env, &hostnet).await.ip, "", "a hostNetwork pod has no pod IP");
    let on_host = run_sleeper(&mut env, &hostnet).await;
    let before = host_interfaces();
    let seen = env.exec_ok(&on_host, &["ls", "/sys/class/net"]).await;
    let after = host_interfaces();
    let seen: Vec<&str> = seen.split_whitespace().collect();
    // Interfaces other tests add or remove meanwhile are in one list only.
    for name in before.iter().filter(|n| after.contains(n)) {
        assert!(seen.contains(&name.as_str()), "hostNetwork pod does not see {name}: {seen:?}");
    }
    assert!(seen.contains(&net.bridge.as_str()), "hostNetwork pod sees the test's bridge {}: {seen:?}", net.bridge);
    let links = env.exec_ok(&on_host, &["ip", "-o", "link"]).await;
    assert!(links.contains(&net.bridge), "{links}");
    let url = format!("http://127.0.0.1:{tcp_port}/");
    assert_eq!(wget_in(&mut env, &on_host, &url).await, page, "from a hostNetwork pod on 127.0.0.1");

    // Teardown: rules, veths, IPs, cache entries go.
    let pod_ids = vec![web.id.clone(), other.id.clone()];
    let started = Instant::now();
    env.stop_pod(&web.id).await.expect("StopPodSandbox web");
    let web_teardown = started.elapsed();
    assert!(net.hostport_rules(&pod_ids).is_empty(), "hostPort rules left: {:#?}", net.hostport_rules(&pod_ids));
    env.remove_all_pods().await;
    net.assert_clean(&cache_dir(env.berthd.root()));
    assert!(net.hostport_rules(&pod_ids).is_empty());
    let refused = tokio::task::spawn_blocking(move || http_get(format!("127.0.0.1:{tcp_port}").parse().expect("addr")))
        .await
        .expect("task");
    assert!(refused.is_err(), "the hostPort still answers after the pod is gone: {refused:?}");
    eprintln!("{plugins:?}: RunPodSandbox with 2 hostPorts {web_setup:?}, StopPodSandbox {web_teardown:?}");
    env.finish().await;
}

#[tokio::test]
async fn builtin_host_ports_dns_and_host_network() {
    host_ports(PluginSet::Builtin).await;
}

#[tokio::test]
async fn reference_host_ports_dns_and_host_network() {
    require_reference_plugins();
    host_ports(PluginSet::Reference).await;
}

/// A dual-stack conflist (an IPv4 and an IPv6 range): every pod gets one address of each
/// family, PodSandboxStatus says IPv4 first (primary) and IPv6 in additional_ips, the pod
/// has both on eth0, and pods reach each other over TCP on IPv6.
async fn dual_stack(plugins: PluginSet) {
    let net = TestNetwork::dual_stack(plugins);
    let mut env = start(&net).await;
    let v6_prefix = net.subnet_v6.clone().expect("dual-stack network");
    let v6_prefix = v6_prefix.trim_end_matches("::/64");

    let server = env.run_pod("server6").await;
    let client = env.run_pod("client6").await;
    let mut addresses = Vec::new();
    for pod in [&server, &client] {
        let status = network_status(&mut env, pod).await;
        let v4: std::net::IpAddr = status.ip.parse().unwrap_or_else(|e| panic!("primary pod IP {:?}: {e}", status.ip));
        assert!(v4.is_ipv4() && status.ip.starts_with(net.subnet.trim_end_matches("0/24")), "primary {v4} in {}", net.subnet);
        let additional: Vec<&str> = status.additional_ips.iter().map(|ip| ip.ip.as_str()).collect();
        assert_eq!(additional.len(), 1, "one additional IP: {additional:?}");
        let v6: std::net::IpAddr = additional[0].parse().expect("additional IP");
        assert!(v6.is_ipv6() && additional[0].starts_with(v6_prefix), "additional {v6} in {v6_prefix}::/64");
        addresses.push((status.ip.clone(), additional[0].to_string()));
    }
    assert_eq!(net.allocated_ips().len(), 4, "two IPs per pod: {:?}", net.allocated_ips());

    let (server_v4, server_v6) = addresses[0].clone();
    let httpd = run_httpd(&mut env, &server, 8080, "hello-over-ipv6").await;
    let addrs = env.exec_ok(&httpd, &["ip", "-o", "addr", "show", "dev", "eth0"]).await;
    assert!(addrs.contains(&format!("inet {server_v4}/24")) && addrs.contains(&format!("inet6 {server_v6}/64")), "{addrs}");
    let wget = run_sleeper(&mut env, &client).await;
    assert_eq!(wget_in(&mut env, &wget, &format!("http://[{server_v6}]:8080/")).await, "hello-over-ipv6");
    assert_eq!(wget_in(&mut env, &wget, &format!("http://{server_v4}:8080/")).await, "hello-over-ipv6");

    env.remove_all_pods().await;
    net.assert_clean(&cache_dir(env.berthd.root()));
    env.finish().await;
}

#[tokio::test]
async fn builtin_dual_stack_pods() {
    dual_stack(PluginSet::Builtin).await;
}

#[tokio::test]
async fn reference_dual_stack_pods() {
    require_reference_plugins();
    dual_stack(PluginSet::Reference).await;
}
