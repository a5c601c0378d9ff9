#!/usr/bin/env python3
"""Checks the crate's module map: no import cycles between top-level modules (src/<m>.rs or
src/<m>/), and every module listed in `src/lib.rs`'s `# Layout`.

A module "imports" another when its code names `crate::<other>` (in a `use` or inline path).
Exits 1 and prints each cycle (a strongly connected component of two or more modules) and each
unlisted module; the README's architecture section promises there are none. `-v` prints the
graph.
"""
import pathlib
import re
import sys

src = pathlib.Path(__file__).resolve().parent.parent / "src"
modules = {}
for p in src.iterdir():
    if p.name in ("lib.rs", "main.rs"):
        continue
    name = p.stem if p.suffix == ".rs" else p.name
    files = [p] if p.is_file() else sorted(p.rglob("*.rs"))
    modules[name] = files

edges = {m: set() for m in modules}
pattern = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
for m, files in modules.items():
    for f in files:
        # Comments (doc links included) name modules without importing them.
        text = re.sub(r"//[^\n]*", "", f.read_text())
        # Grouped imports: `use crate::{a, b::c}`.
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            for item in re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group):
                if item in modules and item != m:
                    edges[m].add(item)
        for other in pattern.findall(text):
            if other in modules and other != m:
                edges[m].add(other)

# Tarjan's strongly connected components.
index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in sorted(edges[v]):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in sorted(modules):
    if v not in index:
        visit(v)
if "-v" in sys.argv:
    for m in sorted(edges):
        print(f"{m} -> {', '.join(sorted(edges[m]))}")
for comp in sccs:
    pairs = [f"{a} -> {b}" for a in comp for b in sorted(edges[a]) if b in comp]
    print("cycle:", ", ".join(comp), "|", "; ".join(pairs))
layout = (src / "lib.rs").read_text()
unlisted = [m for m in sorted(modules) if f"//! - [`{m}`]" not in layout]
for m in unlisted:
    print(f"not in lib.rs's # Layout: {m}")
if not sccs and not unlisted:
    print(f"module map: {len(modules)} modules, no import cycles, all in lib.rs's # Layout")
sys.exit(1 if sccs or unlisted else 0)
