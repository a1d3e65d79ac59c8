//! `portmap`: hostPort mappings (`runtimeConfig.portMappings`) as nftables DNAT in berth's
//! own table (`nftTable`, default `berth-portmap`).
//!
//! The table has static base chains (their rules are rewritten on every ADD, in the same
//! transaction, so they never pile up) and two regular chains holding one attachment's
//! rules, each tagged with a comment derived from network + container id + ifname:
//! - `hostports`: `[ip daddr HOSTIP] tcp dport HP dnat ip to POD:CP`, entered from
//!   prerouting (traffic from other pods and hosts) and output (the host itself), for
//!   destinations that are the host's own addresses (`fib daddr type local`);
//! - `hairpin`: masquerade for a pod reaching itself through its hostPort.
//!
//! Localhost: `curl 127.0.0.1:HP` is DNATed in output; the static postrouting rule
//! masquerades its 127.0.0.0/8 source, and `route_localnet=1` is set on the host interface
//! that routes to the pod (the bridge), without which the kernel drops such packets.
//! That sysctl is the only host setting portmap changes. IPv6 has no route_localnet:
//! `[::1]:HP` is not mapped.

use std::net::IpAddr;

use serde::Deserialize;
use tracing::debug;

use crate::plugins::bridge::rule_tag;
use crate::plugins::netlink::Netlink;
use crate::plugins::netns::write_sysctl;
use crate::plugins::nft::{self, Table};
use crate::plugins::{common_conf, internal, invalid_config, parse_json, result_bytes};
use crate::types::{CniResult, Command, PluginEnv, PluginError};

