//! Root tests of the built-in plugins against the real kernel: namespaces made here (by
//! unshare and a bind mount under a temp dir), a bridge, subnet and nft tables unique to
//! each test, all removed at the end, also on failure. Traffic goes only to loopback and to the test
//! namespaces' own addresses. Skipped when not root.
//!
//! Every test runs ADD/DEL in-process (`plugins::invoke`) or through the `berth-cni` binary
//! (exec'd under the plugin's name, as a runtime would), and checks that DEL leaves no veth,
//! no IP file and no nft rule.

use std::fs;
use std::net::{IpAddr, TcpListener};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use berth_cni::plugins::netns::Netns;
use berth_cni::plugins::{self, nft};
use berth_cni::types::{CniResult, Command, PluginEnv, PluginError};
use serde_json::{json, Value};

const BUSYBOX: &str = "/usr/bin/busybox";

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// A network namespace bound at `<tmp>/ns`; unmounted and removed on drop.
struct TestNetns {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestNetns {
    fn new() -> TestNetns {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns");
        fs::write(&path, b"").unwrap();
        let target = path.clone();
        // unshare on a thread of its own: only that thread moves to the new namespace.
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            nix::mount::mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .unwrap();
        })
        .join()
        .unwrap();
        TestNetns { path, _dir: dir }
    }

    /// Unmounts the namespace (it vanishes when nothing else holds it).
    fn remove(&self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }

    fn cmd(&self, args: &[&str]) -> Process {
        let mut cmd = Process::new("nsenter");
        cmd.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A child process killed (by PID) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One test's network: unique bridge, subnets, data dir and nft tables; removed on drop.
struct TestNet {
    name: String,
    bridge: String,
    v4_prefix: String, // "10.A.B"
    v6_prefix: String, // "fd00:bc:X:Y"
    masq_table: String,
    portmap_table: String,
    data_dir: tempfile::TempDir,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestNet {
    fn new() -> TestNet {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xffff);
        TestNet {
            name: format!("bt{tag}"),
            bridge: format!("bbr{tag}"),
            v4_prefix: format!("10.{}.{}", 200 + n % 50, pid % 250),
            v6_prefix: format!("fd00:bc:{:x}:{n}", pid % 0xffff),
            masq_table: format!("bt-masq-{tag}"),
            portmap_table: format!("bt-pm-{tag}"),
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn gateway_v4(&self) -> String {
        format!("{}.1", self.v4_prefix)
    }

    fn bridge_conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": self.name,
            "type": "bridge",
            "bridge": self.bridge,
            "isGateway": true,
            "isDefaultGateway": true,
            "ipMasq": true,
            "ipMasqTable": self.masq_table,
            "hairpinMode": true,
            "mtu": 1400,
            "ipam": {
                "type": "host-local",
                "dataDir": self.data_dir.path(),
                "ranges": [
                    [{"subnet": format!("{}.0/24", self.v4_prefix)}],
                    [{"subnet": format!("{}::/64", self.v6_prefix)}]
                ]
            }
        })
    }

    fn portmap_conf(&self, version: &str, prev: &Value, mappings: &Value) -> Value {
        json!({
            "cniVersion": version,
            "name": self.name,
            "type": "portmap",
            "nftTable": self.portmap_table,
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": prev,
        })
    }

    fn ip_files(&self) -> Vec<String> {
        match fs::read_dir(self.data_dir.path().join(&self.name)) {
            Ok(dir) => dir
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<IpAddr>().is_ok())
                .collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = Process::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        for table in [&self.masq_table, &self.portmap_table] {
            let _ = nft::delete_table(&nft::Table::inet(table).unwrap());
        }
    }
}

/// How a plugin is run: in-process, or the `berth-cni` binary under the plugin's name.
#[derive(Clone, Copy, Debug)]
enum Via {
    InProcess,
    Binary,
}

struct Runner {
    via: Via,
    bin_dir: tempfile::TempDir,
    /// Run the plugins in this namespace instead of the test's own (the benchmark's
    /// private "host", so the reference plugins' iptables rules never touch the real host).
    host_ns: Option<Netns>,
}

