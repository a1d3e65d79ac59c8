//! cgroup limits (`linux.resources`) and the process's oom_score_adj.
//!
//! Zero in a CRI field means "not set" (protobuf), so only non-zero values are written.
//! Memory swap: the CRI's swap limit when set, else equal to the memory limit, so a
//! container cannot use swap unless asked (containerd's rule).

use k8s_cri::v1::{ContainerConfig, LinuxContainerResources};
use oci_spec::runtime::{LinuxCpu, LinuxHugepageLimit, LinuxMemory, LinuxPids, LinuxResources};

use super::{SpecError, SpecOptions};

const OOM_SCORE_ADJ_MIN: i32 = -1000;
const OOM_SCORE_ADJ_MAX: i32 = 1000;

fn container_resources(config: &ContainerConfig) -> LinuxContainerResources {
    config.linux.as_ref().and_then(|l| l.resources.clone()).unwrap_or_default()
}

/// `linux.resources` without the device rules (the caller adds those).
pub fn build_resources(config: &ContainerConfig, options: &SpecOptions) -> Result<LinuxResources, SpecError> {
    let r = container_resources(config);
    let mut out = LinuxResources::default();

    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if r.cpu_shares != 0 {
        let shares = u64::try_from(r.cpu_shares)
            .map_err(|_| SpecError::invalid(format!("cpu_shares {} is negative", r.cpu_shares)))?;
        cpu.set_shares(Some(shares));
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        // -1 means unlimited; other negatives are nonsense.
        if r.cpu_quota < -1 {
            return Err(SpecError::invalid(format!("cpu_quota {} is negative", r.cpu_quota)));
        }
        cpu.set_quota(Some(r.cpu_quota));
        any_cpu = true;
    }
    if r.cpu_period != 0 {
        let period = u64::try_from(r.cpu_period)
            .map_err(|_| SpecError::invalid(format!("cpu_period {} is negative", r.cpu_period)))?;
        cpu.set_period(Some(period));
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        validate_cpuset("cpuset_cpus", &r.cpuset_cpus)?;
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        validate_cpuset("cpuset_mems", &r.cpuset_mems)?;
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        any_cpu = true;
    }
    if any_cpu {
        out.set_cpu(Some(cpu));
    }

    if r.memory_limit_in_bytes != 0 || r.memory_swap_limit_in_bytes != 0 {
        if r.memory_limit_in_bytes < 0 {
            return Err(SpecError::invalid(format!("memory_limit_in_bytes {} is negative", r.memory_limit_in_bytes)));
        }
        let mut memory = LinuxMemory::default();
        if r.memory_limit_in_bytes != 0 {
            memory.set_limit(Some(r.memory_limit_in_bytes));
            memory.set_swap(Some(r.memory_limit_in_bytes));
        }
        if r.memory_swap_limit_in_bytes != 0 {
            // -1: unlimited swap.
            if r.memory_swap_limit_in_bytes < -1 {
                return Err(SpecError::invalid(format!("memory_swap_limit_in_bytes {} is negative", r.memory_swap_limit_in_bytes)));
            }
            if r.memory_swap_limit_in_bytes > 0 && r.memory_limit_in_bytes > r.memory_swap_limit_in_bytes {
                return Err(SpecError::invalid(format!(
                    "memory_swap_limit_in_bytes {} is below memory_limit_in_bytes {} (it counts memory plus swap)",
                    r.memory_swap_limit_in_bytes, r.memory_limit_in_bytes
                )));
            }
            memory.set_swap(Some(r.memory_swap_limit_in_bytes));
        }
        out.set_memory(Some(memory));
    }

    if !r.hugepage_limits.is_empty() {
        let mut limits = Vec::new();
        for h in &r.hugepage_limits {
            validate_page_size(&h.page_size)?;
            let mut l = LinuxHugepageLimit::default();
            l.set_page_size(h.page_size.clone())
                .set_limit(i64::try_from(h.limit).map_err(|_| SpecError::invalid(format!("hugepage limit {} is too large", h.limit)))?);
            limits.push(l);
        }
        out.set_hugepage_limits(Some(limits));
    }

    if !r.unified.is_empty() {
        for key in r.unified.keys() {
            // A key names a file in the container's cgroup directory: no path tricks.
            if key.is_empty() || key.contains('/') || key.starts_with('.') {
                return Err(SpecError::invalid(format!("unified resource key {key:?} is not a cgroup file name")));
            }
        }
        out.set_unified(Some(r.unified.clone()));
    }

    if let Some(limit) = options.pids_limit {
        let mut pids = LinuxPids::default();
        pids.set_limit(limit);
        out.set_pids(Some(pids));
    }
    Ok(out)
}

