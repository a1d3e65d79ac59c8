//! The pod's files under `<root>/pods/<id>/`: `hostname`, `hosts` and `resolv.conf`, bound
//! into every container of the pod. Rendering is pure (tested here); writing is plain files
//! with mode 0644 so that containers running as any user can read them.

use std::path::{Path, PathBuf};

use k8s_cri::v1::DnsConfig;

use crate::errors::RuntimeError;

pub const HOST_HOSTS: &str = "/etc/hosts";
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The lines every pod's `/etc/hosts` starts with, as Docker and kubelet write them.
const LOCALHOST_LINES: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// `/etc/hosts` of a pod with its own network namespace: localhost, and the pod hostname on
/// each pod IP (on 127.0.1.1 when the pod has no IP yet, as Debian does for the host name).
pub fn render_hosts(hostname: &str, ips: &[String]) -> String {
    let mut out = String::from(LOCALHOST_LINES);
    if !hostname.is_empty() {
        if ips.is_empty() {
            out.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
        for ip in ips {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        }
    }
    out
}

/// `resolv.conf` from the pod's DNSConfig; None when the config is empty, which means
/// "the node's resolv.conf" (kubelet's dnsPolicy Default sends an empty one).
pub fn render_resolv_conf(dns: Option<&DnsConfig>) -> Option<String> {
    let dns = dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))?;
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    Some(out)
}

/// What [`write_pod_files`] needs.
#[derive(Debug, Clone)]
pub struct PodFilesInput<'a> {
    pub hostname: &'a str,
    pub host_network: bool,
    pub dns: Option<&'a DnsConfig>,
    pub ips: &'a [String],
}

/// The paths of the written files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenPodFiles {
    pub hostname: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Writes `hostname`, `hosts` and `resolv.conf` into `pod_dir` (created). Host-network pods
/// get copies of the node's `/etc/hosts` and `/etc/resolv.conf`. Blocking.
pub fn write_pod_files(pod_dir: &Path, input: &PodFilesInput<'_>) -> Result<WrittenPodFiles, RuntimeError> {
    write_pod_files_from(pod_dir, input, Path::new(HOST_HOSTS), Path::new(HOST_RESOLV_CONF))
}

fn write_pod_files_from(pod_dir: &Path, input: &PodFilesInput<'_>, host_hosts: &Path, host_resolv: &Path) -> Result<WrittenPodFiles, RuntimeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(pod_dir)
        .map_err(|e| RuntimeError::internal_ctx(format!("creating {}", pod_dir.display()), e))?;
    let files = WrittenPodFiles {
        hostname: pod_dir.join("hostname"),
        hosts: pod_dir.join("hosts"),
        resolv_conf: pod_dir.join("resolv.conf"),
    };
    write_file(&files.hostname, format!("{}\n", input.hostname).as_bytes())?;
    let hosts = if input.host_network { read_host_file(host_hosts)? } else { render_hosts(input.hostname, input.ips).into_bytes() };
    write_file(&files.hosts, &hosts)?;
    let resolv = match render_resolv_conf(input.dns) {
        Some(text) if !input.host_network => text.into_bytes(),
        _ => read_host_file(host_resolv)?,
    };
    write_file(&files.resolv_conf, &resolv)?;
    Ok(files)
}

/// A node file to copy; a missing one is copied as empty (a minimal host may lack it).
fn read_host_file(path: &Path) -> Result<Vec<u8>, RuntimeError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(RuntimeError::internal_ctx(format!("reading {}", path.display()), e)),
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RuntimeError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).map_err(|e| RuntimeError::internal_ctx(format!("writing {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))
        .map_err(|e| RuntimeError::internal_ctx(format!("chmod {}", path.display()), e))
}

/// Removes the pod's files and directory. Idempotent.
pub fn remove_pod_files(pod_dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(pod_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RuntimeError::internal_ctx(format!("removing {}", pod_dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_has_localhost_and_the_pod_hostname() {
        let text = render_hosts("web-0", &[]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(text.ends_with("127.0.1.1\tweb-0\n"), "{text}");
        let text = render_hosts("web-0", &["10.1.0.5".into(), "fd00::5".into()]);
        assert!(text.ends_with("10.1.0.5\tweb-0\nfd00::5\tweb-0\n"), "{text}");
        assert!(!text.contains("127.0.1.1"));
        assert_eq!(render_hosts("", &[]), LOCALHOST_LINES);
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "1.1.1.1".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            render_resolv_conf(Some(&dns)).unwrap(),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 1.1.1.1\noptions ndots:5 edns0\n"
        );
        let only_servers = DnsConfig { servers: vec!["8.8.8.8".into()], ..Default::default() };
        assert_eq!(render_resolv_conf(Some(&only_servers)).unwrap(), "nameserver 8.8.8.8\n");
        assert_eq!(render_resolv_conf(Some(&DnsConfig::default())), None);
        assert_eq!(render_resolv_conf(None), None);
    }

    #[test]
    fn files_are_written_and_host_network_copies_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let host_hosts = dir.path().join("host-hosts");
        let host_resolv = dir.path().join("host-resolv");
        std::fs::write(&host_hosts, "127.0.0.1 node\n").unwrap();
        std::fs::write(&host_resolv, "nameserver 192.0.2.1\n").unwrap();
        let dns = DnsConfig { servers: vec!["10.96.0.10".into()], ..Default::default() };

        let pod = dir.path().join("pod");
        let input = PodFilesInput { hostname: "p1", host_network: false, dns: Some(&dns), ips: &[] };
        let files = write_pod_files_from(&pod, &input, &host_hosts, &host_resolv).unwrap();
        assert_eq!(std::fs::read_to_string(&files.hostname).unwrap(), "p1\n");
        assert!(std::fs::read_to_string(&files.hosts).unwrap().contains("127.0.1.1\tp1\n"));
        assert_eq!(std::fs::read_to_string(&files.resolv_conf).unwrap(), "nameserver 10.96.0.10\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&files.hosts).unwrap().permissions().mode() & 0o777, 0o644);

        let input = PodFilesInput { hostname: "p2", host_network: false, dns: None, ips: &[] };
        let files = write_pod_files_from(&dir.path().join("pod2"), &input, &host_hosts, &host_resolv).unwrap();
        assert_eq!(std::fs::read_to_string(&files.resolv_conf).unwrap(), "nameserver 192.0.2.1\n", "empty DNS config: the node's");

        let input = PodFilesInput { hostname: "node", host_network: true, dns: Some(&dns), ips: &[] };
        let files = write_pod_files_from(&dir.path().join("pod3"), &input, &host_hosts, &host_resolv).unwrap();
        assert_eq!(std::fs::read_to_string(&files.hosts).unwrap(), "127.0.0.1 node\n");
        assert_eq!(std::fs::read_to_string(&files.resolv_conf).unwrap(), "nameserver 192.0.2.1\n");

        remove_pod_files(&pod).unwrap();
        assert!(!pod.exists());
        remove_pod_files(&pod).unwrap();
    }
}
