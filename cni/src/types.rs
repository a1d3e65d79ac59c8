//! The CNI spec's types: the command and environment a plugin runs with, its error object,
//! its result (spec 1.0.0, read from 0.3.x/0.4.0 too), and the network configuration files.
//!
//! Results are kept in the 1.0.0 shape in memory; [`CniResult::to_version`] writes them in
//! the shape an older plugin expects as `prevResult`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The spec version berth speaks and writes.
pub const CURRENT_VERSION: &str = "1.0.0";
/// Spec versions whose results and configs berth understands.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Well-known CNI error codes (spec "Error" section).
pub mod error_code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Codes from 100 up are the plugin's own; berth uses this one for "internal".
    pub const PLUGIN_INTERNAL: u32 = 999;
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Add,
    Check,
    Del,
    Version,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Check => "CHECK",
            Command::Del => "DEL",
            Command::Version => "VERSION",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = PluginError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ADD" => Ok(Command::Add),
            "CHECK" => Ok(Command::Check),
            "DEL" => Ok(Command::Del),
            "VERSION" => Ok(Command::Version),
            other => Err(PluginError::new(error_code::INVALID_ENV, format!("unknown CNI_COMMAND {other:?}"))),
        }
    }
}

/// The `CNI_*` environment of one plugin call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginEnv {
    pub command: Command,
    pub container_id: String,
    /// Network namespace path (may not exist any more on DEL).
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K2=V2`.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`: where delegated plugins (IPAM) are looked up.
    pub path: Vec<PathBuf>,
}

impl PluginEnv {
    /// The environment variables an exec'd plugin gets.
    pub fn to_env_vars(&self) -> Vec<(&'static str, String)> {
        let args = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";");
        let path = std::env::join_paths(&self.path).map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        vec![
            ("CNI_COMMAND", self.command.as_str().to_string()),
            ("CNI_CONTAINERID", self.container_id.clone()),
            ("CNI_NETNS", self.netns.to_string_lossy().into_owned()),
            ("CNI_IFNAME", self.ifname.clone()),
            ("CNI_ARGS", args),
            ("CNI_PATH", path),
        ]
    }

    /// Reads the environment from a variable lookup (`std::env::var` in a plugin binary).
    /// VERSION needs none of the other variables; the others need what the spec requires.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, PluginError> {
        let command: Command = get("CNI_COMMAND")
            .ok_or_else(|| PluginError::new(error_code::INVALID_ENV, "CNI_COMMAND is not set"))?
            .parse()?;
        let required = |name: &str| -> Result<String, PluginError> {
            match get(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ if command == Command::Version => Ok(String::new()),
                _ => Err(PluginError::new(error_code::INVALID_ENV, format!("{name} is not set"))),
            }
        };
        let container_id = required("CNI_CONTAINERID")?;
        let ifname = required("CNI_IFNAME")?;
        // DEL may come without a netns (it is gone); ADD and CHECK need one.
        let netns = match command {
            Command::Add | Command::Check => required("CNI_NETNS")?,
            _ => get("CNI_NETNS").unwrap_or_default(),
        };
        Ok(PluginEnv {
            command,
            container_id,
            netns: PathBuf::from(netns),
            ifname,
            args: parse_cni_args(&get("CNI_ARGS").unwrap_or_default()),
            path: get("CNI_PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default(),
        })
    }

    /// The value of one `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses `K=V;K2=V2` (empty pieces skipped, a key without `=` gets an empty value).
pub fn parse_cni_args(s: &str) -> Vec<(String, String)> {
    s.split(';')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (piece.to_string(), String::new()),
        })
        .collect()
}

/// The CNI error object a plugin prints on failure (exit code != 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct PluginError {
    pub code: u32,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl PluginError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        PluginError { code, msg: msg.into(), details: String::new() }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error JSON a plugin binary prints.
    pub fn to_json(&self, cni_version: &str) -> Vec<u8> {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), Value::String(cni_version.to_string()));
        obj.insert("code".into(), Value::from(self.code));
        obj.insert("msg".into(), Value::String(self.msg.clone()));
        if !self.details.is_empty() {
            obj.insert("details".into(), Value::String(self.details.clone()));
        }
        serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
    }
}

