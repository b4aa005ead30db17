//! Packets the datapath must not judge by policy, and packets that look unusual but must
//! be judged exactly like their plain form, on the fixture cluster at the client's egress.

use aya::programs::ProgramError;
use datapath::{DIR_EGRESS, EndpointPolicy, Reason};
use policy_lang::ast::Direction;

use super::fixture::{self, CLIENT, CLIENT_V6, Fixture, SERVER, SERVER_V6, ip};
use super::judge::{Tally, check_flow, check_frame, expect};
use super::kernel::{Hook, Kernel, LOOPBACK, ROW, skb_context};
use super::packet::{self, ETH_HLEN, L4, Packet, SYN, TCP};

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const DEST_OPTIONS: u8 = 60;
const AUTH: u8 = 51;
const ESP: u8 = 50;

/// Sets the IPv4 total length of a frame and reseals the header.
fn with_total_length(mut frame: Vec<u8>, total: u16) -> Vec<u8> {
    frame[ETH_HLEN + 2..ETH_HLEN + 4].copy_from_slice(&total.to_be_bytes());
    packet::reseal_ipv4(&mut frame[ETH_HLEN..]);
    frame
}

/// Sets the IPv6 payload length of a frame.
fn with_payload_length(mut frame: Vec<u8>, len: u16) -> Vec<u8> {
    frame[ETH_HLEN + 4..ETH_HLEN + 6].copy_from_slice(&len.to_be_bytes());
    frame
}

/// A chain of `n` destination options headers, the last followed by `next`.
fn options_chain(n: usize, next: u8) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            packet::extension(DEST_OPTIONS, if i + 1 == n { next } else { DEST_OPTIONS }, 0)
        })
        .collect()
}

