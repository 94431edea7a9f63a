#!/usr/bin/env python3
"""Execute the notebooks on CPU in the tiny world and store their outputs (text, tables, figures) in nbs/.

    python tools/execute_nbs.py                      # every notebook in nbs/ that is not done yet
    python tools/execute_nbs.py nbs/00_core.ipynb    # just these
    python tools/execute_nbs.py --force              # re-execute even notebooks that are done
    python tools/execute_nbs.py --list               # what would run and what each notebook skips, no execution
    python tools/execute_nbs.py nbs/60_perf.ipynb --skip-flags     # on a GPU machine: run the `#| cuda` cells too

Unlike the test suite (which skips `#| slow` cells), this runs every cell once, slow ones included, except:
- `#| cuda` cells (they need a GPU) and cells marked `#| eval: false` (they must never run automatically: real SD
  weights, downloads, hours of training such as retraining the shipped tiny model in 15_tiny). Skipped cells keep
  whatever outputs they already hold (a GPU run's output pasted in stays), and each one is printed.
Each notebook runs in its own process, in its own folder (as in tests/test_notebooks.py). A notebook is written back
only if every cell ran without an error, then cleaned with `nbdev-clean` (outputs stay; execution counts, volatile
metadata and memory addresses go). Paths inside the repo are stored relative to it; a `text/plain` fallback over 1000
characters is shortened when a table or an image shows the value. Figures are stored as PNG at `--dpi` (matplotlib's default figure dpi for the
run; cells that set their own dpi keep it), re-encoded losslessly as small as PIL makes them (a PNG still over
48 kB becomes a JPEG when that halves it: noise-like photos, never line plots in practice); progress bars are
collapsed to their last state; stream outputs longer than `--max-lines` are cut in the middle; widget state is dropped.

Resumable: a notebook whose cell sources are unchanged since its last successful execution (recorded in
`.execute_nbs.json` at the repo root, not committed) is skipped, so an interrupted run continues where it stopped.
Prints the time per notebook and cells over 10 s.
"""
import argparse, base64, hashlib, io, json, os, re, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
STATE = ROOT/'.execute_nbs.json'
SKIP_FLAGS = ['cuda']          # plus every `#| eval: false` cell (nbdev's own rule)
WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'
JPEG_ABOVE = 48_000            # base64 characters: a PNG this large is stored as JPEG if that halves it

def notebooks():
    "The notebooks of the site, in the order tests/test_notebooks.py runs them."
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)
                  and '.ipynb_checkpoints' not in p.parts and not (p.parent/'.notest').exists())

def source_hash(path) -> str:
    "What a notebook's outputs depend on in the notebook itself: the kind and source of every cell."
    nb = json.loads(Path(path).read_text())
    h = hashlib.sha1()
    for c in nb['cells']: h.update(f"{c['cell_type']}\x1f{''.join(c['source'])}\x1e".encode())
    return h.hexdigest()

def skipped_cells(path, skip_flags=SKIP_FLAGS):
    "[(cell id, reason, first code line)] for the code cells this command leaves out of `path`."
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    nb = NBProcessor(path, rm_directives=False, process=True).nb
    skip = _skip_cell(nb, skip_flags)
    out = []
    for c in nb.cells:
        if c.cell_type != 'code' or not skip(c) or 'nbdev_export(' in c.source: continue
        dirs = getattr(c, 'directives_', {}) or {}
        why = ', '.join(f for f in skip_flags if f in dirs) or 'eval: false'
        first = next((l for l in c.source.splitlines() if l.strip() and not l.startswith('#|')), '')
        out.append((c.get('id'), why, first[:70]))
    return out

# ---- output post-processing (pure functions, tested in tests/test_outputs.py) ----

def collapse_cr(text: str) -> str:
    "What a terminal shows for `text`: each line keeps what follows its last carriage return (progress bars)."
    return '\n'.join(l.rsplit('\r', 1)[-1] if '\r' in l.rstrip('\r') else l.rstrip('\r') for l in text.split('\n'))

