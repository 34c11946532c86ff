#!/usr/bin/env python3
"""Prints the import graph between filters/core's top-level modules (from
`crate::<module>` paths outside comments and test code) and exits 1 if it
has a cycle. `make lint` runs it."""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(__file__), "..", "filters", "core", "src")
TEST_FILES = ("tests.rs", "filter_tests.rs", "testing.rs", "fuzzing.rs")


def module_of(path):
    parts = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    return parts[0] if parts[0] not in ("lib",) else None


def edges():
    graph = collections.defaultdict(set)
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs") or name in TEST_FILES:
                continue
            path = os.path.join(dirpath, name)
            me = module_of(path)
            if me is None:
                continue
            text = open(path, encoding="utf-8").read()
            text = re.split(r"#\[cfg\(test\)\]\s*(pub\(crate\) )?mod \w+", text)[0]
            code = "\n".join(line.split("//")[0] for line in text.splitlines())
            for m in re.finditer(r"crate::([a-z_]+)", code):
                if m.group(1) != me:
                    graph[me].add(m.group(1))
            for m in re.finditer(r"^use super::([a-z_]+)", code, re.M):
                pass
    return graph


def cycle(graph):
    colour, stack = {}, []

    def visit(u):
        colour[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if colour.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in colour:
                found = visit(v)
                if found:
                    return found
        stack.pop()
        colour[u] = 2
        return None

    for node in sorted(graph):
        if node not in colour:
            found = visit(node)
            if found:
                return found
    return None


if __name__ == "__main__":
    g = edges()
    found = cycle(g)
    if found:
        print("import cycle in filters/core: " + " -> ".join(found))
        sys.exit(1)
    if "-v" in sys.argv:
        for k in sorted(g):
            print(f"{k} -> {', '.join(sorted(g[k]))}")
