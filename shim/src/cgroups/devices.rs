//! Device cgroup rules in one normalized form, for the v1 devices files and the v2 eBPF filter.
//!
//! Semantics (OCI, as runc and crun apply them): the rules are read in order and the LAST
//! rule that matches a device access decides; an access no rule matches is allowed (a new
//! cgroup starts from its parent's allow-all). Runtimes put a "deny all" rule first, so in
//! practice everything not allowed later is denied.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use super::error::CgroupError;

/// What a rule is about, in the kernel's BPF_DEVCG_DEV_* terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    All,
    Block,
    Char,
}

/// The access bits, with the kernel's BPF_DEVCG_ACC_* values.
pub const ACC_MKNOD: u32 = 1;
pub const ACC_READ: u32 = 2;
pub const ACC_WRITE: u32 = 4;
pub const ACC_ALL: u32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    pub kind: DeviceKind,
    /// None: any major.
    pub major: Option<u32>,
    /// None: any minor.
    pub minor: Option<u32>,
    /// ACC_* bits, never 0.
    pub access: u32,
}

impl DeviceRule {
    /// The v1 `devices.allow` / `devices.deny` line: `c 1:3 rwm`.
    pub fn v1_line(&self) -> String {
        let kind = match self.kind {
            DeviceKind::All => "a",
            DeviceKind::Block => "b",
            DeviceKind::Char => "c",
        };
        let num = |n: Option<u32>| n.map(|v| v.to_string()).unwrap_or_else(|| "*".to_string());
        let mut access = String::new();
        if self.access & ACC_READ != 0 {
            access.push('r');
        }
        if self.access & ACC_WRITE != 0 {
            access.push('w');
        }
        if self.access & ACC_MKNOD != 0 {
            access.push('m');
        }
        format!("{kind} {}:{} {access}", num(self.major), num(self.minor))
    }

    /// True for "a *:* rwm": it matches every access, so earlier rules no longer matter.
    pub fn matches_everything(&self) -> bool {
        self.kind == DeviceKind::All
            && self.major.is_none()
            && self.minor.is_none()
            && self.access == ACC_ALL
    }
}

/// Parses an OCI access string ("rwm", any order). Empty or missing means all three.
pub fn parse_access(access: Option<&str>) -> Result<u32, CgroupError> {
    let access = access.unwrap_or("");
    if access.is_empty() {
        return Ok(ACC_ALL);
    }
    let mut bits = 0;
    for c in access.chars() {
        bits |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            other => {
                return Err(CgroupError::InvalidResource(format!(
                    "device access {access:?}: unknown letter {other:?}"
                )))
            }
        };
    }
    Ok(bits)
}

fn device_number(what: &str, n: Option<i64>) -> Result<Option<u32>, CgroupError> {
    match n {
        None | Some(-1) => Ok(None),
        Some(v) if (0..=i64::from(u32::MAX)).contains(&v) => Ok(Some(v as u32)),
        Some(v) => Err(CgroupError::InvalidResource(format!(
            "device {what} number {v} out of range"
        ))),
    }
}

/// Normalizes the OCI rules. FIFO rules are dropped: the device cgroup never sees FIFOs.
pub fn normalize(rules: &[LinuxDeviceCgroup]) -> Result<Vec<DeviceRule>, CgroupError> {
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => DeviceKind::All,
            LinuxDeviceType::B => DeviceKind::Block,
            LinuxDeviceType::C | LinuxDeviceType::U => DeviceKind::Char,
            LinuxDeviceType::P => continue,
        };
        out.push(DeviceRule {
            allow: rule.allow(),
            kind,
            major: device_number("major", rule.major())?,
            minor: device_number("minor", rule.minor())?,
            access: parse_access(rule.access().as_deref())?,
        });
    }
    Ok(out)
}

/// What the rules decide for one access, evaluated the way the eBPF program does (for tests
/// and for documenting the semantics in code): last match wins; an allow rule matches when it
/// covers every requested access bit, a deny rule when it covers any of them.
pub fn evaluate(
    rules: &[DeviceRule],
    kind: DeviceKind,
    major: u32,
    minor: u32,
    access: u32,
) -> bool {
    for rule in rules.iter().rev() {
        if rule.kind != DeviceKind::All && rule.kind != kind {
            continue;
        }
        if rule.major.is_some_and(|m| m != major) || rule.minor.is_some_and(|m| m != minor) {
            continue;
        }
        let matches = if rule.allow {
            access & !rule.access == 0
        } else {
            access & rule.access != 0
        };
        if matches {
            return rule.allow;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .access(access);
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().unwrap()
    }

    #[test]
    fn v1_lines() {
        let rules = normalize(&[
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
            rule(true, LinuxDeviceType::C, Some(136), None, "rw"),
            rule(true, LinuxDeviceType::P, None, None, "rwm"),
        ])
        .unwrap();
        let lines: Vec<_> = rules.iter().map(DeviceRule::v1_line).collect();
        assert_eq!(lines, ["a *:* rwm", "c 1:3 rwm", "c 136:* rw"]);
        assert!(rules[0].matches_everything());
        assert!(!rules[0].allow);
    }

    #[test]
    fn last_match_wins() {
        let rules = normalize(&[
            rule(false, LinuxDeviceType::A, None, None, "rwm"),
            rule(true, LinuxDeviceType::C, Some(1), Some(3), "rwm"),
            rule(true, LinuxDeviceType::C, Some(5), None, "r"),
            rule(false, LinuxDeviceType::C, Some(5), Some(1), "w"),
        ])
        .unwrap();
        let rw = ACC_READ | ACC_WRITE;
        assert!(evaluate(&rules, DeviceKind::Char, 1, 3, rw));
        assert!(
            !evaluate(&rules, DeviceKind::Block, 1, 3, ACC_READ),
            "block 1:3 is not char 1:3"
        );
        assert!(!evaluate(&rules, DeviceKind::Char, 1, 5, ACC_READ));
        assert!(evaluate(&rules, DeviceKind::Char, 5, 2, ACC_READ));
        assert!(
            !evaluate(&rules, DeviceKind::Char, 5, 2, rw),
            "allow r does not cover rw"
        );
        assert!(
            !evaluate(&rules, DeviceKind::Char, 5, 1, rw),
            "deny w catches rw"
        );
        assert!(evaluate(&rules, DeviceKind::Char, 5, 1, ACC_READ));
        assert!(
            evaluate(&[], DeviceKind::Char, 1, 1, rw),
            "no rules: allowed"
        );
    }

    #[test]
    fn bad_access_is_an_error() {
        assert!(parse_access(Some("rx")).is_err());
        assert_eq!(parse_access(None).unwrap(), ACC_ALL);
        assert_eq!(parse_access(Some("mr")).unwrap(), ACC_MKNOD | ACC_READ);
    }
}
