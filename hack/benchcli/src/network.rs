//! `network`: pod network setup (CNI ADD) and teardown (CNI DEL) per pod, berth's
//! built-in plugins in-process against the reference plugins exec'd from a bin dir, with
//! the same conflist, in one run; prints the table (median, p90, ratio vs the target).
//!
//! It drives `berth_cni::CniClient` directly, exactly as berthd's `CniNetwork` does (the
//! same ADD chain, prevResult, results cache write, DEL from the cache), so RunPodSandbox's
//! other steps do not blur the numbers. Each set gets its own conflist file (identical but
//! for the network and bridge names) and its own host-local dataDir and cache dir.
//!
//! Isolation: the process first moves into a private network namespace and a private
//! mount namespace (with its own /sys). The "host" side of every plugin (bridge, veths,
//! iptables chains of the reference portmap and ipMasq, berth's nft tables, sysctls) and
//! every pod namespace pin live there, and vanish when the process exits, also on failure.
//! Nothing touches the real host's network.
//!
//! Pods are attached in turns (built-in, reference, built-in, ...; who goes first
//! alternates), all N stay attached, then all are detached in turns: rule tables grow as
//! they would on a node. One warm-up pod per set (which also creates its bridge) is not
//! counted.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use berth_cni::types::{CapabilityArgs, ConfList, PortMapping};
use berth_cni::{Attachment, ClientConfig, CniClient};
use serde::Serialize;

use crate::stats::{median, percentile};

pub struct NetworkBenchOptions {
    /// Pods measured per plugin set.
    pub pods: usize,
    /// Where the reference plugins are (Debian: /usr/lib/cni).
    pub reference_bin_dir: PathBuf,
    /// Scratch dir (conf dirs, IPAM data, caches, namespace pins); must exist.
    pub work_dir: PathBuf,
    /// hostPorts per pod (portmap's work); 0 leaves portmap with nothing to do.
    pub host_ports: usize,
    /// An IPv6 range too (dual-stack pods).
    pub ipv6: bool,
    /// The target: built-in time / reference time at most this.
    pub target: f64,
}

#[derive(Serialize)]
struct SetResult {
    plugins: &'static str,
    add_ms: Vec<f64>,
    del_ms: Vec<f64>,
}

impl SetResult {
    fn total_ms(&self) -> Vec<f64> {
        self.add_ms.iter().zip(&self.del_ms).map(|(a, d)| a + d).collect()
    }
}

/// One plugin set under test.
struct PluginSet {
    label: &'static str,
    client: CniClient,
    list: ConfList,
    /// The bridge's name (a pod namespace never holds it; used only in messages).
    bridge: String,
}

