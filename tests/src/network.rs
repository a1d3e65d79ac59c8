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
    /// `fdXX:...::/64` when the network is dual-stack ([`TestNetwork::dual_stack`]).
    pub subnet_v6: Option<String>,
    /// The nft table berth's portmap puts its rules in (`nftTable`, unique to the test;
    /// the reference portmap ignores the key and uses its iptables chains).
    pub portmap_table: String,
}

/// Whether the reference plugins are installed.
pub fn reference_plugins_available() -> bool {
    ["bridge", "host-local", "loopback", "portmap"].iter().all(|p| Path::new(REFERENCE_PLUGIN_DIR).join(p).exists())
}

impl TestNetwork {
    /// A fresh network with a conflist of bridge (+ host-local), portmap and loopback.
    pub fn new(plugins: PluginSet) -> TestNetwork {
        Self::with_v6(plugins, false)
    }

    /// A dual-stack network: the /24 and an IPv6 /64 (unique ULA) as two host-local ranges.
    /// The bridge is no gateway here: as a gateway for IPv6 the reference bridge turns on
    /// host-wide `net.ipv6.conf.all.forwarding`, which a test must not change. Pods on the
    /// bridge still reach each other in both families.
    pub fn dual_stack(plugins: PluginSet) -> TestNetwork {
        Self::with_v6(plugins, true)
    }

    fn with_v6(plugins: PluginSet, dual_stack: bool) -> TestNetwork {
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
            // Groups without leading zeros: the form addresses are printed in, so that a
            // string prefix check of a pod's address against the subnet holds.
            subnet_v6: dual_stack.then(|| {
                let group = |hex: &str| u16::from_str_radix(hex, 16).unwrap_or(0);
                format!("fd42:b7:{:x}:{:x}::/64", group(&id[..4]), group(&id[4..]))
            }),
            portmap_table: format!("btpm{id}"),
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
        let mut ranges = vec![serde_json::json!([{ "subnet": self.subnet }])];
        let mut routes = vec![serde_json::json!({ "dst": "0.0.0.0/0" })];
        if let Some(v6) = &self.subnet_v6 {
            ranges.push(serde_json::json!([{ "subnet": v6 }]));
            // No gateway (see dual_stack), so no default routes either.
            routes.clear();
        }
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": self.subnet_v6.is_none(),
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": ranges,
                        "routes": routes,
                        "dataDir": self.ipam_dir(),
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true }, "nftTable": self.portmap_table },
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
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.portmap_table])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// berthd's CNI results cache under its root (the `[network] cache_dir` default).
pub fn cache_dir(root: &Path) -> PathBuf {
    root.join("cni").join("cache")
}

/// The pinned network namespace of pod `pod_id` (`<state>/pods/<id>/ns/net`).
pub fn pod_netns(state: &Path, pod_id: &str) -> PathBuf {
    state.join("pods").join(pod_id).join("ns").join("net")
}

/// The reference portmap's per-container DNAT chain (`CNI-DN-` + the hex SHA-512 of
/// network name + container id, cut to iptables' 28 characters), as libcni's utils name it.
pub fn reference_dnat_chain(network: &str, container_id: &str) -> String {
    use sha2::{Digest, Sha512};
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("CNI-DN-{hex}")[..28].to_string()
}

