//! berth's built-in CNI plugins: `bridge`, `host-local` (IPAM), `loopback` and `portmap`.
//!
//! berthd calls [`invoke`] in-process when a conflist names one of them; the `berth-cni`
//! binary calls the same function for an exec'd plugin, so both paths see the same bytes
//! (stdin = the plugin's network config, answer = the result JSON) and berth's plugins
//! and the reference plugins are interchangeable in a conflist.

pub mod bridge;
mod delegate;
pub mod host_local;
pub mod ip;
mod libnft;
pub mod loopback;
pub mod netlink;
pub mod netns;
pub mod nft;
pub mod portmap;

use serde_json::Value;
use tracing::debug;

use crate::types::{
    error_code, CniResult, Command, PluginEnv, PluginError, CURRENT_VERSION, SUPPORTED_VERSIONS,
};

/// The plugin types built into berth.
pub const BUILTIN_TYPES: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

pub fn is_builtin(plugin_type: &str) -> bool {
    BUILTIN_TYPES.contains(&plugin_type)
}

/// Runs a built-in plugin: `env` is its CNI_* environment, `stdin` its network config.
/// Returns the result JSON for ADD (the version answer for VERSION), empty for DEL/CHECK.
pub fn invoke(plugin_type: &str, env: &PluginEnv, stdin: &[u8]) -> Result<Vec<u8>, PluginError> {
    if env.command == Command::Version {
        return Ok(version_answer());
    }
    let started = std::time::Instant::now();
    let answer = match (plugin_type, env.command) {
        ("host-local", Command::Add) => host_local::add(env, stdin),
        ("host-local", Command::Del) => host_local::del(env, stdin),
        ("host-local", Command::Check) => host_local::check(env, stdin),
        ("loopback", cmd) => loopback::run(cmd, env, stdin),
        ("bridge", cmd) => bridge::run(cmd, env, stdin),
        ("portmap", cmd) => portmap::run(cmd, env, stdin),
        (other, _) => Err(PluginError::new(
            error_code::INVALID_CONFIG,
            format!(
                "plugin type {other:?} is not built into berth (built in: {})",
                BUILTIN_TYPES.join(", ")
            ),
        )),
    };
    debug!(
        plugin = plugin_type,
        command = %env.command,
        container = %env.container_id,
        ok = answer.is_ok(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "built-in CNI plugin ran"
    );
    answer
}

/// The VERSION answer (the spec's version info object).
pub fn version_answer() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "cniVersion": CURRENT_VERSION,
        "supportedVersions": SUPPORTED_VERSIONS,
    }))
    .unwrap_or_default()
}

/// A result as the bytes a plugin prints, in the shape of the config's cniVersion.
pub(crate) fn result_bytes(result: &CniResult, cni_version: &str) -> Vec<u8> {
    let version = if cni_version.is_empty() {
        CURRENT_VERSION
    } else {
        cni_version
    };
    serde_json::to_vec(&result.to_version(version)).unwrap_or_default()
}

pub(crate) fn invalid_config(msg: impl Into<String>) -> PluginError {
    PluginError::new(error_code::INVALID_CONFIG, msg)
}

pub(crate) fn internal(msg: impl Into<String>) -> PluginError {
    PluginError::new(error_code::PLUGIN_INTERNAL, msg)
}

impl From<netlink::NetlinkError> for PluginError {
    fn from(e: netlink::NetlinkError) -> Self {
        internal(e.to_string())
    }
}

impl From<nft::NftError> for PluginError {
    fn from(e: nft::NftError) -> Self {
        internal(e.to_string())
    }
}

/// The fields every network config has, and the chain's previous result.
pub(crate) struct CommonConf {
    pub cni_version: String,
    pub name: String,
    pub prev_result: Option<CniResult>,
}

/// Reads the common fields, checking the config's cniVersion.
pub(crate) fn common_conf(value: &Value) -> Result<CommonConf, PluginError> {
    let cni_version = value
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !cni_version.is_empty() && !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
        return Err(PluginError::new(
            error_code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {cni_version:?} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let prev_result = match value.get("prevResult") {
        Some(Value::Null) | None => None,
        Some(prev) => Some(
            CniResult::from_value(
                prev.clone(),
                if cni_version.is_empty() {
                    CURRENT_VERSION
                } else {
                    &cni_version
                },
            )
            .map_err(|e| {
                PluginError::new(error_code::DECODE_FAILURE, format!("prevResult: {e}"))
            })?,
        ),
    };
    Ok(CommonConf {
        cni_version,
        name,
        prev_result,
    })
}

pub(crate) fn parse_json(stdin: &[u8]) -> Result<Value, PluginError> {
    serde_json::from_slice(stdin).map_err(|e| {
        PluginError::new(
            error_code::DECODE_FAILURE,
            format!("network config is not valid JSON: {e}"),
        )
    })
}

/// A 64-bit FNV-1a hash: stable names and tags derived from container ids.
pub(crate) fn fnv64(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf29ce484222325;
    for part in parts {
        for byte in part.bytes().chain(std::iter::once(0u8)) {
            hash ^= byte as u64;
            hash = hash.wrapping_mul(0x100000001b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_types_and_version() {
        assert!(
            is_builtin("bridge")
                && is_builtin("host-local")
                && is_builtin("loopback")
                && is_builtin("portmap")
        );
        assert!(!is_builtin("flannel"));
        let env = PluginEnv {
            command: Command::Version,
            container_id: String::new(),
            netns: Default::default(),
            ifname: String::new(),
            args: vec![],
            path: vec![],
        };
        let v: Value = serde_json::from_slice(&invoke("bridge", &env, b"").unwrap()).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "0.4.0"));
        let err = invoke(
            "flannel",
            &PluginEnv {
                command: Command::Add,
                ..env
            },
            b"{}",
        )
        .unwrap_err();
        assert_eq!(err.code, error_code::INVALID_CONFIG);
    }

    #[test]
    fn common_conf_versions() {
        assert!(common_conf(&serde_json::json!({"cniVersion":"9.9.9"})).is_err());
        let c = common_conf(&serde_json::json!({"cniVersion":"0.4.0","name":"n",
            "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.0.0.2/24"}]}}))
        .unwrap();
        assert_eq!(c.prev_result.unwrap().ips[0].address, "10.0.0.2/24");
        assert_ne!(fnv64(&["a", "bc"]), fnv64(&["ab", "c"]));
    }
}
