#!/usr/bin/env python3
"""Draws bench/results/floors.svg: Envoy CPU per request in no-op floors per
configuration, before this round's work (round 2, bench/README.md) and after
it (bench/results/round4-paired.json, written by `make loadtest`; the floor
is the proxy-wasm SDK's no-op filter), with the targets. Run after a load
test: python3 bench/floors_chart.py"""
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent
BEFORE = {"rate-limit": 3.65, "circuit-breaker": 5.82, "retry": 4.64, "sticky-session": 7.28, "chain-of-four": 22.79}
TARGET = {"rate-limit": 2.2, "circuit-breaker": 2.2, "retry": 2.2, "sticky-session": 2.2, "bundle-of-four": 3.5}
ORDER = ["rate-limit", "circuit-breaker", "retry", "sticky-session", "chain-of-four", "bundle-of-four", "native-chain-of-four"]


def main():
    report = json.loads((ROOT / "results" / "round4-paired.json").read_text())
    paired = report["paired"]
    floor = paired["noop-wasm"]["median"] - 1
    after = {n: (paired[n]["median"] - 1) / floor for n in ORDER if n in paired}
    width, row, left, scale = 760, 34, 190, 24
    h = 60 + row * len(ORDER)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" font-size="12">',
           '<text x="10" y="20" font-size="14">Envoy CPU per request, in no-op floors (paired runs)</text>',
           '<rect x="10" y="30" width="10" height="10" fill="#bbb"/><text x="24" y="39">before (round 2)</text>',
           '<rect x="130" y="30" width="10" height="10" fill="#3a7"/><text x="144" y="39">after (round 3, this stop)</text>',
           '<line x1="320" y1="35" x2="340" y2="35" stroke="#c33" stroke-width="2"/><text x="344" y="39">target</text>']
    for i, name in enumerate(ORDER):
        y = 50 + i * row
        out.append(f'<text x="{left - 6}" y="{y + 18}" text-anchor="end">{name}</text>')
        if name in BEFORE:
            w = BEFORE[name] * scale
            out.append(f'<rect x="{left}" y="{y + 4}" width="{w:.0f}" height="11" fill="#bbb"/>')
            out.append(f'<text x="{left + w + 4:.0f}" y="{y + 14}">{BEFORE[name]:.2f}</text>')
        if name in after:
            w = after[name] * scale
            out.append(f'<rect x="{left}" y="{y + 16}" width="{w:.0f}" height="11" fill="#3a7"/>')
            out.append(f'<text x="{left + w + 4:.0f}" y="{y + 26}">{after[name]:.2f}</text>')
        if name in TARGET:
            x = left + TARGET[name] * scale
            out.append(f'<line x1="{x:.0f}" y1="{y + 2}" x2="{x:.0f}" y2="{y + 30}" stroke="#c33" stroke-width="2"/>')
    out.append("</svg>")
    path = ROOT / "results" / "floors.svg"
    path.write_text("\n".join(out) + "\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