/// `iptables -t nat -S` (or ip6tables), one rule or chain per line; empty on failure.
pub fn iptables_nat(ipv6: bool) -> Vec<String> {
    let tool = if ipv6 { "ip6tables" } else { "iptables" };
    match Command::new(tool).args(["-w", "-t", "nat", "-S"]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

impl TestNetwork {
    /// The hostPort state of `pod_ids` on this network: with the built-ins, the rules tagged
    /// for an attachment in the test's own nft table (the table's static base chains do not
    /// count); with the reference portmap, nat rules (IPv4 and IPv6) naming the network
    /// (its `dnat name: "<network>"` comments) or a pod's `CNI-DN-` chain.
    pub fn hostport_rules(&self, pod_ids: &[String]) -> Vec<String> {
        match self.plugins {
            PluginSet::Builtin => {
                let out = Command::new("nft").args(["list", "table", "inet", &self.portmap_table]).output();
                match out {
                    Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .filter(|line| line.contains("comment \"berth-"))
                        .map(|line| line.trim().to_string())
                        .collect(),
                    _ => Vec::new(),
                }
            }
            PluginSet::Reference => {
                let chains: Vec<String> = pod_ids.iter().map(|id| reference_dnat_chain(&self.name, id)).collect();
                let quoted_name = format!("\\\"{}\\\"", self.name);
                [false, true]
                    .into_iter()
                    .flat_map(iptables_nat)
                    .filter(|line| line.contains(&quoted_name) || chains.iter().any(|c| line.contains(c.as_str())))
                    .collect()
            }
        }
    }
}

/// The reference portmap's global nat chains. It creates them (and their jumps from
/// PREROUTING, OUTPUT and POSTROUTING) on its first ADD and never removes them.
pub const REFERENCE_HOSTPORT_CHAINS: [&str; 3] = ["CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-SETMARK", "CNI-HOSTPORT-MASQ"];

/// Cleans up after the reference portmap when dropped: first the DNAT jumps naming the
/// test's network and the `CNI-DN-` chains they lead to (left when a test failed before
/// its pods were removed), then the global chains, but only in the families (IPv4, IPv6)
/// where they did not exist when it was made and only when no `CNI-DN-` chain (someone's
/// live mapping) is left; otherwise it says what it leaves. Tests that create hostPorts
/// with the reference plugins make one before their berthd (so it drops after) and hold
/// [`reference_portmap_lock`], so that one test's clean-up never removes chains another
/// test of the binary uses.
pub struct ReferenceHostportChains {
    network: String,
    existed: [bool; 2],
    /// Whether nftables had `ip nat` / `ip6 nat` (iptables-nft's tables) before.
    nat_table_existed: [bool; 2],
}

impl ReferenceHostportChains {
    pub fn new(net: &TestNetwork) -> ReferenceHostportChains {
        let exists = |ipv6| iptables_nat(ipv6).iter().any(|l| l == &format!("-N {}", REFERENCE_HOSTPORT_CHAINS[0]));
        ReferenceHostportChains {
            network: net.name.clone(),
            existed: [exists(false), exists(true)],
            nat_table_existed: [nat_table(false).is_some(), nat_table(true).is_some()],
        }
    }
}

impl Drop for ReferenceHostportChains {
    fn drop(&mut self) {
        let quoted_name = format!("\\\"{}\\\"", self.network);
        for (i, ipv6) in [false, true].into_iter().enumerate() {
            let tool = if ipv6 { "ip6tables" } else { "iptables" };
            let iptables = |args: &[&str]| {
                let _ = Command::new(tool).args(["-w", "-t", "nat"]).args(args).stderr(std::process::Stdio::null()).status();
            };
            // This network's leftovers.
            for line in iptables_nat(ipv6) {
                if line.starts_with("-A ") && line.contains(&quoted_name) {
                    eprintln!("{tool}: removing a leftover rule of {}: {line}", self.network);
                    let spec = shell_words(&line[3..]);
                    let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
                    iptables(&[&["-D"], &spec[..]].concat());
                    if let Some(chain) = line.rsplit("-j ").next().filter(|c| c.starts_with("CNI-DN-")) {
                        iptables(&["-F", chain]);
                        iptables(&["-X", chain]);
                    }
                }
            }
            let rules = iptables_nat(ipv6);
            let ours = |line: &String| REFERENCE_HOSTPORT_CHAINS.iter().any(|c| line == &format!("-N {c}"));
            if !self.existed[i] && rules.iter().any(ours) {
                if rules.iter().any(|l| l.starts_with("-N CNI-DN-")) {
                    eprintln!("{tool}: leaving the reference portmap's CNI-HOSTPORT-* chains: CNI-DN-* chains still use them");
                } else {
                    remove_reference_hostport_chains(tool, &rules);
                }
            }
            // iptables-nft leaves the table it made (also on DEL, for IPv6 too), with
            // empty base chains: drop it when it holds no rule (nobody uses it).
            let family = if ipv6 { "ip6" } else { "ip" };
            if let Some(listing) = nat_table(ipv6).filter(|_| !self.nat_table_existed[i]) {
                if !nft_listing_has_rules(&listing) {
                    let _ = Command::new("nft").args(["delete", "table", family, "nat"]).status();
                }
            }
        }
    }
}

/// Removes CNI-HOSTPORT-* with `tool` (iptables or ip6tables), given `iptables -S` `rules`.
fn remove_reference_hostport_chains(tool: &str, rules: &[String]) {
    let iptables = |args: &[&str]| {
        let _ = Command::new(tool).args(["-w", "-t", "nat"]).args(args).stderr(std::process::Stdio::null()).status();
    };
    // Jumps from the built-in chains first, then the chains themselves.
    for line in rules {
        let jumps_to_ours = REFERENCE_HOSTPORT_CHAINS.iter().any(|c| line.ends_with(&format!("-j {c}")));
        if line.starts_with("-A ") && jumps_to_ours {
            let spec = shell_words(&line[3..]);
            let spec: Vec<&str> = spec.iter().map(String::as_str).collect();
            iptables(&[&["-D"], &spec[..]].concat());
        }
    }
    for chain in REFERENCE_HOSTPORT_CHAINS {
        iptables(&["-F", chain]);
    }
    for chain in REFERENCE_HOSTPORT_CHAINS {
        iptables(&["-X", chain]);
    }
}

/// `nft list table ip nat` (or `ip6 nat`), if the table exists.
fn nat_table(ipv6: bool) -> Option<String> {
    let family = if ipv6 { "ip6" } else { "ip" };
    let out = Command::new("nft").args(["list", "table", family, "nat"]).stderr(std::process::Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether an `nft list table` listing has any rule (lines other than table/chain
/// headers, base chain hooks and braces).
fn nft_listing_has_rules(listing: &str) -> bool {
    listing.lines().map(str::trim).any(|line| {
        !(line.is_empty() || line == "}" || line.starts_with("table ") || line.starts_with("chain ") || line.starts_with("type "))
    })
}

/// Splits an `iptables -S` rule into arguments (double-quoted words, with `\"` inside).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    let mut started = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quotes && chars.peek() == Some(&'"') => {
                word.push('"');
                chars.next();
            }
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            ' ' if !in_quotes => {
                if started || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => {
                word.push(c);
                started = true;
            }
        }
    }
    if started || !word.is_empty() {
        words.push(word);
    }
    words
}

/// Serializes the tests of one binary that create hostPorts with the reference portmap
/// (see [`ReferenceHostportChains`]).
pub fn reference_portmap_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A TCP port nobody listens on right now (the kernel's pick on 127.0.0.1).
pub fn free_tcp_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// A UDP port nobody has bound right now.
pub fn free_udp_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp 127.0.0.1:0");
    socket.local_addr().expect("local addr").port()
}

/// busybox httpd in `pod` on `port`, serving `page` at `/` and `/index.html`; returns the
/// container id once it runs.
pub async fn run_httpd(env: &mut crate::RuntimeEnv, pod: &crate::Pod, port: u16, page: &str) -> String {
    let script = format!("mkdir -p /tmp/www && echo {page} > /tmp/www/index.html && exec httpd -f -p {port} -h /tmp/www");
    let id = env.run_container(pod, "httpd", &["sh", "-c", &script]).await;
    env.wait_container_state(&id, k8s_cri::v1::ContainerState::ContainerRunning, std::time::Duration::from_secs(10))
        .await;
    id
}

/// wget `url` from container `from` until it answers (httpd may still be starting).
pub async fn wget_in(env: &mut crate::RuntimeEnv, from: &str, url: &str) -> String {
    let deadline = std::time::Instant::now() + crate::timing::secs(10);
    loop {
        // (busybox-static's `wget -T` segfaults; ExecSync's timeout bounds it instead.)
        let out = env.exec(from, &["wget", "-q", "-O", "-", url], 5).await;
        if out.exit_code == 0 {
            return String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        if std::time::Instant::now() > deadline {
            panic!("wget {url} in {from}: exit {} stderr {:?}", out.exit_code, String::from_utf8_lossy(&out.stderr));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
