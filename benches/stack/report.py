"""Results of the stack benchmark (stack.py): raw rows to CSV, medians with min and max to
JSON, tables with ratios to markdown, and plots through gnuplot."""

import csv
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path


def run(argv, stdin=None, check=False):
    out = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    if out.returncode != 0 and argv[0] == "gnuplot":
        raise RuntimeError(f"gnuplot failed: {out.stderr}")
    return out.stdout, 0


def aggregate(rows):
    """{(phase, tool, n, metric): (median, min, max, count)}."""
    groups = {}
    for r in rows:
        groups.setdefault((r["phase"], r["tool"], r["n"], r["metric"]), []).append(r["value"])
    return {k: (statistics.median(v), min(v), max(v), len(v)) for k, v in groups.items()}


def fmt(value, unit=""):
    if value is None:
        return "-"
    if value < 0:
        return "-"
    if abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.3g}"
    return text + unit


def spread(agg, key, unit="", scale=1.0):
    got = agg.get(key)
    if not got:
        return "-"
    med, lo, hi, count = got
    if med < 0:
        return "-"
    if count == 1:
        return fmt(med * scale, unit)
    return f"{fmt(med * scale, unit)} ({fmt(lo * scale)}-{fmt(hi * scale)})"


def machine():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {}
    for tool, argv in [("iptables", ["iptables-legacy", "--version"]), ("ipset", ["ipset", "-v"]),
                       ("nft", ["nft", "--version"])]:
        out, _ = run(argv, check=False)
        versions[tool] = out.strip().splitlines()[0] if out.strip() else "?"
    commit, _ = run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                    check=False)
    return {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": cpu,
            "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3], "versions": versions,
            "commit": commit.strip()}


