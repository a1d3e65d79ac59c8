//! The pod network over CNI: ADD on RunPodSandbox, DEL on StopPodSandbox, DEL of leftovers
//! at startup, with the first config of the conf dir, or berth's default network written
//! to `<root>/cni/net.d` when there is none.
//!
//! Every pod is attached as CNI container id = pod id, ifname `eth0`, netns = the pinned
//! `<state>/pods/<id>/ns/net`. hostPorts go to plugins that declare `portMappings`,
//! bandwidth annotations to those that declare `bandwidth`. The client blocks (plugins run
//! in-process or are exec'd), so every call runs on the blocking pool.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_cni::types::{parse_cidr, Bandwidth, CapabilityArgs, ConfList, PortMapping};
use berth_cni::{Attachment, ClientConfig, CniClient, CniError};
use k8s_cri::v1::{PodSandboxConfig, Protocol};

use super::network::{NetworkFuture, PodNetwork, PodNetworkRequest, PodNetworkStatus};
use crate::config::Config;
use crate::errors::RuntimeError;

/// The interface name pods get, as kubelet expects.
pub const POD_IFNAME: &str = "eth0";
/// The file berthd writes its default network to.
pub const DEFAULT_CONFLIST_FILE: &str = "10-berth.conflist";

/// What berth's default network is made of.
#[derive(Debug, Clone)]
struct DefaultNetwork {
    dir: PathBuf,
    name: String,
    bridge: String,
    /// host-local's allocations.
    data_dir: PathBuf,
    /// IPv4 range, IPv6 range ("" = none).
    cidrs: (String, String),
}

impl DefaultNetwork {
    fn path(&self) -> PathBuf {
        self.dir.join(DEFAULT_CONFLIST_FILE)
    }

    /// The default conflist: bridge (+ host-local IPAM), portmap, and loopback last (a
    /// chained loopback passes prevResult through and brings `lo` up).
    fn conflist(&self) -> serde_json::Value {
        let (v4, v6) = &self.cidrs;
        let mut ranges = Vec::new();
        let mut routes = Vec::new();
        if !v4.is_empty() {
            ranges.push(serde_json::json!([{ "subnet": v4 }]));
            routes.push(serde_json::json!({ "dst": "0.0.0.0/0" }));
        }
        if !v6.is_empty() {
            ranges.push(serde_json::json!([{ "subnet": v6 }]));
            routes.push(serde_json::json!({ "dst": "::/0" }));
        }
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": ranges,
                        "routes": routes,
                        "dataDir": self.data_dir,
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "loopback" }
            ]
        })
    }

    /// Writes the conflist when it is missing or differs (a new pod CIDR). Atomic.
    fn write(&self) -> Result<bool, RuntimeError> {
        let path = self.path();
        let text = serde_json::to_string_pretty(&self.conflist()).map_err(|e| RuntimeError::internal_ctx("default conflist", e))?;
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            return Ok(false);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| RuntimeError::internal_ctx(format!("creating {}", self.dir.display()), e))?;
        let tmp = path.with_extension("conflist.tmp");
        std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| RuntimeError::internal_ctx(format!("writing {}", path.display()), e))?;
        tracing::info!(path = %path.display(), pod_cidr = %self.cidrs.0, pod_cidr_v6 = %self.cidrs.1, "wrote berth's default pod network config");
        Ok(true)
    }
}

/// The pod network through a [`CniClient`].
pub struct CniNetwork {
    client: Arc<CniClient>,
    /// Set when berthd may use its default network (conf_dir empty).
    default: Option<Mutex<DefaultNetwork>>,
}

impl CniNetwork {
    /// From berthd's config; writes the default network's conflist when conf_dir holds none.
    pub fn from_config(config: &Config) -> Result<CniNetwork, RuntimeError> {
        let net = &config.network;
        let client = CniClient::new(ClientConfig {
            conf_dir: net.conf_dir.clone(),
            bin_dirs: net.bin_dirs.clone(),
            cache_dir: config.cni_cache_dir(),
            plugin_timeout: Duration::from_secs(net.plugin_timeout_secs.max(1)),
            use_builtins: net.builtin_plugins,
        });
        let default = net.write_default_conflist.then(|| {
            Mutex::new(DefaultNetwork {
                dir: config.cni_default_conf_dir(),
                name: net.default_network_name.clone(),
                bridge: net.default_bridge.clone(),
                data_dir: config.root.join("cni").join("networks"),
                cidrs: (net.pod_cidr.clone(), net.pod_cidr_v6.clone()),
            })
        });
        let network = CniNetwork { client: Arc::new(client), default };
        if network.uses_default()? {
            if let Some(default) = &network.default {
                lock(default).write()?;
            }
        }
        Ok(network)
    }