pub fn check(kernel: &mut Kernel, tally: &mut Tally) {
    let fixture = Fixture::before();
    let reference = fixture.reference();
    let live = fixture::live(&fixture, &reference);
    kernel.load_artifacts([fixture.artifact(), fixture.artifact()]);
    kernel.set_generation(0);
    let client = "x/client";

    let syn = Packet {
        src: ip(CLIENT),
        dst: ip(SERVER),
        l4: L4::Tcp { sport: 40020, dport: 80, flags: SYN },
    };
    let syn6 = Packet { src: ip(CLIENT_V6), dst: ip(SERVER_V6), ..syn };
    let udp = Packet { l4: L4::Udp { sport: 40021, dport: 53 }, ..syn };
    kernel.bind(Some(client));
    run_cases(kernel, "malformed", &malformed_cases(&syn, &syn6, &udp), tally);

    // The same frames as later packets of flows the client has open. The established path
    // decides such packets from their conntrack entry before the full parser runs, so it
    // must refuse every one of them just as the full path does; the well-formed ACK and
    // datagram show that the entries are there.
    let (ack, ack6) = (syn.next(), syn6.next());
    let opened = [(syn, Reason::PassPolicy), (syn6, Reason::PassPolicy), (udp, Reason::PassPolicy)];
    for (packet, expected) in opened {
        let outcome = kernel.run_with(Hook::FromEndpoint, &packet.frame(), None, ROW);
        let outcome = outcome.expect("a test run");
        expect(&outcome, expected, &format!("malformed: opening {}", packet.describe()), tally);
    }
    for (packet, expected) in [
        (ack, Reason::PassEstablished),
        (ack6, Reason::PassEstablished),
        (udp, Reason::PassEstablished),
    ] {
        let outcome = kernel.run_with(Hook::FromEndpoint, &packet.frame(), None, ROW);
        let outcome = outcome.expect("a test run");
        expect(
            &outcome,
            expected,
            &format!("malformed: {} of an open flow", packet.describe()),
            tally,
        );
    }
    run_cases(kernel, "malformed, open flow", &malformed_cases(&ack, &ack6, &udp), tally);
    for packet in [syn, syn6, udp] {
        kernel.take_ct(&packet.ct_key(LOOPBACK, DIR_EGRESS));
    }

    // Unusual but well-formed: judged as their plain form is, by the reference.
    let mut options = packet::ipv4_frame(&udp, 0, 0, &udp.l4_bytes());
    options.splice(ETH_HLEN + 20..ETH_HLEN + 20, [1, 1, 1, 1]); // four NOP options
    options[ETH_HLEN] = 0x46;
    let options = with_total_length(options, (20 + 4 + udp.l4_bytes().len()) as u16);
    let mut padded = udp.frame();
    padded.extend_from_slice(&[0xee; 20]); // Ethernet padding after the IP packet
    let chain = [
        packet::extension(HOP_BY_HOP, ROUTING, 0),
        packet::extension(ROUTING, DEST_OPTIONS, 1),
        packet::extension(DEST_OPTIONS, AUTH, 0),
        packet::extension(AUTH, TCP, 1),
    ]
    .concat();
    let syn6b = Packet { l4: L4::Tcp { sport: 40023, dport: 80, flags: SYN }, ..syn6 };
    let syn6c = Packet { l4: L4::Tcp { sport: 40024, dport: 80, flags: SYN }, ..syn6 };
    let judged = [
        ("IPv4 options", udp, options),
        ("Ethernet padding", udp, padded),
        (
            "IPv6 hop-by-hop, routing, destination and authentication headers",
            syn6b,
            packet::ipv6_frame(&syn6b, HOP_BY_HOP, &chain, &syn6b.l4_bytes()),
        ),
        (
            "IPv6 chain of eight extension headers",
            syn6c,
            packet::ipv6_frame(&syn6c, DEST_OPTIONS, &options_chain(8, TCP), &syn6c.l4_bytes()),
        ),
    ];
    for (what, packet, frame) in &judged {
        for direction in [Direction::Egress, Direction::Ingress] {
            if check_frame(kernel, &live, packet, frame, direction, tally).is_none() {
                tally.fail(format!("malformed: {what} was not judged by policy"));
            }
        }
    }

    // BIG TCP: a total length (IPv4) or payload length (IPv6) of 0 in a GSO packet means
    // the length of the skb.
    let big =
        [(syn, with_total_length(syn.frame(), 0)), (syn6, with_payload_length(syn6.frame(), 0))];
    for (plain, frame) in big {
        let ctx = skb_context(0, 1400);
        kernel.bind(Some(client));
        let outcome =
            kernel.run_with(Hook::FromEndpoint, &frame, Some(&ctx), ROW).expect("a test run");
        tally.count("malformed: BIG TCP");
        expect(
            &outcome,
            Reason::PassPolicy,
            &format!("malformed: BIG TCP {}", plain.describe()),
            tally,
        );
        kernel.take_ct(&plain.ct_key(LOOPBACK, DIR_EGRESS));
    }

    // Protocols without ports, ESP among them (its content is encrypted: the upper layer
    // as far as policy goes), are judged by protocol alone at both ends.
    for (src, dst) in [(CLIENT, SERVER), (CLIENT_V6, SERVER_V6)] {
        for proto in [ESP, 253, packet::GRE] {
            let packet = Packet { src: ip(src), dst: ip(dst), l4: L4::Other(proto) };
            check_flow(kernel, &live, &packet, true, tally);
        }
    }
}

