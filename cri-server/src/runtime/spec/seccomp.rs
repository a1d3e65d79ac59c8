//! Which seccomp filter a container gets (`linux.seccomp`).
//!
//! | CRI                                               | filter                          |
//! |---------------------------------------------------|---------------------------------|
//! | privileged container                              | none                            |
//! | `seccomp` RuntimeDefault / path `runtime/default` | berth's default ([`super::seccomp_default`]) |
//! | `seccomp` Unconfined / path `unconfined` / unset  | none                            |
//! | `seccomp` Localhost / path `localhost/<abs path>` | the JSON file at that path      |
//!
//! Profiles are read in the Docker/containerd JSON format, a superset of the OCI one:
//! besides `defaultAction`, `architectures`, `syscalls[].names/action/errnoRet/args`, a
//! rule may have `name`, `includes` and `excludes` (`caps`, `arches`, `minKernel`), and
//! the profile may have `archMap`. Rules are resolved here against the container's
//! capabilities and the host's architecture, so what reaches the runtime is plain OCI.

use std::path::{Path, PathBuf};

use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::LinuxContainerSecurityContext;
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSyscall};
use serde::Deserialize;

use super::security::CapabilitySet;
use super::SpecError;

/// What the CRI asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeccompChoice {
    Unconfined,
    RuntimeDefault,
    Localhost(PathBuf),
}

/// Reads the `seccomp` field, or the deprecated `seccomp_profile_path` when it is unset.
pub fn seccomp_choice(sc: &LinuxContainerSecurityContext) -> Result<SeccompChoice, SpecError> {
    if let Some(profile) = &sc.seccomp {
        return match ProfileType::try_from(profile.profile_type) {
            Ok(ProfileType::RuntimeDefault) => Ok(SeccompChoice::RuntimeDefault),
            Ok(ProfileType::Unconfined) => Ok(SeccompChoice::Unconfined),
            Ok(ProfileType::Localhost) => localhost_path(&profile.localhost_ref).map(SeccompChoice::Localhost),
            Err(_) => Err(SpecError::invalid(format!("unknown seccomp profile type {}", profile.profile_type))),
        };
    }
    #[allow(deprecated)]
    let path = sc.seccomp_profile_path.as_str();
    match path {
        "" | "unconfined" => Ok(SeccompChoice::Unconfined),
        "runtime/default" | "docker/default" => Ok(SeccompChoice::RuntimeDefault),
        other => match other.strip_prefix("localhost/") {
            Some(rest) => localhost_path(rest).map(SeccompChoice::Localhost),
            None => Err(SpecError::invalid(format!(
                "seccomp_profile_path {other:?} is not one of \"runtime/default\", \"unconfined\", \"localhost/<path>\""
            ))),
        },
    }
}

fn localhost_path(reference: &str) -> Result<PathBuf, SpecError> {
    if !reference.starts_with('/') {
        return Err(SpecError::invalid(format!("seccomp Localhost profile {reference:?} is not an absolute path")));
    }
    Ok(PathBuf::from(reference))
}

/// The container's seccomp filter; `None` when unconfined.
pub fn container_seccomp(sc: &LinuxContainerSecurityContext, caps: &CapabilitySet) -> Result<Option<LinuxSeccomp>, SpecError> {
    // Privileged containers run without a filter whatever was asked (containerd, CRI-O).
    if sc.privileged {
        return Ok(None);
    }
    match seccomp_choice(sc)? {
        SeccompChoice::Unconfined => Ok(None),
        SeccompChoice::RuntimeDefault => Ok(Some(super::seccomp_default::default_profile(caps))),
        SeccompChoice::Localhost(path) => load_profile(&path, caps).map(Some),
    }
}

/// Reads a Localhost profile.
pub fn load_profile(path: &Path, caps: &CapabilitySet) -> Result<LinuxSeccomp, SpecError> {
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => SpecError::SeccompProfileNotFound { path: path.to_path_buf() },
        _ => SpecError::Io { context: "reading seccomp profile", path: path.to_path_buf(), source: e },
    })?;
    let profile: Profile = serde_json::from_slice(&bytes)
        .map_err(|e| SpecError::SeccompProfileInvalid { path: path.to_path_buf(), reason: e.to_string() })?;
    profile
        .resolve(caps, &HostPlatform::current())
        .map_err(|reason| SpecError::SeccompProfileInvalid { path: path.to_path_buf(), reason })
}

