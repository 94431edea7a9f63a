#!/usr/bin/env python3
"""Render nbs/index.ipynb to README.md (what `nbdev-readme` does with Quarto, which cannot run on our machines).

Markdown cells are copied; code cells not marked `#| hide` become ```python blocks, with their text outputs.
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def render(nb_path) -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).rstrip()
        if c['cell_type'] == 'markdown':
            out.append(src); continue
        lines = src.splitlines()
        if any(re.match(r'#\|\s*hide\b', l) for l in lines): continue
        code = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        if code: out.append(f"```python\n{code}\n```")
        for o in c.get('outputs', []):
            text = ''.join(o.get('text', '') or o.get('data', {}).get('text/plain', '')).rstrip()
            if text: out.append(f"```\n{text}\n```")
    body = '\n\n'.join(out) + '\n'
    return re.sub(r'^---\n.*?\n---\n+', '', body, flags=re.S)

if __name__ == '__main__':
    (ROOT/'README.md').write_text(render(ROOT/'nbs'/'index.ipynb'))
    print('README.md written')
