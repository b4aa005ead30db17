//! Ethernet frames for test runs, built byte by byte: IPv4 (with a valid header checksum)
//! or IPv6, then TCP, UDP, SCTP, ICMP, ICMPv6 or a protocol without ports, with valid
//! checksums, so that each frame is one a real interface could carry. The lower-level
//! builders are public so that tests can assemble malformed frames from the same parts.

use std::net::IpAddr;

use datapath::{CtKey, DIR_INGRESS, FAMILY_IPV4, FAMILY_IPV6};

pub const ICMP: u8 = 1;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const GRE: u8 = 47;
pub const ICMPV6: u8 = 58;
pub const SCTP: u8 = 132;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_HLEN: usize = 14;

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

/// ICMP echo request and reply, per family.
pub const ECHO_REQUEST: u8 = 8;
pub const ECHO_REPLY: u8 = 0;
pub const ECHO_REQUEST_V6: u8 = 128;
pub const ECHO_REPLY_V6: u8 = 129;

/// The upper layer of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    /// ICMP or ICMPv6, after the address family. `id` is the echo identifier.
    Icmp {
        kind: u8,
        id: u16,
    },
    /// A protocol the datapath reads no port of.
    Other(u8),
}

/// One IP packet, described.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

impl Packet {
    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => TCP,
            L4::Udp { .. } => UDP,
            L4::Sctp { .. } => SCTP,
            L4::Icmp { .. } if self.src.is_ipv4() => ICMP,
            L4::Icmp { .. } => ICMPV6,
            L4::Other(proto) => proto,
        }
    }

    /// What policy matches besides the protocol: the destination port, or the ICMP type.
    pub fn port(&self) -> Option<u16> {
        match self.l4 {
            L4::Tcp { dport, .. } | L4::Udp { dport, .. } | L4::Sctp { dport, .. } => Some(dport),
            L4::Icmp { kind, .. } => Some(u16::from(kind)),
            L4::Other(_) => None,
        }
    }

    fn is_echo(&self) -> bool {
        matches!(self.l4, L4::Icmp { kind, .. }
            if [ECHO_REQUEST, ECHO_REPLY, ECHO_REQUEST_V6, ECHO_REPLY_V6].contains(&kind)
                && (kind >= ECHO_REQUEST_V6) == self.src.is_ipv6())
    }

    /// The packet that answers this one: addresses and ports swapped, a SYN answered by a
    /// SYN-ACK, an echo request by an echo reply (and the other way round).
    pub fn reply(&self) -> Packet {
        let l4 = match self.l4 {
            L4::Tcp { sport, dport, flags } => {
                let flags = if flags & SYN != 0 { SYN | ACK } else { flags | ACK };
                L4::Tcp { sport: dport, dport: sport, flags }
            }
            L4::Udp { sport, dport } => L4::Udp { sport: dport, dport: sport },
            L4::Sctp { sport, dport } => L4::Sctp { sport: dport, dport: sport },
            L4::Icmp { kind: ECHO_REQUEST, id } if self.is_echo() => {
                L4::Icmp { kind: ECHO_REPLY, id }
            }
            L4::Icmp { kind: ECHO_REQUEST_V6, id } if self.is_echo() => {
                L4::Icmp { kind: ECHO_REPLY_V6, id }
            }
            // An echo reply sent first is answered, as conntrack pairs them, by a request.
            L4::Icmp { kind: ECHO_REPLY, id } if self.is_echo() => {
                L4::Icmp { kind: ECHO_REQUEST, id }
            }
            L4::Icmp { kind: ECHO_REPLY_V6, id } if self.is_echo() => {
                L4::Icmp { kind: ECHO_REQUEST_V6, id }
            }
            // Timestamp (RFC 792) and node information query (RFC 4620): their replies.
            L4::Icmp { kind: 13, id } if self.src.is_ipv4() => L4::Icmp { kind: 14, id },
            L4::Icmp { kind: 139, id } if self.src.is_ipv6() => L4::Icmp { kind: 140, id },
            other => other,
        };
        Packet { src: self.dst, dst: self.src, l4 }
    }

    /// The next packet of the same flow in the same direction: a TCP SYN is followed by an
    /// ACK, anything else by the same packet again.
    pub fn next(&self) -> Packet {
        match self.l4 {
            L4::Tcp { sport, dport, .. } => {
                Packet { l4: L4::Tcp { sport, dport, flags: ACK }, ..*self }
            }
            _ => *self,
        }
    }

    /// The conntrack key the datapath gives this packet travelling in `direction`
    /// (`DIR_INGRESS`: to the endpoint, `DIR_EGRESS`: from it) on interface `ifindex`: the
    /// endpoint's address and port first, so that the packet and its reply share the key.
    /// An echo request carries the echo id as its source port and a reply as its
    /// destination port (so a request is never a reply's key); other ICMP messages and
    /// protocols without ports carry none.
    pub fn ct_key(&self, ifindex: u32, direction: u8) -> CtKey {
        let (sport, dport) = match self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } | L4::Sctp { sport, dport } => {
                (sport, dport)
            }
            L4::Icmp { kind: ECHO_REQUEST | ECHO_REQUEST_V6, id } if self.is_echo() => (id, 0),
            L4::Icmp { id, .. } if self.is_echo() => (0, id),
            L4::Icmp { .. } | L4::Other(_) => (0, 0),
        };
        let (family, saddr) = address(self.src);
        let (_, daddr) = address(self.dst);
        let ((ep_addr, ep_port), (peer_addr, peer_port)) = if direction == DIR_INGRESS {
            ((daddr, dport), (saddr, sport))
        } else {
            ((saddr, sport), (daddr, dport))
        };
        CtKey {
            ifindex,
            family,
            proto: self.proto(),
            pad: 0,
            ep_addr,
            peer_addr,
            ep_port: ep_port.to_be(),
            peer_port: peer_port.to_be(),
        }
    }

    /// The upper-layer header and a few bytes of payload, checksummed.
    pub fn l4_bytes(&self) -> Vec<u8> {
        let payload = b"policyc!";
        let mut out = match self.l4 {
            L4::Tcp { sport, dport, flags } => {
                let mut h = ports(sport, dport);
                h.extend_from_slice(&1u32.to_be_bytes()); // sequence number
                let ack: u32 = if flags & ACK != 0 { 1 } else { 0 };
                h.extend_from_slice(&ack.to_be_bytes());
                h.extend_from_slice(&[5 << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
                h
            }
            L4::Udp { sport, dport } => {
                let mut h = ports(sport, dport);
                h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
                h.extend_from_slice(&[0, 0]);
                h
            }
            L4::Sctp { sport, dport } => {
                let mut h = ports(sport, dport);
                h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]); // verification tag, CRC32c
                h
            }
            L4::Icmp { kind, id } => {
                let mut h = vec![kind, 0, 0, 0];
                h.extend_from_slice(&id.to_be_bytes());
                h.extend_from_slice(&1u16.to_be_bytes()); // sequence number
                h
            }
            L4::Other(_) => Vec::new(),
        };
        out.extend_from_slice(payload);
        let checksum_at = match (self.l4, self.src) {
            (L4::Tcp { .. }, _) => Some(16),
            (L4::Udp { .. }, _) => Some(6),
            (L4::Icmp { .. }, _) => Some(2),
            _ => None,
        };
        if let Some(at) = checksum_at {
            // ICMPv4 has no pseudo-header; TCP, UDP and ICMPv6 do (RFC 793, 768, 4443).
            let pseudo = if self.proto() == ICMP {
                Vec::new()
            } else {
                pseudo_header(self.src, self.dst, self.proto(), out.len())
            };
            let sum = checksum(&[&pseudo, &out]);
            out[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        if matches!(self.l4, L4::Sctp { .. }) {
            let crc = crc32c(&out);
            out[8..12].copy_from_slice(&crc.to_le_bytes()); // RFC 9260, appendix A
        }
        out
    }

    /// The whole frame: Ethernet, IP, upper layer.
    pub fn frame(&self) -> Vec<u8> {
        ip_frame(self.src, self.dst, self.proto(), &self.l4_bytes())
    }

    /// `10.0.0.1:40000 -> 10.0.0.2:80 TCP SYN`, for reports.
    pub fn describe(&self) -> String {
        let (src, dst) = (self.src, self.dst);
        match self.l4 {
            L4::Tcp { sport, dport, flags } => {
                format!("{src}:{sport} -> {dst}:{dport} TCP {}", flag_names(flags))
            }
            L4::Udp { sport, dport } => format!("{src}:{sport} -> {dst}:{dport} UDP"),
            L4::Sctp { sport, dport } => format!("{src}:{sport} -> {dst}:{dport} SCTP"),
            L4::Icmp { kind, id } => {
                let family = if src.is_ipv4() { "ICMP" } else { "ICMPv6" };
                format!("{src} -> {dst} {family} type {kind} id {id}")
            }
            L4::Other(proto) => format!("{src} -> {dst} protocol {proto}"),
        }
    }
}

fn flag_names(flags: u8) -> String {
    let names = [(SYN, "SYN"), (ACK, "ACK"), (FIN, "FIN"), (RST, "RST")];
    let set: Vec<&str> = names.iter().filter(|(f, _)| flags & f != 0).map(|(_, n)| *n).collect();
    set.join("|")
}

fn ports(sport: u16, dport: u16) -> Vec<u8> {
    [sport.to_be_bytes(), dport.to_be_bytes()].concat()
}

/// A key's family and address bytes as the datapath stores them.
pub fn address(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (FAMILY_IPV4, bytes)
        }
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets()),
    }
}