pub const DEFAULT_TABLE: &str = "berth-portmap";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn default_protocol() -> String {
    "tcp".into()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortmapConf {
    #[serde(default)]
    nft_table: Option<String>,
    /// Masquerade hairpin traffic (a pod to its own hostPort); on unless set false.
    #[serde(default = "yes")]
    snat: bool,
    #[serde(default)]
    runtime_config: RuntimeConfig,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
}

/// The pod's addresses a mapping points at: the first IPv4 and the first IPv6 of the
/// sandbox interfaces in the previous result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodAddrs {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

impl PodAddrs {
    pub fn from_result(result: &CniResult) -> PodAddrs {
        let in_sandbox = |idx: Option<usize>| match idx {
            Some(i) => result
                .interfaces
                .get(i)
                .is_none_or(|iface| !iface.sandbox.is_empty()),
            None => true,
        };
        let ips: Vec<IpAddr> = result
            .ips
            .iter()
            .filter(|ip| in_sandbox(ip.interface))
            .filter_map(|ip| ip.ip())
            .collect();
        PodAddrs {
            v4: ips.iter().copied().find(IpAddr::is_ipv4),
            v6: ips.iter().copied().find(IpAddr::is_ipv6),
        }
    }
}

pub fn run(command: Command, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    let value = parse_json(stdin)?;
    let common = common_conf(&value)?;
    let conf: PortmapConf = serde_json::from_value(value)
        .map_err(|e| invalid_config(format!("portmap config: {e}")))?;
    let table = Table::inet(conf.nft_table.as_deref().unwrap_or(DEFAULT_TABLE))?;
    let tag = rule_tag(&common.name, &env.container_id, &env.ifname);
    let mappings = &conf.runtime_config.port_mappings;
    for m in mappings {
        validate(m)?;
    }
    match command {
        Command::Add => {
            let prev = common
                .prev_result
                .ok_or_else(|| invalid_config("portmap must be chained: no prevResult"))?;
            if !mappings.is_empty() {
                let pod = PodAddrs::from_result(&prev);
                if pod.v4.is_none() && pod.v6.is_none() {
                    return Err(invalid_config(
                        "portmap: the previous result has no pod address",
                    ));
                }
                // A repeated ADD (no DEL between, against the spec) doubles the rules
                // harmlessly: DEL removes every rule with the tag.
                nft::apply(&ruleset(&table, mappings, pod, &tag, conf.snat))?;
                if let Some(v4) = pod.v4 {
                    enable_route_localnet(v4)?;
                }
                debug!(container = %env.container_id, ?mappings, "portmap: mapped");
            }
            Ok(result_bytes(&prev, &common.cni_version))
        }
        Command::Del => {
            let removed = nft::delete_tagged(&table, &tag)?;
            debug!(container = %env.container_id, removed, "portmap: unmapped");
            Ok(Vec::new())
        }
        Command::Check => {
            if !mappings.is_empty() && !nft::has_tagged(&table, &tag)? {
                return Err(internal("portmap rules are missing"));
            }
            Ok(Vec::new())
        }
        Command::Version => Ok(crate::plugins::version_answer()),
    }
}

fn validate(m: &PortMapping) -> Result<(), PluginError> {
    if m.host_port == 0 || m.container_port == 0 {
        return Err(invalid_config(format!(
            "port mapping {}:{} has a zero port",
            m.host_port, m.container_port
        )));
    }
    if !matches!(
        m.protocol.to_ascii_lowercase().as_str(),
        "tcp" | "udp" | "sctp"
    ) {
        return Err(invalid_config(format!(
            "port mapping protocol {:?} is not tcp, udp or sctp",
            m.protocol
        )));
    }
    if !m.host_ip.is_empty() && m.host_ip.parse::<IpAddr>().is_err() {
        return Err(invalid_config(format!(
            "port mapping hostIP {:?} is not an address",
            m.host_ip
        )));
    }
    Ok(())
}

/// The ADD transaction: base chains (rules rewritten), then this attachment's tagged rules.
pub fn ruleset(
    table: &Table,
    mappings: &[PortMapping],
    pod: PodAddrs,
    tag: &str,
    snat: bool,
) -> String {
    let t = table.spec();
    let mut out = format!(
        "add table {t}\n\
         add chain {t} hostports\n\
         add chain {t} hairpin\n\
         add chain {t} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\n\
         add chain {t} output {{ type nat hook output priority -100; policy accept; }}\n\
         add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\n\
         flush chain {t} prerouting\n\
         flush chain {t} output\n\
         flush chain {t} postrouting\n\
         add rule {t} prerouting fib daddr type local jump hostports\n\
         add rule {t} output fib daddr type local jump hostports\n\
         add rule {t} postrouting ct status dnat jump hairpin\n\
         add rule {t} postrouting ip saddr 127.0.0.0/8 ct status dnat masquerade\n"
    );
    for m in mappings {
        let proto = m.protocol.to_ascii_lowercase();
        let host_ip: Option<IpAddr> = m
            .host_ip
            .parse()
            .ok()
            .filter(|ip: &IpAddr| !ip.is_unspecified());
        for pod_ip in [pod.v4, pod.v6].into_iter().flatten() {
            if host_ip.is_some_and(|h| h.is_ipv4() != pod_ip.is_ipv4()) {
                continue; // a hostIP of the other family
            }
            let (family, nfproto, target) = match pod_ip {
                IpAddr::V4(v4) => ("ip", "ipv4", format!("{v4}:{}", m.container_port)),
                IpAddr::V6(v6) => ("ip6", "ipv6", format!("[{v6}]:{}", m.container_port)),
            };
            let daddr = host_ip
                .map(|h| format!("{family} daddr {h} "))
                .unwrap_or_default();
            out.push_str(&format!(
                "add rule {t} hostports meta nfproto {nfproto} {daddr}{proto} dport {} dnat {family} to {target} comment \"{tag}\"\n",
                m.host_port
            ));
        }
    }
    if snat {
        for pod_ip in [pod.v4, pod.v6].into_iter().flatten() {
            let family = if pod_ip.is_ipv4() { "ip" } else { "ip6" };
            out.push_str(&format!(
                "add rule {t} hairpin {family} saddr {pod_ip} {family} daddr {pod_ip} masquerade comment \"{tag}\"\n"
            ));
        }
    }
    out
}

/// Sets route_localnet on the host interface that routes to the pod, so that connections
/// to 127.0.0.1:hostPort, DNATed to the pod, may leave through it.
fn enable_route_localnet(pod_ip: IpAddr) -> Result<(), PluginError> {
    let mut nl = Netlink::new()?;
    let Some(oif) = nl.route_oif(pod_ip)? else {
        return Ok(());
    };
    let Some(link) = nl.link_by_index(oif)? else {
        return Ok(());
    };
    let key = format!("net/ipv4/conf/{}/route_localnet", link.name);
    write_sysctl(&key, "1").map_err(|e| internal(format!("sysctl {key}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(hp: u16, cp: u16, proto: &str, host_ip: &str) -> PortMapping {
        PortMapping {
            host_port: hp,
            container_port: cp,
            protocol: proto.into(),
            host_ip: host_ip.into(),
        }
    }

    #[test]
    fn ruleset_dual_stack() {
        let table = Table::inet("pm-test").unwrap();
        let pod = PodAddrs {
            v4: Some("10.3.0.5".parse().unwrap()),
            v6: Some("fd00:3::5".parse().unwrap()),
        };
        let rules = ruleset(
            &table,
            &[
                mapping(8080, 80, "tcp", ""),
                mapping(5353, 53, "UDP", "127.0.0.1"),
            ],
            pod,
            "berth-x",
            true,
        );
        assert!(rules.contains("flush chain inet pm-test prerouting\n"));
        assert!(rules.contains(
            "add rule inet pm-test hostports meta nfproto ipv4 tcp dport 8080 dnat ip to 10.3.0.5:80 comment \"berth-x\"\n"
        ));
        assert!(rules.contains(
            "add rule inet pm-test hostports meta nfproto ipv6 tcp dport 8080 dnat ip6 to [fd00:3::5]:80 comment \"berth-x\"\n"
        ));
        // A v4 hostIP maps only the v4 address.
        assert!(rules.contains(
            "meta nfproto ipv4 ip daddr 127.0.0.1 udp dport 5353 dnat ip to 10.3.0.5:53"
        ));
        assert!(!rules.contains("udp dport 5353 dnat ip6"));
        assert!(rules.contains("add rule inet pm-test hairpin ip saddr 10.3.0.5 ip daddr 10.3.0.5 masquerade comment \"berth-x\"\n"));
        assert!(rules.contains("ip6 saddr fd00:3::5 ip6 daddr fd00:3::5 masquerade"));
        let no_snat = ruleset(&table, &[mapping(1, 2, "tcp", "")], pod, "t", false);
        assert!(!no_snat.contains("add rule inet pm-test hairpin"));
    }

    #[test]
    fn pod_addresses_from_result() {
        let result = CniResult::parse(
            br#"{"cniVersion":"1.0.0","interfaces":[{"name":"br"},{"name":"eth0","sandbox":"/ns"}],
            "ips":[{"address":"10.3.0.1/24","interface":0},{"address":"10.3.0.5/24","interface":1},{"address":"fd00::5/64","interface":1}]}"#,
            "1.0.0",
        )
        .unwrap();
        let pod = PodAddrs::from_result(&result);
        assert_eq!(pod.v4, Some("10.3.0.5".parse().unwrap()));
        assert_eq!(pod.v6, Some("fd00::5".parse().unwrap()));
    }

    #[test]
    fn bad_mappings() {
        assert!(validate(&mapping(0, 80, "tcp", "")).is_err());
        assert!(validate(&mapping(80, 80, "icmp", "")).is_err());
        assert!(validate(&mapping(80, 80, "tcp", "nope")).is_err());
        assert!(validate(&mapping(80, 80, "udp", "::")).is_ok());
    }
}
