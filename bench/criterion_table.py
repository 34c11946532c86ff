#!/usr/bin/env python3
"""Summarise criterion's estimates (target/criterion/**/new/estimates.json)
as a markdown table, each bench next to its group's naive baseline, and write
it with a JSON copy to bench/results/. Used by `make bench`."""
import json, pathlib, sys, datetime

root = pathlib.Path(__file__).resolve().parent.parent
crit = root / "target" / "criterion"
rows = []
for est in sorted(crit.glob("*/*/new/estimates.json")):
    group, name = est.parent.parent.parent.name, est.parent.parent.name
    data = json.loads(est.read_text())
    median_ns = data["median"]["point_estimate"]
    lo, hi = data["median"]["confidence_interval"]["lower_bound"], data["median"]["confidence_interval"]["upper_bound"]
    rows.append({"group": group, "bench": name, "median_ns": median_ns, "ci_low_ns": lo, "ci_high_ns": hi})
if not rows:
    sys.exit("no criterion results under target/criterion; run cargo bench first")

def fmt(ns):
    return f"{ns / 1e6:.2f} ms" if ns >= 1e6 else f"{ns / 1e3:.2f} us" if ns >= 1e3 else f"{ns:.1f} ns"

# Each algorithm against the naive baseline of the same job (other rows,
# such as config parsing, have no baseline).
PAIRS = {
    ("rate_limit", "gcra_decide_only"): "baseline_mutex_hashmap_bucket",
    ("rate_limit", "gcra_check_shared_store"): "baseline_mutex_hashmap_bucket",
    ("circuit_breaker", "record_and_decide_traefik_expression"): "baseline_vec_of_samples_rescan",
    ("retry", "budget_reserve"): "baseline_mutex_vecdeque_budget",
    ("sticky", "maglev_lookup"): "baseline_linear_scan_rendezvous",
    ("sticky", "ketama_lookup"): "baseline_linear_scan_rendezvous",
    ("native_store", "get_then_compare_and_swap"): "baseline_one_mutex_hashmap_get_then_set",
    ("native_store", "get_then_compare_and_swap_beside_a_busy_worker"): "baseline_one_mutex_hashmap_beside_a_busy_worker",
}
by_name = {(r["group"], r["bench"]): r for r in rows}
lines = ["| group | bench | median | 95% CI of median | vs baseline |", "| --- | --- | --- | --- | --- |"]
for r in rows:
    base = by_name.get((r["group"], PAIRS.get((r["group"], r["bench"]), "")))
    ratio = "" if base is None else f"{r['median_ns'] / base['median_ns']:.3f}x {base['bench']}"
    r["ratio_to_baseline"] = None if not ratio else r["median_ns"] / base["median_ns"]
    lines.append(f"| {r['group']} | {r['bench']} | {fmt(r['median_ns'])} | {fmt(r['ci_low_ns'])} - {fmt(r['ci_high_ns'])} | {ratio} |")
table = "\n".join(lines)
print(table)
out = root / "bench" / "results"
out.mkdir(parents=True, exist_ok=True)
stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
(out / "criterion.md").write_text(f"# Core benches\n\n`make bench`, {stamp}\n\n{table}\n")
(out / "criterion.json").write_text(json.dumps({"generated": stamp, "rows": rows}, indent=2) + "\n")
print(f"\nwritten: {out / 'criterion.md'}, {out / 'criterion.json'}")
