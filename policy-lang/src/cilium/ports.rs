//! The L4 part of Cilium rules: `toPorts` and `icmps`.
//!
//! Validation follows Cilium's rule sanitizer and CRD schema (cilium.io/v2): at most 40
//! ports per `toPorts` entry and 40 fields per `icmps` entry; a port is a number
//! 0-65535 (0: every port) or an IANA service name; `endPort` is a number; protocols
//! are TCP, UDP, SCTP or ANY, upper case. Where Cilium quietly ignores a field that
//! cannot apply (`endPort` with a named port), we report it instead.

use crate::ast::{Protocol, Sp};
use crate::ast_cilium::{CiliumPort, CiliumPortSpec, IcmpFamily, IcmpMatch};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::netpol;
use crate::reader::Reader;
use crate::yaml::{Node, NodeKind};

/// Cilium's limit on `ports` of one `toPorts` entry and `fields` of one `icmps` entry.
pub(super) const MAX_PORTS: usize = 40;

/// Protocols Cilium accepts only behind `--enable-extended-ip-protocols`. They have no
/// ports, and the datapath tables here have no key for them yet.
const EXTENDED_PROTOCOLS: &[&str] = &["VRRP", "IGMP", "GRE", "IPIP", "IPV6", "ESP", "AH"];

/// ICMP type names Cilium accepts (its API reference for `ICMPField.type`), with their
/// IANA numbers. `Echo` is Cilium's alias of `EchoRequest`.
const ICMPV4_TYPES: &[(&str, u8)] = &[
    ("EchoReply", 0),
    ("DestinationUnreachable", 3),
    ("Redirect", 5),
    ("Echo", 8),
    ("EchoRequest", 8),
    ("RouterAdvertisement", 9),
    ("RouterSelection", 10),
    ("TimeExceeded", 11),
    ("ParameterProblem", 12),
    ("Timestamp", 13),
    ("TimestampReply", 14),
    ("Photuris", 40),
    ("ExtendedEchoRequest", 42),
    ("ExtendedEchoReply", 43),
];

const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("DestinationUnreachable", 1),
    ("PacketTooBig", 2),
    ("TimeExceeded", 3),
    ("ParameterProblem", 4),
    ("EchoRequest", 128),
    ("EchoReply", 129),
    ("MulticastListenerQuery", 130),
    ("MulticastListenerReport", 131),
    ("MulticastListenerDone", 132),
    ("RouterSolicitation", 133),
    ("RouterAdvertisement", 134),
    ("NeighborSolicitation", 135),
    ("NeighborAdvertisement", 136),
    ("RedirectMessage", 137),
    ("RouterRenumbering", 138),
    ("ICMPNodeInformationQuery", 139),
    ("ICMPNodeInformationResponse", 140),
    ("InverseNeighborDiscoverySolicitation", 141),
    ("InverseNeighborDiscoveryAdvertisement", 142),
    ("HomeAgentAddressDiscoveryRequest", 144),
    ("HomeAgentAddressDiscoveryReply", 145),
    ("MobilePrefixSolicitation", 146),
    ("MobilePrefixAdvertisement", 147),
    ("DuplicateAddressRequestCodeSuffix", 157),
    ("DuplicateAddressConfirmationCodeSuffix", 158),
    ("ExtendedEchoRequest", 160),
    ("ExtendedEchoReply", 161),
];

/// Reports a list longer than [`MAX_PORTS`]; `false` if it is.
pub(super) fn check_count(r: &mut Reader<'_>, key: &Node, count: usize, what: &str) -> bool {
    if count <= MAX_PORTS {
        return true;
    }
    r.push(
        Diagnostic::new(codes::TOO_MANY_PORTS, format!("{what} lists {count} entries"))
            .at(key.span, format!("at most {MAX_PORTS} are allowed"))
            .help(format!("split the entry into several, each with at most {MAX_PORTS}")),
    );
    false
}