impl Runner {
    fn new(via: Via) -> Runner {
        let bin_dir = tempfile::tempdir().unwrap();
        for name in plugins::BUILTIN_TYPES {
            symlink(env!("CARGO_BIN_EXE_berth-cni"), bin_dir.path().join(name)).unwrap();
        }
        Runner {
            via,
            bin_dir,
            host_ns: None,
        }
    }

    fn env(&self, command: Command, id: &str, netns: &Path) -> PluginEnv {
        PluginEnv {
            command,
            container_id: id.to_string(),
            netns: netns.to_path_buf(),
            ifname: "eth0".into(),
            args: vec![("IgnoreUnknown".into(), "1".into())],
            path: vec![self.bin_dir.path().to_path_buf()],
        }
    }

    fn call(&self, plugin: &str, env: &PluginEnv, conf: &Value) -> Result<Vec<u8>, PluginError> {
        let stdin = serde_json::to_vec(conf).unwrap();
        match self.via {
            Via::InProcess => match &self.host_ns {
                Some(ns) => ns.run(|| plugins::invoke(plugin, env, &stdin)).unwrap(),
                None => plugins::invoke(plugin, env, &stdin),
            },
            Via::Binary => {
                use std::io::Write;
                use std::os::fd::AsRawFd;
                use std::os::unix::process::CommandExt;
                let mut cmd = Process::new(self.bin_dir.path().join(plugin));
                if let Some(ns) = &self.host_ns {
                    let fd = ns.file().as_raw_fd();
                    // SAFETY: setns is async-signal-safe; the fd stays open until exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                }
                let mut child = cmd
                    .env_clear()
                    .envs(env.to_env_vars())
                    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(&stdin).unwrap();
                let out = child.wait_with_output().unwrap();
                if out.status.success() {
                    Ok(out.stdout)
                } else {
                    Err(serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
                        panic!(
                            "not an error object: {}",
                            String::from_utf8_lossy(&out.stdout)
                        )
                    }))
                }
            }
        }
    }

    /// bridge, portmap, loopback ADD; returns the bridge result (as JSON).
    fn add_pod(&self, net: &TestNet, id: &str, ns: &TestNetns, mappings: &Value) -> Value {
        let add = self.env(Command::Add, id, &ns.path);
        let out = self
            .call("bridge", &add, &net.bridge_conf("1.0.0"))
            .unwrap();
        let result: Value = serde_json::from_slice(&out).unwrap();
        self.call(
            "portmap",
            &add,
            &net.portmap_conf("1.0.0", &result, mappings),
        )
        .unwrap();
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        self.call("loopback", &add, &lo).unwrap();
        result
    }

    fn del_pod(&self, net: &TestNet, id: &str, netns: &Path, prev: &Value, mappings: &Value) {
        let del = self.env(Command::Del, id, netns);
        self.call("portmap", &del, &net.portmap_conf("1.0.0", prev, mappings))
            .unwrap();
        let mut conf = net.bridge_conf("1.0.0");
        conf["prevResult"] = prev.clone();
        self.call("bridge", &del, &conf).unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn pod_ips(result: &Value) -> (String, String) {
    let parsed = CniResult::from_value(result.clone(), "1.0.0").unwrap();
    let ips = parsed.sandbox_ips("eth0");
    let v4 = ips
        .iter()
        .find(|ip| ip.is_ipv4())
        .expect("an IPv4 address")
        .to_string();
    let v6 = ips
        .iter()
        .find(|ip| ip.is_ipv6())
        .expect("an IPv6 address")
        .to_string();
    (v4, v6)
}

fn link_exists(name: &str) -> bool {
    Process::new("ip")
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn tagged_rules(table: &str) -> usize {
    let table = nft::Table::inet(table).unwrap();
    match nft::list_table(&table).unwrap() {
        Some(listing) => listing["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i.get("rule").and_then(|r| r.get("comment")).is_some())
            .count(),
        None => 0,
    }
}

/// Serves `dir` over HTTP on `port` inside the namespace (busybox httpd, foreground).
fn httpd(ns: &TestNetns, port: u16, body: &str) -> (Server, tempfile::TempDir) {
    let www = tempfile::tempdir().unwrap();
    fs::write(www.path().join("index.html"), body).unwrap();
    let child = ns
        .cmd(&[
            BUSYBOX,
            "httpd",
            "-f",
            "-p",
            &port.to_string(),
            "-h",
            www.path().to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (Server(child), www)
}

/// wget from a namespace (or the host when `ns` is None), retried briefly while the
/// server starts. Returns the body.
fn wget(ns: Option<&TestNetns>, url: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // (busybox 1.35's `wget -T` crashes: coreutils' timeout bounds it instead)
        let args = ["timeout", "3", BUSYBOX, "wget", "-q", "-O", "-", url];
        let out = match ns {
            Some(ns) => ns.run(&args),
            None => Process::new(args[0]).args(&args[1..]).output().unwrap(),
        };
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "wget {url}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping(ns: &TestNetns, addr: &str) -> bool {
    ns.run(&[BUSYBOX, "ping", "-c", "1", "-W", "2", addr])
        .status
        .success()
}

fn two_pods_end_to_end(via: Via) {
    let net = TestNet::new();
    let runner = Runner::new(via);
    let (ns_a, ns_b) = (TestNetns::new(), TestNetns::new());
    let host_port = free_port();
    let udp_port = free_port();
    let mappings = json!([
        {"hostPort": host_port, "containerPort": 8080, "protocol": "tcp"},
        {"hostPort": udp_port, "containerPort": 5353, "protocol": "udp"}
    ]);
    let none = json!([]);
    let res_a = runner.add_pod(&net, "pod-a", &ns_a, &mappings);
    let res_b = runner.add_pod(&net, "pod-b", &ns_b, &none);
    let (a4, a6) = pod_ips(&res_a);
    let (b4, _b6) = pod_ips(&res_b);
    assert!(a4.starts_with(&net.v4_prefix), "{a4}");
    let v6_subnet: berth_cni::plugins::ip::Cidr =
        format!("{}::/64", net.v6_prefix).parse().unwrap();
    assert!(v6_subnet.contains(a6.parse().unwrap()), "{a6}");
    assert_ne!(a4, b4);
    assert_eq!(res_a["interfaces"][2]["name"], "eth0");
    assert_eq!(res_a["interfaces"][0]["name"], net.bridge.as_str());
    // The pod side: addresses, MTU, default routes, lo up.
    let addr = String::from_utf8(
        ns_a.run(&["ip", "-o", "addr", "show", "dev", "eth0"])
            .stdout,
    )
    .unwrap();
    assert!(
        addr.contains(&format!("{a4}/24")) && addr.contains(&format!("{a6}/64")),
        "{addr}"
    );
    let link = String::from_utf8(ns_a.run(&["ip", "-o", "link", "show", "eth0"]).stdout).unwrap();
    assert!(link.contains("mtu 1400"), "{link}");
    let routes = String::from_utf8(ns_a.run(&["ip", "route"]).stdout).unwrap();
    assert!(
        routes.contains(&format!("default via {}", net.gateway_v4())),
        "{routes}"
    );
    let routes6 = String::from_utf8(ns_a.run(&["ip", "-6", "route"]).stdout).unwrap();
    let gw6 = v6_subnet.first().to_string().replace("::", "::1");
    assert!(routes6.contains(&format!("default via {gw6}")), "{routes6}");
    assert!(
        String::from_utf8(ns_a.run(&["ip", "-o", "link", "show", "lo"]).stdout)
            .unwrap()
            .contains("UP")
    );

    // Pod to pod: ping both families, TCP.
    assert!(ping(&ns_b, &a4), "ping {a4}");
    assert!(ping(&ns_b, &a6), "ping {a6}");
    let (_server, _www) = httpd(&ns_a, 8080, "hello from a");
    assert_eq!(
        wget(Some(&ns_b), &format!("http://{a4}:8080/")).unwrap(),
        "hello from a"
    );
    assert_eq!(
        wget(Some(&ns_b), &format!("http://[{a6}]:8080/")).unwrap(),
        "hello from a"
    );
    // hostPort: from the host on 127.0.0.1, from the other pod via the host's (gateway)
    // address, and from the pod itself (hairpin).
    assert_eq!(
        wget(None, &format!("http://127.0.0.1:{host_port}/")).unwrap(),
        "hello from a"
    );
    assert_eq!(
        wget(
            Some(&ns_b),
            &format!("http://{}:{host_port}/", net.gateway_v4())
        )
        .unwrap(),
        "hello from a"
    );
    assert_eq!(
        wget(
            Some(&ns_a),
            &format!("http://{}:{host_port}/", net.gateway_v4())
        )
        .unwrap(),
        "hello from a"
    );
    // UDP mapping: a DNAT rule exists for it.
    let listing = nft::list_table(&nft::Table::inet(&net.portmap_table).unwrap())
        .unwrap()
        .unwrap();
    assert!(listing.to_string().contains(&udp_port.to_string()));

    let veth_a = res_a["interfaces"][1]["name"].as_str().unwrap().to_string();
    let veth_b = res_b["interfaces"][1]["name"].as_str().unwrap().to_string();
    assert!(link_exists(&veth_a) && link_exists(&veth_b));
    assert_eq!(net.ip_files().len(), 4);
    assert!(tagged_rules(&net.portmap_table) > 0);
    assert_eq!(tagged_rules(&net.masq_table), 4);

    // DEL: nothing of the pods stays. A second DEL is fine.
    runner.del_pod(&net, "pod-a", &ns_a.path, &res_a, &mappings);
    runner.del_pod(&net, "pod-b", &ns_b.path, &res_b, &none);
    runner.del_pod(&net, "pod-a", &ns_a.path, &res_a, &mappings);
    assert!(!link_exists(&veth_a) && !link_exists(&veth_b));
    assert!(net.ip_files().is_empty(), "{:?}", net.ip_files());
    assert_eq!(tagged_rules(&net.portmap_table), 0);
    assert_eq!(tagged_rules(&net.masq_table), 0);
    let eth0 = ns_a.run(&["ip", "link", "show", "eth0"]);
    assert!(!eth0.status.success(), "eth0 still in the pod");
}

#[test]
fn two_pods_in_process() {
    require_root!();
    two_pods_end_to_end(Via::InProcess);
}

#[test]
fn two_pods_through_the_binary() {
    require_root!();
    two_pods_end_to_end(Via::Binary);
}

#[test]
fn del_after_the_netns_is_gone() {
    require_root!();
    let net = TestNet::new();
    let runner = Runner::new(Via::InProcess);
    let ns = TestNetns::new();
    let none = json!([]);
    let res = runner.add_pod(
        &net,
        "gone",
        &ns,
        &json!([{"hostPort": free_port(), "containerPort": 80}]),
    );
    let veth = res["interfaces"][1]["name"].as_str().unwrap().to_string();
    ns.remove();
    // The namespace's links die with it (asynchronously in the kernel).
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_exists(&veth) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // DEL with the path of a removed namespace, and with no netns at all.
    runner.del_pod(&net, "gone", &ns.path, &res, &none);
    runner.del_pod(&net, "gone", Path::new(""), &res, &none);
    assert!(!link_exists(&veth));
    assert!(net.ip_files().is_empty());
    assert_eq!(tagged_rules(&net.portmap_table), 0);
    assert_eq!(tagged_rules(&net.masq_table), 0);
}

#[test]
fn failed_add_leaves_nothing() {
    require_root!();
    let net = TestNet::new();
    let runner = Runner::new(Via::InProcess);
    let ns = TestNetns::new();
    // The requested address is outside the range: IPAM fails before anything is made.
    let mut conf = net.bridge_conf("1.0.0");
    conf["runtimeConfig"] = json!({"ips": ["192.0.2.9/24"]});
    let add = runner.env(Command::Add, "bad", &ns.path);
    assert!(runner.call("bridge", &add, &conf).is_err());
    // A failure after the veth exists: an IPAM plugin that is not there.
    let mut conf = net.bridge_conf("1.0.0");
    conf["ipam"]["type"] = json!("no-such-ipam");
    let err = runner.call("bridge", &add, &conf).unwrap_err();
    assert!(err.msg.contains("no-such-ipam"), "{err:?}");
    // A bridge name taken by a non-bridge link.
    let mut conf = net.bridge_conf("1.0.0");
    conf["bridge"] = json!("lo");
    assert!(runner
        .call("bridge", &add, &conf)
        .unwrap_err()
        .msg
        .contains("not a bridge"));
    assert!(net.ip_files().is_empty());
    assert!(!ns.run(&["ip", "link", "show", "eth0"]).status.success());
    assert_eq!(tagged_rules(&net.masq_table), 0);
    // An exec'd IPAM plugin error comes back as the plugin's error: bridge exec'ing
    // host-local from CNI_PATH under another name.
    let mut conf = net.bridge_conf("1.0.0");
    conf["ipam"]["type"] = json!("host-local-exec");
    symlink(
        env!("CARGO_BIN_EXE_berth-cni"),
        runner.bin_dir.path().join("host-local-exec"),
    )
    .unwrap();
    let err = runner.call("bridge", &add, &conf).unwrap_err();
    assert!(err.msg.contains("usage"), "{err:?}");
    assert!(!ns.run(&["ip", "link", "show", "eth0"]).status.success());
}

/// Setup + teardown time per pod: the built-ins in-process against the reference plugins
/// (/usr/lib/cni) exec'd with the same config. `cargo test -p berth-cni --test plugins_root
/// -- --ignored --nocapture bench`.
#[test]
#[ignore]
fn bench_builtin_vs_reference() {
    require_root!();
    let pods = 20;
    let reference = Path::new("/usr/lib/cni");
    let mut report = Vec::new();
    for (label, kind) in [
        ("berth in-process", 0),
        ("berth-cni exec", 1),
        ("reference exec", 2),
    ] {
        if kind == 2 && !reference.join("bridge").exists() {
            eprintln!("no reference plugins in /usr/lib/cni");
            continue;
        }
        let net = TestNet::new();
        let mut runner = Runner::new(if kind == 0 {
            Via::InProcess
        } else {
            Via::Binary
        });
        // Everything happens in a private "host" namespace: its bridge, iptables/nft
        // rules and sysctls vanish with it.
        let host = TestNetns::new();
        assert!(host
            .run(&["ip", "link", "set", "lo", "up"])
            .status
            .success());
        runner.host_ns = Some(Netns::open(&host.path).unwrap());
        if kind == 2 {
            for name in plugins::BUILTIN_TYPES {
                let link = runner.bin_dir.path().join(name);
                fs::remove_file(&link).unwrap();
                symlink(reference.join(name), &link).unwrap();
            }
        }
        let namespaces: Vec<TestNetns> = (0..pods).map(|_| TestNetns::new()).collect();
        let mappings = json!([{"hostPort": free_port(), "containerPort": 80, "protocol": "tcp"}]);
        let (mut add_total, mut del_total) = (Duration::ZERO, Duration::ZERO);
        let mut results = Vec::new();
        for (i, ns) in namespaces.iter().enumerate() {
            let started = Instant::now();
            // Reference portmap has no nftTable: it uses its own chains (iptables backend).
            let res = runner.add_pod(&net, &format!("bench{i}"), ns, &mappings);
            add_total += started.elapsed();
            results.push(res);
        }
        for (i, ns) in namespaces.iter().enumerate() {
            let started = Instant::now();
            runner.del_pod(&net, &format!("bench{i}"), &ns.path, &results[i], &mappings);
            del_total += started.elapsed();
        }
        assert!(net.ip_files().is_empty());
        let per = |d: Duration| d.as_secs_f64() * 1000.0 / pods as f64;
        report.push((label, per(add_total), per(del_total)));
    }
    println!("\n| plugins ({pods} pods: bridge+host-local dual stack, ipMasq, portmap 1 port, loopback) | ADD ms/pod | DEL ms/pod | total |");
    println!("|---|---|---|---|");
    for (label, add, del) in &report {
        println!("| {label} | {add:.2} | {del:.2} | {:.2} |", add + del);
    }
}
