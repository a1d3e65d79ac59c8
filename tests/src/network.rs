//! Pod networks for tests: a conflist of its own per test (unique bridge name, network name
//! and /24 subnet, its own conf dir and host-local data dir), the `[network]` config that
//! points berthd at it, and checks that removed pods left no veth or IP allocation.
//!
//! Dropping a [`TestNetwork`] deletes its bridge and any veth still attached to it, also
//! when the test failed. Traffic in these tests goes only between the test's own pods.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::berthd::random_hex;

/// Debian's reference plugins (`containernetworking-plugins`).
pub const REFERENCE_PLUGIN_DIR: &str = "/usr/lib/cni";

/// Which implementation runs the conflist's `bridge`, `host-local`, `portmap`, `loopback`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginSet {
    /// The reference plugins, exec'd from [`REFERENCE_PLUGIN_DIR`].
    Reference,
    /// berth's built-in plugins, in-process.
    Builtin,
}

pub struct TestNetwork {
    dir: tempfile::TempDir,
    pub plugins: PluginSet,
    /// The network's name in the conflist.
    pub name: String,
    /// A bridge device name unique to the test (at most 15 characters).
    pub bridge: String,
    /// `10.X.Y.0/24`.
    pub subnet: String,
    /// The gateway (bridge) address, `10.X.Y.1`.
    pub gateway: String,
}

/// Whether the reference plugins are installed.
pub fn reference_plugins_available() -> bool {
    ["bridge", "host-local", "loopback", "portmap"].iter().all(|p| Path::new(REFERENCE_PLUGIN_DIR).join(p).exists())
}

impl TestNetwork {
    /// A fresh network with a conflist of bridge (+ host-local), portmap and loopback.
    pub fn new(plugins: PluginSet) -> TestNetwork {
        let dir = tempfile::Builder::new().prefix("btnet-").tempdir().expect("network temp dir");
        let id = random_hex(4);
        let bytes: Vec<u8> = (0..2).map(|i| u8::from_str_radix(&id[i * 2..i * 2 + 2], 16).unwrap_or(0)).collect();
        // 10.100.0.0 - 10.227.255.0: clear of 10.88 (berth's default) and most clusters' ranges.
        let (x, y) = (100 + bytes[0] % 128, bytes[1]);
        let network = TestNetwork {
            dir,
            plugins,
            name: format!("berth-test-{id}"),
            bridge: format!("btbr{id}"),
            subnet: format!("10.{x}.{y}.0/24"),
            gateway: format!("10.{x}.{y}.1"),
        };
        std::fs::create_dir_all(network.conf_dir()).expect("create conf dir");
        network.write_conflist("10-test.conflist", &network.conflist().to_string());
        network
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.path().join("net.d")
    }

    /// host-local's allocations (its `dataDir`).
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// The test's conflist (ipMasq off: pods only talk to each other).
    pub fn conflist(&self) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": self.ipam_dir(),
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "loopback" }
            ]
        })
    }

    /// Writes `text` as `file_name` in the conf dir.
    pub fn write_conflist(&self, file_name: &str, text: &str) {
        std::fs::write(self.conf_dir().join(file_name), text).expect("write conflist");
    }

    /// The `[network]` table for berthd's config.
    pub fn config_toml(&self) -> String {
        let (builtin, bin_dirs) = match self.plugins {
            PluginSet::Reference => (false, format!("[\"{REFERENCE_PLUGIN_DIR}\"]")),
            PluginSet::Builtin => (true, "[]".to_string()),
        };
        format!(
            "[network]\nenabled = true\nconf_dir = \"{}\"\nbin_dirs = {bin_dirs}\nbuiltin_plugins = {builtin}\nwrite_default_conflist = false\nplugin_timeout_secs = 30\n",
            self.conf_dir().display()
        )
    }

    /// Interfaces attached to the bridge (pods' host-side veths).
    pub fn veths(&self) -> Vec<String> {
        let out = Command::new("ip").args(["-o", "link", "show", "master", &self.bridge]).output();
        match out {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// IPs host-local holds for someone (files named after an address).
    pub fn allocated_ips(&self) -> Vec<String> {
        let dir = self.ipam_dir().join(&self.name);
        let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
        let mut ips: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.parse::<std::net::IpAddr>().is_ok())
            .collect();
        ips.sort();
        ips
    }

    /// Asserts that no pod is attached any more: no veth on the bridge, no IP allocated,
    /// nothing in berthd's CNI results cache (`cache_dir`).
    pub fn assert_clean(&self, cache_dir: &Path) {
        assert!(self.veths().is_empty(), "veths left on {}: {:?}", self.bridge, self.veths());
        assert!(self.allocated_ips().is_empty(), "IPs left allocated: {:?}", self.allocated_ips());
        let cached: Vec<PathBuf> = std::fs::read_dir(cache_dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(cached.is_empty(), "CNI cache entries left: {cached:?}");
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for veth in self.veths() {
            let _ = Command::new("ip").args(["link", "del", &veth]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(std::process::Stdio::null()).status();
    }
}

/// berthd's CNI results cache under its root (the `[network] cache_dir` default).
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join("cni").join("cache")
}