def tables(ctx, agg, meta):
    a = ctx.args
    tools = [f for f in ctx.filters if f.name in a.tools]
    out = [f"# Stack benchmark results ({meta['started']})", "",
           f"Machine: {meta['machine']['nproc']} CPUs, {meta['machine']['cpu']}, "
           f"{meta['machine']['memory_gb']} GB, Linux {meta['machine']['kernel']}; commit "
           f"{meta['machine']['commit']}; load average at start "
           f"{' '.join(meta['machine']['loadavg'])}, at end {' '.join(meta['loadavg_end'])}.",
           f"Tools: {'; '.join(meta['machine']['versions'].values())}.",
           f"Command: `{meta['command']}`; {a.reps} runs per configuration, median "
           f"(min-max); {meta['elapsed_s']:.0f} s in all.", ""]

    def floor(metric):
        got = agg.get(("stack", "none", 0, metric))
        return got[0] if got else None

    def ipt0(metric):
        got = agg.get(("stack", "iptables", 0, metric))
        return got[0] if got else None

    if a.phases.count("stack"):
        specs = [
            ("udp_pps", "UDP packets per second, every packet a new 5-tuple", "", 1.0, True),
            ("tcp_cps", f"New TCP connections per second ({a.conns} in flight)", "", 1.0, True),
            ("crr_p50_us", "New-connection latency p50, µs (connect + 1-byte echo, one at a "
             "time)", "", 1.0, False),
            ("crr_p99_us", "New-connection latency p99, µs", "", 1.0, False),
            ("rr_p50_us", "Established-flow round trip p50, µs", "", 1.0, False),
            ("rr_p99_us", "Established-flow round trip p99, µs", "", 1.0, False),
            ("load_s", "Load time, ms (whole rule set, or the artifact's entries for policyc)",
             "", 1e3, False),
        ]
        for metric, title, unit, scale, higher in specs:
            out += [f"## {title}", ""]
            base = floor(metric)
            if metric != "load_s" and base is not None:
                out.append(f"No filter: {spread(agg, ('stack', 'none', 0, metric), unit, scale)}."
                           " Ratios: tool / no filter, and tool / iptables at 0 rules.")
                out.append("")
            out.append("| tool | " + " | ".join(f"{n:,} rules" for n in a.sizes) + " |")
            out.append("|---|" + "---|" * len(a.sizes))
            for f in tools:
                if f.name == "none":
                    continue
                cells = []
                for n in a.sizes:
                    key = ("stack", f.name, n, metric)
                    cell = spread(agg, key, unit, scale)
                    if key in agg and metric != "load_s" and base:
                        cell += f" <br>{agg[key][0] / base:.2f}x"
                        i0 = ipt0(metric)
                        if i0:
                            cell += f" / {agg[key][0] / i0:.2f}x"
                    cells.append(cell)
                out.append(f"| {f.label} | " + " | ".join(cells) + " |")
            out.append("")
        ops = [f"{n:,}: {fmt(agg[('stack', 'policyc', n, 'ops')][0])} ops, compile "
               f"{fmt(agg[('stack', 'policyc', n, 'compile_s')][0] * 1e3)} ms, maps "
               f"{agg[('stack', 'policyc', n, 'memlock')][0] / 2**20:.1f} MiB"
               for n in a.sizes if ("stack", "policyc", n, "ops") in agg]
        if ops:
            out += ["policyc loads (map operations of the apply, compile time of the artifact, "
                    "memlock of all pinned maps): " + "; ".join(ops) + ".", ""]

    if a.phases.count("update"):
        out += [f"## Update propagation (base: {ctx.update_base:,} decoys, client not allowed; "
                f"the change adds k allows, the client's among them)", "",
                "| tool | k | command, ms | first packet through, ms | operations | compile, ms |",
                "|---|---|---|---|---|---|"]
        for f in tools:
            for k in a.changes:
                key = ("update", f.name, k, "first_packet_s")
                if key not in agg:
                    continue
                how = next((r.get("how") for r in ctx.rows if r["phase"] == "update"
                            and r["tool"] == f.name and r["n"] == k and "how" in r), "")
                out.append(f"| {f.label} | {k:,} | "
                           f"{spread(agg, ('update', f.name, k, 'apply_s'), '', 1e3)} | "
                           f"{spread(agg, key, '', 1e3)} | "
                           f"{fmt(agg[('update', f.name, k, 'ops')][0])} {how} | "
                           f"{spread(agg, ('update', f.name, k, 'compile_s'), '', 1e3)} |")
        out.append("")

    if a.phases.count("maps"):
        out += ["## bpf maps of the datapath's shapes", "",
                "| map | entries | memlock, bytes per entry | fill, s | delete every entry, s | "
                "fill again, s |", "|---|---|---|---|---|---|"]
        for name, label in ctx.maps:
            for n in a.map_sizes:
                if ("maps", name, n, "fill_s") not in agg:
                    continue
                out.append(f"| {label} | {n:,} | "
                           f"{fmt(agg[('maps', name, n, 'bytes_per_entry')][0])} | "
                           f"{spread(agg, ('maps', name, n, 'fill_s'))} | "
                           f"{spread(agg, ('maps', name, n, 'delete_s'))} | "
                           f"{spread(agg, ('maps', name, n, 'refill_s'))} |")
        out.append("")
    return "\n".join(out)


