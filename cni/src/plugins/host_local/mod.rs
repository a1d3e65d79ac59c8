//! `host-local` IPAM: addresses from configured ranges (IPv4 and IPv6, one per range set),
//! allocations kept on disk under a lock, released on DEL by container id and ifname.

mod allocator;
pub mod config;
pub mod store;

use std::net::IpAddr;

use tracing::debug;

use self::allocator::{allocate, AllocError};
use self::config::IpamConfig;
use self::store::Store;
use crate::plugins::ip::Cidr;
use crate::plugins::{internal, invalid_config, result_bytes};
use crate::types::{error_code, CniResult, Dns, IpConfig, PluginEnv, PluginError};

impl From<AllocError> for PluginError {
    fn from(e: AllocError) -> Self {
        match e {
            AllocError::Store(e) => PluginError::new(error_code::IO_FAILURE, e.to_string()),
            other => internal(other.to_string()),
        }
    }
}

impl From<store::StoreError> for PluginError {
    fn from(e: store::StoreError) -> Self {
        PluginError::new(error_code::IO_FAILURE, e.to_string())
    }
}

pub fn add(env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    let conf = config::parse(stdin, env).map_err(invalid_config)?;
    let result = allocate_all(env, &conf)?;
    Ok(result_bytes(&result, &conf.cni_version))
}

/// ADD, returning the typed result (bridge's in-process delegation).
pub fn add_result(env: &PluginEnv, stdin: &[u8]) -> Result<CniResult, PluginError> {
    let conf = config::parse(stdin, env).map_err(invalid_config)?;
    allocate_all(env, &conf)
}

fn allocate_all(env: &PluginEnv, conf: &IpamConfig) -> Result<CniResult, PluginError> {
    for ip in &conf.requested {
        if !conf.range_sets.iter().flatten().any(|r| r.contains(*ip)) {
            return Err(invalid_config(format!(
                "requested IP {ip} is in no configured range"
            )));
        }
    }
    let store = Store::open(&conf.data_dir, &conf.network)?;
    // An ADD repeated for the same container and interface gets what it already holds.
    let held = store.find(&env.container_id, &env.ifname)?;
    let mut fresh: Vec<IpAddr> = Vec::new();
    let mut ips = Vec::with_capacity(conf.range_sets.len());
    for (set_idx, ranges) in conf.range_sets.iter().enumerate() {
        let in_set = |ip: &IpAddr| ranges.iter().any(|r| r.contains(*ip));
        let requested = conf.requested.iter().copied().find(in_set);
        let reuse = held
            .iter()
            .copied()
            .find(in_set)
            .filter(|ip| requested.is_none_or(|r| r == *ip));
        let outcome = match reuse {
            Some(ip) => ranges
                .iter()
                .find(|r| r.contains(ip))
                .map(|r| (ip, r))
                .ok_or_else(|| internal("range vanished")),
            None => allocate(
                &store,
                set_idx,
                ranges,
                &env.container_id,
                &env.ifname,
                requested,
            )
            .map_err(PluginError::from),
        };
        let (ip, range) = match outcome {
            Ok(found) => found,
            Err(e) => {
                // Nothing of a failed ADD stays allocated.
                for ip in &fresh {
                    store.release_ip(*ip);
                }
                return Err(e);
            }
        };
        if reuse.is_none() {
            fresh.push(ip);
        }
        let cidr = Cidr {
            addr: ip,
            prefix: range.subnet.prefix,
        };
        ips.push(IpConfig {
            address: cidr.to_string(),
            gateway: range.gateway,
            interface: None,
        });
    }
    debug!(container = %env.container_id, network = %conf.network, ?ips, "host-local: allocated");
    let dns = match &conf.resolv_conf {
        Some(path) => parse_resolv_conf(&std::fs::read_to_string(path).map_err(|e| {
            PluginError::new(
                error_code::IO_FAILURE,
                format!("read resolvConf {}: {e}", path.display()),
            )
        })?),
        None => Dns::default(),
    };
    Ok(CniResult {
        cni_version: conf.cni_version.clone(),
        interfaces: vec![],
        ips,
        routes: conf.routes.clone(),
        dns,
    })
}

/// DEL: releases the container's addresses on this interface (none held is fine).
pub fn del(env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    release(env, stdin).map(|_| Vec::new())
}

/// DEL, returning the addresses it released.
pub fn release(env: &PluginEnv, stdin: &[u8]) -> Result<Vec<IpAddr>, PluginError> {
    let conf = config::parse(stdin, env).map_err(invalid_config)?;
    if !conf.data_dir.join(&conf.network).exists() {
        return Ok(Vec::new());
    }
    let store = Store::open(&conf.data_dir, &conf.network)?;
    let released = store.release(&env.container_id, &env.ifname)?;
    debug!(container = %env.container_id, network = %conf.network, ?released, "host-local: released");
    Ok(released)
}

