//! A host endpoint as `c/policyc.bpf.c` documents it: bound with `POLICYC_EP_F_HOST` (a
//! node's uplink), a packet whose local address is one of the node's own (the host
//! identity in the hosts map) is judged by the host policy, and any other is forwarded
//! pod traffic that passes with `POLICYC_PASS_FORWARDED` and leaves no conntrack state.
//! The cluster is `fixtures/cilium/cluster.yaml` with `host-firewall.yaml`: node edge-1
//! (10.0.9.1, fd00::9:1) takes HTTPS and DNS from 198.51.100.0/24 but not from
//! 198.51.100.66, and may not reach 169.254.169.254; its egress is otherwise open.

use std::net::IpAddr;

use compiler::artifact::Artifact;
use datapath::{EP_F_HOST, EndpointInfo, HOST_ENDPOINT_KEY, IDENTITY_HOST, Reason};
use policy_lang::Sources;

use super::judge::{Tally, expect};
use super::kernel::{Hook, Kernel, LOOPBACK, ROW};
use super::packet::{ETH_HLEN, L4, Packet, SYN};

const EDGE: &str = "10.0.9.1";
const EDGE_V6: &str = "fd00::9:1";
const PARTNER: &str = "198.51.100.7";
const PARTNER_V6: &str = "2001:db8::7";
const BLOCKED: &str = "198.51.100.66";
const POD: &str = "10.0.1.1";
const CLIENT: &str = "10.0.1.2";
const OTHER: &str = "10.0.1.3";
const CORE: &str = "10.0.9.2";
const METADATA: &str = "169.254.169.254";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn artifact() -> Artifact {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cilium");
    let mut sources = Sources::default();
    for name in ["cluster.yaml", "host-firewall.yaml"] {
        let text = std::fs::read_to_string(dir.join(name)).expect("reading a fixture");
        sources.add(format!("fixtures/cilium/{name}"), text);
    }
    let bundle = policy_lang::load_sources(&sources);
    assert!(!bundle.has_errors(), "{:?}", bundle.diagnostics);
    let compilation = compiler::compile(&sources, &bundle);
    assert!(compilation.diagnostics.is_empty(), "{:?}", compilation.diagnostics);
    compilation.artifact
}

fn tcp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet { src: ip(src), dst: ip(dst), l4: L4::Tcp { sport: 40000, dport, flags: SYN } }
}

fn udp(src: &str, dst: &str, dport: u16) -> Packet {
    Packet { src: ip(src), dst: ip(dst), l4: L4::Udp { sport: 40000, dport } }
}