    pub fn client(&self) -> &CniClient {
        &self.client
    }

    /// Whether conf_dir has no config of its own (and the default network applies).
    fn uses_default(&self) -> Result<bool, RuntimeError> {
        let files = berth_cni::conf::config_files(&self.client.config().conf_dir).map_err(RuntimeError::internal)?;
        Ok(files.is_empty() && self.default.is_some())
    }

    /// The network pods get now: conf_dir's first config, else the default one.
    fn network(&self) -> Result<ConfList, CniError> {
        match self.client.load_network() {
            Err(CniError::Conf(berth_cni::conf::ConfError::NotFound(dir))) => match &self.default {
                Some(default) => {
                    let default_dir = lock(default).dir.clone();
                    Ok(berth_cni::conf::load_first(&default_dir)?)
                }
                None => Err(CniError::Conf(berth_cni::conf::ConfError::NotFound(dir))),
            },
            other => other,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A CNI failure as the RPC's error: the plugin's own message, and what to look at.
fn cni_error(context: &str, err: CniError) -> RuntimeError {
    match err {
        CniError::Conf(_) | CniError::PluginNotFound { .. } => RuntimeError::FailedPrecondition(format!("{context}: {err}")),
        _ => RuntimeError::Internal(format!("{context}: {err}")),
    }
}

/// kubelet's CNI_ARGS.
fn cni_args(sandbox_id: &str, config: &PodSandboxConfig) -> Vec<(String, String)> {
    let meta = config.metadata.clone().unwrap_or_default();
    vec![
        ("IgnoreUnknown".into(), "1".into()),
        ("K8S_POD_NAMESPACE".into(), meta.namespace),
        ("K8S_POD_NAME".into(), meta.name),
        ("K8S_POD_INFRA_CONTAINER_ID".into(), sandbox_id.to_string()),
        ("K8S_POD_UID".into(), meta.uid),
    ]
}

/// The runtime config kubelet's pod asks for: hostPorts, and the bandwidth annotations.
pub fn capability_args(config: &PodSandboxConfig) -> Result<CapabilityArgs, RuntimeError> {
    let mut port_mappings = Vec::new();
    for mapping in &config.port_mappings {
        if mapping.host_port <= 0 {
            continue; // Only hostPorts need the network.
        }
        let port = |value: i32, what: &str| {
            u16::try_from(value).ok().filter(|p| *p != 0).ok_or_else(|| RuntimeError::InvalidArgument(format!("port mapping: {what} {value} is not a port")))
        };
        let protocol = match Protocol::try_from(mapping.protocol) {
            Ok(Protocol::Udp) => "udp",
            Ok(Protocol::Sctp) => "sctp",
            _ => "tcp",
        };
        port_mappings.push(PortMapping {
            host_port: port(mapping.host_port, "hostPort")?,
            container_port: port(mapping.container_port, "containerPort")?,
            protocol: protocol.to_string(),
            host_ip: mapping.host_ip.clone(),
        });
    }
    let rate = |key: &str| -> Result<u64, RuntimeError> {
        match config.annotations.get(key) {
            Some(value) => parse_quantity(value).ok_or_else(|| RuntimeError::InvalidArgument(format!("annotation {key}: {value:?} is not a quantity"))),
            None => Ok(0),
        }
    };
    let ingress = rate("kubernetes.io/ingress-bandwidth")?;
    let egress = rate("kubernetes.io/egress-bandwidth")?;
    // Bursts unlimited, as kubelet and containerd pass them.
    let burst = |rate: u64| if rate > 0 { u64::from(u32::MAX) } else { 0 };
    let bandwidth = (ingress > 0 || egress > 0).then(|| Bandwidth {
        ingress_rate: ingress,
        ingress_burst: burst(ingress),
        egress_rate: egress,
        egress_burst: burst(egress),
    });
    Ok(CapabilityArgs { port_mappings, bandwidth, ..Default::default() })
}

/// A Kubernetes quantity as a number (`10M`, `1Gi`, `500k`, `1000`); None when malformed.
pub fn parse_quantity(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        _ => return None,
    };
    let value = number * factor;
    (value.is_finite() && value >= 0.0).then_some(value as u64)
}

/// The pod's IPs for CRI: IPv4 first (the primary, as kubelet and containerd prefer),
/// otherwise in the plugin's order.
fn pod_ips(mut ips: Vec<IpAddr>) -> Vec<String> {
    ips.dedup();
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.iter().map(ToString::to_string).collect()
}

/// Splits kubelet's pod CIDR (`10.1.0.0/24` or `10.1.0.0/24,fd00::/64`) into v4 and v6.
fn split_pod_cidrs(pod_cidr: &str) -> Result<(String, String), RuntimeError> {
    let mut v4 = String::new();
    let mut v6 = String::new();
    for cidr in pod_cidr.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match parse_cidr(cidr) {
            Some((IpAddr::V4(_), _)) if v4.is_empty() => v4 = cidr.to_string(),
            Some((IpAddr::V6(_), _)) if v6.is_empty() => v6 = cidr.to_string(),
            _ => return Err(RuntimeError::InvalidArgument(format!("pod CIDR {pod_cidr:?}: {cidr:?} is not one IPv4 and/or one IPv6 CIDR"))),
        }
    }
    Ok((v4, v6))
}

fn has_loopback(list: &ConfList) -> bool {
    list.plugins.iter().any(|p| p.plugin_type == "loopback")
}

impl PodNetwork for CniNetwork {
    fn setup<'a>(&'a self, pod: &'a PodNetworkRequest) -> NetworkFuture<'a, PodNetworkStatus> {
        Box::pin(async move {
            let list = self.network().map_err(|e| cni_error("pod network config", e))?;
            let attachment = Attachment {
                container_id: pod.sandbox_id.clone(),
                netns: pod.netns_path.clone(),
                ifname: POD_IFNAME.to_string(),
                args: cni_args(&pod.sandbox_id, &pod.config),
                capability_args: capability_args(&pod.config)?,
            };
            let client = self.client.clone();
            let started = std::time::Instant::now();
            let network_name = list.name.clone();
            let result = tokio::task::spawn_blocking(move || -> Result<_, RuntimeError> {
                // Pods always get `lo` up, as with containerd's separate loopback network,
                // also when the cluster's conflist has no loopback plugin.
                if !has_loopback(&list) {
                    super::namespaces::bring_loopback_up(&attachment.netns)?;
                }
                client.add(&list, &attachment).map_err(|e| cni_error(&format!("CNI ADD of network {:?}", list.name), e))
            })
            .await??;
            let ips = pod_ips(result.sandbox_ips(POD_IFNAME));
            tracing::info!(
                sandbox = %pod.sandbox_id, network = %network_name, ips = ?ips,
                elapsed_us = started.elapsed().as_micros() as u64, "pod network set up"
            );
            Ok(PodNetworkStatus { ips })
        })
    }