/// An Ethernet frame from a locally administered address to another.
pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An Ethernet frame of one IP packet carrying `l4` (whole, with no extension header).
pub fn ip_frame(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let mut ip = ipv4_header(src.octets(), dst.octets(), proto, l4.len(), 0, 0);
            ip.extend_from_slice(l4);
            ethernet(ETH_P_IP, &ip)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let mut ip = ipv6_header(src.octets(), dst.octets(), proto, l4.len());
            ip.extend_from_slice(l4);
            ethernet(ETH_P_IPV6, &ip)
        }
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
}

/// An Ethernet frame of an IPv4 packet of `packet`'s addresses and protocol carrying
/// `payload`, with identification `id` and flags and fragment offset `frag`.
pub fn ipv4_frame(packet: &Packet, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V4(src), IpAddr::V4(dst)) = (packet.src, packet.dst) else {
        panic!("not IPv4: {packet:?}")
    };
    let mut ip = ipv4_header(src.octets(), dst.octets(), packet.proto(), payload.len(), id, frag);
    ip.extend_from_slice(payload);
    ethernet(ETH_P_IP, &ip)
}

/// An Ethernet frame of an IPv6 packet of `packet`'s addresses: `headers` (extension
/// headers, the first of kind `first`), then `payload`.
pub fn ipv6_frame(packet: &Packet, first: u8, headers: &[u8], payload: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (packet.src, packet.dst) else {
        panic!("not IPv6: {packet:?}")
    };
    let mut ip = ipv6_header(src.octets(), dst.octets(), first, headers.len() + payload.len());
    ip.extend_from_slice(headers);
    ip.extend_from_slice(payload);
    ethernet(ETH_P_IPV6, &ip)
}

