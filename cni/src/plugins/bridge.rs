//! `bridge`: a Linux bridge on the host, one veth pair per pod (host end on the bridge, the
//! peer created directly inside the pod's namespace as `ifname`), addresses and routes from
//! the IPAM plugin, the gateway address on the bridge, and optional masquerading (nftables,
//! in berth's own table).
//!
//! Host settings it changes: `net.ipv4.conf.<bridge>.forwarding=1` when the bridge is a
//! gateway (only packets arriving from the bridge are routed; the global ip_forward and
//! other interfaces are left alone). Nothing else outside its own links and table.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, warn};

use crate::plugins::delegate;
use crate::plugins::ip::Cidr;
use crate::plugins::netlink::{parse_mac, Link, Netlink, RouteSpec};
use crate::plugins::netns::{write_sysctl, Netns};
use crate::plugins::nft::{self, Table};
use crate::plugins::{
    common_conf, fnv64, internal, invalid_config, parse_json, result_bytes, CommonConf,
};
use crate::types::{CniResult, Command, Dns, Interface, PluginEnv, PluginError, Route};

/// The nftables table bridge's masquerade rules go into unless `ipMasqTable` says otherwise.
pub const DEFAULT_MASQ_TABLE: &str = "berth-masq";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeConf {
    #[serde(default = "default_bridge")]
    bridge: String,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    ip_masq: bool,
    /// berth's own key: the nft table for ipMasq rules (tests use their own).
    #[serde(default)]
    ip_masq_table: Option<String>,
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    ipam: Option<Value>,
    #[serde(default)]
    dns: Dns,
    #[serde(default)]
    runtime_config: RuntimeConfig,
}

#[derive(Debug, Default, Deserialize)]
struct RuntimeConfig {
    #[serde(default)]
    mac: Option<String>,
}

fn default_bridge() -> String {
    "cni0".to_string()
}

/// Everything a call needs, parsed and checked.
struct Call<'a> {
    env: &'a PluginEnv,
    stdin: &'a [u8],
    common: CommonConf,
    conf: BridgeConf,
    ipam_type: Option<String>,
    masq_table: Table,
}

impl<'a> Call<'a> {
    fn parse(env: &'a PluginEnv, stdin: &'a [u8]) -> Result<Call<'a>, PluginError> {
        let value = parse_json(stdin)?;
        let common = common_conf(&value)?;
        let mut conf: BridgeConf = serde_json::from_value(value)
            .map_err(|e| invalid_config(format!("bridge config: {e}")))?;
        if conf.is_default_gateway {
            conf.is_gateway = true;
        }
        check_ifname("bridge", &conf.bridge)?;
        let ipam_type = match &conf.ipam {
            None => None,
            Some(ipam) => Some(
                ipam.get("type")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| invalid_config("bridge: ipam has no \"type\""))?
                    .to_string(),
            ),
        };
        let masq_table = Table::inet(conf.ip_masq_table.as_deref().unwrap_or(DEFAULT_MASQ_TABLE))?;
        Ok(Call {
            env,
            stdin,
            common,
            conf,
            ipam_type,
            masq_table,
        })
    }

    /// The host end's name: derived from network, container and interface so that DEL
    /// finds it without any state, and a retried ADD replaces its own leftover.
    fn host_veth_name(&self) -> String {
        let hash = fnv64(&[&self.common.name, &self.env.container_id, &self.env.ifname]);
        format!("veth{:011x}", hash & 0xfff_ffff_ffff)
    }

    fn tag(&self) -> String {
        rule_tag(&self.common.name, &self.env.container_id, &self.env.ifname)
    }
}

/// The comment that marks one attachment's nft rules (bridge and portmap use the same).
pub fn rule_tag(network: &str, container_id: &str, ifname: &str) -> String {
    format!("berth-{:016x}", fnv64(&[network, container_id, ifname]))
}

pub(crate) fn check_ifname(what: &str, name: &str) -> Result<(), PluginError> {
    if name.is_empty()
        || name.len() > 15
        || name.contains(['/', ' ', ':'])
        || name == "."
        || name == ".."
    {
        return Err(invalid_config(format!(
            "{what} name {name:?} is not a valid interface name"
        )));
    }
    Ok(())
}