/// One entry of a `toPorts` entry's `ports`.
pub(super) fn port(r: &mut Reader<'_>, node: &Node) -> Option<CiliumPort> {
    let fields = r.fields(node, "a port", &["port", "endPort", "protocol"])?;
    let protocol = match fields.get("protocol") {
        None => None,
        Some(n) => {
            let p = r.string(n, "protocol")?;
            protocol(r, &p)?
        }
    };
    let Some(port_node) = fields.get("port") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, "a port entry has no `port`")
                .at(node.span, "`port` missing")
                .help("give a port number or name; `port: \"0\"` stands for every port"),
        );
        return None;
    };
    let start = port_value(r, port_node)?;
    let end = match fields.get("endPort") {
        None => None,
        Some(n) => match r.int(n, "endPort")? {
            // Cilium's endPort is an int32 that means "unset" when zero.
            Sp { value: 0, .. } => None,
            end => Some(end),
        },
    };
    let spec = match (start, end) {
        (PortValue::Number(0), None) => CiliumPortSpec::All,
        (PortValue::Number(p), None) => CiliumPortSpec::Range(p, p),
        (PortValue::Name(name), None) => CiliumPortSpec::Named(name),
        (PortValue::Number(0), Some(end)) => {
            end_port_error(
                r,
                &end,
                "port 0 already stands for every port",
                "drop endPort, or give the first port of the range as `port`",
            );
            return None;
        }
        (PortValue::Number(start), Some(end)) => {
            if end.value < i64::from(start) || end.value > 65535 {
                end_port_error(
                    r,
                    &end,
                    &format!("must be between port {start} and 65535"),
                    "endPort is the inclusive end of the range and must be >= port",
                );
                return None;
            }
            CiliumPortSpec::Range(start, end.value as u16)
        }
        (PortValue::Name(name), Some(end)) => {
            // Cilium ignores endPort here; ignoring it silently would hide a mistake.
            end_port_error(
                r,
                &end,
                &format!("port `{name}` is a name, not the start of a range"),
                "a range needs numeric bounds: give `port` as a number, or drop endPort",
            );
            return None;
        }
    };
    Some(CiliumPort { protocol, port: spec, span: node.span })
}

/// A `port` as written.
enum PortValue {
    Number(u16),
    /// Lowercased, as Cilium compares port names.
    Name(String),
}

fn end_port_error(r: &mut Reader<'_>, end: &Sp<i64>, label: &str, help: &str) {
    r.push(
        Diagnostic::new(
            codes::INVALID_END_PORT,
            format!("endPort {} is not valid here", end.value),
        )
        .at(end.span, label.to_owned())
        .help(help.to_owned()),
    );
}

/// `protocol`: `Some(None)` for ANY.
fn protocol(r: &mut Reader<'_>, p: &Sp<String>) -> Option<Option<Protocol>> {
    if p.value == "ANY" {
        return Some(None);
    }
    if let Some(known) = Protocol::parse(&p.value) {
        return Some(Some(known));
    }
    if EXTENDED_PROTOCOLS.contains(&p.value.as_str()) {
        r.push(
            Diagnostic::new(codes::UNSUPPORTED_FIELD, format!("protocol {} is not supported yet", p.value))
                .at(p.span, "protocol without ports")
                .help("policyc compiles TCP, UDP, SCTP and ICMP rules; allow this protocol with an L3-only rule"),
        );
        return None;
    }
    let upper = p.value.to_ascii_uppercase();
    let help = if upper.starts_with("ICMP") {
        "match ICMP with an `icmps` rule, not with toPorts".to_owned()
    } else if upper == "ANY" || Protocol::parse(&upper).is_some() {
        format!("write it in upper case: `{upper}`")
    } else {
        "use TCP, UDP, SCTP or ANY, or leave the protocol out for ANY".to_owned()
    };
    r.push(
        Diagnostic::new(
            codes::INVALID_PROTOCOL,
            format!("protocol `{}` is not valid in toPorts", p.value),
        )
        .at(p.span, "not TCP, UDP, SCTP or ANY")
        .help(help),
    );
    None
}

