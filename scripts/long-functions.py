#!/usr/bin/env python3
"""Lists Rust functions longer than a limit (default 80 lines) under the given
folders, tests excluded; exits 1 if any. `make lint` runs it over filters/.

A function runs from its `fn` line to the line of its closing brace, found by
counting braces outside strings, chars and comments (good enough for this
tree's code; it is a guard, not a parser)."""
import re
import sys
from pathlib import Path

LIMIT = 80
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)")


def strip(line, state):
    """The line without strings, chars and comments; state carries a block comment."""
    out, i = [], 0
    while i < len(line):
        if state["block"]:
            j = line.find("*/", i)
            if j < 0:
                return "".join(out)
            state["block"], i = False, j + 2
            continue
        two = line[i : i + 2]
        if two == "//":
            break
        if two == "/*":
            state["block"], i = True, i + 2
            continue
        c = line[i]
        if c == '"':
            j = i + 1
            while j < len(line) and line[j] != '"':
                j += 2 if line[j] == "\\" else 1
            i = j + 1
            continue
        if c == "'" and re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def long_functions(path):
    lines = path.read_text().splitlines()
    state, found, stack, depth = {"block": False}, [], [], 0
    for n, raw in enumerate(lines, 1):
        m = FN.match(raw)
        code = strip(raw, state)
        if m and "{" in code:
            stack.append((m.group(6), n, depth))
        depth += code.count("{") - code.count("}")
        while stack and depth <= stack[-1][2]:
            name, start, _ = stack.pop()
            if n - start + 1 > LIMIT:
                found.append((name, start, n - start + 1))
    return found


def main(roots):
    bad = []
    for root in roots:
        for path in sorted(Path(root).rglob("*.rs")):
            if "target" in path.parts or path.name.endswith("tests.rs") or "benches" in path.parts:
                continue
            bad += [(path, *f) for f in long_functions(path)]
    for path, name, start, length in bad:
        print(f"{path}:{start}: fn {name} is {length} lines (at most {LIMIT})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["filters"]))