pub fn run(command: Command, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    let call = Call::parse(env, stdin)?;
    match command {
        Command::Add => add(&call),
        Command::Del => del(&call).map(|_| Vec::new()),
        Command::Check => check(&call).map(|_| Vec::new()),
        Command::Version => Ok(crate::plugins::version_answer()),
    }
}

fn add(call: &Call) -> Result<Vec<u8>, PluginError> {
    check_ifname("CNI_IFNAME", &call.env.ifname)?;
    let netns = Netns::open(&call.env.netns)
        .map_err(|e| internal(format!("open netns {}: {e}", call.env.netns.display())))?;
    let mut host = Netlink::new()?;
    let bridge = ensure_bridge(&mut host, &call.conf)?;

    let ipam_result = match &call.ipam_type {
        Some(ipam_type) => {
            delegate::ipam_add(ipam_type, call.env, call.stdin, &call.common.cni_version)?
        }
        None => CniResult::default(),
    };
    match attach(call, &mut host, &bridge, &netns, ipam_result) {
        Ok(result) => Ok(result_bytes(&result, &call.common.cni_version)),
        Err(e) => {
            // Nothing of a failed ADD stays: the veth (its peer goes with it), the
            // addresses, the masquerade rules.
            warn!(container = %call.env.container_id, error = %e, "bridge ADD failed; undoing it");
            if let Err(undo) = del(call) {
                warn!(container = %call.env.container_id, error = %undo, "bridge: undoing a failed ADD");
            }
            Err(e)
        }
    }
}

