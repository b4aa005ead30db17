//! IP fragments on the fixture cluster: only a first fragment carries ports, so it is
//! judged by policy and later fragments follow its verdict at the same endpoint, in the
//! same direction; a later fragment without a first one let through is dropped.

use datapath::{DIR_EGRESS, FAMILY_IPV4, FAMILY_IPV6, Reason};

use super::fixture::{CLIENT, CLIENT_V6, Fixture, OTHER, SERVER, SERVER_V6, ip};
use super::judge::{Tally, step};
use super::kernel::{Hook, Kernel};
use super::packet::{self, L4, Packet, UDP};

/// IPv4 "more fragments" flag (RFC 791, section 3.1).
const MF: u16 = 0x2000;
/// IPv6 destination options header.
const DEST_OPTIONS: u8 = 60;
const FRAGMENT: u8 = 44;

pub fn check(kernel: &mut Kernel, tally: &mut Tally) {
    let fixture = Fixture::before();
    kernel.load_artifacts([fixture.artifact(), fixture.artifact()]);
    kernel.set_generation(0);
    let rule = fixture.cookie("CiliumNetworkPolicy x/client", "egress[0]");
    let (client, server) = ("x/client", "x/server");
    use Hook::{FromEndpoint as Out, ToEndpoint as In};
    use Reason::*;
    let rest = [0x5a; 8];

    // IPv4: the first fragment holds the whole UDP header (16 bytes with the payload).
    let dns = Packet { src: ip(CLIENT), dst: ip(SERVER), l4: L4::Udp { sport: 40010, dport: 53 } };
    let first = packet::ipv4_frame(&dns, 0x1234, MF, &dns.l4_bytes());
    let later = packet::ipv4_frame(&dns, 0x1234, 2, &rest);
    step(kernel, "fragments", client, Out, &first, PassPolicy, "IPv4 first fragment", tally);
    step(kernel, "fragments", client, Out, &later, PassFragment, "IPv4 later fragment", tally);
    let recorded: Vec<_> = kernel.frag_entries();
    let ok = matches!(recorded.as_slice(), [(key, value)]
        if (key.family, key.proto, key.direction, key.id) == (FAMILY_IPV4, UDP, DIR_EGRESS, 0x1234)
            && (value.rule, value.reason) == (rule, PassPolicy.code()));
    if !ok {
        tally.fail(format!("fragments: the first fragment left {recorded:?}, not rule {rule}"));
    }
    let unknown = packet::ipv4_frame(&dns, 0x1235, 2, &rest);
    step(
        kernel,
        "fragments",
        client,
        Out,
        &unknown,
        DropFragment,
        "IPv4 later fragment of no first",
        tally,
    );
    // The server never saw the first fragment: the verdict is the client's alone.
    step(kernel, "fragments", server, In, &later, DropFragment, "IPv4 later fragment", tally);

    // A first fragment policy drops takes its later fragments with it.
    let refused = Packet { dst: ip(OTHER), ..dns };
    let first = packet::ipv4_frame(&refused, 0x2000, MF, &refused.l4_bytes());
    step(
        kernel,
        "fragments",
        client,
        Out,
        &first,
        DropNoPolicy,
        "IPv4 first fragment to other",
        tally,
    );
    let later = packet::ipv4_frame(&refused, 0x2000, 2, &rest);
    step(kernel, "fragments", client, Out, &later, DropFragment, "its later fragment", tally);

    // RFC 1858: a first fragment too short to hold the TCP header is malformed.
    let syn = Packet { l4: L4::Tcp { sport: 40011, dport: 80, flags: packet::SYN }, ..dns };
    let tiny = packet::ipv4_frame(&syn, 0x3000, MF, &syn.l4_bytes()[..8]);
    step(kernel, "fragments", client, Out, &tiny, DropMalformed, "tiny first fragment", tally);

    // IPv6: the fragment header comes first, then (in the first fragment only) the rest of
    // the header chain and the upper layer.
    // Each case is a flow of its own: a first fragment that conntrack already knows would
    // pass as established, not by policy.
    let udp6 =
        |sport| Packet { src: ip(CLIENT_V6), dst: ip(SERVER_V6), l4: L4::Udp { sport, dport: 53 } };
    let dns6 = udp6(40012);
    let l4 = dns6.l4_bytes();
    let first =
        packet::ipv6_frame(&dns6, FRAGMENT, &packet::fragment_header(UDP, 0, true, 0x11), &l4);
    let later =
        packet::ipv6_frame(&dns6, FRAGMENT, &packet::fragment_header(UDP, 2, false, 0x11), &rest);
    step(kernel, "fragments", client, Out, &first, PassPolicy, "IPv6 first fragment", tally);
    step(kernel, "fragments", client, Out, &later, PassFragment, "IPv6 later fragment", tally);
    let unknown =
        packet::ipv6_frame(&dns6, FRAGMENT, &packet::fragment_header(UDP, 2, false, 0x12), &rest);
    step(
        kernel,
        "fragments",
        client,
        Out,
        &unknown,
        DropFragment,
        "IPv6 later fragment of no first",
        tally,
    );
    let entry = kernel.frag_entries().into_iter().find(|(k, _)| k.family == FAMILY_IPV6);
    if entry.is_none_or(|(k, v)| (k.id, v.rule) != (0x11, rule)) {
        tally.fail(format!("fragments: the IPv6 first fragment left {entry:?}"));
    }

    // Destination options after the fragment header belong to the fragmentable part, so
    // only the first fragment has them: a later one has nothing but data after the
    // fragment header, and must still follow its first fragment.
    let dns6 = udp6(40013);
    let l4 = dns6.l4_bytes();
    let options = [
        packet::fragment_header(DEST_OPTIONS, 0, true, 0x13),
        packet::extension(DEST_OPTIONS, UDP, 0),
    ]
    .concat();
    let first = packet::ipv6_frame(&dns6, FRAGMENT, &options, &l4);
    let offset = ((8 + l4.len()) / 8) as u16;
    let later = packet::ipv6_frame(
        &dns6,
        FRAGMENT,
        &packet::fragment_header(DEST_OPTIONS, offset, false, 0x13),
        &rest,
    );
    step(
        kernel,
        "fragments",
        client,
        Out,
        &first,
        PassPolicy,
        "IPv6 first fragment with destination options",
        tally,
    );
    step(kernel, "fragments", client, Out, &later, PassFragment, "its later fragment", tally);

    // An atomic fragment (offset 0, no more fragments: RFC 6946) is a whole packet: judged
    // by policy and remembered for no later fragment.
    let dns6 = udp6(40014);
    let l4 = dns6.l4_bytes();
    let atomic =
        packet::ipv6_frame(&dns6, FRAGMENT, &packet::fragment_header(UDP, 0, false, 0x14), &l4);
    step(kernel, "fragments", client, Out, &atomic, PassPolicy, "IPv6 atomic fragment", tally);
    let later =
        packet::ipv6_frame(&dns6, FRAGMENT, &packet::fragment_header(UDP, 2, false, 0x14), &rest);
    step(
        kernel,
        "fragments",
        client,
        Out,
        &later,
        DropFragment,
        "later fragment of an atomic one",
        tally,
    );
}
