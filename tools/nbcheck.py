#!/usr/bin/env python3
"""What a committed notebook must show: figure cells carry an image output, and no output is an error.

    python tools/nbcheck.py nbs/00_core.ipynb ...     # print the problems (exit 1 if any); no argument: every notebook

A code cell *draws a figure or displays an image* (statically, from its source) when it
- calls matplotlib drawing functions (`plt.subplots`, `plt.figure`, `.imshow(`, `sns.barplot(`, ...) and does not
  close the figure itself (`plt.close`, a figure saved to a file only), or
- calls a function that does so: a `diffmix_nb` function or a function defined earlier in the same notebook whose
  body draws, or
- ends with an expression (not followed by `;`) that is a call to a function returning a PIL image (annotated
  `-> Image.Image` in `diffmix_nb` or in the notebook) or to `Image.fromarray` / `Image.open` / `.resize(...)`.
Cells that never run on CPU (`#| cuda`, `#| eval: false`) are exempt. A notebook with cells that run but no output
at all has not been executed and fails too. Used by tests/test_outputs.py and
tests/test_rendered.py.
"""
import ast, inspect, json, re, sys
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
DRAW_RE = re.compile(r'\bplt\.(subplots|subplot|figure|plot|imshow|matshow|bar|barh|hist|scatter|show)\(|\.imshow\(|'
                     r'\bsns\.\w+plot\(|\bsns\.heatmap\(|\.plot\(')
CLOSE_RE = re.compile(r'\bplt\.close\(|matplotlib\.use\(')
IMAGE_CALLS = {'fromarray', 'open', 'resize', 'convert', 'crop'}   # Image.fromarray(...), img.resize(...), ...
EXEMPT_FLAGS = ('cuda',)

def _directives(src):
    return {m.group(1): (m.group(2) or '').strip() for m in re.finditer(r'^#\|\s*([\w-]+):?\s*(.*)$', src, re.M)}

def exempt(src) -> str|None:
    "Why a cell never runs on CPU (its flag), or None."
    d = _directives(src)
    if d.get('eval', '').lower() == 'false': return 'eval: false'
    return next((f for f in EXEMPT_FLAGS if f in d), None)

def _draws(src) -> bool: return bool(DRAW_RE.search(src)) and not CLOSE_RE.search(src)
def _makes_image(src) -> bool: return bool(re.search(r'\bImage\.(new|fromarray)\(', src)) and 'return' in src

@lru_cache(None)
def library_functions():
    "(names of diffmix_nb functions that draw a matplotlib figure, names of those that return a PIL image)."
    import importlib, pkgutil, diffmix_nb
    from PIL import Image
    drawers, makers = set(), set()
    for m in pkgutil.iter_modules(diffmix_nb.__path__):
        if m.name.startswith('_'): continue
        try: mod = importlib.import_module(f'diffmix_nb.{m.name}')
        except Exception: continue
        for name, f in vars(mod).items():
            if not inspect.isfunction(f) or getattr(f, '__module__', '') != mod.__name__: continue
            try: src = inspect.getsource(f)
            except (OSError, TypeError): continue
            if _draws(src): drawers.add(name)
            try: ann = inspect.signature(f).return_annotation
            except (ValueError, TypeError): ann = None
            if ann is Image.Image or (isinstance(ann, str) and 'Image' in ann) or _makes_image(src): makers.add(name)
    return frozenset(drawers), frozenset(makers)

def _code(src): return '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith(('#|', '!', '%')))

def _called(node):
    "Names called anywhere in `node` (`f(...)`, `x.f(...)`)."
    out = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            out.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else '')
    return out

def _local_functions(cells):
    "Functions defined in the notebook's code cells: (drawers, image makers)."
    drawers, makers = set(), set()
    for src in cells:
        try: tree = ast.parse(_code(src))
        except SyntaxError: continue
        for n in ast.walk(tree):
            if not isinstance(n, ast.FunctionDef): continue
            body = ast.get_source_segment(_code(src), n) or ''
            if _draws(body): drawers.add(n.name)
            if (n.returns is not None and 'Image' in ast.unparse(n.returns)) or _makes_image(body): makers.add(n.name)
    return drawers, makers

