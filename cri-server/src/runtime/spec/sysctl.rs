//! Pod sysctls. Only namespaced sysctls may be set, and only in a namespace the pod owns:
//! a `net.*` sysctl in the host network namespace, or an IPC one in the host IPC
//! namespace, would change the node. (kubelet checks the same; berth does not trust it.)
//!
//! | sysctl                                     | namespace | refused with     |
//! |--------------------------------------------|-----------|------------------|
//! | `net.*`                                    | network   | host network     |
//! | `kernel.shm*`, `kernel.msg*`, `kernel.sem`, `fs.mqueue.*` | ipc | host IPC |
//! | `kernel.hostname`, `kernel.domainname`     | uts       | host network     |
//! | anything else                              | none      | always           |

use std::collections::HashMap;

use super::{PodNamespaceModes, SpecError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SysctlNamespace {
    Net,
    Ipc,
    Uts,
}

fn namespace_of(name: &str) -> Option<SysctlNamespace> {
    if name.starts_with("net.") {
        return Some(SysctlNamespace::Net);
    }
    if name.starts_with("kernel.shm") || name.starts_with("kernel.msg") || name == "kernel.sem" || name.starts_with("fs.mqueue.") {
        return Some(SysctlNamespace::Ipc);
    }
    if name == "kernel.hostname" || name == "kernel.domainname" {
        return Some(SysctlNamespace::Uts);
    }
    None
}

/// kubelet accepts `net/ipv4/conf/eth0.100/rp_filter` (slashes as separators, dots inside a
/// component); the kernel's dotted name swaps the two.
pub fn normalize_sysctl_name(name: &str) -> String {
    let first_sep = name.find(['.', '/']);
    match first_sep.map(|i| name.as_bytes()[i]) {
        Some(b'/') => name.chars().map(|c| match c {
            '/' => '.',
            '.' => '/',
            c => c,
        }).collect(),
        _ => name.to_string(),
    }
}

/// The file under `/proc/sys` of a dotted sysctl name: dots separate components, a slash
/// stands for a dot inside one (`net.ipv4.conf.eth0/100.rp_filter` ->
/// `net/ipv4/conf/eth0.100/rp_filter`). Whoever writes sysctls must use this mapping.
pub fn sysctl_proc_path(name: &str) -> String {
    name.chars().map(|c| match c {
        '.' => '/',
        '/' => '.',
        c => c,
    }).collect()
}

/// The pod's sysctls, names normalized, each checked against the pod's namespaces.
pub fn validate_sysctls(sysctls: &HashMap<String, String>, pod_modes: PodNamespaceModes) -> Result<HashMap<String, String>, SpecError> {
    let mut out = HashMap::new();
    for (raw, value) in sysctls {
        let name = normalize_sysctl_name(raw);
        if sysctl_proc_path(&name).split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(SpecError::invalid(format!("sysctl {raw:?} is not a valid name")));
        }
        match namespace_of(&name) {
            None => {
                return Err(SpecError::invalid(format!(
                    "sysctl {raw:?} is not namespaced: a pod cannot set it without changing the node"
                )))
            }
            Some(SysctlNamespace::Net) if pod_modes.host_network => {
                return Err(SpecError::invalid(format!("sysctl {raw:?} cannot be set: the pod uses the host network namespace")))
            }
            Some(SysctlNamespace::Uts) if pod_modes.host_network => {
                return Err(SpecError::invalid(format!("sysctl {raw:?} cannot be set: the pod uses the host UTS namespace")))
            }
            Some(SysctlNamespace::Ipc) if pod_modes.host_ipc => {
                return Err(SpecError::invalid(format!("sysctl {raw:?} cannot be set: the pod uses the host IPC namespace")))
            }
            Some(_) => {}
        }
        out.insert(name, value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: PodNamespaceModes = PodNamespaceModes { host_network: false, host_ipc: false, host_pid: false };
    const HOST_NET: PodNamespaceModes = PodNamespaceModes { host_network: true, host_ipc: false, host_pid: false };
    const HOST_IPC: PodNamespaceModes = PodNamespaceModes { host_network: false, host_ipc: true, host_pid: false };

    #[test]
    fn namespace_rules() {
        let cases: &[(&str, PodNamespaceModes, bool)] = &[
            ("net.ipv4.ip_unprivileged_port_start", POD, true),
            ("net.ipv4.ip_unprivileged_port_start", HOST_NET, false),
            ("net.core.somaxconn", HOST_IPC, true),
            ("kernel.shm_rmid_forced", POD, true),
            ("kernel.shmmax", HOST_IPC, false),
            ("kernel.msgmax", HOST_IPC, false),
            ("kernel.sem", HOST_IPC, false),
            ("kernel.sem", HOST_NET, true),
            ("fs.mqueue.msg_max", POD, true),
            ("fs.mqueue.msg_max", HOST_IPC, false),
            ("kernel.hostname", HOST_NET, false),
            ("kernel.domainname", POD, true),
            ("vm.swappiness", POD, false),
            ("kernel.panic", POD, false),
            ("fs.file-max", POD, false),
            ("net/ipv4/conf/eth0.100/rp_filter", POD, true),
            ("net/ipv4/conf/eth0.100/rp_filter", HOST_NET, false),
        ];
        for (name, modes, ok) in cases {
            let got = validate_sysctls(&[(name.to_string(), "1".to_string())].into(), *modes);
            assert_eq!(got.is_ok(), *ok, "{name} {modes:?}: {got:?}");
            if let Err(e) = got {
                assert_eq!(e.code(), tonic::Code::InvalidArgument);
                assert!(e.to_string().contains(name), "{e}");
            }
        }
    }

    #[test]
    fn slash_names_are_normalized() {
        assert_eq!(normalize_sysctl_name("net/ipv4/conf/eth0.100/rp_filter"), "net.ipv4.conf.eth0/100.rp_filter");
        assert_eq!(normalize_sysctl_name("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
        let got = validate_sysctls(&[("net/ipv4/ip_forward".to_string(), "1".to_string())].into(), POD).unwrap();
        assert_eq!(got["net.ipv4.ip_forward"], "1");
        assert_eq!(sysctl_proc_path("net.ipv4.conf.eth0/100.rp_filter"), "net/ipv4/conf/eth0.100/rp_filter");
    }

    #[test]
    fn path_tricks_are_refused() {
        for name in ["net..ipv4", "net.", "net/../../kernel/panic", "net.ipv4./..", ""] {
            assert!(validate_sysctls(&[(name.to_string(), "1".to_string())].into(), POD).is_err(), "{name}");
        }
    }
}
