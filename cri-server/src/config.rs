//! berthd's configuration: the file `/etc/berth/config.toml`, overridden by flags.
//!
//! Every key has a default, so an empty file (or no file at all, at the default path) is a
//! valid configuration. Unknown keys are refused: a typo in a config file must not silently
//! fall back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_images::ImagesConfig;
use serde::{Deserialize, Serialize};

/// Where berthd looks for its config file when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";
/// The socket's file name inside the state dir when `address` is not set.
pub const SOCKET_FILE_NAME: &str = "berth.sock";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent data: content store, snapshots, container bundles, `meta.redb`.
    pub root: PathBuf,
    /// Runtime state that does not survive a reboot: the socket, shim state, pinned namespaces.
    pub state: PathBuf,
    /// The CRI socket. Unset means `<state>/berth.sock`, so that moving `state` (as tests
    /// do) moves the socket with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<PathBuf>,
    /// A tracing filter: a level (`info`) or directives (`info,berth_images=debug`).
    pub log_level: String,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before berthd exits.
    pub shutdown_timeout_secs: u64,
    pub images: ImagesConfig,
    pub runtime: RuntimeConfig,
    pub network: NetworkConfig,
}

/// The `[network]` table: pod networking through CNI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkConfig {
    /// false: pods get only a loopback interface (and Status says NetworkReady=false).
    pub enabled: bool,
    /// Where the pod network's config is: the first *.conflist/*.conf/*.json by name.
    pub conf_dir: PathBuf,
    /// Where CNI plugin executables are looked up, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// The ADD results cache (for DEL after a restart). Unset means `<root>/cni/cache`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Seconds one exec'd plugin call may take before it is killed.
    pub plugin_timeout_secs: u64,
    /// Run berth's own bridge, host-local, loopback and portmap in-process when the
    /// conflist names them (false: exec them from bin_dirs like any plugin).
    pub builtin_plugins: bool,
    /// When conf_dir holds no config, berthd writes its default network (bridge,
    /// host-local, portmap, loopback) to `<root>/cni/net.d` and uses it.
    pub write_default_conflist: bool,
    /// The default network's name.
    pub default_network_name: String,
    /// The default network's bridge device.
    pub default_bridge: String,
    /// The default network's IPv4 pod range (kubelet's UpdateRuntimeConfig pod CIDR
    /// replaces it).
    pub pod_cidr: String,
    /// An optional IPv6 pod range for dual-stack pods ("" = none).
    pub pod_cidr_v6: String,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin")],
            cache_dir: None,
            plugin_timeout_secs: 60,
            builtin_plugins: true,
            write_default_conflist: true,
            default_network_name: "berth".to_string(),
            default_bridge: "berth0".to_string(),
            pod_cidr: "10.88.0.0/16".to_string(),
            pod_cidr_v6: String::new(),
        }
    }
}

/// The `[runtime]` table: pods, containers and their shims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The berth-shim binary. Unset means `berth-shim` next to the berthd executable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shim_path: Option<PathBuf>,
    /// The cgroup (cgroupfs path) under which pods without a kubelet `cgroup_parent` get
    /// their cgroup `<cgroup_root>/pod-<id>`.
    pub cgroup_root: String,
    /// The OCI runtime for pods without a RuntimeClass handler: "" = berth-shim's built-in
    /// runtime, or the name of an entry in `runtimes`.
    pub default_runtime: String,
    /// RuntimeClass handler name -> external OCI runtime binary (runc, crun).
    pub runtimes: BTreeMap<String, PathBuf>,
    /// Seconds a pod or container created for a caller that went away (a kubelet timeout)
    /// is kept for the retry before it is removed.
    pub unclaimed_resource_ttl_secs: u64,
    /// Seconds to wait, after SIGKILL at the end of a stop timeout, for the shim to report
    /// the exit before the stop fails.
    pub stop_timeout_grace: u64,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shim_path: None,
            cgroup_root: "/berth".to_string(),
            default_runtime: String::new(),
            runtimes: BTreeMap::new(),
            unclaimed_resource_ttl_secs: 120,
            stop_timeout_grace: 10,
        }
    }
}

