//! Conversions from OCI (cgroup v1 flavoured) resource values to cgroup file values, most of
//! them for v2.
//!
//! The formulas are the ones Kubernetes documents for cgroup v2 (KEP-2254) and runc and
//! crun implement, so a pod gets the same weights whichever runtime runs it.

use super::error::CgroupError;

/// cpu.shares [2, 262144] -> cpu.weight [1, 10000], linear as in KEP-2254.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        // 0 means "not set" in the OCI spec; the caller skips it.
        return 0;
    }
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// OCI quota/period -> the cpu.max line, or None when neither is set.
/// A period without a quota keeps the limit at "max".
pub fn cpu_max(quota: Option<i64>, period: Option<u64>) -> Option<String> {
    let period_set = period.filter(|p| *p != 0);
    let quota_set = quota.filter(|q| *q != 0);
    if quota_set.is_none() && period_set.is_none() {
        return None;
    }
    let period = period_set.unwrap_or(100_000);
    Some(match quota_set {
        Some(q) if q > 0 => format!("{q} {period}"),
        _ => format!("max {period}"),
    })
}

/// OCI `memory.limit` (-1 = unlimited) as a v2 value.
pub fn memory_max(limit: i64) -> String {
    if limit < 0 {
        "max".to_string()
    } else {
        limit.to_string()
    }
}

/// OCI `pids.limit` (0 or negative = unlimited) as a `pids.max` value (the same file and
/// values in v1 and v2).
pub fn pids_max(limit: i64) -> String {
    if limit > 0 {
        limit.to_string()
    } else {
        "max".to_string()
    }
}

/// OCI `memory.swap` is memory+swap (the v1 memsw value); v2's memory.swap.max is swap alone.
/// None: leave memory.swap.max alone.
pub fn memory_swap_max(
    limit: Option<i64>,
    swap: Option<i64>,
) -> Result<Option<String>, CgroupError> {
    let Some(swap) = swap else {
        return Ok(None);
    };
    if swap == -1 {
        return Ok(Some("max".to_string()));
    }
    if swap == 0 {
        return Ok(None);
    }
    match limit {
        // No memory limit: swap alone cannot be derived from memory+swap.
        None | Some(0) => Err(CgroupError::InvalidResource(format!(
            "memory.swap {swap} set without a memory limit"
        ))),
        Some(-1) => Ok(Some("max".to_string())),
        Some(limit) if swap < limit => Err(CgroupError::InvalidResource(format!(
            "memory.swap {swap} (memory+swap) is below the memory limit {limit}"
        ))),
        Some(limit) => Ok(Some((swap - limit).to_string())),
    }
}

/// blkio.weight [10, 1000] -> io.weight [1, 10000].
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let weight = u64::from(weight.clamp(10, 1000));
    1 + (weight - 10) * 9999 / 990
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_matches_kubernetes() {
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 39);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(102), 4);
        assert_eq!(cpu_shares_to_weight(1), 1, "clamped to the minimum");
    }

    #[test]
    fn cpu_max_lines() {
        assert_eq!(cpu_max(None, None), None);
        assert_eq!(cpu_max(Some(50_000), None).as_deref(), Some("50000 100000"));
        assert_eq!(
            cpu_max(Some(20_000), Some(50_000)).as_deref(),
            Some("20000 50000")
        );
        assert_eq!(
            cpu_max(Some(-1), Some(50_000)).as_deref(),
            Some("max 50000")
        );
        assert_eq!(cpu_max(None, Some(10_000)).as_deref(), Some("max 10000"));
    }

    #[test]
    fn swap_is_memsw_minus_limit() {
        assert_eq!(
            memory_swap_max(Some(100), Some(300)).unwrap().as_deref(),
            Some("200")
        );
        assert_eq!(
            memory_swap_max(Some(100), Some(100)).unwrap().as_deref(),
            Some("0")
        );
        assert_eq!(
            memory_swap_max(Some(100), Some(-1)).unwrap().as_deref(),
            Some("max")
        );
        assert_eq!(memory_swap_max(Some(100), None).unwrap(), None);
        assert!(memory_swap_max(Some(100), Some(50)).is_err());
        assert!(memory_swap_max(None, Some(50)).is_err());
    }

    #[test]
    fn pids_max_values() {
        assert_eq!(pids_max(100), "100");
        assert_eq!(pids_max(0), "max");
        assert_eq!(pids_max(-1), "max");
    }

    #[test]
    fn blkio_weight_range() {
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
    }
}