pub fn check(kernel: &mut Kernel, tally: &mut Tally) {
    let artifact = artifact();
    kernel.load_artifacts([&artifact, &artifact]);
    kernel.set_generation(0);
    let policy = kernel.bind(Some("node/edge-1")).expect("the host endpoint of edge-1");
    let info = EndpointInfo { slot: [policy; 2], metrics_row: ROW, flags: EP_F_HOST };
    kernel.set_endpoint(LOOPBACK, Some(info));
    use Hook::{FromEndpoint as Out, ToEndpoint as In};
    use Reason::*;
    let run = |kernel: &mut Kernel, hook: Hook, packet: &Packet, expected, tally: &mut Tally| {
        kernel.clear_flows();
        let outcome = kernel.run(hook, &packet.frame());
        tally.count(format!("host endpoint: {}", Reason::label(expected)));
        expect(&outcome, expected, &format!("host endpoint: {}", packet.describe()), tally);
    };

    // The artifact alone gives node addresses the remote-node identity: no address is
    // the node's own yet, so everything at the uplink is forwarded.
    run(kernel, In, &tcp(PARTNER, EDGE, 22), PassForwarded, tally);
    run(kernel, Out, &tcp(EDGE, METADATA, 80), PassForwarded, tally);

    // The node runtime gives the node's own addresses the host identity.
    for own in [EDGE, EDGE_V6] {
        kernel.set_host(ip(own), [IDENTITY_HOST; 2]);
    }
    run(kernel, In, &tcp(PARTNER, EDGE, 8443), PassPolicy, tally);
    run(kernel, In, &udp(PARTNER, EDGE, 53), PassPolicy, tally);
    run(kernel, In, &tcp(PARTNER, EDGE, 22), DropNoPolicy, tally);
    run(kernel, In, &udp(PARTNER, EDGE, 8443), DropNoPolicy, tally);
    run(kernel, In, &tcp(BLOCKED, EDGE, 8443), DropPolicyDeny, tally);
    run(kernel, In, &tcp(PARTNER_V6, EDGE_V6, 8443), DropNoPolicy, tally);
    run(kernel, Out, &tcp(EDGE, METADATA, 80), DropPolicyDeny, tally);
    run(kernel, Out, &tcp(EDGE, PARTNER, 443), PassPolicy, tally);
    // Neighbour discovery on the uplink is the link's, to any address: it passes as it
    // does at a pod, not as forwarded traffic.
    let solicit =
        Packet { src: ip("fe80::1"), dst: ip("ff02::1:ff09:1"), l4: L4::Icmp { kind: 135, id: 0 } };
    let mut frame = solicit.frame();
    frame[ETH_HLEN + 7] = 255; // the hop limit neighbour discovery requires
    for hook in [In, Out] {
        kernel.clear_flows();
        let outcome = kernel.run(hook, &frame);
        tally.count("host endpoint: neighbour discovery".to_owned());
        expect(&outcome, PassIcmpv6Link, "host endpoint: neighbour solicitation", tally);
    }

    // Routed to and from a pod behind the node: judged at the pod, not here, whatever
    // the host policy says about the same ports.
    run(kernel, In, &tcp(PARTNER, POD, 22), PassForwarded, tally);
    run(kernel, In, &tcp(BLOCKED, POD, 8443), PassForwarded, tally);
    run(kernel, Out, &tcp(POD, METADATA, 80), PassForwarded, tally);

    // Conntrack works at the host endpoint as at a pod: the answer to an allowed
    // connection passes the uplink's other direction as a reply.
    kernel.clear_flows();
    let syn = tcp(PARTNER, EDGE, 8443);
    let outcome = kernel.run(In, &syn.frame());
    expect(&outcome, PassPolicy, "host endpoint: SYN to the node", tally);
    let outcome = kernel.run(Out, &syn.reply().frame());
    expect(&outcome, PassReply, "host endpoint: SYN-ACK from the node", tally);
    tally.count("host endpoint: reply".to_owned());

    // The same entry without the host flag is a pod's: nothing is forwarded.
    let pod_info = EndpointInfo { flags: 0, ..info };
    kernel.set_endpoint(LOOPBACK, Some(pod_info));
    run(kernel, In, &tcp(PARTNER, POD, 22), DropNoPolicy, tally);

    // Traffic between the node and a pod of its own crosses the pod's interface and never
    // the uplink, so the pod's programs apply the host policy too, from the copy of the
    // host endpoint the runtime keeps at HOST_ENDPOINT_KEY: the host's ingress table to
    // what the pod sends the node, with the pod as the peer. The pods here are isolated
    // by no policy of their own; edge-1 takes the kubelet port from app=client pods only.
    kernel.set_endpoint(HOST_ENDPOINT_KEY, Some(info));
    kernel.bind(Some("x/client"));
    run(kernel, Out, &tcp(CLIENT, EDGE, 10250), PassPolicy, tally);
    run(kernel, Out, &tcp(CLIENT, EDGE, 22), DropNoPolicy, tally);
    kernel.bind(Some("x/other"));
    run(kernel, Out, &tcp(OTHER, EDGE, 10250), DropNoPolicy, tally);
    // Its egress table to what the node sends the pod: open but for the metadata
    // service's address, so the node reaches its pods.
    run(kernel, In, &tcp(EDGE, OTHER, 80), PassPolicy, tally);
    // Another node is no peer of this host policy.
    run(kernel, Out, &tcp(OTHER, CORE, 22), PassNotEnforced, tally);

    // The reply of a connection the host policy allowed passes back as a reply.
    kernel.bind(Some("x/client"));
    kernel.clear_flows();
    let syn = tcp(CLIENT, EDGE, 10250);
    let outcome = kernel.run(Out, &syn.frame());
    expect(&outcome, PassPolicy, "host policy at a pod: SYN to the node", tally);
    let outcome = kernel.run(In, &syn.reply().frame());
    expect(&outcome, PassReply, "host policy at a pod: SYN-ACK from the node", tally);
    tally.count("host policy at a pod: reply".to_owned());

    // Without the copy (no host endpoint on this node) the pod's own policy is all.
    kernel.set_endpoint(HOST_ENDPOINT_KEY, None);
    run(kernel, Out, &tcp(CLIENT, EDGE, 22), PassNotEnforced, tally);
}
