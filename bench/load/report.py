"""The report: markdown tables (per configuration, paired, nginx, the
global limit, scenarios), JSON and an SVG chart in bench/results/."""
import json
import os

from .configs import NATIVE_OF
from .env import OUT, log


def svg_chart(rows, path):
    """Bars of CPU per request (us) and p99 (ms) per configuration, --concurrency 1, 10 connections."""
    width, bar_h, gap, left = 760, 14, 10, 190
    cpu_max = max(r["cpu"] for r in rows) or 1
    p99_max = max(r["p99"] for r in rows) or 1
    height = 60 + len(rows) * (2 * bar_h + gap)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
           '<text x="10" y="18" font-size="13">Envoy CPU per request (blue, us) and p99 latency (orange, ms); --concurrency 1, 10 connections</text>']
    y = 40
    for r in rows:
        wc = (width - left - 80) * r["cpu"] / cpu_max
        wp = (width - left - 80) * r["p99"] / p99_max
        out.append(f'<text x="10" y="{y + bar_h}">{r["name"]}</text>')
        out.append(f'<rect x="{left}" y="{y}" width="{wc:.1f}" height="{bar_h - 2}" fill="#3b6fb6"/>')
        out.append(f'<text x="{left + wc + 4:.1f}" y="{y + bar_h - 3}">{r["cpu"]:.1f}</text>')
        out.append(f'<rect x="{left}" y="{y + bar_h}" width="{wp:.1f}" height="{bar_h - 2}" fill="#e08a2c"/>')
        out.append(f'<text x="{left + wp + 4:.1f}" y="{y + 2 * bar_h - 3}">{r["p99"]:.2f}</text>')
        y += 2 * bar_h + gap
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def write(run, report, args, conn_counts):
    """Prints the tables and writes them, the JSON and the chart."""
    lines = [f"# Load test ({report['generated']})", "",
             f"`{'make compose-loadtest' if run.containers else 'make loadtest'}` on {os.cpu_count()} cores. {report['pinning']}. "
             f"wrk runs of {args.seconds} s, {args.reps} repetitions: median (min-max).", ""]
    conns0 = conn_counts[0]
    lines += ["## Per configuration", "",
              "| config | concurrency | conns | requests/s | p50 ms | p99 ms | Envoy CPU us/request | RSS MiB |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    fmt = lambda s, d=1: f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"
    # Added CPU in no-op floors ("" when the floor was not measured).
    in_floors = lambda added, floor: f"{added / floor:.2f}" if floor == floor and floor > 0 else ""
    for name, per_conc in report["configs"].items():
        for conc, res in per_conc.items():
            for conns in conn_counts:
                r = res[conns]
                lines.append(f"| {name} | {conc} | {conns} | {fmt(r['rps'], 0)} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | "
                             f"{fmt(r['cpu_us_per_request'])} | {res['rss_mib']:.0f} |")
    lines += ["", "## Paired with router-only (same core, loaded at the same moment)", "",
              "CPU per request relative to router-only, median (min-max) of the paired runs; "
              "added = ratio - 1, and how many no-op floors that is.", "",
              "| config | CPU vs router | added vs router | in no-op floors | native equivalent's added |",
              "| --- | --- | --- | --- | --- |"]
    floor = report["paired"].get("noop-wasm", {}).get("median", float("nan")) - 1
    for name, s in report["paired"].items():
        added = s["median"] - 1
        native = NATIVE_OF.get(name)
        native_added = f"{report['paired'][native]['median'] - 1:+.1%} ({native})" if native in report["paired"] else ""
        lines.append(f"| {name} | {fmt(s, 3)} | {added:+.1%} | {in_floors(added, floor)} | {native_added} |")
    if report.get("paired_llm"):
        lines += ["", "## Limits by cost, paired with router-only on the same answers", "",
                  "The demo backend's LLM-shaped answers, 100 tokens each: JSON (`router-llm-json`, about 250 bytes) "
                  "and server-sent events (`router-llm-sse`: 3 content events, the usage, `[DONE]`). A token limit "
                  "reads each answer's body for `usage.total_tokens` and settles the bucket; the plain request "
                  "limit (the sample's) on the same answers is the row to compare with: the difference is the "
                  "cost of reading the body. CPU per request relative to the row's baseline; added, and in no-op floors.", "",
                  "| config | baseline | CPU vs baseline | added | in no-op floors |",
                  "| --- | --- | --- | --- | --- |"]
        for name, s in report["paired_llm"].items():
            added = s["median"] - 1
            lines.append(f"| {name} | {s['base']} | {fmt(s, 3)} | {added:+.1%} | {in_floors(added, floor)} |")
    if report.get("paired_nginx"):
        lines += ["", "## nginx, paired with plain proxy_pass (same core, loaded at the same moment)", "",
                  "nginx 1.28.3 with ngx_wasm_module (Wasmtime), one worker pinned like Envoy, the same plugin "
                  "configurations. CPU per request relative to nginx with no filter; added, and in nginx no-op floors.", "",
                  "| config | CPU vs proxy_pass | added | in nginx no-op floors | the Envoy row's floors |",
                  "| --- | --- | --- | --- | --- |"]
        nfloor = report["paired_nginx"].get("nginx-noop-wasm", {}).get("median", float("nan")) - 1
        for name, s in report["paired_nginx"].items():
            added = s["median"] - 1
            envoy = report["paired"].get(name.removeprefix("nginx-"))
            envoy_floors = in_floors(envoy["median"] - 1, floor) if envoy else ""
            lines.append(f"| {name} | {fmt(s, 3)} | {added:+.1%} | {in_floors(added, nfloor)} | {envoy_floors} |")
    trio = [n for n in ("rate-limit", "rate-limit-global", "native-ratelimit-service") if n in report["configs"]]
    if "rate-limit" in trio and "rate-limit-global" in trio:
        lines += ["", "## A global limit next to the local limiter", "",
                  "The same never-refusing limit per client: counted in Envoy's shared data (rate-limit), by "
                  "ratelimit-engine and Redis through our filter over gRPC (rate-limit-global), and, when measured, "
                  "by the same service through Envoy's own ratelimit filter (native-ratelimit-service). The engine and "
                  "Redis share the load core with wrk. Median of the runs; values in the order of the header.", "",
                  f"| concurrency | conns | p50 ms ({' / '.join(trio)}) | p99 ms | Envoy CPU us/request | paired CPU vs router |",
                  "| --- | --- | --- | --- | --- | --- |"]
        ratio = " / ".join(f"{report['paired'][n]['median']:.2f}" if n in report["paired"] else "-" for n in trio)
        for conc in report["configs"]["rate-limit"]:
            for conns in conn_counts:
                cell = lambda key, d: " / ".join(f"{report['configs'][n][conc][conns][key]['median']:.{d}f}" for n in trio)
                lines.append(f"| {conc} | {conns} | {cell('p50_ms', 2)} | {cell('p99_ms', 2)} | "
                             f"{cell('cpu_us_per_request', 1)} | {ratio} |")
    if report["scenarios"]:
        lines += ["", "## Seed scenarios", "", "| scenario | expected | measured |", "| --- | --- | --- |"]
        lines += [f"| {s['scenario']} | {s['expected']} | {s['measured']} |" for s in report["scenarios"]]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    base = args.out or (("compose-" if run.containers else "") + ("scenarios" if args.scenarios_only else "loadtest"))
    (OUT / f"{base}.md").write_text(text)
    (OUT / f"{base}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    chart_rows = [{"name": n, "cpu": c[1][conns0]["cpu_us_per_request"]["median"], "p99": c[1][conns0]["p99_ms"]["median"]}
                  for n, c in report["configs"].items() if 1 in c]
    chart = base.endswith("loadtest") and bool(chart_rows)
    if chart:
        svg_chart(chart_rows, OUT / f"{base}.svg")
    log(f"written: {OUT / (base + '.md')}, {OUT / (base + '.json')}" + (f", {OUT / (base + '.svg')}" if chart else ""))