def cut_lines(text: str, max_lines: int) -> str:
    "Keep the first and last `max_lines // 2` lines of a long log, with a note of how many were cut."
    lines = text.splitlines(True)
    if len(lines) <= max_lines: return text
    k = max_lines // 2
    return ''.join(lines[:k]) + f'... ({len(lines) - 2 * k} lines cut by tools/execute_nbs.py) ...\n' + ''.join(lines[-k:])

def compact_png(b64: str) -> str:
    "The same picture as a smaller PNG (lossless): opaque alpha dropped, palette when <= 256 colours, optimised."
    from PIL import Image
    raw = base64.b64decode(b64)
    im = Image.open(io.BytesIO(raw)); im.load()
    if im.mode in ('RGBA', 'LA') and im.getchannel('A').getextrema() == (255, 255): im = im.convert('RGB')
    elif im.mode not in ('RGB', 'RGBA', 'L', 'P'): im = im.convert('RGBA')
    if im.mode == 'RGB' and im.getcolors(256) is not None:
        pal = im.convert('P', palette=Image.Palette.ADAPTIVE, colors=256)
        if pal.convert('RGB').tobytes() == im.tobytes(): im = pal
    buf = io.BytesIO(); im.save(buf, 'PNG', optimize=True)
    return base64.b64encode(min(raw, buf.getvalue(), key=len)).decode() + '\n'

def as_jpeg(b64: str, quality: int=85) -> str|None:
    "A JPEG of a PNG without transparency (for large photo-like images only), or None."
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(b64)))
    if im.mode not in ('RGB', 'L', 'P') or 'transparency' in im.info: return None
    buf = io.BytesIO(); im.convert('RGB').save(buf, 'JPEG', quality=quality, optimize=True)
    return base64.b64encode(buf.getvalue()).decode() + '\n'

RICH = ('text/markdown', 'text/html', 'text/latex', 'image/png', 'image/jpeg', 'image/svg+xml')
PLAIN_MAX = 1000               # characters of text/plain kept beside a richer representation

def _repo_relative(text: str) -> str: return text.replace(f'{ROOT}/', '')

def tidy_outputs(outputs, max_lines=200):
    """Outputs as they are committed: no widget state, progress bars collapsed, long logs cut, PNGs compacted, paths
    inside the repo made relative, and a long `text/plain` fallback shortened where a table or image shows the value."""
    res = []
    for o in outputs:
        o = dict(o)
        if o.get('output_type') == 'stream':
            text = _repo_relative(cut_lines(collapse_cr(''.join(o['text'])), max_lines))
            if not text.strip(): continue
            o['text'] = text.splitlines(True)
        elif 'data' in o:
            data = {k: v for k, v in o['data'].items() if k != WIDGET_MIME}
            if not data: continue
            for k in [k for k in data if k.startswith('text/')]:
                data[k] = _repo_relative(''.join(data[k])).splitlines(True)
            plain = ''.join(data.get('text/plain', ''))
            if len(plain) > PLAIN_MAX and any(k in data for k in RICH):
                data['text/plain'] = (plain[:PLAIN_MAX] + ' ...').splitlines(True)
            if 'image/png' in data:
                data.pop('image/jpeg', None)                      # PIL offers both: one copy is enough
                small = compact_png(''.join(data['image/png']))
                if len(small) > JPEG_ABOVE and (jpg := as_jpeg(small)) and len(jpg) < len(small) // 2:
                    del data['image/png']; data['image/jpeg'] = jpg   # photo-like noise: JPEG is far smaller
                else: data['image/png'] = small
            o['data'] = data
        res.append(o)
    return res

# ---- the child: execute one notebook in this process ----