/// An interface a plugin created or knows about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// The netns path for interfaces inside the container; empty for host-side ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// One assigned address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation, e.g. `10.88.0.5/16`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address and prefix length, if `address` is a valid CIDR.
    pub fn cidr(&self) -> Option<(IpAddr, u8)> {
        parse_cidr(&self.address)
    }

    /// The bare address.
    pub fn ip(&self) -> Option<IpAddr> {
        self.cidr().map(|(ip, _)| ip)
    }
}

/// Parses `addr/prefix` (the prefix checked against the address family).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((ip, prefix))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// CIDR.
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.domain.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// A plugin's ADD result, in the spec 1.0.0 shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

/// Why a result could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("result is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("result of unsupported cniVersion {0:?}")]
    UnsupportedVersion(String),
    #[error("result is not a JSON object")]
    NotAnObject,
}

impl CniResult {
    /// Reads a result of spec 0.3.0, 0.3.1, 0.4.0 or 1.0.0 (a missing cniVersion is taken
    /// from `default_version`, the config's). 0.x results carry `version` in each IP, which
    /// 1.0.0 dropped; it is ignored.
    pub fn parse(bytes: &[u8], default_version: &str) -> Result<CniResult, ResultError> {
        let value: Value = serde_json::from_slice(bytes)?;
        Self::from_value(value, default_version)
    }

    pub fn from_value(mut value: Value, default_version: &str) -> Result<CniResult, ResultError> {
        let obj = value.as_object_mut().ok_or(ResultError::NotAnObject)?;
        let version = match obj.get("cniVersion").and_then(Value::as_str) {
            Some(v) if !v.is_empty() => v.to_string(),
            _ => default_version.to_string(),
        };
        if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
            return Err(ResultError::UnsupportedVersion(version));
        }
        if let Some(Value::Array(ips)) = obj.get_mut("ips") {
            for ip in ips.iter_mut() {
                if let Some(ip) = ip.as_object_mut() {
                    ip.remove("version");
                    // Some 0.x plugins write `"interface": -1`-less nulls; null means none.
                    if ip.get("interface").is_some_and(Value::is_null) {
                        ip.remove("interface");
                    }
                }
            }
        }
        obj.insert("cniVersion".into(), Value::String(version));
        Ok(serde_json::from_value(value)?)
    }

    /// The result as JSON in the shape of spec `version` (for `prevResult` and for a
    /// plugin's stdout): 0.3.x/0.4.0 get `version` ("4"/"6") in each IP.
    pub fn to_version(&self, version: &str) -> Value {
        let mut result = self.clone();
        result.cni_version = version.to_string();
        let mut value = serde_json::to_value(&result).unwrap_or(Value::Null);
        if version.starts_with("0.") {
            if let Some(Value::Array(ips)) = value.get_mut("ips") {
                for ip in ips.iter_mut() {
                    let family = ip
                        .get("address")
                        .and_then(Value::as_str)
                        .and_then(parse_cidr)
                        .map(|(addr, _)| if addr.is_ipv4() { "4" } else { "6" });
                    if let (Some(obj), Some(family)) = (ip.as_object_mut(), family) {
                        obj.insert("version".into(), Value::String(family.into()));
                    }
                }
            }
        }
        value
    }

    /// The IPs of the interface named `ifname` inside the sandbox (all IPs when none names
    /// an interface), in result order: the first is the pod's primary IP.
    pub fn sandbox_ips(&self, ifname: &str) -> Vec<IpAddr> {
        let wanted: Vec<usize> = self
            .interfaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.name == ifname && !i.sandbox.is_empty())
            .map(|(idx, _)| idx)
            .collect();
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                Some(idx) if !wanted.is_empty() => wanted.contains(&idx),
                _ => true,
            })
            .filter_map(IpConfig::ip)
            .collect()
    }
}

/// A hostPort mapping (`runtimeConfig.portMappings`, capability `portMappings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    /// "tcp", "udp" or "sctp" (lower case, as kubelet sends them).
    pub protocol: String,
    #[serde(default, rename = "hostIP", skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// Traffic shaping (`runtimeConfig.bandwidth`, capability `bandwidth`): rates in bits/s,
/// bursts in bits, as the bandwidth plugin reads them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What the runtime passes in `runtimeConfig`, each key only to plugins whose
/// `capabilities` ask for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityArgs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<Bandwidth>,
    /// Requested IPs (CIDR or bare), capability `ips`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    /// Requested MAC, capability `mac`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
}

