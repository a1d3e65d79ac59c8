//! Capabilities and the /proc and /sys paths a container must not see or write.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use k8s_cri::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities};

use super::SpecError;

/// Every capability Linux knows, with its number (linux/capability.h).
pub const ALL_CAPABILITIES: [(&str, u32); 41] = [
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_MODULE", 16),
    ("CAP_SYS_RAWIO", 17),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_PACCT", 20),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TIME", 25),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_AUDIT_CONTROL", 30),
    ("CAP_SETFCAP", 31),
    ("CAP_MAC_OVERRIDE", 32),
    ("CAP_MAC_ADMIN", 33),
    ("CAP_SYSLOG", 34),
    ("CAP_WAKE_ALARM", 35),
    ("CAP_BLOCK_SUSPEND", 36),
    ("CAP_AUDIT_READ", 37),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// The capabilities of an unprivileged container, as containerd and Docker grant them.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// /proc and /sys paths masked (a /dev/null or empty tmpfs mounted over them) in an
/// unprivileged container: they leak host information or touch host hardware.
pub const DEFAULT_MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths made read-only in an unprivileged container.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// A container's capability set by canonical name (`CAP_SYS_ADMIN`), plus the ambient ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapabilitySet {
    pub granted: BTreeSet<String>,
    pub ambient: BTreeSet<String>,
}

impl CapabilitySet {
    pub fn has(&self, cap: &str) -> bool {
        self.granted.contains(cap)
    }

    /// bounding = effective = permitted = the granted set; inheritable = ambient (the
    /// kernel requires ambient capabilities to be inheritable and permitted). Inheritable is
    /// otherwise empty: a non-empty one let file capabilities escalate (CVE-2022-24769).
    pub fn to_oci(&self) -> LinuxCapabilities {
        let granted = to_oci_set(&self.granted);
        let ambient = to_oci_set(&self.ambient);
        let mut caps = LinuxCapabilities::default();
        caps.set_bounding(Some(granted.clone()))
            .set_effective(Some(granted.clone()))
            .set_permitted(Some(granted))
            .set_inheritable(Some(ambient.clone()))
            .set_ambient(Some(ambient));
        caps
    }
}

fn to_oci_set(names: &BTreeSet<String>) -> Capabilities {
    names.iter().filter_map(|n| oci_capability(n)).collect()
}

/// oci-spec's enum for a canonical name (its deserializer takes `CAP_X` and `X`).
fn oci_capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
}

/// `CAP_SYS_ADMIN` for `sys_admin`, `SYS_ADMIN`, `cap_sys_admin`; `None` if Linux has no
/// such capability.
pub fn canonical_capability(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
    ALL_CAPABILITIES.iter().any(|(n, _)| *n == full).then_some(full)
}

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn cap_last_cap() -> u32 {
    static LAST: OnceLock<u32> = OnceLock::new();
    *LAST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40)
    })
}

/// berthd's own bounding set: no container can be given a capability outside it (this
/// host's root, for one, lacks CAP_SYS_RESOURCE), so "ALL" means all of these, as in
/// containerd. Unreadable: every capability the kernel has.
fn own_bounding_set() -> u64 {
    static BOUNDING: OnceLock<u64> = OnceLock::new();
    *BOUNDING.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                let hex = status.lines().find_map(|line| line.strip_prefix("CapBnd:"))?.trim().to_string();
                u64::from_str_radix(&hex, 16).ok()
            })
            .unwrap_or(u64::MAX)
    })
}

/// Every capability this kernel supports and berthd may hand out ("ALL" and privileged
/// containers).
pub fn all_host_capabilities() -> BTreeSet<String> {
    let last = cap_last_cap();
    let bounding = own_bounding_set();
    ALL_CAPABILITIES
        .iter()
        .filter(|(_, n)| *n <= last && bounding & (1u64 << n) != 0)
        .map(|(name, _)| name.to_string())
        .collect()
}

