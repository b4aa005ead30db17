//! Conntrack as `c/policyc.bpf.c` documents it, on the fixture cluster: replies pass the
//! direction whose policy would refuse them, later packets of an allowed flow pass on the
//! cached verdict until the generation changes, a SYN is always judged by policy, ICMP
//! errors about a tracked flow pass as related, and FIN marks the flow closing.

use datapath::{CT_F_CLOSING, DIR_EGRESS, Reason};

use super::fixture::{CLIENT, CLIENT_V6, Fixture, OTHER, OTHER_V6, SERVER, SERVER_V6, WORKER, ip};
use super::judge::{Tally, step};
use super::kernel::{Hook, Kernel, LOOPBACK};
use super::packet::{self, ACK, ECHO_REQUEST, ECHO_REQUEST_V6, FIN, L4, Packet, SYN};

const CILIUM_CLIENT: &str = "CiliumNetworkPolicy x/client";

fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Packet {
    Packet { src: ip(src), dst: ip(dst), l4: L4::Tcp { sport, dport, flags } }
}

pub fn check(kernel: &mut Kernel, tally: &mut Tally) {
    let before = Fixture::before();
    let after = Fixture::after();
    // Slot 0 holds the cluster as it is, slot 1 the update that removes the client's
    // allow to the server: even generations run the first, odd ones the second.
    kernel.load_artifacts([before.artifact(), after.artifact()]);
    kernel.set_generation(0);
    let (client, server, worker, other) = ("x/client", "x/server", "x/worker", "x/other");
    use Hook::{FromEndpoint as Out, ToEndpoint as In};
    use Reason::*;

    // A connection the client's egress policy allows, answered through its ingress, which
    // is isolated with nothing allowed: only conntrack lets the answer in.
    let syn = tcp(CLIENT, SERVER, 40001, 80, SYN);
    step(kernel, "conntrack", client, Out, &syn.frame(), PassPolicy, "SYN", tally);
    step(kernel, "conntrack", client, In, &syn.reply().frame(), PassReply, "SYN-ACK", tally);
    // Entries are scoped by direction: the answer's tuple leaving the client (its source
    // forged as the server's) is no answer, and its egress policy refuses it.
    let forged = syn.reply().frame();
    step(
        kernel,
        "conntrack",
        client,
        Out,
        &forged,
        DropNoPolicy,
        "SYN-ACK leaving the client",
        tally,
    );
    let stranger = tcp(CLIENT, SERVER, 40002, 80, SYN).reply();
    step(
        kernel,
        "conntrack",
        client,
        In,
        &stranger.frame(),
        DropNoPolicy,
        "SYN-ACK of no flow",
        tally,
    );
    step(kernel, "conntrack", client, Out, &syn.next().frame(), PassEstablished, "ACK", tally);
    step(kernel, "conntrack", client, Out, &syn.frame(), PassPolicy, "SYN again", tally);
    let id = endpoint_id(kernel, client);
    let entry = kernel.ct_entry(&syn.ct_key(LOOPBACK, DIR_EGRESS));
    let expected_rule = before.cookie(CILIUM_CLIENT, "egress[0]");
    if entry.map(|e| (e.rule, e.endpoint_id, e.direction)) != Some((expected_rule, id, DIR_EGRESS))
    {
        tally.fail(format!(
            "conntrack: the SYN's entry {entry:?} is not the client's egress flow of rule {expected_rule}"
        ));
    }

    // The same connection at the server: allowed in by its ingress policy, answered
    // through its egress, which allows nothing.
    step(kernel, "conntrack", server, In, &syn.frame(), PassPolicy, "SYN", tally);
    step(kernel, "conntrack", server, Out, &syn.reply().frame(), PassReply, "SYN-ACK", tally);

    // UDP, and ICMP errors about it: related when they quote a tracked flow, judged by
    // the (refusing) ingress policy when they do not.
    for (src, dst) in [(CLIENT, SERVER), (CLIENT_V6, SERVER_V6)] {
        let dns = Packet { src: ip(src), dst: ip(dst), l4: L4::Udp { sport: 40003, dport: 53 } };
        step(kernel, "conntrack", client, Out, &dns.frame(), PassPolicy, "DNS query", tally);
        step(kernel, "conntrack", client, In, &dns.reply().frame(), PassReply, "DNS answer", tally);
        let error = packet::icmp_error(ip(dst), ip(src), &dns);
        step(kernel, "conntrack", client, In, &error, PassRelated, "port unreachable", tally);
        let untracked = Packet { l4: L4::Udp { sport: 40004, dport: 53 }, ..dns };
        let error = packet::icmp_error(ip(dst), ip(src), &untracked);
        step(
            kernel,
            "conntrack",
            client,
            In,
            &error,
            DropNoPolicy,
            "unreachable of no flow",
            tally,
        );
        // An error goes to the source of the packet it quotes, as Linux's conntrack
        // requires: the client may tell the server that an answer was unwanted, but an
        // error about that answer sent anywhere else is judged by the client's egress.
        let answer = dns.reply();
        let error = packet::icmp_error(ip(src), ip(dst), &answer);
        step(
            kernel,
            "conntrack",
            client,
            Out,
            &error,
            PassRelated,
            "unreachable to the server",
            tally,
        );
        let elsewhere = if dns.src.is_ipv4() { OTHER } else { OTHER_V6 };
        let error = packet::icmp_error(ip(src), ip(elsewhere), &answer);
        step(
            kernel,
            "conntrack",
            client,
            Out,
            &error,
            DropNoPolicy,
            "the same error to another pod",
            tally,
        );

        // Pings: the echo id is the source port of a request, the destination port of a
        // reply; a request from the peer with the same id is not a reply of the ping.
        let kind = if dns.src.is_ipv4() { ECHO_REQUEST } else { ECHO_REQUEST_V6 };
        let ping = Packet { l4: L4::Icmp { kind, id: 7 }, ..dns };
        step(kernel, "conntrack", client, Out, &ping.frame(), PassPolicy, "echo request", tally);
        step(
            kernel,
            "conntrack",
            client,
            In,
            &ping.reply().frame(),
            PassReply,
            "echo reply",
            tally,
        );
        step(
            kernel,
            "conntrack",
            client,
            Out,
            &ping.frame(),
            PassEstablished,
            "echo request again",
            tally,
        );
        let other_id = Packet { l4: L4::Icmp { kind, id: 8 }, ..ping };
        step(
            kernel,
            "conntrack",
            client,
            In,
            &other_id.reply().frame(),
            DropNoPolicy,
            "echo reply of no ping",
            tally,
        );
        let peer_request = Packet { src: ping.dst, dst: ping.src, ..ping };
        step(
            kernel,
            "conntrack",
            client,
            In,
            &peer_request.frame(),
            DropNoPolicy,
            "the peer's echo request with the ping's id",
            tally,
        );
    }

    // The first FIN marks its connection closing.
    let fin = tcp(CLIENT, SERVER, 40001, 80, FIN | ACK);
    step(kernel, "conntrack", client, Out, &fin.frame(), PassEstablished, "FIN", tally);
    let entry = kernel.ct_entry(&fin.ct_key(LOOPBACK, DIR_EGRESS));
    if entry.is_none_or(|e| e.flags & CT_F_CLOSING == 0) {
        tally.fail(format!("conntrack: after a FIN, entry {entry:?} is not closing"));
    }

    // A direction that is not isolated tracks its flows when the other one is, so that
    // the isolated direction lets the replies in; with neither isolated nothing is tracked.
    let open = tcp(WORKER, OTHER, 40005, 8080, SYN);
    step(kernel, "conntrack", worker, Out, &open.frame(), PassNotEnforced, "SYN", tally);
    step(kernel, "conntrack", worker, In, &open.reply().frame(), PassReply, "SYN-ACK", tally);
    step(kernel, "conntrack", worker, Out, &open.next().frame(), PassEstablished, "ACK", tally);
    let free = tcp(OTHER, WORKER, 40006, 8080, SYN);
    step(kernel, "conntrack", other, Out, &free.frame(), PassNotEnforced, "SYN", tally);
    step(kernel, "conntrack", other, In, &free.reply().frame(), PassNotEnforced, "SYN-ACK", tally);
    if kernel.ct_entry(&free.ct_key(LOOPBACK, DIR_EGRESS)).is_some() {
        tally.fail("conntrack: a flow with neither direction isolated was tracked".into());
    }

    // A new generation judges forward packets by policy again, once, even in the same
    // slot; replies still pass.
    let ack = syn.next();
    kernel.set_generation(2);
    step(kernel, "conntrack", client, Out, &ack.frame(), PassPolicy, "ACK", tally);
    step(kernel, "conntrack", client, Out, &ack.frame(), PassEstablished, "ACK again", tally);
    step(kernel, "conntrack", client, In, &syn.reply().frame(), PassReply, "SYN-ACK", tally);
    // The update that removes the allow stops the forward traffic at once; the replies of
    // the connection it had allowed still pass (ARCHITECTURE.md, "Connection tracking").
    kernel.set_generation(3);
    step(
        kernel,
        "conntrack",
        client,
        Out,
        &ack.frame(),
        DropNoPolicy,
        "ACK after the allow is gone",
        tally,
    );
    step(kernel, "conntrack", client, In, &syn.reply().frame(), PassReply, "SYN-ACK", tally);
}

/// The live endpoint id of `pod`, binding it.
fn endpoint_id(kernel: &mut Kernel, pod: &str) -> u32 {
    kernel.bind(Some(pod)).map_or(0, |e| e.endpoint_id)
}
