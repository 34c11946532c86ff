#!/usr/bin/env python3
"""Lists Rust functions longer than a limit (default 80 lines) under the given
folders, tests excluded (`*tests.rs` files and `#[cfg(test)]` modules);
exits 1 if any. `make lint` runs it over filters/.

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
        if state.get("raw"):
            j = line.find(state["raw"], i)
            if j < 0:
                return "".join(out)
            i, state["raw"] = j + len(state["raw"]), None
            continue
        raw = re.match(r'b?r(#*)"', line[i:])
        if raw and (i == 0 or not (line[i - 1].isalnum() or line[i - 1] == "_")):
            state["raw"] = '"' + raw.group(1)
            i += len(raw.group(0))
            continue
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
            if j >= len(line):
                state["raw"] = '"'  # a string that goes on to the next line
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
    cfg_test, test_depth = False, None
    for n, raw in enumerate(lines, 1):
        m = FN.match(raw)
        code = strip(raw, state)
        if re.match(r"\s*#\[cfg\(test\)\]", raw):
            cfg_test = True
        elif cfg_test and re.match(r"\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", raw) and test_depth is None:
            test_depth, cfg_test = depth, False
        elif code.strip():
            cfg_test = False
        if m and "{" in code and test_depth is None:
            stack.append((m.group(6), n, depth))
        depth += code.count("{") - code.count("}")
        if test_depth is not None and depth <= test_depth:
            test_depth = None
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