/// A seccomp profile in the Docker/containerd JSON format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: LinuxSeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<Arch>,
    #[serde(default)]
    pub arch_map: Vec<ArchMapEntry>,
    #[serde(default)]
    pub flags: Vec<LinuxSeccompFilterFlag>,
    #[serde(default)]
    pub listener_path: Option<PathBuf>,
    #[serde(default)]
    pub listener_metadata: Option<String>,
    #[serde(default)]
    pub syscalls: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMapEntry {
    pub architecture: Arch,
    #[serde(default)]
    pub sub_architectures: Vec<Arch>,
}

/// One rule: syscalls, an action, and when it applies.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub name: Option<String>,
    pub action: LinuxSeccompAction,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<LinuxSeccompArg>>,
    #[serde(default)]
    pub includes: Filter,
    #[serde(default)]
    pub excludes: Filter,
}

/// Conditions of a rule: every included capability granted, the host arch listed, the
/// kernel at least `minKernel`; or (excludes) any of those.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    #[serde(default)]
    pub caps: Vec<String>,
    #[serde(default)]
    pub arches: Vec<String>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// What a profile is resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPlatform {
    /// Rust's name of the architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// (major, minor) of the running kernel.
    pub kernel: (u32, u32),
}

impl HostPlatform {
    pub fn current() -> Self {
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|u| parse_kernel_version(&u.release().to_string_lossy()))
            .unwrap_or((0, 0));
        HostPlatform { arch: std::env::consts::ARCH.to_string(), kernel }
    }

    /// The seccomp architecture of native processes.
    pub fn native_arch(&self) -> Option<Arch> {
        match self.arch.as_str() {
            "x86_64" => Some(Arch::ScmpArchX86_64),
            "x86" => Some(Arch::ScmpArchX86),
            "aarch64" => Some(Arch::ScmpArchAarch64),
            "arm" => Some(Arch::ScmpArchArm),
            _ => None,
        }
    }

    /// Every architecture a process on this host may use: 32-bit compat ABIs too, or a
    /// 32-bit binary would bypass a filter written for the native one.
    pub fn all_arches(&self) -> Vec<Arch> {
        match self.arch.as_str() {
            "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            "aarch64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
            _ => self.native_arch().into_iter().collect(),
        }
    }

    /// Names `includes.arches` may use for this host (Go's and the kernel's).
    fn arch_aliases(&self) -> &'static [&'static str] {
        match self.arch.as_str() {
            "x86_64" => &["amd64", "x86_64", "x32"],
            "x86" => &["386", "x86"],
            "aarch64" => &["arm64", "aarch64"],
            "arm" => &["arm"],
            _ => &[],
        }
    }
}

fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

impl Profile {
    /// Resolves includes/excludes and the arch map into a plain OCI filter.
    pub fn resolve(&self, caps: &CapabilitySet, host: &HostPlatform) -> Result<LinuxSeccomp, String> {
        if !self.architectures.is_empty() && !self.arch_map.is_empty() {
            return Err("both architectures and archMap are set".into());
        }
        let mut arches = self.architectures.clone();
        if let Some(native) = host.native_arch() {
            for entry in self.arch_map.iter().filter(|e| e.architecture == native) {
                arches.push(entry.architecture);
                arches.extend(entry.sub_architectures.iter().copied());
            }
        }
        let mut syscalls = Vec::new();
        for rule in &self.syscalls {
            let mut names = rule.names.clone();
            if let Some(name) = &rule.name {
                if !names.is_empty() {
                    return Err(format!("a rule has both name {name:?} and names {:?}", rule.names));
                }
                names.push(name.clone());
            }
            if names.is_empty() {
                continue;
            }
            if !rule.includes.is_empty() && !included(&rule.includes, caps, host)? {
                continue;
            }
            if !rule.excludes.is_empty() && excluded(&rule.excludes, caps, host)? {
                continue;
            }
            let mut s = LinuxSyscall::default();
            s.set_names(names).set_action(rule.action).set_errno_ret(rule.errno_ret).set_args(rule.args.clone());
            syscalls.push(s);
        }
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action)
            .set_default_errno_ret(self.default_errno_ret)
            .set_architectures(if arches.is_empty() { None } else { Some(arches) })
            .set_flags(if self.flags.is_empty() { None } else { Some(self.flags.clone()) })
            .set_listener_path(self.listener_path.clone())
            .set_listener_metadata(self.listener_metadata.clone())
            .set_syscalls(Some(syscalls));
        Ok(out)
    }
}