/// The container's capabilities. Privileged: every capability of the host. Otherwise the
/// default set, then containerd's order: add "ALL", drop "ALL", add each, drop each (so
/// add [ALL] + drop [CHOWN] is everything but CHOWN, and drop [ALL] + add [NET_ADMIN] is
/// only NET_ADMIN). Names may have the CAP_ prefix or not, in any case; unknown names are
/// an error rather than silently ignored.
pub fn capabilities(sc: &LinuxContainerSecurityContext) -> Result<CapabilitySet, SpecError> {
    if sc.privileged {
        return Ok(CapabilitySet { granted: all_host_capabilities(), ambient: BTreeSet::new() });
    }
    let mut granted: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
    let Some(req) = &sc.capabilities else {
        return Ok(CapabilitySet { granted, ambient: BTreeSet::new() });
    };
    let is_all = |c: &String| c.trim().eq_ignore_ascii_case("ALL");
    if req.add_capabilities.iter().any(is_all) {
        granted = all_host_capabilities();
    }
    if req.drop_capabilities.iter().any(is_all) {
        granted.clear();
    }
    let parse = |field: &str, name: &String| {
        canonical_capability(name).ok_or_else(|| SpecError::invalid(format!("unknown capability {name:?} in {field}")))
    };
    for name in req.add_capabilities.iter().filter(|c| !is_all(c)) {
        granted.insert(parse("add_capabilities", name)?);
    }
    for name in req.drop_capabilities.iter().filter(|c| !is_all(c)) {
        granted.remove(&parse("drop_capabilities", name)?);
    }
    let mut ambient = BTreeSet::new();
    for name in &req.add_ambient_capabilities {
        let cap = parse("add_ambient_capabilities", name)?;
        // An ambient capability outside the permitted set is dropped by the kernel anyway;
        // grant it, as CRI-O does, so the request means what it says.
        granted.insert(cap.clone());
        ambient.insert(cap);
    }
    Ok(CapabilitySet { granted, ambient })
}

/// Masked paths: none when privileged; the CRI's list when it sends one (kubelet does, for
/// the Default procMount); else containerd's defaults. Protobuf cannot tell an empty list
/// from none, so an empty list also gets the defaults.
pub fn masked_paths(sc: &LinuxContainerSecurityContext) -> Vec<String> {
    if sc.privileged {
        return Vec::new();
    }
    if !sc.masked_paths.is_empty() {
        return sc.masked_paths.clone();
    }
    DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
}

