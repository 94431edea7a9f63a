"""The rendered page shows the figures: each notebook rendered to HTML with nbconvert (the stored outputs, as the docs
site shows them; Quarto itself cannot be installed on our build machines) has an inline image with data in every cell
that draws a figure or displays an image.

The per-notebook tests are marked `outputs` (like tests/test_outputs.py): they pass once `tools/execute_nbs.py` has
executed the notebook. `tools/screenshot.py` renders one page and screenshots it in headless Chromium.
"""
import base64, io, json, re, shutil, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tools'))
from screenshot import render_html, cell_images, screenshot, chromium
from nbcheck import figure_cells, image_count
from execute_nbs import notebooks

NBS = ROOT/'nbs'

@pytest.mark.outputs
@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_rendered_page_has_its_figures(nb):
    html = render_html(nb)
    imgs = cell_images(html)
    missing = [f"cell {cid} ({why})" for cid, why in figure_cells(nb) if not imgs.get(cid)]
    assert not missing, f"{nb.name} renders without a figure in {missing}: run `python tools/execute_nbs.py {nb.relative_to(ROOT)}`"
    assert sum(imgs.values()) >= image_count(nb), f"{nb.name}: {image_count(nb)} images stored, {sum(imgs.values())} rendered"

def _png(color):
    from PIL import Image
    buf = io.BytesIO(); Image.new('RGB', (60, 40), color).save(buf, 'PNG'); return base64.b64encode(buf.getvalue()).decode()

def _nb(tmp_path, with_image=True):
    outs = [{'output_type': 'display_data', 'metadata': {}, 'data': {'image/png': _png((220, 40, 40)), 'text/plain': ['<Figure>']}}]
    nb = {'cells': [{'cell_type': 'markdown', 'id': 'm1', 'metadata': {}, 'source': ['# A page\n', 'Some text.']},
                    {'cell_type': 'code', 'id': 'c1', 'metadata': {}, 'execution_count': None,
                     'source': ['import matplotlib.pyplot as plt\n', 'plt.plot([1, 2])'], 'outputs': outs if with_image else []}],
          'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'python3', 'language': 'python'}},
          'nbformat': 4, 'nbformat_minor': 5}
    p = tmp_path/'page.ipynb'; p.write_text(json.dumps(nb)); return p

def test_renderer_counts_inline_images_per_cell(tmp_path):
    html = render_html(_nb(tmp_path))
    assert cell_images(html) == {'m1': 0, 'c1': 1}
    assert not re.search(r'<script[^>]*src="https?://', html)            # no remote script to wait for offline
    assert cell_images(render_html(_nb(tmp_path, with_image=False))) == {'m1': 0, 'c1': 0}

@pytest.mark.skipif(not (shutil.which('chromium') or Path('/usr/bin/chromium').exists()), reason='no Chromium installed')
def test_screenshot_shows_the_page(tmp_path):
    import numpy as np
    from PIL import Image
    page = tmp_path/'page.html'; page.write_text(render_html(_nb(tmp_path)))
    shot = screenshot(page, tmp_path/'page.png', width=600, height=400)
    a = np.asarray(Image.open(shot).convert('RGB')).astype(int)
    assert a.shape == (400, 600, 3) and a.std() > 5                       # not a blank page
    assert ((a[..., 0] > 180) & (a[..., 1] < 80) & (a[..., 2] < 80)).sum() > 1000   # the red figure is on it