// Pod `pod` of both sets is attached back to back: the loops index two sets' lists.
#[allow(clippy::needless_range_loop)]
pub fn run(options: NetworkBenchOptions) -> anyhow::Result<bool> {
    ensure!(options.pods > 0, "--pods must be at least 1");
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        let path = options.reference_bin_dir.join(plugin);
        ensure!(path.exists(), "reference plugin {} is missing (Debian: apt-get install containernetworking-plugins)", path.display());
    }
    enter_private_namespaces()?;

    let work = options.work_dir.canonicalize().with_context(|| format!("work dir {}", options.work_dir.display()))?;
    let builtin = plugin_set("berth in-process", "b", &work, &options, None)?;
    let reference = plugin_set("reference exec", "r", &work, &options, Some(&options.reference_bin_dir))?;
    let sets = [builtin, reference];

    // Namespaces for every pod (and the warm-ups), made before anything is timed.
    let pins = work.join("netns");
    fs::create_dir_all(&pins)?;
    let pod_count = options.pods + 1;
    let mut namespaces: Vec<Vec<PathBuf>> = Vec::new();
    for set in 0..sets.len() {
        let mut paths = Vec::new();
        for pod in 0..pod_count {
            paths.push(new_netns(&pins.join(format!("s{set}p{pod}")))?);
        }
        namespaces.push(paths);
    }
    let mut next_port = 20000u16;
    let mut mappings = |count: usize| -> Vec<PortMapping> {
        (0..count)
            .map(|_| {
                next_port += 1;
                PortMapping { host_port: next_port, container_port: 80, protocol: "tcp".into(), host_ip: String::new() }
            })
            .collect()
    };
    let attachments: Vec<Vec<Attachment>> = (0..sets.len())
        .map(|set| {
            (0..pod_count)
                .map(|pod| Attachment {
                    container_id: format!("bench{set}x{pod:04}"),
                    netns: namespaces[set][pod].clone(),
                    ifname: "eth0".into(),
                    args: vec![
                        ("IgnoreUnknown".into(), "1".into()),
                        ("K8S_POD_NAMESPACE".into(), "bench".into()),
                        ("K8S_POD_NAME".into(), format!("pod{pod}")),
                    ],
                    capability_args: CapabilityArgs { port_mappings: mappings(options.host_ports), ..Default::default() },
                })
                .collect()
        })
        .collect();

    // Warm-up: bridges, nft tables / iptables chains, page cache of the plugin binaries.
    for (set, plugins) in sets.iter().enumerate() {
        let attachment = &attachments[set][0];
        plugins.client.add(&plugins.list, attachment).with_context(|| format!("{}: warm-up ADD on {}", plugins.label, plugins.bridge))?;
        plugins.client.del_container(&attachment.container_id).with_context(|| format!("{}: warm-up DEL", plugins.label))?;
    }

    let mut results: Vec<SetResult> = sets.iter().map(|s| SetResult { plugins: s.label, add_ms: Vec::new(), del_ms: Vec::new() }).collect();
    let order = |pod: usize| -> [usize; 2] { if pod.is_multiple_of(2) { [0, 1] } else { [1, 0] } };
    for pod in 1..pod_count {
        for set in order(pod) {
            let plugins = &sets[set];
            let started = Instant::now();
            let result = plugins.client.add(&plugins.list, &attachments[set][pod]).with_context(|| format!("{}: ADD of pod {pod}", plugins.label))?;
            results[set].add_ms.push(ms(started.elapsed()));
            ensure!(!result.ips.is_empty(), "{}: ADD of pod {pod} gave no IP", plugins.label);
        }
    }
    for pod in 1..pod_count {
        for set in order(pod) {
            let plugins = &sets[set];
            let started = Instant::now();
            let deleted = plugins.client.del_container(&attachments[set][pod].container_id).with_context(|| format!("{}: DEL of pod {pod}", plugins.label))?;
            results[set].del_ms.push(ms(started.elapsed()));
            ensure!(deleted == 1, "{}: DEL of pod {pod} found {deleted} cached attachments", plugins.label);
        }
    }
    for (set, plugins) in sets.iter().enumerate() {
        let left = plugins.client.cache().list()?.len();
        ensure!(left == 0, "{}: {left} cache entries left", plugins.label);
        let ipam = work.join(format!("ipam-{}", ["b", "r"][set])).join(&plugins.list.name);
        let ips: Vec<String> = fs::read_dir(&ipam)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect())
            .unwrap_or_default();
        ensure!(ips.is_empty(), "{}: IPs left allocated: {ips:?}", plugins.label);
    }

    println!("{}", serde_json::to_string(&results)?);
    Ok(print_table(&results, &options))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn print_table(results: &[SetResult], options: &NetworkBenchOptions) -> bool {
    let (builtin, reference) = (&results[0], &results[1]);
    println!();
    println!(
        "pod network setup (CNI ADD) + teardown (CNI DEL) per pod, {} pods per set, conflist: bridge (isGateway, ipMasq, hairpin) + host-local ({}) + portmap ({} hostPort{}) + loopback",
        options.pods,
        if options.ipv6 { "IPv4 + IPv6" } else { "IPv4" },
        options.host_ports,
        if options.host_ports == 1 { "" } else { "s" }
    );
    println!();
    println!("| metric (ms) | berth in-process | reference exec | ratio | target |");
    println!("|---|---:|---:|---:|---:|");
    let mut met = true;
    let rows: [(&str, Vec<f64>, Vec<f64>, bool); 6] = [
        ("setup median", builtin.add_ms.clone(), reference.add_ms.clone(), false),
        ("setup p90", builtin.add_ms.clone(), reference.add_ms.clone(), false),
        ("teardown median", builtin.del_ms.clone(), reference.del_ms.clone(), false),
        ("teardown p90", builtin.del_ms.clone(), reference.del_ms.clone(), false),
        ("setup + teardown median", builtin.total_ms(), reference.total_ms(), true),
        ("setup + teardown p90", builtin.total_ms(), reference.total_ms(), false),
    ];
    for (name, ours, theirs, judged) in rows {
        let stat = |v: &[f64]| if name.ends_with("p90") { percentile(v, 90.0) } else { median(v) };
        let (a, b) = (stat(&ours), stat(&theirs));
        let ratio = a / b;
        let target = if judged {
            let ok = ratio <= options.target;
            met &= ok;
            format!("<= {:.2} {}", options.target, if ok { "met" } else { "MISSED" })
        } else {
            String::new()
        };
        println!("| {name} | {a:.2} | {b:.2} | {ratio:.3} | {target} |");
    }
    met
}

