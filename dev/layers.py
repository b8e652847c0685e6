#!/usr/bin/env python3
"""Layering check for rust/src (CI runs it from dev/test.sh; the diagram: dev/layers.md).

Reads every `crate::<module>` reference (in `use` lines and in paths) in each module folder
of rust/src and fails when one is not in ALLOWED below, or when the module graph has a
cycle. `ffi/records.rs` (the shared vocabulary: statuses, dtypes, codec codes, op records)
is its own ground-layer node, `records`; the rest of `ffi/` is the API on top (`ffi`).

The rules the allowed sets encode (issue 11):
- no stage imports `pipeline` or the `ffi` API (only `ffi` imports `pipeline`);
- the parsers (`zarr`) import nothing but `error`: no store, no decode, no I/O;
- `records` imports nothing: the bridge's vocabulary is the ground everyone may use (`error`
  re-exports its Status).
Adding an edge is a design decision: change ALLOWED and dev/layers.md in the same commit.

    python3 dev/layers.py          # exit 1 with the offending file:line on a violation
    python3 dev/layers.py --edges  # print the module graph
"""

from __future__ import annotations

import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "rust" / "src"

# module -> the modules it may import (besides itself). Lowest layer first.
ALLOWED: dict[str, set[str]] = {
    "error": {"records"},
    "records": set(),
    "zarr": {"error"},
    "store": {"error"},
    "cache": {"error", "store", "zarr"},
    "decode": {"error", "records", "zarr"},
    "example": {"error"},
    "plan": {"error", "records", "decode", "store", "zarr"},
    "assemble": {"error", "plan", "records", "zarr"},
    "io": {"error", "plan", "store"},
    "prefetch": {"error", "cache", "decode", "io", "plan", "store", "zarr"},
    "pipeline": {"error", "records", "assemble", "cache", "decode", "example", "io", "plan",
                 "prefetch", "store", "zarr"},
    "ffi": {"error", "records", "example", "pipeline"},
}

REF = re.compile(r"\bcrate::([a-z_]+)(?:::([a-z_]+))?")


def node_of(path: Path) -> str:
    rel = path.relative_to(ROOT)
    if rel.parts[0] == "ffi" and rel.name == "records.rs":
        return "records"
    if len(rel.parts) == 1:
        return rel.stem  # lib.rs, error.rs
    return rel.parts[0]


def target_of(module: str, sub: str | None) -> str:
    return "records" if module == "ffi" and sub == "records" else module


def strip_comments(line: str) -> str:
    return line.split("//", 1)[0]


def edges() -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(ROOT.rglob("*.rs")):
        src = node_of(path)
        if src == "lib":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in REF.finditer(strip_comments(line)):
                dst = target_of(m.group(1), m.group(2))
                if dst != src:
                    found[(src, dst)].append(f"{path.relative_to(ROOT.parent.parent)}:{n}")
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in state and (c := visit(w)):
                return c
        stack.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (c := visit(v)):
            return c
    return None


def main(argv: list[str]) -> int:
    found = edges()
    graph: dict[str, set[str]] = defaultdict(set)
    for src, dst in found:
        graph[src].add(dst)
    if "--edges" in argv:
        for src in sorted(graph):
            print(f"{src} -> {' '.join(sorted(graph[src]))}")
        return 0
    bad = 0
    for (src, dst), where in sorted(found.items()):
        if src not in ALLOWED:
            print(f"layers: module `{src}` is not in dev/layers.py ALLOWED (add it with its edges)")
            bad += 1
        elif dst not in ALLOWED[src]:
            print(f"layers: forbidden edge {src} -> {dst} at {', '.join(where[:3])}")
            bad += 1
    if (c := cycle(graph)) is not None:
        print(f"layers: cycle {' -> '.join(c)}")
        bad += 1
    if bad:
        print(f"layers: {bad} violation(s); the rules: dev/layers.md")
        return 1
    print(f"layers: ok ({sum(len(v) for v in graph.values())} edges between {len(graph)} modules, one-way)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
