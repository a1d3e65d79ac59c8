//! host-local's configuration: the `ipam` object of the network config, plus the
//! addresses a runtime asks for (`runtimeConfig.ips`, `args.cni.ips`, `CNI_ARGS IP=`).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

use crate::plugins::ip::{self, Cidr};
use crate::types::{PluginEnv, Route};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// One contiguous range of a subnet that addresses are handed out from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (host bits cleared); addresses get its prefix length.
    pub subnet: Cidr,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip)
            && ip::to_u128(ip) >= ip::to_u128(self.start)
            && ip::to_u128(ip) <= ip::to_u128(self.end)
    }

    /// Addresses never handed out: the subnet's own address, the IPv4 broadcast address
    /// and the gateway.
    pub fn is_reserved(&self, ip: IpAddr) -> bool {
        ip == self.subnet.first()
            || (ip.is_ipv4() && ip == self.subnet.last())
            || Some(ip) == self.gateway
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.is_ipv4() == other.subnet.is_ipv4()
            && ip::to_u128(self.start) <= ip::to_u128(other.end)
            && ip::to_u128(other.start) <= ip::to_u128(self.end)
    }
}

/// The parsed `ipam` section: one address is assigned from each range set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    pub network: String,
    pub cni_version: String,
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Addresses asked for, each must fall into a different range set.
    pub requested: Vec<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRange {
    subnet: String,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawIpam {
    #[serde(default)]
    ranges: Vec<Vec<RawRange>>,
    // The old single-range form.
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNetConf {
    #[serde(default)]
    cni_version: String,
    #[serde(default)]
    name: String,
    ipam: Option<RawIpam>,
    #[serde(default)]
    runtime_config: Value,
    #[serde(default)]
    args: Value,
}

/// Parses the network config a host-local call gets on stdin.
pub fn parse(stdin: &[u8], env: &PluginEnv) -> Result<IpamConfig, String> {
    let raw: RawNetConf =
        serde_json::from_slice(stdin).map_err(|e| format!("invalid network config: {e}"))?;
    if raw.name.is_empty() {
        return Err("network config has no \"name\"".into());
    }
    let ipam = raw.ipam.ok_or("network config has no \"ipam\" section")?;
    let mut raw_sets = ipam.ranges;
    if let Some(subnet) = ipam.subnet {
        raw_sets.insert(
            0,
            vec![RawRange {
                subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            }],
        );
    }
    if raw_sets.is_empty() {
        return Err("ipam has no \"ranges\" (or \"subnet\")".into());
    }
    let mut range_sets = Vec::with_capacity(raw_sets.len());
    for (set_idx, raw_set) in raw_sets.into_iter().enumerate() {
        if raw_set.is_empty() {
            return Err(format!("ipam range set {set_idx} is empty"));
        }
        let set = raw_set
            .into_iter()
            .map(build_range)
            .collect::<Result<Vec<_>, _>>()?;
        if set
            .iter()
            .any(|r| r.subnet.is_ipv4() != set[0].subnet.is_ipv4())
        {
            return Err(format!("ipam range set {set_idx} mixes IPv4 and IPv6"));
        }
        range_sets.push(set);
    }
    let all: Vec<&Range> = range_sets.iter().flatten().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.overlaps(b) {
                return Err(format!(
                    "ipam ranges {}-{} and {}-{} overlap",
                    a.start, a.end, b.start, b.end
                ));
            }
        }
    }
    let requested = requested_ips(&raw.runtime_config, &raw.args, env)?;
    Ok(IpamConfig {
        network: raw.name,
        cni_version: raw.cni_version,
        range_sets,
        routes: ipam.routes,
        data_dir: ipam
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        resolv_conf: ipam.resolv_conf,
        requested,
    })
}

fn build_range(raw: RawRange) -> Result<Range, String> {
    let subnet: Cidr = raw
        .subnet
        .parse()
        .map_err(|e| format!("ipam subnet: {e}"))?;
    let subnet = subnet.network();
    let host_bits = ip::max_prefix(subnet.addr) - subnet.prefix;
    if host_bits < 2 {
        return Err(format!("ipam subnet {subnet} is too small"));
    }
    let first_host = ip::next(subnet.first()).ok_or("subnet overflow")?;
    let last_host = if subnet.is_ipv4() {
        ip::prev(subnet.last()).ok_or("subnet underflow")?
    } else {
        subnet.last()
    };
    let start = raw.range_start.unwrap_or(first_host);
    let end = raw.range_end.unwrap_or(last_host);
    for (what, ip) in [("rangeStart", start), ("rangeEnd", end)] {
        if !subnet.contains(ip) {
            return Err(format!("ipam {what} {ip} is not in subnet {subnet}"));
        }
    }
    if ip::to_u128(start) > ip::to_u128(end) {
        return Err(format!("ipam rangeStart {start} is after rangeEnd {end}"));
    }
    // The gateway defaults to the subnet's first host, as the reference plugin does.
    let gateway = raw.gateway.unwrap_or(first_host);
    if !subnet.contains(gateway) {
        return Err(format!("ipam gateway {gateway} is not in subnet {subnet}"));
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway: Some(gateway),
    })
}