/// The conflist both sets run (network and bridge names differ per set).
fn conflist(name: &str, bridge: &str, ipam_dir: &Path, options: &NetworkBenchOptions) -> serde_json::Value {
    let mut ranges = vec![serde_json::json!([{ "subnet": "10.77.0.0/16" }])];
    let mut routes = vec![serde_json::json!({ "dst": "0.0.0.0/0" })];
    if options.ipv6 {
        ranges.push(serde_json::json!([{ "subnet": "fd77:be::/64" }]));
        routes.push(serde_json::json!({ "dst": "::/0" }));
    }
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": { "type": "host-local", "ranges": ranges, "routes": routes, "dataDir": ipam_dir }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
            { "type": "loopback" }
        ]
    })
}

fn plugin_set(
    label: &'static str,
    tag: &str,
    work: &Path,
    options: &NetworkBenchOptions,
    exec_from: Option<&Path>,
) -> anyhow::Result<PluginSet> {
    let conf_dir = work.join(format!("net.d-{tag}"));
    fs::create_dir_all(&conf_dir)?;
    let bridge = format!("bench-{tag}0");
    let name = format!("bench-{tag}");
    let text = conflist(&name, &bridge, &work.join(format!("ipam-{tag}")), options);
    fs::write(conf_dir.join("10-bench.conflist"), serde_json::to_vec_pretty(&text)?)?;
    let client = CniClient::new(ClientConfig {
        conf_dir,
        bin_dirs: exec_from.map(|d| vec![d.to_path_buf()]).unwrap_or_default(),
        cache_dir: work.join(format!("cache-{tag}")),
        plugin_timeout: Duration::from_secs(30),
        use_builtins: exec_from.is_none(),
    });
    let list = client.load_network().with_context(|| format!("{label}: loading the conflist"))?;
    client.check_plugins(&list).with_context(|| format!("{label}: plugins"))?;
    Ok(PluginSet { label, client, list, bridge })
}

/// Moves this (still single-threaded) process into a new network namespace with `lo` up,
/// and a new mount namespace with private propagation and a /sys of the new network
/// namespace (plugins that read /sys/class/net see its devices).
fn enter_private_namespaces() -> anyhow::Result<()> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).context("unshare(net, mount): run as root")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).context("making / private")?;
    mount(Some("sysfs"), "/sys", Some("sysfs"), MsFlags::empty(), None::<&str>).context("mounting /sys")?;
    let status = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status().context("ip link set lo up")?;
    if !status.success() {
        bail!("ip link set lo up: {status}");
    }
    Ok(())
}

/// A new network namespace pinned (bind mount) at `pin`; unpinned when the mount
/// namespace goes away with this process.
fn new_netns(pin: &Path) -> anyhow::Result<PathBuf> {
    fs::write(pin, b"").with_context(|| format!("creating {}", pin.display()))?;
    let target = pin.to_path_buf();
    // unshare on a thread of its own: only that thread moves.
    std::thread::spawn(move || -> anyhow::Result<()> {
        use nix::mount::{mount, MsFlags};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare(net)")?;
        mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .with_context(|| format!("pinning a netns at {}", target.display()))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("netns thread panicked"))??;
    Ok(pin.to_path_buf())
}