impl CapabilityArgs {
    /// The `runtimeConfig` object for a plugin with `capabilities` (None when it asks for
    /// nothing we have).
    pub fn runtime_config_for(&self, plugin: &PluginConf) -> Option<Value> {
        let mut obj = Map::new();
        if plugin.wants("portMappings") && !self.port_mappings.is_empty() {
            obj.insert("portMappings".into(), serde_json::to_value(&self.port_mappings).unwrap_or(Value::Null));
        }
        if let Some(bandwidth) = self.bandwidth.as_ref().filter(|_| plugin.wants("bandwidth")) {
            obj.insert("bandwidth".into(), serde_json::to_value(bandwidth).unwrap_or(Value::Null));
        }
        if plugin.wants("ips") && !self.ips.is_empty() {
            obj.insert("ips".into(), serde_json::to_value(&self.ips).unwrap_or(Value::Null));
        }
        if plugin.wants("mac") && !self.mac.is_empty() {
            obj.insert("mac".into(), Value::String(self.mac.clone()));
        }
        (!obj.is_empty()).then_some(Value::Object(obj))
    }
}

/// One plugin's entry in a conflist: the known fields, and the whole object as written
/// (plugins get every field they were configured with).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConf {
    pub plugin_type: String,
    /// `capabilities`: which runtimeConfig keys the plugin wants.
    pub capabilities: BTreeMap<String, bool>,
    pub raw: Map<String, Value>,
}

impl PluginConf {
    pub fn from_value(value: Value) -> Result<PluginConf, String> {
        let Value::Object(raw) = value else {
            return Err("a plugin entry is not a JSON object".into());
        };
        let plugin_type = raw
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "a plugin entry has no \"type\"".to_string())?
            .to_string();
        if plugin_type.contains('/') || plugin_type.starts_with('.') {
            return Err(format!("plugin type {plugin_type:?} is not a file name"));
        }
        let capabilities = match raw.get("capabilities") {
            Some(Value::Object(caps)) => caps.iter().map(|(k, v)| (k.clone(), v.as_bool().unwrap_or(false))).collect(),
            _ => BTreeMap::new(),
        };
        Ok(PluginConf { plugin_type, capabilities, raw })
    }

    pub fn wants(&self, capability: &str) -> bool {
        self.capabilities.get(capability).copied().unwrap_or(false)
    }
}

/// A network configuration list (`.conflist`; a single `.conf` is wrapped into one).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub cni_version: String,
    pub name: String,
    pub disable_check: bool,
    pub plugins: Vec<PluginConf>,
    /// The file it was read from (empty when built in memory).
    pub source: PathBuf,
}