impl RuntimeConfig {
    /// The shim binary: `shim_path`, or `berth-shim` next to the running executable.
    pub fn shim_binary(&self) -> PathBuf {
        if let Some(path) = &self.shim_path {
            return path.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|dir| dir.join("berth-shim")))
            .unwrap_or_else(|| PathBuf::from("berth-shim"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: PathBuf::from(DEFAULT_ROOT),
            state: PathBuf::from(DEFAULT_STATE),
            address: None,
            log_level: "info".to_string(),
            shutdown_timeout_secs: 30,
            images: ImagesConfig::default(),
            runtime: RuntimeConfig::default(),
            network: NetworkConfig::default(),
        }
    }
}

/// Values given on the command line; each one that is set replaces the file's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub address: Option<PathBuf>,
    pub log_level: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl Config {
    /// Loads the config file at `path`. A missing file is an error only when the user named
    /// it (`explicit`); at the default path it means "all defaults", as for containerd.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text)
                .map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message }),
            Err(source) if source.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path: path.to_path_buf(), source }),
        }
    }

    /// Parses TOML text; the error message names the offending key and line.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|err| err.to_string().trim_end().to_string())
    }

    pub fn apply(&mut self, overrides: Overrides) {
        if let Some(root) = overrides.root {
            self.root = root;
        }
        if let Some(state) = overrides.state {
            self.state = state;
        }
        if let Some(address) = overrides.address {
            self.address = Some(address);
        }
        if let Some(log_level) = overrides.log_level {
            self.log_level = log_level;
        }
    }

    /// The CRI socket path: `address`, or `<state>/berth.sock`.
    pub fn socket_path(&self) -> PathBuf {
        match &self.address {
            Some(address) => address.clone(),
            None => self.state.join(SOCKET_FILE_NAME),
        }
    }

    /// The redb database holding image records.
    pub fn metadata_db_path(&self) -> PathBuf {
        self.root.join("meta.redb")
    }

    /// The redb database holding pod and container records.
    pub fn runtime_db_path(&self) -> PathBuf {
        self.root.join("runtime.redb")
    }

    /// The CNI results cache: under root, so it survives reboots as host-local's IP
    /// allocations do, and every leaked allocation can be DEL'd.
    pub fn cni_cache_dir(&self) -> PathBuf {
        self.network.cache_dir.clone().unwrap_or_else(|| self.root.join("cni").join("cache"))
    }

    /// Where berthd writes its default network config when conf_dir has none.
    pub fn cni_default_conf_dir(&self) -> PathBuf {
        self.root.join("cni").join("net.d")
    }
}

