"""Facts about the library's structure, read from its source: the module import graph (top-level and function-level
imports alike), import cycles, line counts per module, and the longest function bodies.

    python tools/architecture.py            # print all of it
"""
from __future__ import annotations
import ast, collections
from pathlib import Path

PKG = Path(__file__).resolve().parents[1]/'diffmix_nb'

def modules(pkg: Path=PKG) -> dict[str, Path]:
    "Module name -> file, for the package's public modules."
    return {p.stem: p for p in sorted(pkg.glob('*.py')) if not p.stem.startswith('_')}

def import_graph(pkg: Path=PKG) -> dict[str, set[str]]:
    "Module -> the package modules it imports anywhere in its code (function-level imports count: they are still edges)."
    mods = modules(pkg); g = {m: set() for m in mods}
    for m, p in mods.items():
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom):
                name = n.module or ''
                if n.level == 1: targets = [name.split('.')[0]] if name else [a.name for a in n.names]
                elif name == 'diffmix_nb': targets = [a.name for a in n.names]
                elif name.startswith('diffmix_nb.'): targets = [name.split('.')[1]]
                else: continue
            elif isinstance(n, ast.Import):
                targets = [a.name.split('.')[1] for a in n.names if a.name.startswith('diffmix_nb.')]
            else: continue
            g[m].update(t for t in targets if t in mods and t != m)
    return g

def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    "Strongly connected components with more than one module (Tarjan)."
    idx, low, stack, on, out, c = {}, {}, [], set(), [], [0]
    def visit(v):
        idx[v] = low[v] = c[0]; c[0] += 1; stack.append(v); on.add(v)
        for w in sorted(g[v]):
            if w not in idx: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(g):
        if v not in idx: visit(v)
    return out

def layers(g: dict[str, set[str]]) -> dict[str, int]:
    "Each module's layer: 0 for modules importing nothing of the package, else 1 + the highest layer it imports."
    memo = {}
    def depth(m, seen=()):
        if m in memo: return memo[m]
        if m in seen: return 0
        memo[m] = d = 1 + max((depth(t, seen + (m,)) for t in g[m]), default=-1)
        return d
    return {m: depth(m) for m in g}

def line_counts(pkg: Path=PKG) -> dict[str, dict]:
    "Per module: lines, code lines (no blanks/comments), public functions and classes."
    out = {}
    for m, p in modules(pkg).items():
        lines = p.read_text().splitlines(); t = ast.parse(p.read_text())
        code = sum(1 for l in lines if l.strip() and not l.strip().startswith('#'))
        defs = [n for n in t.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith('_')]
        out[m] = dict(lines=len(lines), code=code, public=len(defs))
    return out

def long_bodies(limit: int=80, pkg: Path=PKG) -> list[tuple[str, str, int]]:
    "(module, qualified name, lines) of every function or method longer than `limit` lines, longest first."
    res = []
    for m, p in modules(pkg).items():
        t = ast.parse(p.read_text())
        def walk(node, prefix=''):
            for n in ast.iter_child_nodes(node):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    L = n.end_lineno - n.lineno + 1
                    if L > limit: res.append((m, prefix + n.name, L))
                    walk(n, prefix + n.name + '.')
                elif isinstance(n, ast.ClassDef): walk(n, prefix + n.name + '.')
        walk(t)
    return sorted(res, key=lambda r: -r[2])

if __name__ == '__main__':
    g = import_graph(); L = layers(g); n = line_counts()
    for m in sorted(g, key=lambda m: (L[m], m)):
        print(f"layer {L[m]}  {m:<11} {n[m]['lines']:>5} lines ({n[m]['code']:>4} code, {n[m]['public']:>3} public)  imports {', '.join(sorted(g[m])) or '-'}")
    print('cycles:', cycles(g) or 'none')
    print('bodies over 80 lines:', long_bodies() or 'none')