/// Frames that are not IP pass untouched; IPv6 neighbour discovery and MLD pass whatever
/// the policy; an interface with no endpoint bound in the live generation drops IP.
pub fn check_not_ip_and_unbound(kernel: &mut Kernel, tally: &mut Tally) {
    let fixture = Fixture::before();
    kernel.load_artifacts([fixture.artifact(), fixture.artifact()]);
    kernel.set_generation(0);
    let client = kernel.bind(Some("x/client")).expect("the client is an endpoint");
    let vlan = packet::ethernet(0x8100, &[0, 1, 0x08, 0, 0x45, 0, 0, 20]);
    let not_ip = [
        ("ARP", packet::ethernet(packet::ETH_P_ARP, &[0; 28])),
        ("LLDP", packet::ethernet(0x88cc, &[0; 32])),
        // One tag is taken off before tc on a real receive path; an inner one is not IP
        // to the datapath, nor to the stack without a VLAN device.
        ("802.1Q", vlan),
    ];
    for (what, frame) in &not_ip {
        for hook in [Hook::FromEndpoint, Hook::ToEndpoint] {
            let outcome = kernel.run(hook, frame);
            tally.count("not IP: not_ip");
            expect(&outcome, Reason::PassNotIp, &format!("not IP: {what} at the client"), tally);
        }
    }

    // Neighbour discovery and MLD (ICMPv6 133-137, 130-132, 143), though the client's
    // egress allows nothing but the server and its ingress nothing at all: with the hop
    // limit their RFCs require (255 for ND, 1 for MLD) they pass; with any other, which a
    // routed packet would have, they are ordinary ICMPv6 and policy drops them.
    let all_nodes = ip("ff02::1");
    for kind in [130, 131, 132, 133, 134, 135, 136, 137, 143] {
        let required: u8 = if (133..=137).contains(&kind) { 255 } else { 1 };
        let out = Packet { src: ip(CLIENT_V6), dst: all_nodes, l4: L4::Icmp { kind, id: 0 } };
        let into = Packet { src: ip("fe80::1"), dst: ip(CLIENT_V6), l4: L4::Icmp { kind, id: 0 } };
        for (hook, packet) in [(Hook::FromEndpoint, out), (Hook::ToEndpoint, into)] {
            for (hop_limit, expected) in
                [(required, Reason::PassIcmpv6Link), (64, Reason::DropNoPolicy)]
            {
                let mut frame = packet.frame();
                // The hop limit is byte 7 of the IPv6 header; no checksum covers it.
                frame[packet::ETH_HLEN + 7] = hop_limit;
                let outcome = kernel.run(hook, &frame);
                tally.count(format!("ICMPv6 link, hop limit {hop_limit}: {}", expected.label()));
                let place = format!("ICMPv6 link: {}, hop limit {hop_limit}", packet.describe());
                expect(&outcome, expected, &place, tally);
            }
        }
    }

    // No endpoint entry: IP drops, counted in row 0; frames that are not IP still pass.
    kernel.bind(None);
    let syn = Packet {
        src: ip(CLIENT),
        dst: ip(SERVER),
        l4: L4::Tcp { sport: 40030, dport: 80, flags: SYN },
    };
    for (frame, expected) in
        [(syn.frame(), Reason::DropNoEndpoint), (not_ip[0].1.clone(), Reason::PassNotIp)]
    {
        let outcome = kernel.run_with(Hook::FromEndpoint, &frame, None, 0).expect("a test run");
        tally.count(format!("unbound: {}", expected.label()));
        expect(&outcome, expected, "unbound interface", tally);
        if expected.is_drop()
            && outcome.events.first().is_none_or(|e| (e.endpoint_id, e.ifindex) != (0, 1))
        {
            tally.fail(format!("unbound: the event {:?} names an endpoint", outcome.events));
        }
    }

    // Bound in slot 1 only: unbound in generation 0, the client in generation 1.
    kernel.bind_slots(Some([EndpointPolicy::default(), client]));
    let outcome = kernel.run(Hook::FromEndpoint, &syn.frame());
    expect(&outcome, Reason::DropNoEndpoint, "unbound in the live slot", tally);
    kernel.set_generation(1);
    let outcome = kernel.run(Hook::FromEndpoint, &syn.frame());
    expect(&outcome, Reason::PassPolicy, "bound in the live slot", tally);
    tally.count("unbound: no_endpoint");
    tally.count("unbound: policy");
}