/// Read-only paths, by the same rules as [`masked_paths`].
pub fn readonly_paths(sc: &LinuxContainerSecurityContext) -> Vec<String> {
    if sc.privileged {
        return Vec::new();
    }
    if !sc.readonly_paths.is_empty() {
        return sc.readonly_paths.clone();
    }
    DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::Capability as CriCapability;

    fn caps(add: &[&str], drop: &[&str]) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            capabilities: Some(CriCapability {
                add_capabilities: add.iter().map(|s| s.to_string()).collect(),
                drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
                add_ambient_capabilities: vec![],
            }),
            ..Default::default()
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn defaults_plus_minus(plus: &[&str], minus: &[&str]) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = DEFAULT_CAPABILITIES.iter().map(|s| s.to_string()).collect();
        s.extend(plus.iter().map(|s| s.to_string()));
        for m in minus {
            s.remove(*m);
        }
        s
    }

    #[test]
    fn canonical_names() {
        for (input, want) in [
            ("sys_admin", Some("CAP_SYS_ADMIN")),
            ("SYS_ADMIN", Some("CAP_SYS_ADMIN")),
            ("CAP_SYS_ADMIN", Some("CAP_SYS_ADMIN")),
            ("cap_net_raw", Some("CAP_NET_RAW")),
            (" KILL ", Some("CAP_KILL")),
            ("CAP_NOPE", None),
            ("", None),
        ] {
            assert_eq!(canonical_capability(input).as_deref(), want, "{input:?}");
        }
        // Every name we know is also oci-spec's.
        for (name, _) in ALL_CAPABILITIES {
            assert!(oci_capability(name).is_some(), "{name}");
        }
    }

    #[test]
    fn add_and_drop_over_the_default_set() {
        let all = all_host_capabilities();
        let mut all_but_chown = all.clone();
        all_but_chown.remove("CAP_CHOWN");
        let cases: Vec<(&[&str], &[&str], BTreeSet<String>)> = vec![
            (&[], &[], defaults_plus_minus(&[], &[])),
            (&["NET_ADMIN"], &[], defaults_plus_minus(&["CAP_NET_ADMIN"], &[])),
            (&["CAP_SYS_TIME", "sys_ptrace"], &["KILL", "cap_chown"], defaults_plus_minus(&["CAP_SYS_TIME", "CAP_SYS_PTRACE"], &["CAP_KILL", "CAP_CHOWN"])),
            (&["ALL"], &[], all.clone()),
            (&["all"], &["CHOWN"], all_but_chown),
            (&[], &["ALL"], set(&[])),
            (&["NET_ADMIN"], &["ALL"], set(&["CAP_NET_ADMIN"])),
            (&["ALL"], &["ALL"], set(&[])),
            // Drop wins over add for the same capability (applied after).
            (&["NET_ADMIN"], &["NET_ADMIN"], defaults_plus_minus(&[], &[])),
        ];
        for (add, drop, want) in cases {
            let got = capabilities(&caps(add, drop)).unwrap();
            assert_eq!(got.granted, want, "add {add:?} drop {drop:?}");
        }
        let err = capabilities(&caps(&["NOT_A_CAP"], &[])).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.to_string().contains("NOT_A_CAP"));
        assert!(capabilities(&caps(&[], &["BOGUS"])).is_err());
    }

    #[test]
    fn privileged_gets_every_capability() {
        let sc = LinuxContainerSecurityContext { privileged: true, ..caps(&[], &["ALL"]) };
        let got = capabilities(&sc).unwrap();
        assert_eq!(got.granted, all_host_capabilities());
        assert!(got.has("CAP_SYS_ADMIN"));
    }

    #[test]
    fn oci_sets() {
        let mut sc = caps(&[], &["ALL"]);
        sc.capabilities.as_mut().unwrap().add_ambient_capabilities = vec!["NET_BIND_SERVICE".into()];
        let got = capabilities(&sc).unwrap();
        let oci = got.to_oci();
        let one: Capabilities = [Capability::NetBindService].into_iter().collect();
        assert_eq!(oci.bounding().as_ref(), Some(&one));
        assert_eq!(oci.effective().as_ref(), Some(&one));
        assert_eq!(oci.permitted().as_ref(), Some(&one));
        assert_eq!(oci.ambient().as_ref(), Some(&one));
        assert_eq!(oci.inheritable().as_ref(), Some(&one));

        let oci = capabilities(&LinuxContainerSecurityContext::default()).unwrap().to_oci();
        assert_eq!(oci.bounding().as_ref().unwrap().len(), 14);
        assert!(oci.inheritable().as_ref().unwrap().is_empty());
    }

    #[test]
    fn masked_and_readonly_paths() {
        let sc = LinuxContainerSecurityContext::default();
        assert!(masked_paths(&sc).contains(&"/proc/kcore".to_string()));
        assert!(readonly_paths(&sc).contains(&"/proc/sys".to_string()));
        let sc = LinuxContainerSecurityContext {
            masked_paths: vec!["/proc/x".into()],
            readonly_paths: vec!["/proc/y".into()],
            ..Default::default()
        };
        assert_eq!(masked_paths(&sc), vec!["/proc/x"]);
        assert_eq!(readonly_paths(&sc), vec!["/proc/y"]);
        let sc = LinuxContainerSecurityContext { privileged: true, masked_paths: vec!["/proc/x".into()], ..Default::default() };
        assert!(masked_paths(&sc).is_empty());
        assert!(readonly_paths(&sc).is_empty());
    }
}
