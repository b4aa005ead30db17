#!/usr/bin/env bash
# policyc beside iptables, ipset and nftables through the real network stack: packets and
# connections per second, latency, update propagation, and bpf map memory. Method and
# results: BENCHMARKS.md ("Through the real stack"). Needs root; touches only network
# namespaces, links, rules and pins it names itself (prefix pcb7-<pid>), and removes them
# on exit, also on failure or interruption.
#
#   benches/stack/run.sh [--install] [--quick] [--out DIR] [--reps N] [--sizes LIST]
#                        [--tools LIST] [--phases LIST] [--seconds S] [--check-args]
#
#   --install      apt-get install the Debian packages of the missing tools first
#   --quick        smoke run: rule counts 0,100,1000, 1 run each, short runs (under a minute)
#   --out DIR      where results go (default: benches/stack/results, or
#                  benches/stack/results-quick with --quick)
#   --reps N       runs per configuration (default 3; medians and min-max are reported)
#   --sizes LIST   rule counts (default 0,100,1000,10000,100000)
#   --changes LIST rules per update (default 1,100,10000)
#   --tools LIST   of none,iptables,ipset,nft,nftset,policyc (default all)
#   --phases LIST  of stack,update,maps (default all)
#   --seconds S    length of each throughput run (default 2)
#   --check-args   parse and validate the arguments, print the plan, and exit
#
# Tools: iptables (legacy), ipset, nft, conntrack, gnuplot, a C compiler, bpftool, ip,
# nsenter, python3 (3.9+), cargo. Nothing is installed without --install.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

given="$*"
install=0 quick=0 check=0
out="" reps=3 sizes="0,100,1000,10000,100000" changes="1,100,10000"
tools="none,iptables,ipset,nft,nftset,policyc" phases="stack,update,maps" seconds=2
map_sizes="1000,10000,100000,1000000" update_base=10000 latency_seconds=1
while [[ $# -gt 0 ]]; do
	case $1 in
	--install) install=1 ;;
	--quick) quick=1 ;;
	--check-args) check=1 ;;
	--out | --reps | --sizes | --changes | --tools | --phases | --seconds)
		[[ $# -ge 2 ]] || { echo "run.sh: $1 needs a value" >&2; exit 2; }
		declare "${1#--}=$2"
		shift
		;;
	-h | --help) usage 0 ;;
	*) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
	shift
done
if ((quick)); then
	reps=1 sizes="0,100,1000" changes="1,100" seconds=0.5 latency_seconds=0.3
	map_sizes="1000,10000,100000" update_base=1000
fi
if [[ -z $out ]]; then
	out=$here/results
	((quick == 0)) || out+=-quick
fi

list_ok() { # $1: comma list, $2: regex of one item
	[[ $1 =~ ^($2)(,($2))*$ ]]
}
list_ok "$sizes" '[0-9]+' || { echo "run.sh: --sizes takes numbers, e.g. 0,100,1000" >&2; exit 2; }
list_ok "$changes" '[1-9][0-9]*' || { echo "run.sh: --changes takes positive numbers" >&2; exit 2; }
list_ok "$tools" 'none|iptables|ipset|nft|nftset|policyc' ||
	{ echo "run.sh: --tools is a list of none,iptables,ipset,nft,nftset,policyc" >&2; exit 2; }
list_ok "$phases" 'stack|update|maps' ||
	{ echo "run.sh: --phases is a list of stack,update,maps" >&2; exit 2; }
[[ $reps =~ ^[1-9][0-9]?$ ]] || { echo "run.sh: --reps is 1-99" >&2; exit 2; }
[[ $seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk "BEGIN { exit !($seconds > 0 && $seconds <= 60) }" ||
	{ echo "run.sh: --seconds is in (0, 60]" >&2; exit 2; }
for n in ${sizes//,/ } ${changes//,/ }; do
	((n <= 120000)) || { echo "run.sh: at most 120000 rules (the decoy range)" >&2; exit 2; }
done

if ((check)); then
	echo "plan: phases $phases; tools $tools; rule counts $sizes; changes $changes;" \
		"$reps runs of ${seconds} s; results in $out"
	exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
	echo "run.sh: needs root (network namespaces, netfilter, bpf)" >&2
	exit 2
fi

# tool -> Debian package
declare -A packages=(
	[iptables-legacy-restore]=iptables [ipset]=ipset [nft]=nftables [conntrack]=conntrack
	[gnuplot]=gnuplot-nox [cc]=gcc [bpftool]=bpftool [ip]=iproute2 [nsenter]=util-linux
	[python3]=python3
)
missing=()
for tool in "${!packages[@]}"; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
	wanted=$(for t in "${missing[@]}"; do echo "${packages[$t]}"; done | sort -u | tr '\n' ' ')
	if ((install)); then
		echo "installing: $wanted"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq $wanted >/dev/null
	else
		echo "run.sh: missing tools: ${missing[*]}" >&2
		echo "  install them with: apt-get install -y $wanted (or run with --install)" >&2
		exit 2
	fi
fi
command -v cargo >/dev/null || { echo "run.sh: cargo is needed to build policyc" >&2; exit 2; }
if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpf /sys/fs/bpf
fi

rid="pcb7-$$"
# The pid makes the name unique; mkdir refuses one that exists, so nothing is reused.
work="${TMPDIR:-/tmp}/$rid.work"
mkdir -m 700 "$work"
driver_pid=""
cleanup() {
	local status=$?
	trap - EXIT INT TERM
	# The driver removes what it made; this is the backstop for a driver killed hard.
	if [[ -n $driver_pid ]] && kill -0 "$driver_pid" 2>/dev/null; then
		kill "$driver_pid" 2>/dev/null || true
		wait "$driver_pid" 2>/dev/null || true
	fi
	for ns in "$rid-c" "$rid-n" "$rid-s"; do
		if [[ -e /run/netns/$ns ]]; then
			for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
			if [[ $ns == "$rid-n" && -d /sys/fs/bpf/$rid-pins ]]; then
				nsenter --net="/run/netns/$ns" "$policyc_node" uninstall \
					--pin-dir "/sys/fs/bpf/$rid-pins" >/dev/null 2>&1 || true
			fi
			ip netns delete "$ns" 2>/dev/null || true
		fi
	done
	rm -rf "/sys/fs/bpf/$rid-pins" "$work"
	exit "$status"
}
policyc_node=""
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building policyc (release) and flowgen"
(cd "$root" && cargo build --release --quiet --bin policyc --bin policyc-node)
target=${CARGO_TARGET_DIR:-$root/target}
policyc=$target/release/policyc
policyc_node=$target/release/policyc-node
cc -O2 -Wall -o "$work/flowgen" "$here/flowgen.c"

python3 "$here/stack.py" --id "$rid" --out "$out" --flowgen "$work/flowgen" \
	--policyc "$policyc" --policyc-node "$policyc_node" --phases "$phases" --tools "$tools" \
	--sizes "$sizes" --changes "$changes" --map-sizes "$map_sizes" --reps "$reps" \
	--seconds "$seconds" --latency-seconds "$latency_seconds" --update-base "$update_base" \
	--command "benches/stack/run.sh${given:+ $given}" &
driver_pid=$!
wait "$driver_pid"