/// CHECK: the container still holds an address in every range set.
pub fn check(env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    let conf = config::parse(stdin, env).map_err(invalid_config)?;
    let store = Store::open(&conf.data_dir, &conf.network)?;
    let held = store.find(&env.container_id, &env.ifname)?;
    for (set_idx, ranges) in conf.range_sets.iter().enumerate() {
        if !held.iter().any(|ip| ranges.iter().any(|r| r.contains(*ip))) {
            return Err(PluginError::new(
                error_code::UNKNOWN_CONTAINER,
                format!(
                    "container {} holds no address in range set {set_idx}",
                    env.container_id
                ),
            ));
        }
    }
    Ok(Vec::new())
}

/// The DNS settings of a resolv.conf file.
fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_string)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Command;

    fn env(id: &str) -> PluginEnv {
        PluginEnv {
            command: Command::Add,
            container_id: id.into(),
            netns: "/x".into(),
            ifname: "eth0".into(),
            args: vec![],
            path: vec![],
        }
    }

    fn conf(dir: &std::path::Path, extra: &str) -> Vec<u8> {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"dual","type":"host-local"{extra},"ipam":{{"type":"host-local","dataDir":"{}",
            "ranges":[[{{"subnet":"10.77.0.0/29"}}],[{{"subnet":"fd00:77::/120","gateway":"fd00:77::1"}}]],
            "routes":[{{"dst":"0.0.0.0/0"}},{{"dst":"::/0"}}]}}}}"#,
            dir.display()
        )
        .into_bytes()
    }

    #[test]
    fn dual_stack_add_del() {
        let tmp = tempfile::tempdir().unwrap();
        let stdin = conf(tmp.path(), "");
        let out = add(&env("c1"), &stdin).unwrap();
        let result = CniResult::parse(&out, "1.0.0").unwrap();
        assert_eq!(result.ips.len(), 2);
        assert_eq!(result.ips[0].address, "10.77.0.2/29");
        assert_eq!(result.ips[0].gateway.unwrap().to_string(), "10.77.0.1");
        assert_eq!(result.ips[1].address, "fd00:77::2/120");
        assert_eq!(result.routes.len(), 2);
        assert!(tmp.path().join("dual/10.77.0.2").exists());
        assert!(tmp.path().join("dual/fd00:77::2").exists());
        // ADD again: the same addresses, nothing new allocated.
        let again = CniResult::parse(&add(&env("c1"), &stdin).unwrap(), "1.0.0").unwrap();
        assert_eq!(again.ips, result.ips);
        check(&env("c1"), &stdin).unwrap();
        assert!(check(&env("c2"), &stdin).is_err());
        del(&env("c1"), &stdin).unwrap();
        assert!(!tmp.path().join("dual/10.77.0.2").exists());
        assert!(!tmp.path().join("dual/fd00:77::2").exists());
        // DEL again and DEL of an unknown container: fine.
        del(&env("c1"), &stdin).unwrap();
        del(&env("nope"), &stdin).unwrap();
    }

    #[test]
    fn exhaustion_rolls_back_the_other_family() {
        let tmp = tempfile::tempdir().unwrap();
        let stdin = conf(tmp.path(), "");
        // 10.77.0.0/29: .2-.6 usable = 5 pods.
        for i in 0..5 {
            add(&env(&format!("c{i}")), &stdin).unwrap();
        }
        let err = add(&env("c5"), &stdin).unwrap_err();
        assert!(err.msg.contains("no free address"), "{err:?}");
        // The failed ADD left no IPv6 allocation behind.
        let store = Store::open(tmp.path(), "dual").unwrap();
        assert!(store.find("c5", "eth0").unwrap().is_empty());
        assert_eq!(store.allocations().unwrap().len(), 10);
    }

    #[test]
    fn runtime_config_ips_and_version_040() {
        let tmp = tempfile::tempdir().unwrap();
        let stdin = conf(
            tmp.path(),
            r#","runtimeConfig":{"ips":["10.77.0.5/29","fd00:77::50"]}"#,
        );
        let stdin = String::from_utf8(stdin).unwrap().replace("1.0.0", "0.4.0");
        let out = add(&env("c1"), stdin.as_bytes()).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["cniVersion"], "0.4.0");
        assert_eq!(value["ips"][0]["address"], "10.77.0.5/29");
        assert_eq!(value["ips"][0]["version"], "4");
        assert_eq!(value["ips"][1]["address"], "fd00:77::50/120");
        // Someone else asking for the same address fails and holds nothing.
        let err = add(&env("c2"), stdin.as_bytes()).unwrap_err();
        assert!(err.msg.contains("already allocated"), "{err:?}");
        let store = Store::open(tmp.path(), "dual").unwrap();
        assert!(store.find("c2", "eth0").unwrap().is_empty());
    }

    #[test]
    fn resolv_conf() {
        let dns = parse_resolv_conf(
            "# x\nnameserver 10.0.0.10\nnameserver fd00::10\nsearch a.svc b\noptions ndots:5\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "fd00::10"]);
        assert_eq!(dns.search, ["a.svc", "b"]);
        assert_eq!(dns.options, ["ndots:5"]);
    }
}