/// `port`: a number or a string of digits (Cilium's field is a string), or a name.
fn port_value(r: &mut Reader<'_>, node: &Node) -> Option<PortValue> {
    let out_of_range = |r: &mut Reader<'_>, shown: &str| {
        r.push(
            Diagnostic::new(codes::INVALID_PORT, format!("port {shown} is out of range"))
                .at(node.span, "must be 0-65535")
                .help(
                    "use a port between 1 and 65535, 0 for every port, or a named container port",
                ),
        );
    };
    match &node.kind {
        NodeKind::Int(n) => match u16::try_from(*n) {
            Ok(p) => Some(PortValue::Number(p)),
            Err(_) => {
                out_of_range(r, &n.to_string());
                None
            }
        },
        NodeKind::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            match s.parse::<u16>() {
                Ok(p) => Some(PortValue::Number(p)),
                Err(_) => {
                    out_of_range(r, s);
                    None
                }
            }
        }
        NodeKind::Str(name) => {
            // Cilium compares service names in lower case.
            if netpol::is_service_name(name) {
                Some(PortValue::Name(name.to_ascii_lowercase()))
            } else {
                r.push(
                    Diagnostic::new(codes::INVALID_PORT, format!("`{name}` is not a valid port"))
                        .at(node.span, "not a number or an IANA service name")
                        .help("a port is a number, or a container port name of at most 15 letters, digits and `-`"),
                );
                None
            }
        }
        _ => {
            netpol::port_type_error(r, node);
            None
        }
    }
}

/// One entry of an `icmps` entry's `fields`.
pub(super) fn icmp_field(r: &mut Reader<'_>, node: &Node) -> Option<IcmpMatch> {
    let fields = r.fields(node, "an ICMP field", &["family", "type"])?;
    let family = match fields.get("family") {
        None => IcmpFamily::V4,
        Some(n) => {
            let s = r.string(n, "family")?;
            match s.value.as_str() {
                "IPv4" => IcmpFamily::V4,
                "IPv6" => IcmpFamily::V6,
                other => {
                    r.push(
                        Diagnostic::new(
                            codes::INVALID_ICMP,
                            format!("ICMP family `{other}` is not valid"),
                        )
                        .at(s.span, "not IPv4 or IPv6")
                        .help("write `family: IPv4` or `family: IPv6`, or leave it out for IPv4"),
                    );
                    return None;
                }
            }
        }
    };
    let Some(type_node) = fields.get("type") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, "an ICMP field has no `type`")
                .at(node.span, "`type` missing")
                .help("give the ICMP type as a number 0-255 or a name such as EchoRequest"),
        );
        return None;
    };
    let icmp_type = icmp_type(r, type_node, family)?;
    Some(IcmpMatch { family, icmp_type, span: node.span })
}

fn icmp_type(r: &mut Reader<'_>, node: &Node, family: IcmpFamily) -> Option<u8> {
    let (names, other_names, family_name, other_family) = match family {
        IcmpFamily::V4 => (ICMPV4_TYPES, ICMPV6_TYPES, "IPv4", "IPv6"),
        IcmpFamily::V6 => (ICMPV6_TYPES, ICMPV4_TYPES, "IPv6", "IPv4"),
    };
    let number = match &node.kind {
        NodeKind::Int(n) => Some(*n),
        NodeKind::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.parse::<i64>().unwrap_or(i64::MAX))
        }
        NodeKind::Str(name) => {
            if let Some((_, t)) = names.iter().find(|(n, _)| n == name) {
                return Some(*t);
            }
            let help = if other_names.iter().any(|(n, _)| n == name) {
                format!("`{name}` is an {other_family} type; set `family: {other_family}`")
            } else {
                format!(
                    "use a number 0-255 or a Cilium name of an {family_name} type, such as EchoRequest"
                )
            };
            r.push(
                Diagnostic::new(
                    codes::INVALID_ICMP,
                    format!("`{name}` is not an {family_name} ICMP type"),
                )
                .at(node.span, "unknown type name")
                .help(help),
            );
            return None;
        }
        _ => {
            r.push(
                Diagnostic::new(
                    codes::WRONG_TYPE,
                    format!("ICMP type must be a number or a name, found {}", node.kind.describe()),
                )
                .at(node.span, "expected a number or a string")
                .help("write a type number such as 8, or a name such as EchoRequest"),
            );
            return None;
        }
    };
    match number.and_then(|n| u8::try_from(n).ok()) {
        Some(t) => Some(t),
        None => {
            r.push(
                Diagnostic::new(codes::INVALID_ICMP, "an ICMP type is out of range")
                    .at(node.span, "must be 0-255")
                    .help("ICMP types are 8-bit numbers"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_has_its_iana_number_in_each_family() {
        let v4 = ICMPV4_TYPES.iter().find(|(n, _)| *n == "EchoRequest").map(|(_, t)| *t);
        let v6 = ICMPV6_TYPES.iter().find(|(n, _)| *n == "EchoRequest").map(|(_, t)| *t);
        assert_eq!((v4, v6), (Some(8), Some(128)));
    }
}