    fn teardown<'a>(&'a self, pod: &'a PodNetworkRequest) -> NetworkFuture<'a, ()> {
        Box::pin(async move {
            let client = self.client.clone();
            let id = pod.sandbox_id.clone();
            let started = std::time::Instant::now();
            let deleted = tokio::task::spawn_blocking(move || client.del_container(&id))
                .await?
                .map_err(|e| cni_error(&format!("CNI DEL of pod {}", pod.sandbox_id), e))?;
            if deleted > 0 {
                tracing::info!(sandbox = %pod.sandbox_id, elapsed_us = started.elapsed().as_micros() as u64, "pod network torn down");
            }
            Ok(())
        })
    }

    fn ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Ready when a config loads and every plugin it names can be run.
    fn readiness(&self) -> Result<(), String> {
        let list = self.network().map_err(|e| e.to_string())?;
        self.client.check_plugins(&list).map_err(|e| format!("network {:?} ({}): {e}", list.name, list.source.display()))
    }

    fn update_pod_cidr(&self, pod_cidr: &str) -> Result<(), RuntimeError> {
        let cidrs = split_pod_cidrs(pod_cidr)?;
        if cidrs.0.is_empty() && cidrs.1.is_empty() {
            return Ok(());
        }
        let Some(default) = &self.default else { return Ok(()) };
        let mut default = lock(default);
        if default.cidrs == cidrs {
            return Ok(());
        }
        default.cidrs = cidrs;
        // Only berth's own file is rewritten; an admin's conflist is never touched.
        if self.uses_default()? {
            default.write()?;
        }
        Ok(())
    }

