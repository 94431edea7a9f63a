"""Committed notebooks show their work: every cell that draws a figure or displays an image holds an image output, no
output is an error or a traceback, no widget state (checked by tools/nbcheck.py, filled by tools/execute_nbs.py).

The per-notebook tests are marked `outputs`: they fail on a notebook until `python tools/execute_nbs.py` has executed
it and its outputs are committed. Run one with `pytest tests/test_outputs.py -k 10_data`; leave them out while
notebooks are being rewritten with `pytest -m "not outputs"`.
"""
import base64, io, json, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from nbcheck import problems, figure_cells, figure_reason, exempt, image_count
from execute_nbs import notebooks, collapse_cr, cut_lines, compact_png, tidy_outputs, skipped_cells

NBS = ROOT/'nbs'

@pytest.mark.outputs
@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_committed_outputs(nb):
    bad = problems(nb)
    assert not bad, '\n'.join(bad)

# ---- the checker itself, on made-up cells ----

def _png(w=8, h=8, color=(200, 30, 30)):
    from PIL import Image
    buf = io.BytesIO(); Image.new('RGB', (w, h), color).save(buf, 'PNG'); return base64.b64encode(buf.getvalue()).decode()

def _nb(tmp_path, cells):
    nb = {'cells': [dict(cell_type='code', id=f'c{i}', metadata={}, execution_count=None, source=src, outputs=outs)
                    for i, (src, outs) in enumerate(cells)], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    p = tmp_path/'x.ipynb'; p.write_text(json.dumps(nb)); return p

IMG = [{'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png(), 'text/plain': ['<Figure>']}}]

def test_checker_finds_figure_cells():
    assert figure_reason("fig, ax = plt.subplots()\nax.plot([1, 2])", set(), set())
    assert figure_reason("show_samples(fm);", {'show_samples'}, set()) == 'calls show_samples()'
    assert figure_reason("Image.fromarray(a).resize((8, 8))", set(), set())
    assert figure_reason("grid([a, b])", set(), {'grid'})
    assert figure_reason("g = grid([a, b])", set(), {'grid'}) is None           # assigned, not shown
    assert figure_reason("grid([a, b]);", set(), {'grid'}) is None              # `;` hides it
    assert figure_reason("def f(ax):\n    ax.imshow(x)\n    return ax", set(), set()) is None   # a definition draws nothing
    assert figure_reason("fig, ax = plt.subplots()\nfig.savefig('a.png'); plt.close(fig)", set(), set()) is None
    assert exempt("#| cuda\nplt.plot([1])") == 'cuda' and exempt("#| eval: false\nx") == 'eval: false' and exempt("#| slow\nx") is None

def test_checker_flags_missing_images_and_errors(tmp_path):
    err = [{'output_type': 'error', 'ename': 'ValueError', 'evalue': 'bad', 'traceback': []}]
    tb = [{'output_type': 'stream', 'name': 'stderr', 'text': ['Traceback (most recent call last):\n', '  ...\n']}]
    p = _nb(tmp_path, [("plt.plot([1, 2])", []), ("plt.plot([1, 2])", IMG), ("#| cuda\nplt.plot([1])", []),
                       ("x = 1", err), ("print(1)", tb), ("#| slow\nImage.open('a.png')", [])])
    assert [c for c, _ in figure_cells(p)] == ['c0', 'c1', 'c5']
    bad = problems(p)
    assert len(bad) == 4, bad
    assert 'cell c0 draws' in bad[0] and 'tools/execute_nbs.py' in bad[0] and 'cell c5 shows' in bad[1]
    assert 'cell c3 has error output ValueError' in bad[2] and 'cell c4 has a traceback' in bad[3]
    assert image_count(p) == 1
    q = _nb(tmp_path, [("x = 1", []), ("#| cuda\nprint(2)", [])])
    assert problems(q) == [f"{q}: no cell holds an output: not executed (run `python tools/execute_nbs.py {q}` and commit it)"]

# ---- what the executor does to outputs ----

def test_progress_bars_collapse_and_long_logs_are_cut():
    assert collapse_cr('a\n 10%|#  |\r 50%|### |\r100%|####|\nb') == 'a\n100%|####|\nb'
    assert collapse_cr('line\r\n') == 'line\n'
    t = ''.join(f'{i}\n' for i in range(1000))
    cut = cut_lines(t, 10)
    assert cut.startswith('0\n1\n') and cut.endswith('999\n') and '990 lines cut' in cut and len(cut.splitlines()) == 11
    assert cut_lines('a\nb\n', 10) == 'a\nb\n'

def test_png_recompressed_losslessly():
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, (64, 64)).astype(np.uint8) * 60
    rgba = Image.fromarray(np.stack([a, a, 255 - a, np.full_like(a, 255)], -1), 'RGBA')
    buf = io.BytesIO(); rgba.save(buf, 'PNG'); b64 = base64.b64encode(buf.getvalue()).decode()
    small = compact_png(b64)
    assert len(small) < len(b64)
    back = Image.open(io.BytesIO(base64.b64decode(small))).convert('RGBA')
    assert back.tobytes() == rgba.tobytes()

def test_tidy_drops_widgets_and_empty_streams():
    outs = [{'output_type': 'display_data', 'metadata': {}, 'data': {'application/vnd.jupyter.widget-view+json': {'model_id': 'x'}}},
            {'output_type': 'stream', 'name': 'stderr', 'text': ['\r', '  0%|\r100%|\n']},
            {'output_type': 'stream', 'name': 'stderr', 'text': ['\r\r']}]
    assert tidy_outputs(outs) == [{'output_type': 'stream', 'name': 'stderr', 'text': ['100%|\n']}]

def test_tidy_shortens_fallbacks_and_relativises_paths():
    from execute_nbs import ROOT as R
    outs = [{'output_type': 'execute_result', 'metadata': {}, 'execution_count': 1,
             'data': {'text/markdown': ['| a |\n', '|---|\n', '| 1 |'], 'text/plain': ['x' * 5000]}},
            {'output_type': 'execute_result', 'metadata': {}, 'execution_count': 2, 'data': {'text/plain': ['y' * 5000]}},
            {'output_type': 'stream', 'name': 'stdout', 'text': [f'{R}/diffmix_nb/assets/tiny-sd\n']}]
    a, b, c = tidy_outputs(outs)
    assert len(''.join(a['data']['text/plain'])) < 1100 and a['data']['text/markdown'] == ['| a |\n', '|---|\n', '| 1 |']
    assert len(''.join(b['data']['text/plain'])) == 5000            # nothing else shows it: kept whole
    assert c['text'] == ['diffmix_nb/assets/tiny-sd\n']

def test_hours_long_cells_are_never_executed():
    "Retraining the shipped tiny model (15_tiny) takes most of an hour: the executor skips it and says so."
    skipped = {cid: why for cid, why, _ in skipped_cells(NBS/'15_tiny.ipynb')}
    nb = json.loads((NBS/'15_tiny.ipynb').read_text())
    training = [c['id'] for c in nb['cells'] if c['cell_type'] == 'code' and re.search(r'^pretrain_tiny_\w+\(', ''.join(c['source']), re.M)]
    assert len(training) >= 2 and all(skipped.get(cid) == 'eval: false' for cid in training), (training, skipped)

def test_clean_keeps_outputs_strips_volatile_metadata(tmp_path):
    "nbdev-clean (the repo's config) keeps outputs and images, drops execution counts, output metadata and addresses."
    d = tmp_path/'repo'; (d/'nbs').mkdir(parents=True); (d/'diffmix_nb').mkdir()
    shutil.copy(ROOT/'pyproject.toml', d); shutil.copy(ROOT/'diffmix_nb'/'__init__.py', d/'diffmix_nb')
    out = [{'output_type': 'execute_result', 'execution_count': 7, 'metadata': {'isWidgetSnapshot': True},
            'data': {'text/plain': ['<Foo at 0x7f3a2b1c>'], 'image/png': _png()}},
           {'output_type': 'stream', 'name': 'stdout', 'text': ['hello\n']}]
    nb = {'cells': [dict(cell_type='code', id='a1', metadata={'scrolled': True, 'execution': {'total': 1.0}},
                         execution_count=7, source=['1'], outputs=out)],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
                       'language_info': {'version': '3.11.7'}, 'widgets': {'state': {}}}, 'nbformat': 4, 'nbformat_minor': 5}
    (d/'nbs'/'a.ipynb').write_text(json.dumps(nb))
    subprocess.run(['nbdev-clean'], cwd=d, check=True, capture_output=True)
    c = json.loads((d/'nbs'/'a.ipynb').read_text())
    cell = c['cells'][0]
    assert cell['execution_count'] is None and cell['metadata'] == {}
    assert [o['output_type'] for o in cell['outputs']] == ['execute_result', 'stream']
    assert cell['outputs'][0]['data']['image/png'].startswith(_png()[:20]) and cell['outputs'][0]['metadata'] == {}
    assert cell['outputs'][0]['data']['text/plain'] == ['<Foo>'] and 'language_info' not in c['metadata']
    # nbdev keeps notebook-level widget state; the output check rejects it
    assert problems(d/'nbs'/'a.ipynb') == [f"{d/'nbs'/'a.ipynb'}: notebook metadata holds widget state (clear it)"]