/// Addresses asked for: `runtimeConfig.ips` (kubelet/CRI), `args.cni.ips`, and
/// `CNI_ARGS` `IP=a,b`. Each may be written with or without a prefix.
fn requested_ips(
    runtime_config: &Value,
    args: &Value,
    env: &PluginEnv,
) -> Result<Vec<IpAddr>, String> {
    let mut strings: Vec<String> = Vec::new();
    for list in [
        runtime_config.get("ips"),
        args.get("cni").and_then(|c| c.get("ips")),
    ]
    .into_iter()
    .flatten()
    {
        let Value::Array(items) = list else {
            return Err("\"ips\" is not a list".into());
        };
        strings.extend(items.iter().filter_map(Value::as_str).map(str::to_string));
    }
    if let Some(ips) = env.arg("IP") {
        strings.extend(ips.split(',').filter(|s| !s.is_empty()).map(str::to_string));
    }
    let mut out = Vec::new();
    for s in strings {
        let addr = s.split('/').next().unwrap_or_default();
        let ip: IpAddr = addr
            .parse()
            .map_err(|_| format!("requested IP {s:?} is not an address"))?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    fn env() -> PluginEnv {
        PluginEnv {
            command: Command::Add,
            container_id: "c".into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            path: vec![],
        }
    }

    #[test]
    fn ranges_defaults_and_legacy_form() {
        let conf = parse(
            br#"{"cniVersion":"1.0.0","name":"n","ipam":{"type":"host-local","subnet":"10.1.0.0/24",
            "ranges":[[{"subnet":"fd00:1::/64"}]],"routes":[{"dst":"0.0.0.0/0"}]}}"#,
            &env(),
        )
        .unwrap();
        assert_eq!(conf.range_sets.len(), 2);
        let v4 = &conf.range_sets[0][0];
        assert_eq!(v4.start.to_string(), "10.1.0.1");
        assert_eq!(v4.end.to_string(), "10.1.0.254");
        assert_eq!(v4.gateway.unwrap().to_string(), "10.1.0.1");
        let v6 = &conf.range_sets[1][0];
        assert_eq!(v6.end.to_string(), "fd00:1::ffff:ffff:ffff:ffff");
        assert_eq!(conf.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(conf.routes.len(), 1);
    }

    #[test]
    fn bad_configs() {
        let bad = |s: &str| parse(s.as_bytes(), &env()).unwrap_err();
        assert!(bad(r#"{"name":"n","ipam":{}}"#).contains("ranges"));
        assert!(bad(r#"{"name":"n"}"#).contains("ipam"));
        assert!(
            bad(r#"{"name":"n","ipam":{"subnet":"10.0.0.0/24","rangeStart":"10.0.1.1"}}"#)
                .contains("not in subnet")
        );
        assert!(bad(
            r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}}"#
        )
        .contains("mixes"));
        assert!(bad(r#"{"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.0.0.0/25"}]]}}"#).contains("overlap"));
        assert!(bad(r#"{"name":"n","ipam":{"subnet":"10.0.0.0/31"}}"#).contains("too small"));
        assert!(bad(r#"{"name":"n","ipam":{"subnet":"nope"}}"#).contains("subnet"));
    }

    #[test]
    fn requested_from_all_sources() {
        let mut e = env();
        e.args.push(("IP".into(), "10.1.0.9".into()));
        let conf = parse(
            br#"{"name":"n","ipam":{"subnet":"10.1.0.0/24","ranges":[[{"subnet":"fd00::/64"}]]},
            "runtimeConfig":{"ips":["10.1.0.7/24"]},"args":{"cni":{"ips":["fd00::7"]}}}"#,
            &e,
        )
        .unwrap();
        let want: Vec<IpAddr> = ["10.1.0.7", "fd00::7", "10.1.0.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(conf.requested, want);
    }
}