def figure_reason(src, drawers, makers) -> str|None:
    "Why the cell with source `src` should show a figure or an image (a short phrase), or None."
    code = _code(src)
    try: tree = ast.parse(code)
    except SyntaxError: return 'draws with matplotlib' if _draws(code) else None
    top = [n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    top_src = '\n'.join(ast.get_source_segment(code, n) or '' for n in top)
    if _draws(top_src) and not CLOSE_RE.search(code): return 'draws with matplotlib'
    called = set().union(*(_called(n) for n in top))
    if not CLOSE_RE.search(code) and (hit := sorted(called & drawers)): return f'calls {hit[0]}()'
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not code.rstrip().endswith(';') and isinstance(last.value, ast.Call):
        f = last.value.func
        name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ''
        if name in makers or name in IMAGE_CALLS and 'Image' in ast.unparse(last.value):
            return f'shows the image {name}() returns'
    return None

def _has_image(outputs):
    return any(k.startswith('image/') for o in outputs for k in o.get('data', {}))

def _error(outputs):
    for o in outputs:
        if o.get('output_type') == 'error': return f"error output {o.get('ename')}: {o.get('evalue', '')[:100]}"
        text = ''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', ''))
        if 'Traceback (most recent call last)' in text: return 'a traceback in its text output'
    return None

def figure_cells(nb_path):
    "[(cell id, reason)] for the cells of a notebook that should carry an image output."
    nb = json.loads(Path(nb_path).read_text())
    code = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
    ld, lm = _local_functions(code)
    gd, gm = library_functions()
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or exempt(src): continue
        if (why := figure_reason(src, gd | ld, gm | lm)): out.append((c.get('id'), why))
    return out

def problems(nb_path) -> list[str]:
    "Everything wrong with the committed outputs of the notebook at `nb_path` (empty: all good)."
    nb_path = Path(nb_path)
    nb = json.loads(nb_path.read_text())
    cells = {c.get('id'): c for c in nb['cells']}
    rel = nb_path.relative_to(ROOT) if nb_path.is_relative_to(ROOT) else nb_path
    fix = f"run `python tools/execute_nbs.py {rel}` and commit it"
    bad = [f"{rel}: cell {cid} {why} but holds no image output ({fix})"
           for cid, why in figure_cells(nb_path) if not _has_image(cells[cid].get('outputs', []))]
    for c in nb['cells']:
        if c['cell_type'] == 'code' and (e := _error(c.get('outputs', []))): bad.append(f"{rel}: cell {c.get('id')} has {e}")
    runnable = [c for c in nb['cells'] if c['cell_type'] == 'code' and not exempt(''.join(c['source']))
                and 'nbdev_export(' not in ''.join(c['source'])]
    if runnable and not any(c.get('outputs') for c in runnable): bad.append(f"{rel}: no cell holds an output: not executed ({fix})")
    if 'widgets' in nb.get('metadata', {}): bad.append(f"{rel}: notebook metadata holds widget state (clear it)")
    return bad

def image_count(nb_path) -> int:
    "Image outputs stored in a notebook."
    nb = json.loads(Path(nb_path).read_text())
    return sum(_has_image([o]) for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []))

if __name__ == '__main__':
    sys.path.insert(0, str(ROOT/'tools'))
    from execute_nbs import notebooks
    paths = [Path(p).resolve() for p in sys.argv[1:]] or notebooks()
    allbad = []
    for p in paths:
        bad = problems(p); allbad += bad
        print(f"{p.relative_to(ROOT)}: {len(figure_cells(p))} figure cells, {image_count(p)} images stored, {len(bad)} problems")
    print('\n'.join(allbad))
    sys.exit(1 if allbad else 0)