impl ConfList {
    /// Parses a conflist (`plugins` array) or a single plugin config (wrapped).
    pub fn parse(bytes: &[u8]) -> Result<ConfList, String> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err("not a JSON object".into());
        };
        let name = obj.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        if name.is_empty() {
            return Err("no \"name\"".into());
        }
        let cni_version = obj.get("cniVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        if cni_version.is_empty() {
            return Err("no \"cniVersion\"".into());
        }
        if !SUPPORTED_VERSIONS.contains(&cni_version.as_str()) {
            return Err(format!("unsupported cniVersion {cni_version:?} (supported: {})", SUPPORTED_VERSIONS.join(", ")));
        }
        let disable_check = match obj.get("disableCheck") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        let plugins = match obj.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err("\"plugins\" is empty".into());
                }
                list.iter().cloned().map(PluginConf::from_value).collect::<Result<Vec<_>, _>>()?
            }
            Some(_) => return Err("\"plugins\" is not an array".into()),
            // A single plugin's .conf.
            None => vec![PluginConf::from_value(Value::Object(obj.clone()))?],
        };
        Ok(ConfList { cni_version, name, disable_check, plugins, source: PathBuf::new() })
    }

    /// The list as conflist JSON (what [`ConfList::parse`] reads back), for caches.
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        obj.insert("name".into(), Value::String(self.name.clone()));
        if self.disable_check {
            obj.insert("disableCheck".into(), Value::Bool(true));
        }
        obj.insert("plugins".into(), Value::Array(self.plugins.iter().map(|p| Value::Object(p.raw.clone())).collect()));
        Value::Object(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_040_reads_and_writes_back() {
        let raw = br#"{"cniVersion":"0.4.0","interfaces":[{"name":"cni0","mac":"aa:bb:cc:dd:ee:ff"},{"name":"eth0","mac":"11:22:33:44:55:66","sandbox":"/run/netns/x"}],
            "ips":[{"version":"4","interface":1,"address":"10.1.0.5/24","gateway":"10.1.0.1"},{"version":"6","interface":1,"address":"fd00::5/64"}],
            "routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;
        let result = CniResult::parse(raw, "0.4.0").unwrap();
        assert_eq!(result.cni_version, "0.4.0");
        assert_eq!(result.ips.len(), 2);
        assert_eq!(result.ips[0].gateway, Some("10.1.0.1".parse().unwrap()));
        assert_eq!(result.sandbox_ips("eth0"), vec!["10.1.0.5".parse::<IpAddr>().unwrap(), "fd00::5".parse().unwrap()]);
        let back = result.to_version("0.4.0");
        assert_eq!(back["ips"][0]["version"], "4");
        assert_eq!(back["ips"][1]["version"], "6");
        let v1 = result.to_version("1.0.0");
        assert!(v1["ips"][0].get("version").is_none());
        assert_eq!(v1["cniVersion"], "1.0.0");
    }

    #[test]
    fn result_100_and_bad_versions() {
        let raw = br#"{"cniVersion":"1.0.0","ips":[{"address":"10.2.0.7/16"}],"dns":{"nameservers":["10.96.0.10"]}}"#;
        let result = CniResult::parse(raw, "1.0.0").unwrap();
        assert_eq!(result.sandbox_ips("eth0"), vec!["10.2.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(result.dns.nameservers, vec!["10.96.0.10"]);
        assert!(matches!(CniResult::parse(br#"{"cniVersion":"0.2.0"}"#, "1.0.0"), Err(ResultError::UnsupportedVersion(_))));
        assert!(CniResult::parse(b"[]", "1.0.0").is_err());
        // No cniVersion: the config's.
        assert_eq!(CniResult::parse(b"{}", "0.4.0").unwrap().cni_version, "0.4.0");
    }

    #[test]
    fn error_object_roundtrip() {
        let err: PluginError = serde_json::from_slice(br#"{"cniVersion":"1.0.0","code":7,"msg":"bad","details":"why"}"#).unwrap();
        assert_eq!(err.to_string(), "bad: why");
        let back: PluginError = serde_json::from_slice(&err.to_json("1.0.0")).unwrap();
        assert_eq!(back, err);
    }

    #[test]
    fn env_roundtrip() {
        let env = PluginEnv {
            command: Command::Add,
            container_id: "abc".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![("K8S_POD_NAME".into(), "p".into()), ("IgnoreUnknown".into(), "1".into())],
            path: vec!["/a".into(), "/b".into()],
        };
        let vars = env.to_env_vars();
        assert!(vars.contains(&("CNI_ARGS", "K8S_POD_NAME=p;IgnoreUnknown=1".into())));
        assert!(vars.contains(&("CNI_PATH", "/a:/b".into())));
        let back = PluginEnv::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.arg("K8S_POD_NAME"), Some("p"));
        // DEL without a netns is fine; ADD is not.
        let del = PluginEnv::from_vars(|k| match k {
            "CNI_COMMAND" => Some("DEL".into()),
            "CNI_CONTAINERID" => Some("c".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(del.netns, PathBuf::new());
        assert!(PluginEnv::from_vars(|k| (k == "CNI_COMMAND").then(|| "ADD".into())).is_err());
    }

    #[test]
    fn conflist_and_single_conf() {
        let list = ConfList::parse(
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","bridge":"b0"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 2);
        assert!(list.plugins[1].wants("portMappings"));
        assert!(!list.plugins[0].wants("portMappings"));
        assert_eq!(list.plugins[0].raw["bridge"], "b0");
        let single = ConfList::parse(br#"{"cniVersion":"0.4.0","name":"s","type":"bridge"}"#).unwrap();
        assert_eq!(single.plugins.len(), 1);
        assert_eq!(single.plugins[0].plugin_type, "bridge");
        assert!(ConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#).is_err());
        assert!(ConfList::parse(br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../x"}]}"#).is_err());
        assert!(ConfList::parse(br#"{"name":"n","type":"bridge"}"#).is_err());
    }
}
