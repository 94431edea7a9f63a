#!/usr/bin/env python3
"""Render nbs/index.ipynb to README.md (what `nbdev-readme` does with Quarto, which cannot run on our machines).

Markdown cells are copied; code cells not marked `#| hide` become ```python blocks, with their text outputs.
Links and images in index.ipynb are relative to nbs/ (where the documentation site resolves them); README.md sits at
the repo root, so `rebase_links` prefixes every relative target with `nbs/` (GitHub then shows the notebook or image).
"""
import json, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LINK_RE = re.compile(r'(!?\[[^\]]*\]\()([^)\s]+)(\s+"[^"]*")?\)|(<img\b[^>]*\bsrc=")([^"]+)(")')

def _relative(target: str) -> bool: return not re.match(r'([a-z][a-z0-9+.-]*:|#|/)', target, re.I)

def rebase_links(md: str, prefix: str='nbs/') -> str:
    "Markdown links, images and `<img src>` of `md` with relative targets moved under `prefix` (anchors kept)."
    def sub(m):
        if m.group(1) is not None:
            t = m.group(2)
            return f"{m.group(1)}{prefix + t if _relative(t) else t}{m.group(3) or ''})"
        t = m.group(5)
        return f"{m.group(4)}{prefix + t if _relative(t) else t}{m.group(6)}"
    return LINK_RE.sub(sub, md)

def render(nb_path) -> str:
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source']).rstrip()
        if c['cell_type'] == 'markdown':
            out.append(rebase_links(src)); continue
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
