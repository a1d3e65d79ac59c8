//! A small synchronous rtnetlink client: the link, address and route operations the
//! built-in plugins need.
//!
//! Why not `rtnetlink`: it is async (tokio + futures + netlink-proto), and a plugin call
//! is a short sequence of request/ack round trips in one namespace; a blocking socket
//! does that with no runtime to build per call and no threads besides the one that
//! enters the namespace. The message types come from `netlink-packet-route`, so no
//! attribute is encoded by hand.

use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::ip::Cidr;
use super::netns::Netns;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("{op}: cannot decode the kernel's answer: {detail}")]
    Decode { op: String, detail: String },
    #[error("link {0:?} not found")]
    NoSuchLink(String),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it did.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, NetlinkError>;

/// What we need to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<[u8; 6]>,
    pub kind: Option<String>,
    pub master: Option<u32>,
    pub mtu: Option<u32>,
    pub up: bool,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Link {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mac: None,
            kind: None,
            master: None,
            mtu: None,
            up: msg.header.flags.contains(LinkFlags::Up),
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name = name.clone(),
                LinkAttribute::Address(mac) if mac.len() == 6 => {
                    let mut bytes = [0u8; 6];
                    bytes.copy_from_slice(mac);
                    link.mac = Some(bytes);
                }
                LinkAttribute::Controller(master) => link.master = Some(*master),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::Kind(kind) = info {
                            link.kind = Some(kind.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }

    /// The MAC as `aa:bb:cc:dd:ee:ff` (empty if the link has none).
    pub fn mac_string(&self) -> String {
        self.mac.map(|m| format_mac(&m)).unwrap_or_default()
    }
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in out.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A route to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: Cidr,
    pub gateway: Option<IpAddr>,
    pub oif: u32,
}

/// One rtnetlink socket, bound to the namespace it was created in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn new() -> Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        // Errors carry the offending request's attributes: fewer bytes back with this off,
        // and a strict kernel rejects requests with garbage in fields it should ignore.
        let _ = socket.set_netlink_get_strict_chk(true);
        Ok(Netlink { socket, seq: 0 })
    }

    /// A socket in `netns` (created on a thread that entered it).
    pub fn in_netns(netns: &Netns) -> Result<Netlink> {
        netns.run(Netlink::new).map_err(NetlinkError::Socket)?
    }

    /// Sends one request and collects the answers until the ack (or the end of a dump).
    fn request(
        &mut self,
        op: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| NetlinkError::Kernel {
                op: op.to_string(),
                source,
            })?;

        let is_dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut answers = Vec::new();
        loop {
            let (bytes, _) = self.socket.recv_from_full().map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < bytes.len() {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&bytes[offset..]).map_err(|e| {
                        NetlinkError::Decode {
                            op: op.to_string(),
                            detail: e.to_string(),
                        }
                    })?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number != seq {
                    // A late answer to an earlier request: not ours to read.
                    offset += len.max(1);
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(answers),
                            Some(code) => Err(NetlinkError::Kernel {
                                op: op.to_string(),
                                source: io::Error::from_raw_os_error(-code.get()),
                            }),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => {
                        answers.push(inner);
                        // A plain GET answers with one message and no ack/done.
                        if !is_dump && flags & NLM_F_ACK == 0 {
                            return Ok(answers);
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }

    fn ack(&mut self, op: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(op, msg, flags | NLM_F_ACK).map(|_| ())
    }

    /// The link named `name`, if it exists.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(&format!("get link {name}"), msg)
    }

    /// The link with interface index `index`, if it exists.
    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(&format!("get link #{index}"), msg)
    }

    /// The link `query` selects (by name or index); None when the kernel has no such link.
    fn get_link(&mut self, op: &str, query: LinkMessage) -> Result<Option<Link>> {
        match self.request(op, RouteNetlinkMessage::GetLink(query), 0) {
            Ok(answers) => Ok(answers.iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))
    }

    /// Creates a bridge (EEXIST when a link of that name exists).
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
                InfoKind::Bridge,
            )]));
        self.ack(
            &format!("create bridge {name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Creates a veth pair: `host_name` here, `peer_name` directly inside `peer_netns`
    /// (so the peer's name never clashes with a host link, and no rename is needed).
    pub fn create_veth(
        &mut self,
        host_name: &str,
        peer_name: &str,
        peer_netns: &Netns,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(peer_name.to_string()));
        peer.attributes
            .push(LinkAttribute::NetNsFd(peer_netns.file().as_raw_fd()));
        if let Some(mtu) = mtu {
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(host_name.to_string()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));
        self.ack(
            &format!("create veth {host_name} with peer {peer_name}"),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Changes link attributes and flags (RTM_SETLINK on the index).
    fn set_link(
        &mut self,
        op: &str,
        index: u32,
        attrs: Vec<LinkAttribute>,
        flags: LinkFlags,
        mask: LinkFlags,
    ) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = flags;
        msg.header.change_mask = mask;
        msg.attributes = attrs;
        self.ack(op, RouteNetlinkMessage::SetLink(msg), 0)
    }

    pub fn set_up(&mut self, index: u32) -> Result<()> {
        self.set_link(
            &format!("set link #{index} up"),
            index,
            vec![],
            LinkFlags::Up,
            LinkFlags::Up,
        )
    }

    pub fn set_promisc(&mut self, index: u32, on: bool) -> Result<()> {
        let flags = if on {
            LinkFlags::Promisc
        } else {
            LinkFlags::empty()
        };
        self.set_link(
            &format!("set link #{index} promisc {on}"),
            index,
            vec![],
            flags,
            LinkFlags::Promisc,
        )
    }

    /// Enslaves the link to `master` and brings it up, in one request.
    pub fn set_master_up(&mut self, index: u32, master: u32) -> Result<()> {
        self.set_link(
            &format!("attach link #{index} to #{master}"),
            index,
            vec![LinkAttribute::Controller(master)],
            LinkFlags::Up,
            LinkFlags::Up,
        )
    }

    /// Sets the bridge port's hairpin mode (a port's frames may go back out the same
    /// port: a pod reaching itself through a hostPort or service IP).
    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
                on,
            )])),
        ]));
        self.ack(
            &format!("set hairpin {on} on link #{index}"),
            RouteNetlinkMessage::NewLink(msg),
            0,
        )
    }

    pub fn delete_link(&mut self, index: u32) -> Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.ack(
            &format!("delete link #{index}"),
            RouteNetlinkMessage::DelLink(msg),
            0,
        )
    }

    /// Deletes the link named `name`; `Ok(false)` when there is none.
    pub fn delete_link_by_name(&mut self, name: &str) -> Result<bool> {
        match self.link_by_name(name)? {
            Some(link) => match self.delete_link(link.index) {
                Ok(()) => Ok(true),
                Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// Adds `addr` (address with prefix) to the link. IPv6 addresses skip duplicate
    /// address detection: the IPAM owns them, and DAD would keep them unusable (tentative)
    /// for a second or more after ADD returns.
    pub fn add_address(&mut self, index: u32, addr: Cidr) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = family(addr.addr);
        msg.header.prefix_len = addr.prefix;
        msg.header.index = index;
        msg.header.scope = AddressScope::Universe;
        msg.attributes.push(AddressAttribute::Local(addr.addr));
        msg.attributes.push(AddressAttribute::Address(addr.addr));
        match addr.last() {
            IpAddr::V4(broadcast) if addr.prefix < 31 => {
                msg.attributes.push(AddressAttribute::Broadcast(broadcast))
            }
            IpAddr::V4(_) => {}
            IpAddr::V6(_) => msg
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad)),
        }
        self.ack(
            &format!("add address {addr} to link #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The addresses on a link (with prefix), both families.
    pub fn addresses(&mut self, index: u32) -> Result<Vec<Cidr>> {
        let msg = AddressMessage::default();
        let answers = self.request(
            "list addresses",
            RouteNetlinkMessage::GetAddress(msg),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|a| match a {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let ip = a.attributes.iter().find_map(|attr| match attr {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })?;
                    Cidr::new(ip, a.header.prefix_len)
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a route in the main table (EEXIST when it is there).
    pub fn add_route(&mut self, route: &RouteSpec) -> Result<()> {
        let dst = route.dst.network();
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(dst.addr);
        msg.header.destination_prefix_length = dst.prefix;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.scope = if route.gateway.is_some() {
            RouteScope::Universe
        } else {
            RouteScope::Link
        };
        if dst.prefix > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::from(dst.addr)));
        }
        if let Some(gw) = route.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        msg.attributes.push(RouteAttribute::Oif(route.oif));
        self.ack(
            &format!("add route {dst} via {:?} dev #{}", route.gateway, route.oif),
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// The output interface the kernel would use to reach `ip` (RTM_GETROUTE).
    pub fn route_oif(&mut self, ip: IpAddr) -> Result<Option<u32>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = family(ip);
        msg.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(ip)));
        let answers = self.request(
            &format!("get route to {ip}"),
            RouteNetlinkMessage::GetRoute(msg),
            0,
        )?;
        Ok(answers.iter().find_map(|a| match a {
            RouteNetlinkMessage::NewRoute(r) => r.attributes.iter().find_map(|attr| match attr {
                RouteAttribute::Oif(oif) => Some(*oif),
                _ => None,
            }),
            _ => None,
        }))
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_roundtrip() {
        let mac = parse_mac("0a:58:0A:01:00:05").unwrap();
        assert_eq!(format_mac(&mac), "0a:58:0a:01:00:05");
        assert!(parse_mac("0a:58:0a:01:00").is_none());
        assert!(parse_mac("0a:58:0a:01:00:05:06").is_none());
    }
}