def execute_one(path, skip_flags, dpi, max_lines, cell_timeout):
    "Run the notebook at `path`; write it back with outputs iff no cell failed. Returns the exit code."
    from execnb.shell import CaptureShell
    from nbdev.process import NBProcessor
    from nbdev.test import _skip_cell
    path = Path(path).resolve()
    os.environ['IN_TEST'] = '1'
    nb = NBProcessor(path, rm_directives=False, process=True).nb
    skip = _skip_cell(nb, skip_flags)
    sh = CaptureShell(path, mpl_format='png')
    sh.run(f"import matplotlib as _mpl; _mpl.rcParams.update({{'figure.dpi': {dpi}}}); del _mpl")
    outs, slow = {}, []
    os.chdir(path.parent)
    for c in nb.cells:
        if c.cell_type != 'code' or skip(c): continue
        t0 = time.perf_counter()
        sh.cell(c, timeout=cell_timeout)
        dt = time.perf_counter() - t0
        if dt > 10: slow.append(f"{c.get('id')} {dt:.0f} s")
        if sh.exc is not None:
            sys.stderr.write(f"{path.name}: cell {c.get('id')} failed; the notebook is left as it was\n")
            sys.stderr.write((sh.prettytb(fname=path) or repr(sh.exc)) + '\n')
            return 1
        outs[c.get('id')] = tidy_outputs([dict(o) for o in c.outputs], max_lines)
    raw = json.loads(path.read_text())
    for c in raw['cells']:
        if c['cell_type'] == 'code' and c.get('id') in outs: c['outputs'] = outs[c['id']]
    path.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + '\n')
    if slow: print(f"  cells over 10 s: {', '.join(slow)}")
    return 0

# ---- the parent: pick notebooks, run each in a child, clean, record ----

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('notebooks', nargs='*', help='notebooks to execute (default: every notebook in nbs/)')
    ap.add_argument('--force', action='store_true', help='execute even notebooks recorded as done')
    ap.add_argument('--list', action='store_true', help='print what would run and what is skipped; execute nothing')
    ap.add_argument('--skip-flags', nargs='*', default=SKIP_FLAGS, help=f'cell flags to skip (default: {SKIP_FLAGS})')
    ap.add_argument('--dpi', type=int, default=80, help='default matplotlib figure dpi (default 80)')
    ap.add_argument('--max-lines', type=int, default=200, help='cut stream outputs longer than this (default 200)')
    ap.add_argument('--cell-timeout', type=int, default=None, help='seconds per cell (default: none)')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.one: return execute_one(a.one, a.skip_flags, a.dpi, a.max_lines, a.cell_timeout)

    nbs = [Path(n).resolve() for n in a.notebooks] or notebooks()
    missing = [str(n) for n in nbs if not n.exists()]
    if missing: ap.error(f"no such notebook: {missing} (give paths like nbs/00_core.ipynb)")
    state = json.loads(STATE.read_text()) if STATE.exists() else {}
    failed, t_all = [], time.time()
    for nb in nbs:
        rel = str(nb.relative_to(ROOT))
        h = source_hash(nb)
        for cid, why, first in skipped_cells(nb, a.skip_flags): print(f"{rel}: skip cell {cid} ({why}): {first}")
        if not a.force and state.get(rel, {}).get('source') == h:
            print(f"{rel}: done before ({state[rel]['seconds']:.0f} s), unchanged; skipped (--force re-executes)"); continue
        if a.list: print(f"{rel}: would execute"); continue
        t0 = time.time(); print(f"{rel}: executing ...", flush=True)
        env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'HF_HUB_OFFLINE': '1',
               'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
        r = subprocess.run([sys.executable, __file__, '--one', str(nb), '--dpi', str(a.dpi), '--max-lines', str(a.max_lines),
                            *(['--cell-timeout', str(a.cell_timeout)] if a.cell_timeout else []), '--skip-flags', *a.skip_flags],
                           cwd=nb.parent, env=env)
        dt = time.time() - t0
        if r.returncode != 0:
            failed.append(rel); print(f"{rel}: FAILED after {dt:.0f} s (notebook unchanged)", flush=True); continue
        subprocess.run(['nbdev-clean', '--fname', str(nb)], cwd=ROOT, check=True)
        state[rel] = dict(source=source_hash(nb), seconds=round(dt, 1), bytes=nb.stat().st_size,
                          when=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
        STATE.write_text(json.dumps(state, indent=1) + '\n')
        print(f"{rel}: {dt:.0f} s, {nb.stat().st_size / 1024:.0f} KiB", flush=True)
    print(f"total {time.time() - t_all:.0f} s; failed: {failed or 'none'}")
    return 1 if failed else 0

if __name__ == '__main__':
    sys.exit(main())