/// `0-3,5`, `7`: digits, commas and dashes only.
fn validate_cpuset(field: &str, value: &str) -> Result<(), SpecError> {
    let ok = value.split(',').all(|part| {
        let mut ends = part.trim().splitn(2, '-');
        let first = ends.next().unwrap_or("");
        let valid = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        valid(first) && ends.next().is_none_or(valid)
    });
    if ok {
        Ok(())
    } else {
        Err(SpecError::invalid(format!("{field} {value:?} is not a list like \"0-3,5\"")))
    }
}

/// `2MB`, `1GB`, `64KB`: what kubelet sends and the hugetlb controller's file names use.
fn validate_page_size(size: &str) -> Result<(), SpecError> {
    let digits = size.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &size[digits.len()..];
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && matches!(unit, "KB" | "MB" | "GB" | "TB" | "PB") {
        Ok(())
    } else {
        Err(SpecError::invalid(format!("hugepage page_size {size:?} is not like \"2MB\" or \"1GB\"")))
    }
}

/// The process's oom_score_adj: the CRI's, within [-1000, 1000], and never below what this
/// host lets berth set (containerd's `restrict_oom_score_adj`): without CAP_SYS_RESOURCE
/// writing a lower value fails, and failing the pod for it helps nobody.
pub fn oom_score_adj(config: &ContainerConfig, host_min: i32) -> i32 {
    let requested = container_resources(config).oom_score_adj.clamp(OOM_SCORE_ADJ_MIN as i64, OOM_SCORE_ADJ_MAX as i64) as i32;
    requested.max(host_min.clamp(OOM_SCORE_ADJ_MIN, OOM_SCORE_ADJ_MAX))
}