    fn reconcile<'a>(&'a self, live: &'a HashSet<String>) -> NetworkFuture<'a, usize> {
        Box::pin(async move {
            let client = self.client.clone();
            let live = live.clone();
            tokio::task::spawn_blocking(move || -> Result<usize, RuntimeError> {
                let entries = client.cache().list().map_err(RuntimeError::internal)?;
                let mut deleted = 0;
                for entry in entries.iter().filter(|e| !live.contains(&e.container_id)) {
                    match client.del_entry(entry) {
                        Ok(()) => {
                            deleted += 1;
                            tracing::info!(sandbox = %entry.container_id, network = %entry.network_name, "released the network of a pod that no longer exists");
                        }
                        Err(err) => tracing::warn!(sandbox = %entry.container_id, error = %err, "could not release the network of a pod that no longer exists"),
                    }
                }
                Ok(deleted)
            })
            .await?
        })
    }
}

/// The default network's conflist path for a config (tests and docs).
pub fn default_conflist_path(config: &Config) -> PathBuf {
    config.cni_default_conf_dir().join(DEFAULT_CONFLIST_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::PortMapping as CriPortMapping;

    #[test]
    fn host_ports_and_bandwidth_become_runtime_config() {
        let mut config = PodSandboxConfig::default();
        config.port_mappings = vec![
            CriPortMapping { protocol: Protocol::Tcp as i32, container_port: 80, host_port: 8080, host_ip: String::new() },
            CriPortMapping { protocol: Protocol::Udp as i32, container_port: 53, host_port: 5353, host_ip: "127.0.0.1".into() },
            // No hostPort: nothing for the network.
            CriPortMapping { protocol: Protocol::Tcp as i32, container_port: 9000, host_port: 0, host_ip: String::new() },
        ];
        config.annotations.insert("kubernetes.io/ingress-bandwidth".into(), "10M".into());
        let caps = capability_args(&config).unwrap();
        assert_eq!(caps.port_mappings.len(), 2);
        assert_eq!(caps.port_mappings[1], PortMapping { host_port: 5353, container_port: 53, protocol: "udp".into(), host_ip: "127.0.0.1".into() });
        let bw = caps.bandwidth.unwrap();
        assert_eq!((bw.ingress_rate, bw.egress_rate), (10_000_000, 0));
        config.port_mappings[0].host_port = 70000;
        assert!(capability_args(&config).is_err());
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1000"), Some(1000));
        assert_eq!(parse_quantity("1Mi"), Some(1 << 20));
        assert_eq!(parse_quantity("1.5k"), Some(1500));
        assert_eq!(parse_quantity("3x"), None);
    }

    #[test]
    fn ips_v4_first_and_pod_cidrs() {
        let ips = pod_ips(vec!["fd00::2".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(ips, ["10.0.0.2", "fd00::2"]);
        assert_eq!(split_pod_cidrs("10.1.0.0/24, fd00:1::/64").unwrap(), ("10.1.0.0/24".into(), "fd00:1::/64".into()));
        assert!(split_pod_cidrs("10.1.0.0/24,10.2.0.0/24").is_err());
        assert!(split_pod_cidrs("bogus").is_err());
    }

    #[test]
    fn default_network_written_when_conf_dir_is_empty_and_follows_the_pod_cidr() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.root = dir.path().join("root");
        config.network.conf_dir = dir.path().join("net.d");
        config.network.bin_dirs = vec![dir.path().join("bin")];
        let network = CniNetwork::from_config(&config).unwrap();
        let path = default_conflist_path(&config);
        let list = network.network().unwrap();
        assert_eq!(list.name, "berth");
        assert_eq!(list.source, path);
        let types: Vec<&str> = list.plugins.iter().map(|p| p.plugin_type.as_str()).collect();
        assert_eq!(types, ["bridge", "portmap", "loopback"]);
        assert!(std::fs::read_to_string(&path).unwrap().contains("10.88.0.0/16"));
        network.update_pod_cidr("10.5.0.0/24,fd00:5::/64").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("10.5.0.0/24") && text.contains("fd00:5::/64") && text.contains("::/0"), "{text}");
        // An admin's config wins, and is never rewritten.
        std::fs::create_dir_all(&config.network.conf_dir).unwrap();
        let admin = config.network.conf_dir.join("50-admin.conflist");
        let admin_text = r#"{"cniVersion":"0.4.0","name":"admin","plugins":[{"type":"ptp"}]}"#;
        std::fs::write(&admin, admin_text).unwrap();
        assert_eq!(network.network().unwrap().name, "admin");
        network.update_pod_cidr("10.6.0.0/24").unwrap();
        assert_eq!(std::fs::read_to_string(&admin).unwrap(), admin_text);
        // ptp is neither built in nor in bin_dirs: not ready, and the message says why.
        let why = network.readiness().unwrap_err();
        assert!(why.contains("ptp"), "{why}");
    }
}
