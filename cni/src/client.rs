//! The CNI client: ADD, CHECK and DEL of a network configuration list for one container
//! (pod), plugin after plugin, with `prevResult` chaining, the results cache and timeouts.
//!
//! Plugins berth has built in run in-process (the fast path) unless disabled; the same
//! bytes go in and come out as for an exec'd plugin, so the two are interchangeable.
//! Everything here blocks: berthd calls it on its blocking pool.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cache::{CacheEntry, CacheError, ResultsCache};
use crate::conf::{self, ConfError};
use crate::types::{error_code, CapabilityArgs, CniResult, Command, ConfList, PluginConf, PluginEnv, PluginError, ResultError};

/// Where the client finds configs and plugins, and how it runs them.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub cache_dir: PathBuf,
    /// Per plugin call; an exec'd plugin over it is killed.
    pub plugin_timeout: Duration,
    /// Run berth's built-in plugins in-process when a conflist names them. Off: every
    /// plugin is exec'd from `bin_dirs` (to compare against, or to debug).
    pub use_builtins: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin")],
            cache_dir: PathBuf::from("/var/lib/berth/cni/cache"),
            plugin_timeout: Duration::from_secs(60),
            use_builtins: true,
        }
    }
}

/// One container's attachment to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// `CNI_ARGS` (kubelet's: IgnoreUnknown, K8S_POD_NAMESPACE, K8S_POD_NAME, ...).
    pub args: Vec<(String, String)>,
    pub capability_args: CapabilityArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Conf(#[from] ConfError),
    #[error("CNI plugin {plugin:?} not found in {dirs}")]
    PluginNotFound { plugin: String, dirs: String },
    #[error("CNI plugin {plugin} {command} failed: {error}")]
    Plugin { plugin: String, command: Command, error: PluginError },
    #[error("CNI plugin {plugin} {command}: {error}")]
    BadResult { plugin: String, command: Command, error: ResultError },
    #[error("network namespace {0} does not exist")]
    NetnsMissing(PathBuf),
    #[error("cached network config of {container}: {message}")]
    BadCache { container: String, message: String },
    #[error("no cached ADD result of {container} on network {network} to CHECK against")]
    NotAttached { network: String, container: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl CniError {
    /// The plugin's own error, when a plugin failed.
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match self {
            CniError::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// A built-in plugin entry point (`plugins::invoke`'s signature).
type BuiltinFn = fn(&str, &PluginEnv, &[u8]) -> Result<Vec<u8>, PluginError>;

/// The in-process implementation of `plugin_type`, if berth has one.
fn builtin(plugin_type: &str) -> Option<BuiltinFn> {
    crate::plugins::is_builtin(plugin_type).then_some(crate::plugins::invoke as BuiltinFn)
}

/// Whether `path` is a live network namespace (an nsfs file: a pin or /proc/<pid>/ns/net).
pub fn is_netns(path: &Path) -> bool {
    const NSFS_MAGIC: libc::c_long = 0x6e73_6673;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid C string, buf a valid out pointer.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    rc == 0 && buf.f_type as libc::c_long == NSFS_MAGIC
}

/// How one plugin is run.
enum Runner {
    Builtin(BuiltinFn),
    Exec(PathBuf),
}

#[derive(Debug)]
pub struct CniClient {
    config: ClientConfig,
    cache: ResultsCache,
}

impl CniClient {
    pub fn new(config: ClientConfig) -> Self {
        let cache = ResultsCache::new(config.cache_dir.clone());
        CniClient { config, cache }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub fn cache(&self) -> &ResultsCache {
        &self.cache
    }

    /// The pod network: the first config in the conf dir.
    pub fn load_network(&self) -> Result<ConfList, CniError> {
        Ok(conf::load_first(&self.config.conf_dir)?)
    }

    /// Whether every plugin `list` names can be run (built in, or found in bin_dirs).
    pub fn check_plugins(&self, list: &ConfList) -> Result<(), CniError> {
        self.runners(list).map(|_| ())
    }

    fn runner(&self, plugin_type: &str) -> Result<Runner, CniError> {
        if self.config.use_builtins {
            if let Some(f) = builtin(plugin_type) {
                return Ok(Runner::Builtin(f));
            }
        }
        conf::find_plugin(plugin_type, &self.config.bin_dirs).map(Runner::Exec).ok_or_else(|| CniError::PluginNotFound {
            plugin: plugin_type.to_string(),
            dirs: self.config.bin_dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        })
    }

    fn runners(&self, list: &ConfList) -> Result<Vec<Runner>, CniError> {
        list.plugins.iter().map(|p| self.runner(&p.plugin_type)).collect()
    }

    fn env(&self, command: Command, attachment: &Attachment, netns: PathBuf) -> PluginEnv {
        PluginEnv {
            command,
            container_id: attachment.container_id.clone(),
            netns,
            ifname: attachment.ifname.clone(),
            args: attachment.args.clone(),
            path: self.config.bin_dirs.clone(),
        }
    }

    /// Runs one plugin of `list` and returns its stdout.
    fn call(
        &self,
        runner: &Runner,
        list: &ConfList,
        plugin: &PluginConf,
        env: &PluginEnv,
        prev_result: Option<&CniResult>,
        capability_args: &CapabilityArgs,
    ) -> Result<Vec<u8>, CniError> {
        let stdin = plugin_stdin(list, plugin, prev_result, capability_args);
        let started = Instant::now();
        let out = match runner {
            Runner::Builtin(f) => f(&plugin.plugin_type, env, &stdin),
            Runner::Exec(binary) => crate::exec::exec_plugin(binary, env, &stdin, self.config.plugin_timeout),
        };
        tracing::debug!(
            network = %list.name, plugin = %plugin.plugin_type, command = %env.command, container = %env.container_id,
            builtin = matches!(runner, Runner::Builtin(_)), ok = out.is_ok(),
            elapsed_us = started.elapsed().as_micros() as u64, "CNI plugin call"
        );
        out.map_err(|error| CniError::Plugin { plugin: plugin.plugin_type.clone(), command: env.command, error })
    }

    /// ADD: every plugin in order, each getting the previous one's result. On a failure
    /// the plugins that ran (and the failing one) get DEL, in reverse, and the error is
    /// returned: nothing of the attachment remains.
    pub fn add(&self, list: &ConfList, attachment: &Attachment) -> Result<CniResult, CniError> {
        // Everything that can be checked is checked before anything changes.
        let runners = self.runners(list)?;
        if !is_netns(&attachment.netns) {
            return Err(CniError::NetnsMissing(attachment.netns.clone()));
        }
        let entry = CacheEntry::new(
            &list.name,
            &attachment.container_id,
            &attachment.ifname,
            &attachment.netns,
            &attachment.args,
            &attachment.capability_args,
            list.to_value(),
        );
        self.cache.put(&entry)?;
        let env = self.env(Command::Add, attachment, attachment.netns.clone());
        let mut result: Option<CniResult> = None;
        for (index, (plugin, runner)) in list.plugins.iter().zip(&runners).enumerate() {
            let step = self
                .call(runner, list, plugin, &env, result.as_ref(), &attachment.capability_args)
                .and_then(|out| parse_add_output(&out, list, plugin, result.take()));
            match step {
                Ok(next) => result = Some(next),
                Err(err) => {
                    tracing::warn!(network = %list.name, container = %attachment.container_id, plugin = %plugin.plugin_type, error = %err, "CNI ADD failed: deleting what was added");
                    let del_env = self.env(Command::Del, attachment, attachment.netns.clone());
                    for (plugin, runner) in list.plugins[..=index].iter().zip(&runners).rev() {
                        if let Err(del_err) = self.call(runner, list, plugin, &del_env, result.as_ref(), &attachment.capability_args) {
                            tracing::warn!(plugin = %plugin.plugin_type, error = %del_err, "CNI DEL after a failed ADD failed");
                        }
                    }
                    if let Err(cache_err) = self.cache.remove(&list.name, &attachment.container_id, &attachment.ifname) {
                        tracing::warn!(error = %cache_err, "could not remove the CNI cache entry of a failed ADD");
                    }
                    return Err(err);
                }
            }
        }
        let result = result.unwrap_or_else(|| CniResult { cni_version: list.cni_version.clone(), ..Default::default() });
        // The durable pre-ADD entry already makes DEL possible; the result only adds
        // prevResult (see crate::cache).
        self.cache.put_result(&list.name, &attachment.container_id, &attachment.ifname, &result.to_version(&list.cni_version))?;
        Ok(result)
    }

    /// CHECK against the cached ADD result (spec 0.4.0 and later; a list with
    /// `disableCheck` passes).
    pub fn check(&self, list: &ConfList, attachment: &Attachment) -> Result<(), CniError> {
        if list.disable_check || list.cni_version.starts_with("0.3") {
            return Ok(());
        }
        let runners = self.runners(list)?;
        let not_attached = || CniError::NotAttached { network: list.name.clone(), container: attachment.container_id.clone() };
        let entry = self.cache.get(&list.name, &attachment.container_id, &attachment.ifname)?.ok_or_else(not_attached)?;
        let prev = entry
            .result
            .map(|value| CniResult::from_value(value, &list.cni_version))
            .transpose()
            .map_err(|err| CniError::BadCache { container: attachment.container_id.clone(), message: err.to_string() })?
            .ok_or_else(not_attached)?;
        if !is_netns(&attachment.netns) {
            return Err(CniError::NetnsMissing(attachment.netns.clone()));
        }
        let env = self.env(Command::Check, attachment, attachment.netns.clone());
        for (plugin, runner) in list.plugins.iter().zip(&runners) {
            self.call(runner, list, plugin, &env, Some(&prev), &attachment.capability_args)?;
        }
        Ok(())
    }

    /// DEL of every cached attachment of `container_id` (berth attaches a pod to one
    /// network, but a changed config may have left more). Uses the conflist and args ADD
    /// ran with, so a config changed or removed since still cleans up. A netns that is gone
    /// is passed as empty CNI_NETNS, which plugins take as "already gone". Nothing cached:
    /// nothing to do.
    pub fn del_container(&self, container_id: &str) -> Result<usize, CniError> {
        let entries = self.cache.list_container(container_id)?;
        let mut first_error = None;
        for entry in &entries {
            if let Err(err) = self.del_entry(entry) {
                first_error.get_or_insert(err);
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(entries.len()),
        }
    }

    /// DEL of one cached attachment; its cache entry is removed when every plugin's DEL
    /// succeeded (else kept, for the next try).
    pub fn del_entry(&self, entry: &CacheEntry) -> Result<(), CniError> {
        let bad_cache = |message: String| CniError::BadCache { container: entry.container_id.clone(), message };
        let conflist_bytes = serde_json::to_vec(&entry.conflist).map_err(|e| bad_cache(e.to_string()))?;
        let list = ConfList::parse(&conflist_bytes).map_err(bad_cache)?;
        let prev = match &entry.result {
            Some(value) => match CniResult::from_value(value.clone(), &list.cni_version) {
                Ok(result) => Some(result),
                Err(err) => {
                    // A DEL without prevResult still releases IPs by container id.
                    tracing::warn!(container = %entry.container_id, error = %err, "cached CNI result unreadable; DEL without prevResult");
                    None
                }
            },
            None => None,
        };
        let attachment = Attachment {
            container_id: entry.container_id.clone(),
            netns: entry.netns.clone(),
            ifname: entry.ifname.clone(),
            args: entry.args.clone(),
            capability_args: entry.capability_args.clone(),
        };
        let netns = if is_netns(&entry.netns) { entry.netns.clone() } else { PathBuf::new() };
        let env = self.env(Command::Del, &attachment, netns);
        let started = Instant::now();
        let mut first_error = None;
        for plugin in list.plugins.iter().rev() {
            let step = self
                .runner(&plugin.plugin_type)
                .and_then(|runner| self.call(&runner, &list, plugin, &env, prev.as_ref(), &entry.capability_args));
            if let Err(err) = step {
                // The other plugins still get their DEL: a failing portmap must not leak an IP.
                tracing::warn!(network = %list.name, container = %entry.container_id, plugin = %plugin.plugin_type, error = %err, "CNI DEL failed");
                first_error.get_or_insert(err);
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        self.cache.remove(&entry.network_name, &entry.container_id, &entry.ifname)?;
        tracing::debug!(network = %list.name, container = %entry.container_id, elapsed_us = started.elapsed().as_micros() as u64, "CNI DEL done");
        Ok(())
    }

    /// The cached attachment of a container to `network`.
    pub fn cached(&self, network: &str, container_id: &str, ifname: &str) -> Result<Option<CacheEntry>, CniError> {
        Ok(self.cache.get(network, container_id, ifname)?)
    }
}

/// The config JSON a plugin gets on stdin: its own entry, with the list's name and
/// cniVersion, `prevResult` in the list's version, and `runtimeConfig` holding only the
/// capabilities it declares.
pub fn plugin_stdin(list: &ConfList, plugin: &PluginConf, prev_result: Option<&CniResult>, capability_args: &CapabilityArgs) -> Vec<u8> {
    let mut obj = plugin.raw.clone();
    obj.insert("name".into(), Value::String(list.name.clone()));
    obj.insert("cniVersion".into(), Value::String(list.cni_version.clone()));
    match prev_result {
        Some(prev) => {
            obj.insert("prevResult".into(), prev.to_version(&list.cni_version));
        }
        None => {
            obj.remove("prevResult");
        }
    }
    match capability_args.runtime_config_for(plugin) {
        Some(runtime_config) => {
            obj.insert("runtimeConfig".into(), runtime_config);
        }
        None => {
            obj.remove("runtimeConfig");
        }
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// An ADD's stdout as a result. A plugin that prints nothing passes the previous result
/// on (some meta plugins do; the spec wants them to print it).
fn parse_add_output(out: &[u8], list: &ConfList, plugin: &PluginConf, prev: Option<CniResult>) -> Result<CniResult, CniError> {
    if out.iter().all(u8::is_ascii_whitespace) {
        if let Some(prev) = prev {
            return Ok(prev);
        }
        return Err(CniError::Plugin {
            plugin: plugin.plugin_type.clone(),
            command: Command::Add,
            error: PluginError::new(error_code::DECODE_FAILURE, "ADD printed no result"),
        });
    }
    CniResult::parse(out, &list.cni_version).map_err(|error| CniError::BadResult { plugin: plugin.plugin_type.clone(), command: Command::Add, error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Bandwidth, PortMapping};
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    struct Fixture {
        dir: tempfile::TempDir,
        client: CniClient,
    }

    /// Fake plugins: each logs "<type> <command> <stdin>" to log and answers per type.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let log = dir.path().join("log");
        let logged = |name: &str, answer: &str| format!("read -r IN; echo \"{name} $CNI_COMMAND $CNI_NETNS $IN\" >> {}; {answer}", log.display());
        // 0.4.0 result, as the reference plugins print when asked for 0.4.0.
        script(&bin, "fakebridge", &logged("fakebridge", r#"[ "$CNI_COMMAND" = ADD ] && echo '{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","interface":0,"address":"10.9.0.2/24","gateway":"10.9.0.1"}]}'; exit 0"#));
        // Passes prevResult through.
        script(&bin, "fakeportmap", &logged("fakeportmap", r#"[ "$CNI_COMMAND" = ADD ] && echo "$IN" | sed 's/.*"prevResult":\({.*}\),"runtimeConfig".*/\1/'; exit 0"#));
        script(&bin, "fail", &logged("fail", r#"[ "$CNI_COMMAND" = ADD ] && { echo '{"code":11,"msg":"no more addresses","details":"range full"}'; exit 1; }; exit 0"#));
        let client = CniClient::new(ClientConfig {
            conf_dir: dir.path().join("net.d"),
            bin_dirs: vec![bin],
            cache_dir: dir.path().join("cache"),
            plugin_timeout: Duration::from_secs(10),
            use_builtins: false,
        });
        Fixture { dir, client }
    }

    impl Fixture {
        fn log(&self) -> Vec<String> {
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default().lines().map(String::from).collect()
        }
        fn attachment(&self) -> Attachment {
            Attachment {
                container_id: "pod1".into(),
                netns: "/proc/self/ns/net".into(),
                ifname: "eth0".into(),
                args: vec![("K8S_POD_NAME".into(), "p".into())],
                capability_args: CapabilityArgs {
                    port_mappings: vec![PortMapping { host_port: 8080, container_port: 80, protocol: "tcp".into(), host_ip: String::new() }],
                    bandwidth: Some(Bandwidth { ingress_rate: 1000, ..Default::default() }),
                    ..Default::default()
                },
            }
        }
    }

    fn list(plugins: &str) -> ConfList {
        ConfList::parse(format!(r#"{{"cniVersion":"0.4.0","name":"testnet","plugins":[{plugins}]}}"#).as_bytes()).unwrap()
    }

    #[test]
    fn add_chains_prev_result_and_del_reverses_with_cache() {
        let f = fixture();
        let list = list(r#"{"type":"fakebridge","bridge":"b0"},{"type":"fakeportmap","capabilities":{"portMappings":true}}"#);
        let result = f.client.add(&list, &f.attachment()).unwrap();
        assert_eq!(result.sandbox_ips("eth0"), vec!["10.9.0.2".parse::<std::net::IpAddr>().unwrap()]);
        let log = f.log();
        assert_eq!(log.len(), 2, "{log:?}");
        // The bridge gets its own keys, the list's name, no prevResult and no runtimeConfig.
        assert!(log[0].starts_with("fakebridge ADD /proc/self/ns/net "), "{}", log[0]);
        assert!(log[0].contains(r#""bridge":"b0""#) && log[0].contains(r#""name":"testnet""#));
        assert!(!log[0].contains("prevResult") && !log[0].contains("runtimeConfig"));
        // portmap gets the bridge's result (0.4.0 shape) and only portMappings.
        assert!(log[1].contains(r#""prevResult":{"#) && log[1].contains(r#""version":"4""#), "{}", log[1]);
        assert!(log[1].contains(r#""runtimeConfig":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]}"#), "{}", log[1]);
        assert!(!log[1].contains("bandwidth"));
        // Cached with the result.
        let entry = f.client.cached("testnet", "pod1", "eth0").unwrap().unwrap();
        assert!(entry.result.is_some());

        // CHECK runs in order with the cached result.
        f.client.check(&list, &f.attachment()).unwrap();
        let log = f.log();
        assert!(log[2].starts_with("fakebridge CHECK") && log[2].contains("prevResult"));
        assert!(log[3].starts_with("fakeportmap CHECK"));

        // A fresh client (a restart) DELs from the cache alone, in reverse order; the
        // conf dir does not even exist.
        let restarted = CniClient::new(f.client.config().clone());
        assert_eq!(restarted.del_container("pod1").unwrap(), 1);
        let log = f.log();
        assert!(log[4].starts_with("fakeportmap DEL /proc/self/ns/net") && log[4].contains("prevResult"), "{}", log[4]);
        assert!(log[5].starts_with("fakebridge DEL"));
        assert!(f.client.cached("testnet", "pod1", "eth0").unwrap().is_none());
        // Again: nothing cached, nothing to do.
        assert_eq!(restarted.del_container("pod1").unwrap(), 0);
        assert_eq!(f.log().len(), 6);
    }

    #[test]
    fn failed_add_dels_what_ran_and_keeps_the_plugin_message() {
        let f = fixture();
        let list = list(r#"{"type":"fakebridge"},{"type":"fail"},{"type":"fakeportmap"}"#);
        let err = f.client.add(&list, &f.attachment()).unwrap_err();
        assert!(err.to_string().contains("no more addresses") && err.to_string().contains("range full"), "{err}");
        assert_eq!(err.plugin_error().map(|e| e.code), Some(11));
        let log: Vec<String> = f.log().iter().map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(log, ["fakebridge ADD", "fail ADD", "fail DEL", "fakebridge DEL"]);
        assert!(f.client.cache().list().unwrap().is_empty());
    }

    #[test]
    fn missing_plugin_fails_before_anything_runs() {
        let f = fixture();
        let list = list(r#"{"type":"fakebridge"},{"type":"nosuchplugin"}"#);
        let err = f.client.add(&list, &f.attachment()).unwrap_err();
        assert!(matches!(err, CniError::PluginNotFound { .. }), "{err}");
        assert!(err.to_string().contains("nosuchplugin"));
        assert!(f.log().is_empty());
        assert!(f.client.cache().list().unwrap().is_empty());
    }

    #[test]
    fn del_with_a_gone_netns_passes_an_empty_one() {
        let f = fixture();
        let list = list(r#"{"type":"fakebridge"}"#);
        f.client.add(&list, &f.attachment()).unwrap();
        let mut entry = f.client.cached("testnet", "pod1", "eth0").unwrap().unwrap();
        entry.netns = f.dir.path().join("gone-netns");
        f.client.cache().put(&entry).unwrap();
        f.client.del_container("pod1").unwrap();
        assert!(f.log()[1].starts_with("fakebridge DEL  {"), "{:?}", f.log());
    }

    #[test]
    fn add_needs_a_netns() {
        let f = fixture();
        let mut attachment = f.attachment();
        attachment.netns = f.dir.path().to_path_buf();
        let err = f.client.add(&list(r#"{"type":"fakebridge"}"#), &attachment).unwrap_err();
        assert!(matches!(err, CniError::NetnsMissing(_)));
        assert!(f.log().is_empty());
    }

    #[test]
    fn runtime_config_only_for_declared_capabilities() {
        let l = list(r#"{"type":"a","capabilities":{"bandwidth":true,"mac":true,"ips":false}}"#);
        let caps = CapabilityArgs {
            port_mappings: vec![PortMapping { host_port: 1, container_port: 2, protocol: "udp".into(), host_ip: "127.0.0.1".into() }],
            bandwidth: Some(Bandwidth { egress_rate: 5, ..Default::default() }),
            ips: vec!["10.0.0.9/24".into()],
            mac: "aa:bb:cc:dd:ee:ff".into(),
        };
        let stdin: Value = serde_json::from_slice(&plugin_stdin(&l, &l.plugins[0], None, &caps)).unwrap();
        assert_eq!(stdin["runtimeConfig"], serde_json::json!({"bandwidth": {"egressRate": 5}, "mac": "aa:bb:cc:dd:ee:ff"}));
        assert_eq!(stdin["cniVersion"], "0.4.0");
    }
}