fn cap_granted(caps: &CapabilitySet, name: &str) -> Result<bool, String> {
    let canonical = super::security::canonical_capability(name).ok_or_else(|| format!("unknown capability {name:?}"))?;
    Ok(caps.has(&canonical))
}

fn kernel_at_least(host: &HostPlatform, min: &str) -> Result<bool, String> {
    let want = parse_kernel_version(min).ok_or_else(|| format!("minKernel {min:?} is not a version"))?;
    Ok(host.kernel >= want)
}

/// All conditions hold.
fn included(f: &Filter, caps: &CapabilitySet, host: &HostPlatform) -> Result<bool, String> {
    for c in &f.caps {
        if !cap_granted(caps, c)? {
            return Ok(false);
        }
    }
    if !f.arches.is_empty() && !f.arches.iter().any(|a| host.arch_aliases().contains(&a.as_str())) {
        return Ok(false);
    }
    if let Some(min) = &f.min_kernel {
        if !kernel_at_least(host, min)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Any condition holds.
fn excluded(f: &Filter, caps: &CapabilitySet, host: &HostPlatform) -> Result<bool, String> {
    for c in &f.caps {
        if cap_granted(caps, c)? {
            return Ok(true);
        }
    }
    if f.arches.iter().any(|a| host.arch_aliases().contains(&a.as_str())) {
        return Ok(true);
    }
    if let Some(min) = &f.min_kernel {
        if kernel_at_least(host, min)? {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::SecurityProfile;

    fn sc_with(profile: Option<SecurityProfile>, path: &str) -> LinuxContainerSecurityContext {
        #[allow(deprecated)]
        LinuxContainerSecurityContext { seccomp: profile, seccomp_profile_path: path.into(), ..Default::default() }
    }

    fn profile(t: ProfileType, r: &str) -> Option<SecurityProfile> {
        Some(SecurityProfile { profile_type: t as i32, localhost_ref: r.into() })
    }

    #[test]
    fn choice_table() {
        let cases: Vec<(Option<SecurityProfile>, &str, Result<SeccompChoice, ()>)> = vec![
            (None, "", Ok(SeccompChoice::Unconfined)),
            (None, "unconfined", Ok(SeccompChoice::Unconfined)),
            (None, "runtime/default", Ok(SeccompChoice::RuntimeDefault)),
            (None, "docker/default", Ok(SeccompChoice::RuntimeDefault)),
            (None, "localhost//etc/p.json", Ok(SeccompChoice::Localhost("/etc/p.json".into()))),
            (None, "localhost/relative.json", Err(())),
            (None, "bogus", Err(())),
            (profile(ProfileType::RuntimeDefault, ""), "unconfined", Ok(SeccompChoice::RuntimeDefault)),
            (profile(ProfileType::Unconfined, ""), "runtime/default", Ok(SeccompChoice::Unconfined)),
            (profile(ProfileType::Localhost, "/var/lib/kubelet/seccomp/a.json"), "", Ok(SeccompChoice::Localhost("/var/lib/kubelet/seccomp/a.json".into()))),
            (profile(ProfileType::Localhost, ""), "", Err(())),
            (Some(SecurityProfile { profile_type: 9, localhost_ref: String::new() }), "", Err(())),
        ];
        for (p, path, want) in cases {
            let got = seccomp_choice(&sc_with(p.clone(), path));
            match want {
                Ok(w) => assert_eq!(got.unwrap(), w, "{p:?} {path:?}"),
                Err(()) => assert_eq!(got.unwrap_err().code(), tonic::Code::InvalidArgument, "{p:?} {path:?}"),
            }
        }
    }

    fn caps(names: &[&str]) -> CapabilitySet {
        CapabilitySet { granted: names.iter().map(|s| s.to_string()).collect(), ambient: Default::default() }
    }

    #[test]
    fn privileged_and_unconfined_have_no_filter() {
        let c = caps(&[]);
        let mut sc = sc_with(profile(ProfileType::RuntimeDefault, ""), "");
        assert!(container_seccomp(&sc, &c).unwrap().is_some());
        sc.privileged = true;
        assert!(container_seccomp(&sc, &c).unwrap().is_none());
        assert!(container_seccomp(&sc_with(None, ""), &c).unwrap().is_none());
    }

    #[test]
    fn localhost_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.json");
        std::fs::write(
            &path,
            r#"{
              "defaultAction": "SCMP_ACT_ERRNO",
              "defaultErrnoRet": 1,
              "archMap": [
                {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}
              ],
              "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "comment": "ignored"},
                {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["SYS_PTRACE"]}},
                {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]},
                {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}
              ]
            }"#,
        )
        .unwrap();
        let sc = sc_with(profile(ProfileType::Localhost, path.to_str().unwrap()), "");
        let got = container_seccomp(&sc, &caps(&["CAP_SYS_PTRACE"])).unwrap().unwrap();
        assert_eq!(got.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(got.default_errno_ret(), Some(1));
        let names: Vec<Vec<String>> = got.syscalls().as_ref().unwrap().iter().map(|s| s.names().clone()).collect();
        assert_eq!(names, vec![vec!["read", "write"], vec!["personality"], vec!["clone3"]]);
        let arches = got.architectures().as_ref().unwrap();
        match std::env::consts::ARCH {
            "x86_64" => assert_eq!(arches, &vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]),
            "aarch64" => assert_eq!(arches, &vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]),
            _ => {}
        }
        let with_admin = container_seccomp(&sc, &caps(&["CAP_SYS_ADMIN"])).unwrap().unwrap();
        let names: Vec<String> = with_admin.syscalls().as_ref().unwrap().iter().flat_map(|s| s.names().clone()).collect();
        assert!(names.contains(&"mount".to_string()) && names.contains(&"ptrace".to_string()));

        // The OCI format itself is accepted too.
        std::fs::write(&path, r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_X86_64"]}"#).unwrap();
        let got = container_seccomp(&sc, &caps(&[])).unwrap().unwrap();
        assert_eq!(got.default_action(), LinuxSeccompAction::ScmpActLog);
        assert_eq!(got.architectures().as_ref().unwrap(), &vec![Arch::ScmpArchX86_64]);
    }

    #[test]
    fn localhost_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.json");
        let sc = sc_with(profile(ProfileType::Localhost, missing.to_str().unwrap()), "");
        let err = container_seccomp(&sc, &caps(&[])).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert!(err.to_string().contains("missing.json") && err.to_string().contains("not found"), "{err}");

        let bad = dir.path().join("bad.json");
        for body in [
            "{not json",
            r#"{"defaultAction":"SCMP_ACT_NOPE"}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"archMap":[{"architecture":"SCMP_ARCH_X86_64"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"name":"a","names":["b"],"action":"SCMP_ACT_ALLOW"}]}"#,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_NOPE"]}}]}"#,
        ] {
            std::fs::write(&bad, body).unwrap();
            let sc = sc_with(profile(ProfileType::Localhost, bad.to_str().unwrap()), "");
            let err = container_seccomp(&sc, &caps(&[])).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{body}: {err}");
        }
    }

    #[test]
    fn filters_on_arch_and_kernel() {
        let host = HostPlatform { arch: "x86_64".into(), kernel: (5, 10) };
        let p: Profile = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
                {"names":["arch_prctl"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["amd64","x32"]}},
                {"names":["arm_only"],"action":"SCMP_ACT_ALLOW","includes":{"arches":["arm64"]}},
                {"names":["new_enough"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"4.8"}},
                {"names":["too_new"],"action":"SCMP_ACT_ALLOW","includes":{"minKernel":"6.9"}},
                {"names":["not_on_amd64"],"action":"SCMP_ACT_ALLOW","excludes":{"arches":["amd64"]}}
            ]}"#,
        )
        .unwrap();
        let got = p.resolve(&caps(&[]), &host).unwrap();
        let names: Vec<String> = got.syscalls().as_ref().unwrap().iter().flat_map(|s| s.names().clone()).collect();
        assert_eq!(names, vec!["arch_prctl", "new_enough"]);
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5"), Some((5, 0)));
    }
}