/// The full default configuration as commented TOML, for `berthd config default`.
///
/// Written by hand for the comments; the tests check that it parses back to
/// `Config::default()` and names every key the structs serialize, so it cannot drift.
pub fn default_config_toml() -> String {
    let defaults = Config::default();
    let images = &defaults.images;
    format!(
        r#"# berthd configuration. Every key is optional; shown here with its default.
# Flags --root, --state, --address and --log-level override these values.

# Persistent data: content store, snapshots, container bundles and meta.redb.
root = {root}
# Runtime state that does not survive a reboot: the CRI socket, shim state.
state = {state}
# The CRI socket (unix). Unset means <state>/{socket}.
# address = {address}
# Log filter: a level (error, warn, info, debug, trace) or tracing directives
# such as "info,berth_images=debug".
log_level = {log_level}
# Seconds in-flight requests (pulls) get to finish after SIGTERM or SIGINT; a second
# signal exits at once.
shutdown_timeout_secs = {shutdown_timeout_secs}

[images]
# How many layers of one pull download at the same time.
max_concurrent_downloads = {max_concurrent_downloads}
# Seconds to wait for a registry connection before the registry counts as down.
connect_timeout_secs = {connect_timeout_secs}

# Per-registry settings, keyed by registry host as it appears in image references.
# Mirrors are tried in order, then the registry itself. Registries on localhost and
# 127.0.0.0/8 fall back to plain HTTP without any setting, as Docker does.
[images.registries]
# [images.registries."docker.io"]
# plain_http = false
# skip_verify = false
# [[images.registries."docker.io".mirrors]]
# host = "mirror.example.com"
# plain_http = false
# skip_verify = false

[runtime]
# The berth-shim binary. Unset means berth-shim next to the berthd executable.
# shim_path = "/usr/local/bin/berth-shim"
# Pods without a kubelet cgroup_parent get the cgroup <cgroup_root>/pod-<id>.
cgroup_root = {cgroup_root}
# The OCI runtime for pods without a RuntimeClass handler: "" is berth-shim's built-in
# runtime, anything else names an entry of [runtime.runtimes].
default_runtime = {default_runtime}
# Seconds a pod or container created for a caller that gave up (kubelet timeout) is
# kept for its retry before it is removed.
unclaimed_resource_ttl_secs = {unclaimed_resource_ttl_secs}
# Seconds to wait for a container's exit after the final SIGKILL of a stop.
stop_timeout_grace = {stop_timeout_grace}

# RuntimeClass handler name -> external OCI runtime binary.
[runtime.runtimes]
# runc = "/usr/sbin/runc"

[network]
# false: pods get only loopback and Status reports NetworkReady=false.
enabled = {net_enabled}
# The pod network is the first *.conflist, *.conf or *.json (by file name) here.
conf_dir = {conf_dir}
# CNI plugin executables are looked up in these dirs, in order.
bin_dirs = {bin_dirs}
# The CNI ADD results cache, for DEL after restarts. Unset means <root>/cni/cache.
# cache_dir = "/var/lib/berth/cni/cache"
# Seconds an exec'd plugin call may take before it is killed.
plugin_timeout_secs = {plugin_timeout_secs}
# Run berth's bridge, host-local, loopback and portmap in-process when the conflist names
# them; false execs them from bin_dirs like any other plugin.
builtin_plugins = {builtin_plugins}
# When conf_dir has no config, write berth's default network to <root>/cni/net.d and use it.
write_default_conflist = {write_default_conflist}
default_network_name = {default_network_name}
default_bridge = {default_bridge}
# The default network's pod range; kubelet's UpdateRuntimeConfig pod CIDR replaces it.
pod_cidr = {pod_cidr}
# An IPv6 range for dual-stack pods ("" = IPv4 only).
pod_cidr_v6 = {pod_cidr_v6}
"#,
        root = toml_string(&defaults.root.display().to_string()),
        state = toml_string(&defaults.state.display().to_string()),
        socket = SOCKET_FILE_NAME,
        address = toml_string(&defaults.socket_path().display().to_string()),
        log_level = toml_string(&defaults.log_level),
        shutdown_timeout_secs = defaults.shutdown_timeout_secs,
        max_concurrent_downloads = images.max_concurrent_downloads,
        connect_timeout_secs = images.connect_timeout_secs,
        cgroup_root = toml_string(&defaults.runtime.cgroup_root),
        default_runtime = toml_string(&defaults.runtime.default_runtime),
        unclaimed_resource_ttl_secs = defaults.runtime.unclaimed_resource_ttl_secs,
        stop_timeout_grace = defaults.runtime.stop_timeout_grace,
        net_enabled = defaults.network.enabled,
        conf_dir = toml_string(&defaults.network.conf_dir.display().to_string()),
        bin_dirs = toml::Value::Array(defaults.network.bin_dirs.iter().map(|d| toml::Value::String(d.display().to_string())).collect()),
        plugin_timeout_secs = defaults.network.plugin_timeout_secs,
        builtin_plugins = defaults.network.builtin_plugins,
        write_default_conflist = defaults.network.write_default_conflist,
        default_network_name = toml_string(&defaults.network.default_network_name),
        default_bridge = toml_string(&defaults.network.default_bridge),
        pod_cidr = toml_string(&defaults.network.pod_cidr),
        pod_cidr_v6 = toml_string(&defaults.network.pod_cidr_v6),
    )
}

