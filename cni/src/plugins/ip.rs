//! IP prefix arithmetic for IPAM and rules: a CIDR type and address stepping, for IPv4 and
//! IPv6 alike (addresses are handled as u128 so one code path serves both families).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address with a prefix length, e.g. `10.1.0.5/24` (the host bits are kept: a
/// pod address and its subnet are both written this way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        (prefix <= max_prefix(addr)).then_some(Cidr { addr, prefix })
    }

    /// The subnet: host bits cleared.
    pub fn network(&self) -> Cidr {
        Cidr {
            addr: from_u128(self.addr, to_u128(self.addr) & self.mask()),
            prefix: self.prefix,
        }
    }

    pub fn first(&self) -> IpAddr {
        self.network().addr
    }

    /// The last address in the subnet (the IPv4 broadcast address).
    pub fn last(&self) -> IpAddr {
        from_u128(
            self.addr,
            (to_u128(self.addr) & self.mask()) | !self.mask() & family_max(self.addr),
        )
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4()
            && to_u128(ip) & self.mask() == to_u128(self.addr) & self.mask()
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    fn mask(&self) -> u128 {
        let bits = max_prefix(self.addr) as u32;
        let host_bits = bits - self.prefix as u32;
        let all = family_max(self.addr);
        if host_bits >= 128 {
            0
        } else {
            all & !((1u128 << host_bits) - 1)
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an address/prefix")]
pub struct CidrParseError(pub String);

impl FromStr for Cidr {
    type Err = CidrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrParseError(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Cidr::new(addr, prefix).ok_or_else(err)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub fn max_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

fn family_max(ip: IpAddr) -> u128 {
    if ip.is_ipv4() {
        u32::MAX as u128
    } else {
        u128::MAX
    }
}

pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Builds an address of the same family as `like`.
pub fn from_u128(like: IpAddr, n: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// `ip + 1`, `None` past the end of the family.
pub fn next(ip: IpAddr) -> Option<IpAddr> {
    let n = to_u128(ip);
    (n < family_max(ip)).then(|| from_u128(ip, n + 1))
}

/// `ip - 1`, `None` below zero.
pub fn prev(ip: IpAddr) -> Option<IpAddr> {
    let n = to_u128(ip);
    (n > 0).then(|| from_u128(ip, n - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_arith() {
        let c: Cidr = "10.1.2.77/24".parse().unwrap();
        assert_eq!(c.network().to_string(), "10.1.2.0/24");
        assert_eq!(c.last().to_string(), "10.1.2.255");
        assert!(c.contains("10.1.2.1".parse().unwrap()));
        assert!(!c.contains("10.1.3.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.last().to_string(), "255.255.255.255");
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert_eq!(
            next("10.0.0.255".parse().unwrap()).unwrap().to_string(),
            "10.0.1.0"
        );
        assert_eq!(next("255.255.255.255".parse().unwrap()), None);
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0.0".parse::<Cidr>().is_err());
    }

    #[test]
    fn v6_arith() {
        let c: Cidr = "fd00:1::5/64".parse().unwrap();
        assert_eq!(c.first().to_string(), "fd00:1::");
        assert_eq!(c.last().to_string(), "fd00:1::ffff:ffff:ffff:ffff");
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains("fd00::1".parse().unwrap()));
        assert_eq!(
            prev("fd00::1".parse().unwrap()).unwrap().to_string(),
            "fd00::"
        );
    }
}