/// Malformed frames made from `tcp`, `tcp6` (TCP packets, IPv4 and IPv6) and `udp`, and
/// the reason the datapath must give each.
fn malformed_cases(
    tcp: &Packet,
    tcp6: &Packet,
    udp: &Packet,
) -> Vec<(&'static str, Vec<u8>, Reason)> {
    let (tcp, tcp6, udp) = (*tcp, *tcp6, *udp);
    let sctp = Packet { l4: L4::Sctp { sport: 40022, dport: 80 }, ..tcp };
    let ping = Packet { l4: L4::Icmp { kind: packet::ECHO_REQUEST, id: 9 }, ..tcp };
    let ping6 = Packet { l4: L4::Icmp { kind: packet::ECHO_REQUEST_V6, id: 9 }, ..tcp6 };
    let (frame, frame6) = (tcp.frame(), tcp6.frame());
    let total = (frame.len() - ETH_HLEN) as u16;
    let mut ihl4 = frame.clone();
    ihl4[ETH_HLEN] = 0x44;
    packet::reseal_ipv4(&mut ihl4[ETH_HLEN..]);
    // Fifteen words of header (40 bytes of options) in a 48-byte packet: options cut short.
    let mut options_cut = frame.clone();
    options_cut[ETH_HLEN] = 0x4f;
    packet::reseal_ipv4(&mut options_cut[ETH_HLEN..]);
    let mut version6 = frame.clone();
    version6[ETH_HLEN] = 0x65;
    let mut version4 = frame6.clone();
    version4[ETH_HLEN] = 0x40;
    let payload6 = (frame6.len() - ETH_HLEN - 40) as u16;
    let cut = |p: &Packet, len: usize| match p.src {
        std::net::IpAddr::V4(_) => packet::ipv4_frame(p, 0, 0, &p.l4_bytes()[..len]),
        std::net::IpAddr::V6(_) => packet::ipv6_frame(p, p.proto(), &[], &p.l4_bytes()[..len]),
    };
    let past_payload =
        packet::ipv6_frame(&tcp6, HOP_BY_HOP, &packet::extension(HOP_BY_HOP, TCP, 3)[..8], &[]);

    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        ("IPv4 header cut short", frame[..ETH_HLEN + 10].to_vec(), Reason::DropMalformed),
        ("IPv4 header length below 5 words", ihl4, Reason::DropMalformed),
        ("IPv4 options cut short", options_cut, Reason::DropMalformed),
        ("IPv4 ethertype with an IPv6 header", version6, Reason::DropMalformed),
        (
            "IPv4 total length past the frame",
            with_total_length(frame.clone(), total + 10),
            Reason::DropMalformed,
        ),
        (
            "IPv4 total length inside its header",
            with_total_length(frame.clone(), 16),
            Reason::DropMalformed,
        ),
        (
            "IPv4 total length 0 without GSO",
            with_total_length(frame.clone(), 0),
            Reason::DropMalformed,
        ),
        ("TCP header cut short", cut(&tcp, 10), Reason::DropMalformed),
        ("TCP header cut by the frame", frame[..ETH_HLEN + 30].to_vec(), Reason::DropMalformed),
        ("UDP header cut short", cut(&udp, 4), Reason::DropMalformed),
        ("SCTP common header cut short", cut(&sctp, 8), Reason::DropMalformed),
        ("ICMP header cut short", cut(&ping, 4), Reason::DropMalformed),
        ("ICMPv6 header cut short", cut(&ping6, 4), Reason::DropMalformed),
        ("IPv6 header cut short", frame6[..ETH_HLEN + 30].to_vec(), Reason::DropMalformed),
        ("IPv6 ethertype with an IPv4 version", version4, Reason::DropMalformed),
        (
            "IPv6 payload length past the frame",
            with_payload_length(frame6.clone(), payload6 + 8),
            Reason::DropMalformed,
        ),
        (
            "IPv6 payload length 0 without GSO",
            with_payload_length(frame6.clone(), 0),
            Reason::DropMalformed,
        ),
        ("IPv6 extension header past the payload", past_payload, Reason::DropMalformed),
        (
            "IPv6 chain of nine extension headers",
            packet::ipv6_frame(&tcp6, DEST_OPTIONS, &options_chain(9, TCP), &tcp6.l4_bytes()),
            Reason::DropUnsupportedL3,
        ),
    ];
    cases
}

/// Runs each case through the client's egress and checks its reason.
fn run_cases(
    kernel: &mut Kernel,
    label: &str,
    cases: &[(&str, Vec<u8>, Reason)],
    tally: &mut Tally,
) {
    for (what, frame, expected) in cases {
        match kernel.run_with(Hook::FromEndpoint, frame, None, ROW) {
            Ok(outcome) => {
                tally.count(format!("{label}: {}", expected.label()));
                expect(&outcome, *expected, &format!("{label}: {what}"), tally);
            }
            // Linux 6.18 refuses to run a frame whose ethertype is IP but whose IP header
            // is cut short (EINVAL): the datapath's own check of that is only reachable
            // on a real interface.
            Err(ProgramError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EINVAL)
                    && frame.len() < ETH_HLEN + 40 =>
            {
                tally
                    .count(format!("{label}: (IP header cut short: refused by BPF_PROG_TEST_RUN)"));
            }
            Err(e) => tally.fail(format!("{label}: {what}: the test run failed: {e:?}")),
        }
    }
}
