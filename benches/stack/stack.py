#!/usr/bin/env python3
"""The stack benchmark's driver: policyc against iptables, ipset and nftables through the
real network stack. benches/stack/run.sh checks the tools, builds policyc and flowgen,
and calls this with everything resolved; see BENCHMARKS.md ("Through the real stack").

Three network namespaces: a client, a node and a server. The node forwards between two
veth pairs, as a Kubernetes node forwards between pods, and every filter sits there: the
netfilter rules in the node's FORWARD hook, policyc on the node's end of the server's
veth (tc egress: traffic to the pod). The policy is the server's ingress: N decoy source
addresses (/32s that never send), then the client's address, so that a linear rule list
matches the client only after N misses. Only the filter changes between runs.

Phases: `stack` (UDP packets with a new 5-tuple each, new TCP connections, latencies, at
each rule count), `update` (time from a rule change to the first packet it lets through,
and the operations it took), `maps` (memory and fill/delete times of bpf maps of the
datapath's shapes). Standard library only: the plots are written by gnuplot.
"""

import argparse
import ipaddress
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import report

CLIENT = "198.18.0.1"
# A source that no rule allows: the check that a filter really filters.
STRANGER = "198.18.0.2"
NODE_CLIENT_SIDE = "198.18.0.254"
NODE_SERVER_SIDE = "198.18.1.254"
SERVER = "198.18.1.1"
# Addresses the server answers on (a local route, no address per host): the destinations
# of the flows, so that tuples differ in their destination as well as their source port.
POOL = "198.18.16.0"
POOL_LEN = 20
POOL_SIZE = 1 << (32 - POOL_LEN)
# Decoys: allowed sources that never send. 198.18.32.0 onwards, inside 198.18.0.0/15 (RFC
# 2544's benchmarking range) up to 122,880 of them.
DECOY_BASE = int(ipaddress.IPv4Address("198.18.32.0"))
DECOY_MAX = (1 << 17) - (32 << 8)
PORT = 5001
PROBE_PORT = 5002
CHAIN = "PCB7"
PODNAME = "bench/server"

STOP = False

# The checkout this script belongs to: results.json records paths relative to it.
REPO_ROOT = Path(__file__).resolve().parents[2]


def portable(value, root):
    """A run's argument as results.json records it, the same on any machine: a path inside
    the checkout relative to it, any other absolute path (the run's temporary directory,
    a tool installed elsewhere) by its file name alone."""
    if not isinstance(value, str) or not value.startswith("/"):
        return value
    path = Path(value).resolve()
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def log(*parts):
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def decoy(i):
    if i >= DECOY_MAX:
        raise ValueError(f"decoy {i} is outside 198.18.0.0/15")
    return str(ipaddress.IPv4Address(DECOY_BASE + i))


def run(argv, check=True, timeout=300, stdin=None):
    """Runs a command; returns (stdout, seconds). Raises with stderr when it fails."""
    start = time.monotonic()
    out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
    took = time.monotonic() - start
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... failed ({out.returncode}): {out.stderr}")
    return out.stdout, took


def fields(line):
    """key=value pairs of a flowgen result line."""
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.]+)", line)}


