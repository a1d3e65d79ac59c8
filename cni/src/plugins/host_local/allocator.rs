//! Picking addresses from a range set: round-robin after the last one handed out,
//! skipping reserved ones, honouring a requested address.

use std::net::IpAddr;

use super::config::Range;
use super::store::{Store, StoreError};
use crate::plugins::ip;

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("no free address left in range set {set} ({ranges})")]
    Exhausted { set: usize, ranges: String },
    #[error("requested address {ip} is already allocated to container {owner}")]
    Taken { ip: IpAddr, owner: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Allocates one address of range set `set_idx` to the container.
/// Returns the address and the range it came from.
pub fn allocate<'a>(
    store: &Store,
    set_idx: usize,
    ranges: &'a [Range],
    container_id: &str,
    ifname: &str,
    requested: Option<IpAddr>,
) -> Result<(IpAddr, &'a Range), AllocError> {
    if let Some(ip) = requested {
        // A requested address is checked against the range, not against the reserved list:
        // a runtime may ask for any address inside it.
        let range = ranges
            .iter()
            .find(|r| r.contains(ip))
            .ok_or(AllocError::Exhausted {
                set: set_idx,
                ranges: describe(ranges),
            })?;
        if store.reserve(ip, container_id, ifname, set_idx)? {
            return Ok((ip, range));
        }
        let (owner, owner_ifname) = store.owner(ip).unwrap_or_default();
        if owner == container_id && (owner_ifname == ifname || owner_ifname.is_empty()) {
            return Ok((ip, range));
        }
        return Err(AllocError::Taken { ip, owner });
    }

    // Begin right after the last address handed out in this set (if it is still in a
    // range), else at the first range's start.
    let (mut range_idx, mut candidate) = match store.last_reserved(set_idx).and_then(|last| {
        ranges
            .iter()
            .position(|r| r.contains(last))
            .map(|i| (i, last))
    }) {
        Some((i, last)) => step(ranges, i, last),
        None => (0, ranges[0].start),
    };
    let begin = (range_idx, candidate);
    loop {
        let range = &ranges[range_idx];
        if !range.is_reserved(candidate)
            && store.reserve(candidate, container_id, ifname, set_idx)?
        {
            return Ok((candidate, range));
        }
        (range_idx, candidate) = step(ranges, range_idx, candidate);
        if (range_idx, candidate) == begin {
            return Err(AllocError::Exhausted {
                set: set_idx,
                ranges: describe(ranges),
            });
        }
    }
}

/// The address after `ip` in range `idx`, moving on to the next range (wrapping) at the end.
fn step(ranges: &[Range], idx: usize, ip: IpAddr) -> (usize, IpAddr) {
    let range = &ranges[idx];
    if ip == range.end {
        let next = (idx + 1) % ranges.len();
        return (next, ranges[next].start);
    }
    match ip::next(ip) {
        Some(n) => (idx, n),
        None => {
            let next = (idx + 1) % ranges.len();
            (next, ranges[next].start)
        }
    }
}

fn describe(ranges: &[Range]) -> String {
    ranges
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::ip::Cidr;

    fn range(subnet: &str, start: &str, end: &str) -> Range {
        let subnet: Cidr = subnet.parse().unwrap();
        Range {
            subnet: subnet.network(),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            gateway: ip::next(subnet.first()),
        }
    }

    #[test]
    fn round_robin_exhaustion_and_reuse() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        // .1 is the gateway: four usable addresses .2-.5 (and .0 is never handed out).
        let ranges = vec![range("10.9.0.0/29", "10.9.0.0", "10.9.0.5")];
        let mut got = Vec::new();
        for i in 0..4 {
            let (ip, _) = allocate(&store, 0, &ranges, &format!("c{i}"), "eth0", None).unwrap();
            got.push(ip.to_string());
        }
        assert_eq!(got, ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5"]);
        assert!(matches!(
            allocate(&store, 0, &ranges, "c9", "eth0", None),
            Err(AllocError::Exhausted { .. })
        ));
        // Releasing .3 makes exactly it available again.
        store.release("c1", "eth0").unwrap();
        let (ip, _) = allocate(&store, 0, &ranges, "c9", "eth0", None).unwrap();
        assert_eq!(ip.to_string(), "10.9.0.3");
    }

    #[test]
    fn round_robin_does_not_reuse_at_once() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let ranges = vec![range("10.9.0.0/24", "10.9.0.2", "10.9.0.254")];
        let (a, _) = allocate(&store, 0, &ranges, "a", "eth0", None).unwrap();
        store.release("a", "eth0").unwrap();
        let (b, _) = allocate(&store, 0, &ranges, "b", "eth0", None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn multiple_ranges_in_a_set_and_wrap() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let ranges = vec![
            range("10.9.0.0/24", "10.9.0.10", "10.9.0.11"),
            range("10.9.1.0/24", "10.9.1.10", "10.9.1.10"),
        ];
        let ips: Vec<String> = (0..3)
            .map(|i| {
                allocate(&store, 0, &ranges, &format!("c{i}"), "eth0", None)
                    .unwrap()
                    .0
                    .to_string()
            })
            .collect();
        assert_eq!(ips, ["10.9.0.10", "10.9.0.11", "10.9.1.10"]);
        store.release("c0", "eth0").unwrap();
        // Wraps from the end of the last range to the first.
        assert_eq!(
            allocate(&store, 0, &ranges, "c3", "eth0", None)
                .unwrap()
                .0
                .to_string(),
            "10.9.0.10"
        );
    }

    #[test]
    fn requested_address() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let ranges = vec![range("10.9.0.0/24", "10.9.0.2", "10.9.0.254")];
        let want: IpAddr = "10.9.0.77".parse().unwrap();
        assert_eq!(
            allocate(&store, 0, &ranges, "a", "eth0", Some(want))
                .unwrap()
                .0,
            want
        );
        // The same container asking again gets it; another does not.
        assert_eq!(
            allocate(&store, 0, &ranges, "a", "eth0", Some(want))
                .unwrap()
                .0,
            want
        );
        assert!(matches!(
            allocate(&store, 0, &ranges, "b", "eth0", Some(want)),
            Err(AllocError::Taken { .. })
        ));
        assert!(allocate(
            &store,
            0,
            &ranges,
            "b",
            "eth0",
            Some("10.9.1.1".parse().unwrap())
        )
        .is_err());
    }

    #[test]
    fn ipv6_range() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), "n").unwrap();
        let ranges = vec![range(
            "fd00:9::/64",
            "fd00:9::1",
            "fd00:9::ffff:ffff:ffff:ffff",
        )];
        let (ip, r) = allocate(&store, 1, &ranges, "a", "eth0", None).unwrap();
        assert_eq!(ip.to_string(), "fd00:9::2");
        assert_eq!(r.subnet.prefix, 64);
    }
}
