#!/usr/bin/env bash
# Wall time and peak memory of the real `policyc compile` on the synthetic shapes, each
# beside a baseline measured the same way in the same run: the compile bench binary's
# `--parse-only`, which reads the same files into the generic YAML tree and nothing
# more. Both run under GNU time (`/usr/bin/time -v`); ratios are compile / baseline.
#
#   benches/run.sh                        # anchor sizes (a and b will hit the timeout)
#   POLICYC_BENCH_SCALE=0.01 benches/run.sh   # smoke size, seconds in all
#
# Environment: POLICYC_BENCH_SCALE (fraction of the anchor sizes, default 1),
# POLICYC_BENCH_REPS (runs per configuration, median reported, default 3),
# POLICYC_BENCH_TIMEOUT (seconds per run, default 120; a run that times out is not
# repeated), POLICYC_BENCH_MEM_MB (address-space cap per run, default 6144), and
# CARGO_TARGET_DIR as usual. Release builds only.
set -euo pipefail

scale=${POLICYC_BENCH_SCALE:-1}
reps=${POLICYC_BENCH_REPS:-3}
timeout_s=${POLICYC_BENCH_TIMEOUT:-120}
mem_mb=${POLICYC_BENCH_MEM_MB:-6144}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

if [[ ! -x /usr/bin/time ]]; then
    echo "GNU time is missing: apt-get install -y time" >&2
    exit 2
fi

cargo build --release --quiet -p policyc
policyc=${CARGO_TARGET_DIR:-$root/target}/release/policyc
# The bench binary's path is only known to cargo; ask it.
bench=$(cargo bench --quiet -p policyc-compiler --bench compile --no-run --message-format=json 2>/dev/null \
    | grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
[[ -x "$bench" ]] || { echo "could not find the compile bench binary" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bench" --write-shapes "$work/shapes" --scale "$scale" >/dev/null

# Runs a command under time -v with the timeout and memory cap; prints
# "<wall seconds> <max RSS MB> <exit status> <user+system CPU seconds>".
measure() {
    local log=$work/time.log status=0
    (
        ulimit -v $((mem_mb * 1024))
        exec /usr/bin/time -v -o "$log" timeout --signal=KILL "$timeout_s" "$@"
    ) >"$work/stdout" 2>"$work/stderr" || status=$?
    awk -v status="$status" '
        /Elapsed \(wall clock\)/ {
            n = split($NF, p, ":"); wall = 0
            for (i = 1; i <= n; i++) wall = wall * 60 + p[i]
        }
        /Maximum resident set size/ { rss = $NF / 1024 }
        /User time|System time/ { cpu += $NF }
        END { printf "%.2f %.0f %d %.2f\n", wall, rss, status, cpu }
    ' "$log"
}

# Median of one field ($1: 1 wall, 2 RSS, 4 CPU) of the measure lines.
median() { sort -n -k"$1","$1" | awk -v f="$1" '{ v[NR] = $f } END { print v[int((NR + 1) / 2)] }'; }

# Runs a configuration $reps times (stopping at a timeout or crash); prints the medians as
# "wall rss status runs cpu".
repeat() {
    local results=() line
    for ((i = 0; i < reps; i++)); do
        line=$(measure "$@")
        results+=("$line")
        # Exit 1 is a compile that finished and refused its result (a capacity error,
        # say): its time still counts. A timeout or a crash is not repeated.
        [[ $(cut -d' ' -f3 <<<"$line") =~ ^[01]$ ]] || break
    done
    local walls rss cpu status
    walls=$(printf '%s\n' "${results[@]}" | median 1)
    rss=$(printf '%s\n' "${results[@]}" | median 2)
    cpu=$(printf '%s\n' "${results[@]}" | median 4)
    status=$(printf '%s\n' "${results[@]}" | awk '{ s = $3 } END { print s }')
    echo "$walls $rss $status ${#results[@]} $cpu"
}

echo "# policyc compile under /usr/bin/time -v: scale $scale, median of $reps, timeout ${timeout_s}s, cap ${mem_mb} MB"
echo "# $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| shape | input MB | baseline s | baseline MB | compile s | compile CPU s | compile MB | time ratio | memory ratio | runs | result |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for dir in "$work"/shapes/*/; do
    name=$(basename "$dir")
    input_mb=$(du -sb --apparent-size "$dir" | awk '{ printf "%.1f", $1 / 1e6 }')
    read -r b_wall b_rss b_status _ _ < <(repeat "$bench" --parse-only "$dir")
    read -r c_wall c_rss c_status c_runs c_cpu < <(repeat "$policyc" compile "$dir" -o "$work/$name.pmap")
    case $c_status in
        0) result=$(grep -o '[0-9]* policy entries' "$work/stdout" || true)
           result="$result, $(stat -c %s "$work/$name.pmap") bytes" ;;
        124|137) result="timeout after ${timeout_s}s (RSS when killed)" ;;
        134) result="aborted: memory cap ${mem_mb} MB reached" ;;
        *) result="exit $c_status: $(grep -m1 '^error' "$work/stderr" | cut -c1-90)" ;;
    esac
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f", a / b; else print "-" }'; }
    echo "| $name | $input_mb | $b_wall | $b_rss | $c_wall | $c_cpu | $c_rss | $(ratio "$c_wall" "$b_wall") | $(ratio "$c_rss" "$b_rss") | $c_runs | $result |"
    [[ $b_status == 0 ]] || echo "| ^ baseline failed with status $b_status | | | | | | | | | | |"
done
echo
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