fn ensure_bridge(nl: &mut Netlink, conf: &BridgeConf) -> Result<Link, PluginError> {
    let link = match nl.link_by_name(&conf.bridge)? {
        Some(link) => link,
        None => {
            match nl.create_bridge(&conf.bridge, conf.mtu) {
                Ok(()) => debug!(bridge = %conf.bridge, "bridge: created"),
                // Another ADD created it meanwhile.
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
            nl.require_link(&conf.bridge)?
        }
    };
    if link.kind.as_deref() != Some("bridge") {
        return Err(invalid_config(format!(
            "link {:?} exists and is not a bridge (it is {:?})",
            conf.bridge,
            link.kind.as_deref().unwrap_or("unknown")
        )));
    }
    if !link.up {
        nl.set_up(link.index)?;
    }
    if conf.promisc_mode {
        nl.set_promisc(link.index, true)?;
    }
    Ok(link)
}

fn attach(
    call: &Call,
    host: &mut Netlink,
    bridge: &Link,
    netns: &Netns,
    ipam_result: CniResult,
) -> Result<CniResult, PluginError> {
    let env = call.env;
    let conf = &call.conf;
    let host_name = call.host_veth_name();
    let mac = match &conf.runtime_config.mac {
        Some(m) => Some(
            parse_mac(m)
                .ok_or_else(|| invalid_config(format!("runtimeConfig.mac {m:?} is not a MAC")))?,
        ),
        None => None,
    };
    // A leftover of an earlier, interrupted ADD of this same attachment.
    host.delete_link_by_name(&host_name)?;
    host.create_veth(&host_name, &env.ifname, netns, conf.mtu, mac)?;
    let host_veth = host.require_link(&host_name)?;
    host.set_master_up(host_veth.index, bridge.index)?;
    if conf.hairpin_mode {
        host.set_hairpin(host_veth.index, true)?;
    }

    let addrs: Vec<Cidr> = ipam_result
        .ips
        .iter()
        .map(|ip| {
            ip.address
                .parse::<Cidr>()
                .map_err(|e| internal(format!("IPAM result: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let gateway_of = |family_v4: bool| -> Option<IpAddr> {
        ipam_result
            .ips
            .iter()
            .filter_map(|ip| ip.gateway)
            .find(|gw| gw.is_ipv4() == family_v4)
    };

    // The pod side.
    let mut pod = Netlink::in_netns(netns)?;
    let pod_link = pod.require_link(&env.ifname)?;
    if addrs.iter().any(|a| !a.is_ipv4()) {
        // A namespace may start with IPv6 off on new links (host default); this pod wants it.
        let key = format!("net/ipv6/conf/{}/disable_ipv6", env.ifname);
        netns
            .run(|| write_sysctl(&key, "0"))
            .map_err(|e| internal(format!("enter netns: {e}")))?
            .map_err(|e| internal(format!("sysctl {key}: {e}")))?;
    }
    for addr in &addrs {
        pod.add_address(pod_link.index, *addr)?;
    }
    pod.set_up(pod_link.index)?;
    let mut routes: Vec<Route> = ipam_result.routes.clone();
    if conf.is_default_gateway {
        for v4 in [true, false] {
            let default_dst = if v4 { "0.0.0.0/0" } else { "::/0" };
            let has_default = routes.iter().any(|r| r.dst == default_dst);
            if let Some(gw) = gateway_of(v4).filter(|_| !has_default) {
                routes.push(Route {
                    dst: default_dst.to_string(),
                    gw: Some(gw),
                });
            }
        }
    }
    for route in &routes {
        let dst: Cidr = route
            .dst
            .parse()
            .map_err(|e| invalid_config(format!("route: {e}")))?;
        if !addrs.iter().any(|a| a.is_ipv4() == dst.is_ipv4()) {
            continue; // no address of that family: the route cannot work
        }
        let gateway = route.gw.or_else(|| gateway_of(dst.is_ipv4()));
        match pod.add_route(&RouteSpec {
            dst,
            gateway,
            oif: pod_link.index,
        }) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(libc::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The host side: gateway addresses on the bridge, forwarding from it.
    if conf.is_gateway {
        let present = host.addresses(bridge.index)?;
        for addr in &addrs {
            let Some(gw) = gateway_of(addr.is_ipv4()) else {
                continue;
            };
            if present.iter().any(|p| p.addr == gw) {
                continue;
            }
            match host.add_address(
                bridge.index,
                Cidr {
                    addr: gw,
                    prefix: addr.prefix,
                },
            ) {
                Ok(()) => debug!(bridge = %conf.bridge, %gw, "bridge: gateway address added"),
                Err(e) if e.errno() == Some(libc::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if addrs.iter().any(Cidr::is_ipv4) {
            let key = format!("net/ipv4/conf/{}/forwarding", conf.bridge);
            write_sysctl(&key, "1").map_err(|e| internal(format!("sysctl {key}: {e}")))?;
        }
    }
    if conf.ip_masq && !addrs.is_empty() {
        nft::apply(&masq_ruleset(&call.masq_table, &addrs, &call.tag()))?;
    }

    let pod_link = pod.require_link(&env.ifname)?;
    let mut result = ipam_result;
    result.cni_version = call.common.cni_version.clone();
    result.interfaces = vec![
        Interface {
            name: conf.bridge.clone(),
            mac: bridge.mac_string(),
            sandbox: String::new(),
            mtu: None,
        },
        Interface {
            name: host_name,
            mac: host_veth.mac_string(),
            sandbox: String::new(),
            mtu: None,
        },
        Interface {
            name: env.ifname.clone(),
            mac: pod_link.mac_string(),
            sandbox: env.netns.to_string_lossy().into_owned(),
            mtu: None,
        },
    ];
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    result.routes = routes;
    if !conf.dns.is_empty() {
        result.dns = conf.dns.clone();
    }
    debug!(container = %env.container_id, ips = ?addrs, "bridge: attached");
    Ok(result)
}

/// Masquerade for traffic from the pod's addresses to anywhere outside its subnet.
pub fn masq_ruleset(table: &Table, addrs: &[Cidr], tag: &str) -> String {
    let t = table.spec();
    let mut out = format!(
        "add table {t}\nadd chain {t} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
    );
    for addr in addrs {
        let (family, multicast) = if addr.is_ipv4() {
            ("ip", "224.0.0.0/4")
        } else {
            ("ip6", "ff00::/8")
        };
        out.push_str(&format!(
            "add rule {t} postrouting {family} saddr {} {family} daddr != {} {family} daddr != {multicast} masquerade comment \"{tag}\"\n",
            addr.addr,
            addr.network()
        ));
    }
    out
}

/// DEL: removes the pod's veth (if the namespace still exists), releases the addresses and
/// removes the masquerade rules. A gone namespace or pod is not an error.
fn del(call: &Call) -> Result<(), PluginError> {
    let env = call.env;
    let mut first_error: Option<PluginError> = None;
    let mut note = |e: PluginError| {
        warn!(container = %env.container_id, error = %e, "bridge DEL step failed");
        first_error.get_or_insert(e);
    };
    if !env.netns.as_os_str().is_empty() {
        if let Ok(netns) = Netns::open(&env.netns) {
            match Netlink::in_netns(&netns).and_then(|mut nl| nl.delete_link_by_name(&env.ifname)) {
                Ok(_) => {}
                Err(e) => note(e.into()),
            }
        }
    }
    // Normally gone with its peer; still there if the peer was moved or renamed.
    if let Err(e) = Netlink::new().and_then(|mut nl| nl.delete_link_by_name(&call.host_veth_name()))
    {
        note(e.into());
    }
    if let Some(ipam_type) = &call.ipam_type {
        if let Err(e) = delegate::ipam_del(ipam_type, env, call.stdin) {
            note(e);
        }
    }
    if call.conf.ip_masq {
        if let Err(e) = nft::delete_tagged(&call.masq_table, &call.tag()) {
            note(e.into());
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// CHECK: the pod's interface exists with its addresses, the host end is on the bridge,
/// and IPAM agrees.
fn check(call: &Call) -> Result<(), PluginError> {
    let env = call.env;
    let prev = call
        .common
        .prev_result
        .as_ref()
        .ok_or_else(|| invalid_config("bridge CHECK needs prevResult"))?;
    let netns = Netns::open(&env.netns)
        .map_err(|e| internal(format!("open netns {}: {e}", env.netns.display())))?;
    let mut pod = Netlink::in_netns(&netns)?;
    let pod_link = pod
        .link_by_name(&env.ifname)?
        .ok_or_else(|| internal(format!("interface {} is missing in the pod", env.ifname)))?;
    let present = pod.addresses(pod_link.index)?;
    for ip in prev
        .ips
        .iter()
        .filter_map(|ip| ip.address.parse::<Cidr>().ok())
    {
        if !present.iter().any(|p| p.addr == ip.addr) {
            return Err(internal(format!(
                "address {ip} is missing on {}",
                env.ifname
            )));
        }
    }
    let mut host = Netlink::new()?;
    let bridge = host.require_link(&call.conf.bridge)?;
    let veth = host
        .link_by_name(&call.host_veth_name())?
        .ok_or_else(|| internal(format!("host veth {} is missing", call.host_veth_name())))?;
    if veth.master != Some(bridge.index) {
        return Err(internal(format!(
            "host veth {} is not on bridge {}",
            veth.name, call.conf.bridge
        )));
    }
    if let Some(ipam_type) = &call.ipam_type {
        delegate::ipam_check(ipam_type, env, call.stdin)?;
    }
    if call.conf.ip_masq && !nft::has_tagged(&call.masq_table, &call.tag())? {
        return Err(internal("masquerade rules are missing"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masq_rules() {
        let table = Table::inet("t-masq").unwrap();
        let addrs = vec![
            "10.5.0.7/24".parse().unwrap(),
            "fd00:5::7/64".parse().unwrap(),
        ];
        let rules = masq_ruleset(&table, &addrs, "berth-1");
        assert!(rules.starts_with("add table inet t-masq\n"));
        assert!(rules.contains(
            "add rule inet t-masq postrouting ip saddr 10.5.0.7 ip daddr != 10.5.0.0/24 ip daddr != 224.0.0.0/4 masquerade comment \"berth-1\"\n"
        ));
        assert!(rules.contains(
            "ip6 saddr fd00:5::7 ip6 daddr != fd00:5::/64 ip6 daddr != ff00::/8 masquerade"
        ));
    }

    #[test]
    fn names_and_config() {
        let env = PluginEnv {
            command: Command::Add,
            container_id: "abc".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            path: vec![],
        };
        let stdin = br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","isDefaultGateway":true,"ipam":{"type":"host-local"}}"#;
        let call = Call::parse(&env, stdin).unwrap();
        assert!(call.conf.is_gateway);
        assert_eq!(call.conf.bridge, "cni0");
        assert_eq!(call.ipam_type.as_deref(), Some("host-local"));
        let name = call.host_veth_name();
        assert_eq!(name.len(), 15);
        assert!(name.starts_with("veth"));
        assert_eq!(call.masq_table.name, DEFAULT_MASQ_TABLE);
        assert!(Call::parse(&env, br#"{"name":"n","bridge":"way-too-long-bridge-name"}"#).is_err());
        assert!(Call::parse(&env, br#"{"name":"n","ipam":{}}"#).is_err());
        assert!(Call::parse(&env, br#"{"name":"n","ipMasqTable":"bad name"}"#).is_err());
    }
}