def plots(ctx, agg, outdir):
    """SVG plots through gnuplot; the data files sit beside them."""
    a = ctx.args
    tools = [f for f in ctx.filters if f.name in a.tools and f.name != "none"]
    datadir = outdir / "data"
    datadir.mkdir(exist_ok=True)
    made = []

    def line_plot(name, metric, ylabel, scale=1.0, logy=True):
        files = []
        for f in tools:
            path = datadir / f"{name}-{f.name}.dat"
            rows = []
            for n in a.sizes:
                got = agg.get(("stack", f.name, n, metric))
                if got:
                    # Rule count 0 is drawn at 1 on the log axis.
                    rows.append(f"{max(n, 1)} {got[0] * scale} {got[1] * scale} "
                                f"{got[2] * scale}")
            if rows:
                path.write_text("\n".join(rows) + "\n")
                files.append((path, f.label))
        if not files:
            return
        floor = agg.get(("stack", "none", 0, metric))
        plot = [f"'{p}' using 1:2:3:4 with yerrorlines title '{label}'" for p, label in files]
        if floor:
            plot.append(f"{floor[0] * scale} with lines dashtype 2 lc rgb 'gray' "
                        "title 'no filter'")
        script = f"""set terminal svg size 720,440 dynamic font 'sans,11'
set output '{outdir / (name + '.svg')}'
set logscale x
{'set logscale y' if logy else ''}
set xlabel 'allow rules before the matching one (0 drawn at 1)'
set ylabel '{ylabel}'
set key outside right
set grid
plot {', '.join(plot)}
"""
        run(["gnuplot"], stdin=script)
        made.append(name + ".svg")

    if "stack" in a.phases:
        line_plot("udp_pps", "udp_pps", "UDP packets/s, a new 5-tuple each")
        line_plot("tcp_cps", "tcp_cps", "new TCP connections/s")
        line_plot("crr_p50", "crr_p50_us", "new-connection latency p50 (µs)")
        line_plot("load", "load_s", "load time (ms)", scale=1e3)
    if "update" in a.phases and any(k[0] == "update" for k in agg):
        rows = []
        for f in tools:
            path = datadir / f"update-{f.name}.dat"
            lines = []
            for k in a.changes:
                got = agg.get(("update", f.name, k, "first_packet_s"))
                if got:
                    lines.append(f"{k} {got[0] * 1e3} {got[1] * 1e3} {got[2] * 1e3}")
            if lines:
                path.write_text("\n".join(lines) + "\n")
                rows.append(f"'{path}' using 1:2:3:4 with yerrorlines title '{f.label}'")
        script = f"""set terminal svg size 720,440 dynamic font 'sans,11'
set output '{outdir / 'update.svg'}'
set logscale xy
set xlabel 'rules changed'
set ylabel 'change to first packet through (ms)'
set key outside right
set grid
plot {', '.join(rows)}
"""
        run(["gnuplot"], stdin=script)
        made.append("update.svg")
    if "maps" in a.phases and any(k[0] == "maps" for k in agg):
        rows = []
        for name, label in ctx.maps:
            path = datadir / f"maps-{name}.dat"
            lines = []
            for n in a.map_sizes:
                got = agg.get(("maps", name, n, "fill_s"))
                if got:
                    lines.append(f"{n} {got[0] / n * 1e9} {got[1] / n * 1e9} {got[2] / n * 1e9}")
            if lines:
                path.write_text("\n".join(lines) + "\n")
                rows.append(f"'{path}' using 1:2:3:4 with yerrorlines title '{label}'")
        script = f"""set terminal svg size 720,440 dynamic font 'sans,11'
set output '{outdir / 'maps_fill.svg'}'
set logscale x
set xlabel 'entries'
set ylabel 'fill time per entry from user space (ns)'
set key outside bottom center
set grid
plot {', '.join(rows)}
"""
        run(["gnuplot"], stdin=script)
        made.append("maps_fill.svg")
    return made


def write(ctx, meta):
    """Writes raw.csv, results.json, the plots and results.md into ctx.args.out. ctx has
    args, rows, update_base, filters (objects with name and label) and maps ((name, label)
    pairs)."""
    outdir = Path(ctx.args.out)
    outdir.mkdir(parents=True, exist_ok=True)
    with open(outdir / "raw.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["phase", "tool", "n", "rep", "metric", "value",
                                               "how"])
        writer.writeheader()
        writer.writerows(ctx.rows)
    agg = aggregate([r for r in ctx.rows if isinstance(r["n"], int)])
    summary = [{"phase": k[0], "tool": k[1], "n": k[2], "metric": k[3], "median": v[0],
                "min": v[1], "max": v[2], "runs": v[3]} for k, v in sorted(agg.items(),
                                                                          key=str)]
    (outdir / "results.json").write_text(json.dumps({"meta": meta, "summary": summary},
                                                    indent=1) + "\n")
    try:
        meta["plots"] = plots(ctx, agg, outdir)
    except RuntimeError as e:
        # A partial run (interrupted) may lack what a plot needs; the tables still count.
        print(f"plots: {e}", file=sys.stderr)
        meta["plots"] = []
    text = tables(ctx, agg, meta)
    text += "\nPlots: " + ", ".join(f"[{p}]({p})" for p in meta["plots"]) + "\n"
    (outdir / "results.md").write_text(text)
    print(f"results in {outdir}: results.md, results.json, raw.csv, "
          f"{', '.join(meta['plots'])}", file=sys.stderr)