/// An ICMP destination unreachable (port unreachable) from `src` to `dst` about `quoted`:
/// its IP header and the first 8 bytes of its upper layer (RFC 792, RFC 4443 section 3.1).
pub fn icmp_error(src: IpAddr, dst: IpAddr, quoted: &Packet) -> Vec<u8> {
    let inner = quoted.frame();
    let header = if quoted.src.is_ipv4() { 20 } else { 40 };
    let (proto, kind, code) = if src.is_ipv4() { (ICMP, 3, 3) } else { (ICMPV6, 1, 4) };
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&inner[ETH_HLEN..ETH_HLEN + header + 8]);
    let pseudo =
        if proto == ICMP { Vec::new() } else { pseudo_header(src, dst, proto, icmp.len()) };
    let sum = checksum(&[&pseudo, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    ip_frame(src, dst, proto, &icmp)
}

/// A 20-byte IPv4 header for `payload_len` bytes of payload, checksummed. `frag` is the
/// flags and fragment offset field (RFC 791, section 3.1).
pub fn ipv4_header(
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    payload_len: usize,
    id: u16,
    frag: u16,
) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    reseal_ipv4(&mut h);
    h
}

/// Recomputes the checksum of the IPv4 header at the start of `h` after a change.
pub fn reseal_ipv4(h: &mut [u8]) {
    let len = usize::from(h[0] & 0x0f) * 4;
    h[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&[&h[..len.min(h.len())]]);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
}

/// A 40-byte IPv6 header for `payload_len` bytes after it (extension headers included).
pub fn ipv6_header(src: [u8; 16], dst: [u8; 16], next: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload_len as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// An IPv6 extension header of `kind` (hop-by-hop 0, routing 43, destination options 60:
/// 8-byte units; authentication 51: 4-byte units) followed by `next`, `units` units past
/// the minimum long, padded with PadN / zeros.
pub fn extension(kind: u8, next: u8, units: u8) -> Vec<u8> {
    let len = if kind == 51 { (usize::from(units) + 3) * 4 } else { (usize::from(units) + 1) * 8 };
    let mut h = vec![0u8; len];
    h[0] = next;
    h[1] = if kind == 51 { units + 1 } else { units };
    if kind == 0 || kind == 60 {
        // One PadN option filling the rest (RFC 8200, section 4.2).
        h[2] = 1;
        h[3] = (len - 4) as u8;
    }
    h
}

/// An IPv6 fragment header (RFC 8200, section 4.5): `offset` in 8-byte units.
pub fn fragment_header(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut h = vec![next, 0];
    h.extend_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut p = [s.octets(), d.octets()].concat();
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
            p
        }
        _ => {
            let mut p = [address(src).1, address(dst).1].concat();
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
            p
        }
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
fn checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC32c (Castagnoli), as SCTP checksums its packets.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}
