#!/usr/bin/env python3
"""Convert between nbdev notebooks and percent-format scripts (an authoring aid; notebooks are the source).

    python tools/nbpy.py to-nb  src.py  nbs/NN_topic.ipynb   # write the notebook; unchanged cells keep their outputs
    python tools/nbpy.py to-py  nbs/NN_topic.ipynb  out.py   # the reverse, for editing

Cell markers: `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose lines start with `# ` (or `#`).
"""
import hashlib, json, sys
from pathlib import Path

def py2cells(text):
    cells, kind, buf = [], None, []
    def flush():
        if kind is None: return
        lines = buf[:]
        while lines and not lines[-1].strip(): lines.pop()
        while lines and not lines[0].strip(): lines.pop(0)
        if kind == 'markdown': lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        if lines or kind == 'code': cells.append((kind, '\n'.join(lines)))
    for line in text.splitlines():
        if line.startswith('# %%'):
            flush(); buf = []
            kind = 'markdown' if '[markdown]' in line else 'code'
        else:
            if kind is None: kind = 'code'
            buf.append(line)
    flush()
    return [c for c in cells if c[1].strip()]

def to_nb(src, dst):
    "Write `dst` from the script `src`; a code cell whose text is unchanged (same id) keeps the outputs `dst` holds."
    old, old_text = {}, {}
    if Path(dst).exists():
        for c in json.loads(Path(dst).read_text())['cells']:
            if c['cell_type'] == 'code': old[c.get('id')] = old_text[''.join(c['source']).strip()] = c.get('outputs', [])
    cells, seen = [], set()
    for i, (kind, text) in enumerate(py2cells(Path(src).read_text())):
        lines = text.splitlines(keepends=True)
        cid = hashlib.sha1(f'{Path(dst).name}\x1f{text}'.encode()).hexdigest()[:8]   # stable across re-conversions
        while cid in seen: cid = hashlib.sha1(cid.encode()).hexdigest()[:8]
        seen.add(cid)
        c = {'cell_type': kind, 'id': cid, 'metadata': {}, 'source': lines}
        if kind == 'code': c.update(execution_count=None, outputs=old.get(cid) or old_text.get(text.strip(), []))
        cells.append(c)
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def to_py(src, dst):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        text = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            out.append('# %% [markdown]\n' + '\n'.join(('# ' + l) if l else '#' for l in text.splitlines()))
        else: out.append('# %%\n' + text)
    Path(dst).write_text('\n\n'.join(out) + '\n')

if __name__ == '__main__':
    cmd, src, dst = sys.argv[1:4]
    {'to-nb': to_nb, 'to-py': to_py}[cmd](src, dst)