/// The lowest oom_score_adj this process may give its children: its own (without
/// CAP_SYS_RESOURCE a process cannot lower it). berthd passes this as
/// `ContainerSpecInput::host_min_oom_score_adj`; 0 if it cannot be read.
pub fn current_oom_score_adj() -> i32 {
    std::fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::{HugepageLimit, LinuxContainerConfig};

    fn cfg(r: LinuxContainerResources) -> ContainerConfig {
        ContainerConfig { linux: Some(LinuxContainerConfig { resources: Some(r), security_context: None }), ..Default::default() }
    }

    #[test]
    fn empty_resources_set_nothing() {
        let r = build_resources(&ContainerConfig::default(), &SpecOptions::default()).unwrap();
        assert!(r.cpu().is_none() && r.memory().is_none() && r.pids().is_none() && r.hugepage_limits().is_none() && r.unified().is_none());
    }

    #[test]
    fn cpu_and_memory() {
        let r = build_resources(
            &cfg(LinuxContainerResources {
                cpu_shares: 512,
                cpu_quota: 50_000,
                cpu_period: 100_000,
                cpuset_cpus: "0-1,3".into(),
                cpuset_mems: "0".into(),
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            &SpecOptions { pids_limit: Some(100), ..Default::default() },
        )
        .unwrap();
        let cpu = r.cpu().as_ref().unwrap();
        assert_eq!((cpu.shares(), cpu.quota(), cpu.period()), (Some(512), Some(50_000), Some(100_000)));
        assert_eq!((cpu.cpus().as_deref(), cpu.mems().as_deref()), (Some("0-1,3"), Some("0")));
        let mem = r.memory().unwrap();
        assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(64 << 20)));
        assert_eq!(r.pids().unwrap().limit(), 100);
    }

    #[test]
    fn swap_rules() {
        type Case = (i64, i64, Result<(Option<i64>, Option<i64>), ()>);
        let cases: &[Case] = &[
            (100, 0, Ok((Some(100), Some(100)))),
            (100, 300, Ok((Some(100), Some(300)))),
            (100, -1, Ok((Some(100), Some(-1)))),
            (0, 300, Ok((None, Some(300)))),
            (300, 100, Err(())),
            (-5, 0, Err(())),
            (100, -7, Err(())),
        ];
        for (limit, swap, want) in cases {
            let got = build_resources(
                &cfg(LinuxContainerResources { memory_limit_in_bytes: *limit, memory_swap_limit_in_bytes: *swap, ..Default::default() }),
                &SpecOptions::default(),
            );
            match want {
                Ok((l, s)) => {
                    let mem = got.unwrap().memory().unwrap();
                    assert_eq!((mem.limit(), mem.swap()), (*l, *s), "{limit} {swap}");
                }
                Err(()) => assert_eq!(got.unwrap_err().code(), tonic::Code::InvalidArgument, "{limit} {swap}"),
            }
        }
    }

    #[test]
    fn invalid_values() {
        for r in [
            LinuxContainerResources { cpu_shares: -2, ..Default::default() },
            LinuxContainerResources { cpu_quota: -5, ..Default::default() },
            LinuxContainerResources { cpu_period: -1, ..Default::default() },
            LinuxContainerResources { cpuset_cpus: "0-a".into(), ..Default::default() },
            LinuxContainerResources { cpuset_mems: "0--1".into(), ..Default::default() },
            LinuxContainerResources { hugepage_limits: vec![HugepageLimit { page_size: "2XB".into(), limit: 1 }], ..Default::default() },
            LinuxContainerResources { unified: [("../memory.max".to_string(), "1".to_string())].into(), ..Default::default() },
        ] {
            let err = build_resources(&cfg(r.clone()), &SpecOptions::default()).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{r:?}");
        }
        // -1 quota = unlimited is fine.
        assert!(build_resources(&cfg(LinuxContainerResources { cpu_quota: -1, ..Default::default() }), &SpecOptions::default()).is_ok());
    }

    #[test]
    fn hugepages_and_unified() {
        let r = build_resources(
            &cfg(LinuxContainerResources {
                hugepage_limits: vec![
                    HugepageLimit { page_size: "2MB".into(), limit: 4 << 20 },
                    HugepageLimit { page_size: "1GB".into(), limit: 0 },
                ],
                unified: [("memory.high".to_string(), "1000000".to_string())].into(),
                ..Default::default()
            }),
            &SpecOptions::default(),
        )
        .unwrap();
        let h = r.hugepage_limits().as_ref().unwrap();
        assert_eq!((h[0].page_size().as_str(), h[0].limit()), ("2MB", 4 << 20));
        assert_eq!((h[1].page_size().as_str(), h[1].limit()), ("1GB", 0));
        assert_eq!(r.unified().as_ref().unwrap()["memory.high"], "1000000");
    }

    #[test]
    fn reads_our_own_oom_score_adj() {
        let v = current_oom_score_adj();
        assert!((-1000..=1000).contains(&v));
    }

    #[test]
    fn oom_score_adj_is_clamped() {
        let cases = [
            // requested, host minimum -> result
            (0, 0, 0),
            (-998, 0, 0),
            (-998, -1000, -998),
            (1000, 0, 1000),
            (-5000, -1000, -1000),
            (5000, 0, 1000),
            (500, 200, 500),
            (100, 200, 200),
            (0, -2000, 0),
        ];
        for (requested, host_min, want) in cases {
            let c = cfg(LinuxContainerResources { oom_score_adj: requested, ..Default::default() });
            assert_eq!(oom_score_adj(&c, host_min), want, "{requested} {host_min}");
        }
    }
}