class Net:
    """Client, node and server namespaces; the node forwards between two veth pairs."""

    def __init__(self, rid):
        self.rid = rid
        self.client, self.node, self.server = f"{rid}-c", f"{rid}-n", f"{rid}-s"
        self.veth_client, self.veth_server = f"{rid}c", f"{rid}s"
        self.procs = []
        self.made = []

    def ns(self, netns, argv):
        # nsenter enters the network namespace only: `ip netns exec` would remount /sys
        # and hide bpffs from policyc-node.
        return ["nsenter", f"--net=/run/netns/{netns}", *argv]

    def sh(self, netns, argv, **kw):
        return run(self.ns(netns, argv), **kw)

    def create(self):
        for netns in (self.client, self.node, self.server):
            run(["ip", "netns", "add", netns])
            self.made.append(netns)
            run(["ip", "netns", "exec", netns, "sysctl", "-qw",
                 "net.ipv6.conf.default.disable_ipv6=1"])
        n, c, s = self.node, self.client, self.server
        steps = [
            (n, ["ip", "link", "add", self.veth_client, "type", "veth", "peer", "name", "eth0",
                 "netns", c]),
            (n, ["ip", "link", "add", self.veth_server, "type", "veth", "peer", "name", "eth0",
                 "netns", s]),
            (n, ["ip", "addr", "add", f"{NODE_CLIENT_SIDE}/24", "dev", self.veth_client]),
            (n, ["ip", "addr", "add", f"{NODE_SERVER_SIDE}/24", "dev", self.veth_server]),
            (n, ["ip", "link", "set", self.veth_client, "up"]),
            (n, ["ip", "link", "set", self.veth_server, "up"]),
            (n, ["ip", "route", "add", f"{POOL}/{POOL_LEN}", "via", SERVER]),
            (n, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]),
            (c, ["ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0"]),
            (c, ["ip", "link", "set", "eth0", "up"]),
            (c, ["ip", "route", "add", "default", "via", NODE_CLIENT_SIDE]),
            (c, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"]),
            (s, ["ip", "addr", "add", f"{SERVER}/24", "dev", "eth0"]),
            (s, ["ip", "link", "set", "eth0", "up"]),
            (s, ["ip", "route", "add", "default", "via", NODE_SERVER_SIDE]),
            (s, ["ip", "route", "add", "local", f"{POOL}/{POOL_LEN}", "dev", "lo"]),
        ]
        for netns in (c, n, s):
            steps.append((netns, ["ip", "link", "set", "lo", "up"]))
            steps.append((netns, ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]))
            # No IPv6: its neighbour discovery would count as received packets.
            steps.append((netns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]))
        for netns, argv in steps:
            self.sh(netns, argv)

    def spawn(self, netns, argv):
        """Starts a flowgen that prints `ready` when it is; returns the process."""
        proc = subprocess.Popen(self.ns(netns, argv), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{argv[:2]} did not start: {line} {proc.stderr.read()}")
        return proc

    def rx_packets(self):
        out, _ = run(["ip", "-n", self.server, "-s", "-j", "link", "show", "dev", "eth0"])
        return json.loads(out)[0]["stats64"]["rx"]["packets"]

    def destroy(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs = []
        for netns in self.made:
            run(["ip", "netns", "delete", netns], check=False)
        self.made = []


# -- the filters ------------------------------------------------------------------------


class Filter:
    """One way of enforcing "N decoys, then the client" on the node."""

    name = ""
    label = ""

    def __init__(self, ctx):
        self.ctx = ctx
        self.net = None

    def attach(self, net):
        self.net = net

    def load(self, n):
        """Installs the policy with n decoys; returns {load_s, ops?}."""
        raise NotImplementedError

    def prepare(self, k, first):
        """Whatever a change needs before the clock starts."""

    def change(self, k, first):
        """Adds k allows (decoys first+..., and the client last) to the base state;
        returns (seconds, operations, how)."""
        raise NotImplementedError

    def detach(self):
        pass


class NoFilter(Filter):
    name, label = "none", "no filter"

    def load(self, n):
        return {"load_s": 0.0}


def iptables_rules(net, n, allow_client=True, use_set=None):
    lines = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             f":{CHAIN} - [0:0]",
             "-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
             f"-A FORWARD -o {net.veth_server} -j {CHAIN}"]
    if use_set:
        lines.append(f"-A {CHAIN} -m set --match-set {use_set} src -j ACCEPT")
    else:
        lines += [f"-A {CHAIN} -s {decoy(i)}/32 -j ACCEPT" for i in range(n)]
        if allow_client:
            lines.append(f"-A {CHAIN} -s {CLIENT}/32 -j ACCEPT")
    lines += [f"-A {CHAIN} -j DROP", "COMMIT", ""]
    return "\n".join(lines)


class Iptables(Filter):
    name, label = "iptables", "iptables (legacy), linear"

    def restore(self, text, noflush=False):
        argv = ["iptables-legacy-restore", "-w"] + (["--noflush"] if noflush else [])
        _, took = self.net.sh(self.net.node, argv, stdin=text)
        return took

    def load(self, n, allow_client=True):
        return {"load_s": self.restore(iptables_rules(self.net, n, allow_client))}

    def change(self, k, first):
        # Inserted at the head of the chain in one iptables-restore: the cheapest change
        # iptables has. Legacy iptables still replaces the whole table in the kernel.
        lines = ["*filter"]
        lines += [f"-I {CHAIN} 1 -s {decoy(first + i)}/32 -j ACCEPT" for i in range(k - 1)]
        lines += [f"-I {CHAIN} 1 -s {CLIENT}/32 -j ACCEPT", "COMMIT", ""]
        took = self.restore("\n".join(lines), noflush=True)
        return took, 1, "one table replace"

    def detach(self):
        self.restore("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")


class Ipset(Iptables):
    name, label = "ipset", "iptables + ipset (hash:ip)"

    def set_name(self):
        return f"{self.net.rid}-allow"

    def load(self, n, allow_client=True):
        # The rule must go before the set can be destroyed and made again.
        self.restore("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n")
        self.net.sh(self.net.node, ["ipset", "destroy", self.set_name()], check=False)
        lines = [f"create {self.set_name()} hash:ip family inet maxelem 262144"]
        lines += [f"add {self.set_name()} {decoy(i)}" for i in range(n)]
        if allow_client:
            lines.append(f"add {self.set_name()} {CLIENT}")
        _, took = self.net.sh(self.net.node, ["ipset", "restore"], stdin="\n".join(lines) + "\n")
        took += self.restore(iptables_rules(self.net, n, use_set=self.set_name()))
        return {"load_s": took}

    def change(self, k, first):
        lines = [f"add {self.set_name()} {decoy(first + i)}" for i in range(k - 1)]
        lines.append(f"add {self.set_name()} {CLIENT}")
        _, took = self.net.sh(self.net.node, ["ipset", "restore"], stdin="\n".join(lines) + "\n")
        return took, k, "set additions"

    def detach(self):
        super().detach()
        self.net.sh(self.net.node, ["ipset", "destroy", self.set_name()], check=False)


class Nft(Filter):
    name, label = "nft", "nftables, linear"
    table = "pcb7"

    def nft(self, text):
        _, took = self.net.sh(self.net.node, ["nft", "-f", "-"], stdin=text)
        return took

    def body(self, n, allow_client):
        rules = [f"    ip saddr {decoy(i)} accept" for i in range(n)]
        if allow_client:
            rules.append(f"    ip saddr {CLIENT} accept")
        return "", "\n".join(rules + ["    drop"])

    def load(self, n, allow_client=True):
        sets, rules = self.body(n, allow_client)
        text = f"""table ip {self.table}
delete table ip {self.table}
table ip {self.table} {{
{sets}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
    oifname "{self.net.veth_server}" jump allow
  }}
  chain allow {{
{rules}
  }}
}}
"""
        return {"load_s": self.nft(text)}

    def change(self, k, first):
        lines = [f"insert rule ip {self.table} allow ip saddr {decoy(first + i)} accept"
                 for i in range(k - 1)]
        lines.append(f"insert rule ip {self.table} allow ip saddr {CLIENT} accept")
        return self.nft("\n".join(lines) + "\n"), k, "rules in one transaction"

    def detach(self):
        self.nft(f"table ip {self.table}\ndelete table ip {self.table}\n")


class NftSet(Nft):
    name, label = "nftset", "nftables, set"

    def body(self, n, allow_client):
        elements = [decoy(i) for i in range(n)] + ([CLIENT] if allow_client else [])
        listed = f"elements = {{ {', '.join(elements)} }}" if elements else ""
        sets = f"  set allowed {{\n    type ipv4_addr\n    size 262144\n    {listed}\n  }}"
        return sets, "    ip saddr @allowed accept\n    drop"

    def change(self, k, first):
        elements = [decoy(first + i) for i in range(k - 1)] + [CLIENT]
        text = f"add element ip {self.table} allowed {{ {', '.join(elements)} }}\n"
        return self.nft(text), k, "set elements in one transaction"


def cluster_yaml(decoys, allow_client):
    """The server pod and one NetworkPolicy allowing ingress from the decoys (and the
    client) as /32 ipBlocks: what the netfilter rules say, as policyc reads it."""
    peers = [f"        - ipBlock: {{cidr: {decoy(i)}/32}}" for i in decoys]
    if allow_client:
        peers.append(f"        - ipBlock: {{cidr: {CLIENT}/32}}")
    ingress = "  ingress:\n    - from:\n" + "\n".join(peers) if peers else "  ingress: []"
    return f"""apiVersion: v1
kind: Namespace
metadata: {{name: bench, labels: {{kubernetes.io/metadata.name: bench}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: server, namespace: bench, labels: {{app: server}}}}
status: {{podIP: {SERVER}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow, namespace: bench}}
spec:
  podSelector: {{matchLabels: {{app: server}}}}
  policyTypes: [Ingress]
{ingress}
"""


class Policyc(Filter):
    name, label = "policyc", "policyc (tc, tcx)"

    def artifact(self, key, decoys, allow_client):
        """Compiles (once per run) the artifact for a decoy range; returns its path."""
        if key not in self.ctx.artifacts:
            src = self.ctx.work / f"cluster-{key}.yaml"
            src.write_text(cluster_yaml(decoys, allow_client))
            path = self.ctx.work / f"{key}.artifact"
            _, took = run([self.ctx.policyc, "compile", str(src), "-o", str(path)], timeout=900)
            self.ctx.artifacts[key], self.ctx.compile_s[key] = path, took
            log(f"  policyc compile {key}: {took:.2f} s")
        return self.ctx.artifacts[key]

    def pin_dir(self):
        return f"/sys/fs/bpf/{self.net.rid}-pins"

    def apply(self, path):
        out, took = self.net.sh(self.net.node, [
            self.ctx.policyc_node, "apply", str(path), "--iface",
            f"{self.net.veth_server}={PODNAME}", "--pin-dir", self.pin_dir()])
        ops = int(re.search(r"map operations: (\d+)", out).group(1))
        return took, ops

    def attach(self, net):
        super().attach(net)
        # Datapath loaded and attached with the 0-decoy policy, so that a load below
        # times the entries and not the program load.
        took, _ = self.apply(self.artifact("n0", [], True))
        log(f"  policyc first apply (program load and attach): {took:.2f} s")

    def load(self, n, allow_client=True):
        key = f"n{n}" if allow_client else f"base{n}"
        took, ops = self.apply(self.artifact(key, range(n), allow_client))
        result = {"load_s": took, "ops": ops, "compile_s": self.ctx.compile_s[key]}
        result["memlock"] = self.memlock()
        return result

    def memlock(self):
        """Bytes the kernel charges for all of the datapath's maps (bpftool's memlock)."""
        total = 0
        for pin in Path(self.pin_dir()).iterdir():
            if pin.is_file() and pin.name.startswith("policyc_"):
                out, _ = run(["bpftool", "-j", "map", "show", "pinned", str(pin)], check=False)
                if out.strip():
                    total += json.loads(out).get("bytes_memlock", 0)
        return total

    def change_artifact(self, k, first):
        base = self.ctx.update_base
        key = f"change{base}+{k}"
        return key, self.artifact(key, list(range(base)) + list(range(first, first + k - 1)),
                                  True)

    def prepare(self, k, first):
        # Compiled before the clock starts: the artifact is built where the manifests
        # are (CI), not on the node.
        self.change_artifact(k, first)

    def change(self, k, first):
        key, path = self.change_artifact(k, first)
        took, ops = self.apply(path)
        self.ctx.record("update", self.name, k, -1, "compile_s", self.ctx.compile_s[key])
        return took, ops, "map operations"

    def detach(self):
        self.net.sh(self.net.node, [self.ctx.policyc_node, "uninstall", "--pin-dir",
                                    self.pin_dir()], check=False)


FILTERS = [NoFilter, Iptables, Ipset, Nft, NftSet, Policyc]


# -- measurements -----------------------------------------------------------------------


class Context:
    def __init__(self, args):
        self.args = args
        self.rid = args.id
        self.work = Path(tempfile.mkdtemp(prefix=f"{args.id}-"))
        self.flowgen = args.flowgen
        self.policyc = args.policyc
        self.policyc_node = args.policyc_node
        self.rows = []
        self.offset = 0
        self.update_base = args.update_base
        self.artifacts = {}
        self.compile_s = {}

    def record(self, phase, tool, n, rep, metric, value):
        self.rows.append({"phase": phase, "tool": tool, "n": n, "rep": rep, "metric": metric,
                          "value": value})


def flood(ctx, net, src, seconds, max_packets):
    """UDP datagrams with a new tuple each from src; returns (delivered, sent, seconds)."""
    before = net.rx_packets()
    out, _ = net.sh(net.client, [ctx.flowgen, "udp", "--src", src, "--dst", POOL, "--dst-count",
                                 str(POOL_SIZE), "--port", str(PORT), "--seconds", str(seconds),
                                 "--max", str(max_packets), "--offset", str(ctx.offset)],
                    timeout=seconds + 30)
    got = fields(out)
    ctx.offset = int(got["next_offset"])
    time.sleep(0.05)
    return net.rx_packets() - before, got["sent"], got["seconds"]


def flush_conntrack(net):
    net.sh(net.node, ["conntrack", "-F"], check=False)


def measure(ctx, net, tool, n, rep):
    a = ctx.args
    flush_conntrack(net)
    # The filter must filter: a stranger's datagrams must not arrive (except unfiltered).
    stray, _, _ = flood(ctx, net, STRANGER, 1, 200)
    ctx.record("stack", tool, n, rep, "stranger_delivered", stray)
    # A few packets of earlier connections (late resets) may arrive meanwhile.
    if tool != "none" and stray > 5:
        raise RuntimeError(f"{tool} at {n} rules let {stray} datagrams of a stranger through")

    flush_conntrack(net)
    # Bounded in count as well as in time: netfilter's conntrack table (nf_conntrack_max,
    # 262,144 here, a global setting this benchmark leaves alone) must not fill, or every
    # netfilter run would measure its early-drop path rather than its rules.
    delivered, sent, secs = flood(ctx, net, CLIENT, a.seconds, a.flood_packets)
    ctx.record("stack", tool, n, rep, "udp_pps", delivered / secs)
    ctx.record("stack", tool, n, rep, "udp_sent_pps", sent / secs)

    flush_conntrack(net)
    common = ["--dst", POOL, "--dst-count", str(POOL_SIZE), "--port", str(PORT)]
    out, _ = net.sh(net.client, [ctx.flowgen, "crr", *common, "--conns", str(a.conns),
                                 "--seconds", str(a.seconds), "--max", "5000000"],
                    timeout=a.seconds + 30)
    got = fields(out)
    ctx.record("stack", tool, n, rep, "tcp_cps", got["rate"])
    ctx.record("stack", tool, n, rep, "tcp_cps_failed", got["failed"])

    out, _ = net.sh(net.client, [ctx.flowgen, "crr", *common, "--conns", "1", "--seconds",
                                 str(a.latency_seconds), "--max", "5000000"],
                    timeout=a.latency_seconds + 30)
    got = fields(out)
    for p in ("p50", "p90", "p99"):
        ctx.record("stack", tool, n, rep, f"crr_{p}_us", got[f"{p}_us"])

    out, _ = net.sh(net.client, [ctx.flowgen, "rr", "--dst", SERVER, "--port", str(PORT),
                                 "--seconds", str(a.latency_seconds), "--max", "5000000"],
                    timeout=a.latency_seconds + 30)
    got = fields(out)
    for p in ("p50", "p99"):
        ctx.record("stack", tool, n, rep, f"rr_{p}_us", got[f"{p}_us"])


def start(net, ctx):
    """Builds the namespaces and starts the server; `net.destroy` undoes both, also when
    this fails half way."""
    net.create()
    net.spawn(net.server, [ctx.flowgen, "server", "--port", str(PORT), "--seconds", "3600"])


def phase_stack(ctx):
    a = ctx.args
    for rep in range(a.reps):
        for cls in FILTERS:
            if cls.name not in a.tools or STOP:
                continue
            tool = cls(ctx)
            sizes = [0] if tool.name == "none" else a.sizes
            net = Net(ctx.rid)
            try:
                start(net, ctx)
                tool.attach(net)
                for n in sizes:
                    loaded = tool.load(n)
                    for key, value in loaded.items():
                        ctx.record("stack", tool.name, n, rep, key, value)
                    measure(ctx, net, tool.name, n, rep)
                    log(f"rep {rep + 1} {tool.name:8} {n:>6} rules: load "
                        f"{loaded['load_s']:.3f} s, " + summary_line(ctx, tool.name, n, rep))
                tool.detach()
            finally:
                net.destroy()


def summary_line(ctx, tool, n, rep):
    got = {r["metric"]: r["value"] for r in ctx.rows
           if r["tool"] == tool and r["n"] == n and r["rep"] == rep and r["phase"] == "stack"}
    return (f"{got['udp_pps']:,.0f} pps, {got['tcp_cps']:,.0f} conn/s, "
            f"CRR p50 {got['crr_p50_us']:.0f} us, RR p50 {got['rr_p50_us']:.0f} us")


def phase_update(ctx):
    """From the base state (update_base decoys, the client not allowed), a change of k
    allows that includes the client; time to the first datagram of the probe that gets
    through, with the probe sending a new tuple every 1/rate s."""
    a = ctx.args
    for cls in FILTERS:
        if cls.name not in a.tools or cls.name == "none" or STOP:
            continue
        tool = cls(ctx)
        net = Net(ctx.rid)
        try:
            start(net, ctx)
            tool.attach(net)
            for k in a.changes:
                for rep in range(a.reps):
                    tool.load(ctx.update_base, allow_client=False)
                    flush_conntrack(net)
                    sink = net.spawn(net.server, [ctx.flowgen, "first", "--port",
                                                  str(PROBE_PORT), "--seconds", "20"])
                    probe = subprocess.Popen(net.ns(net.client, [
                        ctx.flowgen, "udp", "--src", CLIENT, "--dst", POOL, "--dst-count",
                        str(POOL_SIZE), "--port", str(PROBE_PORT), "--rate", str(a.probe_rate),
                        "--seconds", "15", "--max", "10000000", "--offset",
                        str(ctx.offset)]), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                    net.procs.append(probe)
                    ctx.offset += 20 * a.probe_rate
                    time.sleep(0.3)
                    if sink.poll() is not None:
                        raise RuntimeError(f"{tool.name}: the probe passed before the change")
                    first = ctx.update_base
                    tool.prepare(k, first)
                    t0 = time.monotonic_ns()
                    took, ops, how = tool.change(k, first)
                    out, _ = sink.communicate(timeout=20)
                    probe.kill()
                    probe.wait()
                    got = fields(out)
                    if not got.get("first_ns"):
                        raise RuntimeError(f"{tool.name}: no probe got through after {k}")
                    visible = (got["first_ns"] - t0) / 1e9
                    ctx.record("update", tool.name, k, rep, "apply_s", took)
                    ctx.record("update", tool.name, k, rep, "first_packet_s", visible)
                    ctx.record("update", tool.name, k, rep, "ops", ops)
                    ctx.rows[-1]["how"] = how
                    log(f"update {tool.name:8} {k:>6}: command {took * 1e3:.1f} ms, first "
                        f"packet after {visible * 1e3:.1f} ms, {ops} {how}")
            tool.detach()
        finally:
            net.destroy()


MAPS = [
    ("hash", ["--type", "hash", "--key", "12", "--value", "16"],
     "hash, preallocated (policy: 12 B key, 16 B value)"),
    ("hash_noprealloc", ["--type", "hash", "--key", "20", "--value", "8", "--no-prealloc"],
     "hash, no prealloc (hosts: 20 B key, 8 B value)"),
    ("lpm", ["--type", "lpm", "--key", "24", "--value", "8"],
     "LPM trie (ipcache: 24 B key, 8 B value, /32s)"),
    ("lru", ["--type", "lru", "--key", "44", "--value", "24"],
     "LRU hash (conntrack: 44 B key, 24 B value)"),
]


def phase_maps(ctx):
    a = ctx.args
    for rep in range(a.reps):
        for name, argv, _ in MAPS:
            for n in a.map_sizes:
                if STOP:
                    return
                out, _ = run([ctx.flowgen, "map", *argv, "--entries", str(n)], timeout=300)
                got = fields(out)
                for key in ("fill_s", "delete_s", "refill_s", "memlock_empty", "memlock_full"):
                    ctx.record("maps", name, n, rep, key, got[key])
                ctx.record("maps", name, n, rep, "bytes_per_entry", got["memlock_full"] / n)
                log(f"maps {name:16} {n:>8}: fill {got['fill_s']:.3f} s, "
                    f"{got['memlock_full'] / n:.0f} B/entry, delete {got['delete_s']:.3f} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--id", required=True, help="prefix of every name this run makes")
    p.add_argument("--out", required=True)
    p.add_argument("--flowgen", required=True)
    p.add_argument("--policyc", required=True)
    p.add_argument("--policyc-node", required=True)
    p.add_argument("--phases", default="stack,update,maps")
    p.add_argument("--tools", default=",".join(f.name for f in FILTERS))
    p.add_argument("--sizes", default="0,100,1000,10000,100000")
    p.add_argument("--changes", default="1,100,10000")
    p.add_argument("--map-sizes", default="1000,10000,100000,1000000")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--latency-seconds", type=float, default=1.0)
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--flood-packets", type=int, default=200_000)
    p.add_argument("--update-base", type=int, default=10000)
    p.add_argument("--probe-rate", type=int, default=5000)
    p.add_argument("--command", default="")
    a = p.parse_args()
    a.phases = a.phases.split(",")
    a.tools = a.tools.split(",")
    a.sizes = [int(x) for x in a.sizes.split(",")]
    a.changes = [int(x) for x in a.changes.split(",")]
    a.map_sizes = [int(x) for x in a.map_sizes.split(",")]

    def stop(signum, _frame):
        global STOP
        STOP = True
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    ctx = Context(a)
    meta = {"started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": report.machine(),
            "command": a.command,
            "args": {k: portable(v, REPO_ROOT) for k, v in vars(a).items()}}
    start = time.monotonic()
    try:
        if "stack" in a.phases:
            phase_stack(ctx)
        if "update" in a.phases:
            phase_update(ctx)
        if "maps" in a.phases:
            phase_maps(ctx)
    finally:
        meta["elapsed_s"] = time.monotonic() - start
        meta["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        if ctx.rows:
            ctx.filters = FILTERS
            ctx.maps = [(name, label) for name, _, label in MAPS]
            report.write(ctx, meta)
        shutil.rmtree(ctx.work, ignore_errors=True)


if __name__ == "__main__":
    main()