/// A TOML basic string literal (quotes and escapes) for `s`.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_images::{RegistryConfig, RegistryHost};

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&Config::default()).expect("serialize default config");
        assert_eq!(Config::parse(&text).expect("parse serialized default"), Config::default());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").expect("parse empty"), Config::default());
    }

    #[test]
    fn printed_default_parses_to_the_default() {
        assert_eq!(Config::parse(&default_config_toml()).expect("parse printed default"), Config::default());
    }

    /// Every key the structs know (including ones added to `ImagesConfig` later) must be
    /// shown by `berthd config default`, either set or as a commented example.
    #[test]
    fn printed_default_names_every_key() {
        fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
            if let toml::Value::Table(table) = value {
                for (key, value) in table {
                    out.push(key.clone());
                    keys(value, &format!("{prefix}{key}."), out);
                }
            }
        }
        let mut config = Config { address: Some(PathBuf::from("/x")), ..Default::default() };
        config.runtime.shim_path = Some(PathBuf::from("/s"));
        config.network.cache_dir = Some(PathBuf::from("/c"));
        config.runtime.runtimes.insert("runc".into(), PathBuf::from("/usr/sbin/runc"));
        config.images.registries.insert(
            "docker.io".into(),
            RegistryConfig { mirrors: vec![RegistryHost::default()], ..Default::default() },
        );
        let value = toml::Value::try_from(&config).expect("config as toml value");
        let mut all = Vec::new();
        keys(&value, "", &mut all);
        let printed = default_config_toml();
        // "docker.io" and "runc" are map keys chosen by the user, not config keys.
        for key in all.into_iter().filter(|key| key != "docker.io" && key != "runc") {
            assert!(printed.contains(&format!("{key} =")) || printed.contains(&format!("{key}]")),
                "`berthd config default` does not show key {key:?}");
        }
    }

    #[test]
    fn unknown_key_is_refused_and_named() {
        let err = Config::parse("root = \"/r\"\nlog_levle = \"debug\"\n").expect_err("typo must fail");
        assert!(err.contains("log_levle"), "error should name the key: {err}");
        let err = Config::parse("[images]\nmax_downloads = 3\n").expect_err("nested typo must fail");
        assert!(err.contains("max_downloads"), "error should name the key: {err}");
        let err = Config::parse("[images.registries.\"r\"]\nplain = true\n").expect_err("registry typo must fail");
        assert!(err.contains("plain"), "error should name the key: {err}");
    }

    #[test]
    fn registries_and_mirrors_parse() {
        let config = Config::parse(
            r#"
            [images.registries."docker.io"]
            skip_verify = true
            [[images.registries."docker.io".mirrors]]
            host = "127.0.0.1:5001"
            plain_http = true
            "#,
        )
        .expect("parse registries");
        let docker = &config.images.registries["docker.io"];
        assert!(docker.skip_verify);
        assert_eq!(docker.mirrors.len(), 1);
        assert_eq!(docker.mirrors[0].host, "127.0.0.1:5001");
        assert!(docker.mirrors[0].plain_http);
    }

    #[test]
    fn flags_override_the_file() {
        let mut config = Config::parse("root = \"/file/root\"\nstate = \"/file/state\"\nlog_level = \"warn\"\n")
            .expect("parse");
        config.apply(Overrides {
            root: Some("/flag/root".into()),
            state: None,
            address: None,
            log_level: Some("debug".into()),
        });
        assert_eq!(config.root, PathBuf::from("/flag/root"));
        assert_eq!(config.state, PathBuf::from("/file/state"), "unset flags keep the file's value");
        assert_eq!(config.log_level, "debug");
        assert_eq!(config.socket_path(), PathBuf::from("/file/state/berth.sock"));
        config.apply(Overrides { address: Some("/flag/x.sock".into()), ..Default::default() });
        assert_eq!(config.socket_path(), PathBuf::from("/flag/x.sock"));
    }

    #[test]
    fn socket_follows_state_unless_set() {
        assert_eq!(Config::default().socket_path(), PathBuf::from("/run/berth/berth.sock"));
    }

    #[test]
    fn missing_default_file_is_fine_missing_explicit_file_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("config.toml");
        assert_eq!(Config::load(&missing, false).expect("default path may be missing"), Config::default());
        let err = Config::load(&missing, true).expect_err("explicit path must exist");
        assert!(err.to_string().contains("config.toml"), "{err}");
    }
}
