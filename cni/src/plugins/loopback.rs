//! `loopback`: brings `lo` up inside the pod's network namespace (DEL: nothing to undo
//! that would matter; the namespace goes with the pod).

use crate::plugins::netlink::Netlink;
use crate::plugins::netns::Netns;
use crate::plugins::{common_conf, internal, parse_json, result_bytes};
use crate::types::{CniResult, Command, Interface, IpConfig, PluginEnv, PluginError};

pub fn run(command: Command, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    let conf = common_conf(&parse_json(stdin)?)?;
    match command {
        Command::Add => {
            let netns = Netns::open(&env.netns)
                .map_err(|e| internal(format!("open netns {}: {e}", env.netns.display())))?;
            let mut nl = Netlink::in_netns(&netns)?;
            let lo = nl.require_link("lo")?;
            nl.set_up(lo.index)?;
            // As the reference plugin: pass a previous result through, else describe lo.
            let result = conf.prev_result.unwrap_or_else(|| CniResult {
                cni_version: conf.cni_version.clone(),
                interfaces: vec![Interface {
                    name: "lo".into(),
                    mac: "00:00:00:00:00:00".into(),
                    sandbox: env.netns.to_string_lossy().into_owned(),
                    mtu: None,
                }],
                ips: vec![
                    IpConfig {
                        address: "127.0.0.1/8".into(),
                        gateway: None,
                        interface: Some(0),
                    },
                    IpConfig {
                        address: "::1/128".into(),
                        gateway: None,
                        interface: Some(0),
                    },
                ],
                ..Default::default()
            });
            Ok(result_bytes(&result, &conf.cni_version))
        }
        Command::Check => {
            let netns = Netns::open(&env.netns)
                .map_err(|e| internal(format!("open netns {}: {e}", env.netns.display())))?;
            let mut nl = Netlink::in_netns(&netns)?;
            if !nl.require_link("lo")?.up {
                return Err(internal("lo is down"));
            }
            Ok(Vec::new())
        }
        // Taking lo down in a namespace that is about to go away gains nothing, and DEL must
        // not fail when the namespace is already gone.
        Command::Del | Command::Version => Ok(Vec::new()),
    }
}
