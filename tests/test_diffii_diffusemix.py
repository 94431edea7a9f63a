"""Heavier checks of the Diff-II and DiffuseMix methods registered in the generation engine (nbs/31_diffii.ipynb,
nbs/32_diffusemix.ipynb): deterministic plans, hard labels, fresh noise for a single-image class, and a Diff-II
inversion cache that resumes after an interrupted run."""
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffmix_nb.data import ClassInfo, Item, Split
from diffmix_nb import generate as G
from diffmix_nb import diffii as D
from diffmix_nb import diffusemix as M
from diffmix_nb.data import read_manifest

@pytest.fixture(scope='module')
def split(tmp_path_factory):
    "Three classes (superclasses with shipped suffixes), 4 + 3 + 1 training images of two sizes, one test image."
    root = tmp_path_factory.mktemp('toy-data')
    classes = [ClassInfo('T-shirt/top', 0, 'top'), ClassInfo('Black_footed Albatross', 1, 'bird'), ClassInfo('Bag', 2, 'bag')]
    items, rng = [], np.random.default_rng(0)
    for c, n in zip(classes, (4, 3, 1)):
        for k in range(n):
            size = (28, 28) if k % 2 == 0 else (40, 30)
            rel = f'c{c.label}/{k}.png'; (root/rel).parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root/rel)
            items.append(Item(f'toy-{c.label}-{k}', rel, c.label, 'train'))
    items.append(Item('toy-test-0', 'c0/0.png', 0, 'test'))
    s = Split('toy', str(root), classes, items, shots=5)
    s.save(root/'split.json')
    return Split.load(root/'split.json')

def _prompts(split): return G.plain_prompts(split)

def test_registered():
    assert G.METHODS['diff-ii'].sampler == 'diffii' and G.METHODS['diff-ii'].prompts == 'concepts'
    assert G.METHODS['diffusemix'].sampler == 'diffusemix' and G.METHODS['diffusemix'].prompts == 'none'
    assert {'diffii', 'diffusemix'} <= set(G.SAMPLERS)

def test_diffii_plan_deterministic_hard_fresh(split):
    p1 = G.make_plan(split, 'diff-ii', prompts=_prompts(split), multiplier=3)
    p2 = G.make_plan(Split.load(split.path), 'diff-ii', prompts=_prompts(split), multiplier=3)
    assert p1.hash == p2.hash and len(p1) == 3 * 8
    assert p1.hash != G.make_plan(split, 'diff-ii', prompts=_prompts(split), multiplier=3, seed=1).hash
    for t in p1.tasks:
        assert t.source_label == t.target_label and t.soft_label == {str(t.target_label): 1.0}
        assert t.strength == t.params['s'] == 0.3
        if t.target_label == 2: assert t.params['start'] == 'fresh' and t.source_item is None
        else:
            a, b = t.params['items']
            assert t.params['start'] == 'circle' and a < b and t.source_item == a
            assert split.item(a).label == split.item(b).label == t.target_label
    lt = Split(split.dataset, split.root, split.classes, split.items, imbalance=0.1)
    assert {t.strength for t in G.make_plan(lt, 'diff-ii', prompts=_prompts(split), multiplier=1).tasks} == {1.0}

def test_diffii_single_image_class_uses_fresh_noise(split, tmp_path):
    plan = G.make_plan(split, 'diff-ii', prompts=_prompts(split), multiplier=1)
    tasks = [t for t in plan.tasks if t.target_label in (1, 2)]
    ctx = G.GenContext(split, str(G.TINY_SD), None, 'cpu', None, 4, 7.5, 'dpm++', 32,
                       options=dict(inversion_steps=4, inversion_cache=str(tmp_path/'inv')))
    ims = G.SAMPLERS['diffii'](ctx, tasks)
    assert len(ims) == len(tasks)
    lams = ctx.cache['diffii_lams']
    for t, im in zip(tasks, ims):
        assert math.isnan(lams[t.id]) == (t.target_label == 2)
        assert im.size == split.load_image(t.params['items'][0]).size
    assert not any('toy-2-0' in p.name for p in (tmp_path/'inv').iterdir())    # the single image is never inverted
    # the same task alone gives the same image (its start point depends on its own seed only)
    again = G.SAMPLERS['diffii'](ctx, tasks[-1:])[0]
    assert np.abs(np.asarray(again, float) - np.asarray(ims[-1], float)).max() <= 2

def test_diffii_inversion_cache_resumes(split, tmp_path, monkeypatch):
    inv, out = tmp_path/'inv', tmp_path/'gen'
    kw = dict(prompts=_prompts(split), multiplier=2, num_inference_steps=3, inversion_steps=3, inversion_cache=str(inv),
              inversion_batch_size=2, device='cpu', progress=False)
    real, calls = D.invert_images, []
    def flaky(pipe, images, prompts, *a, **k):
        calls.append(len(images))
        if len(calls) == 2: raise KeyboardInterrupt('killed')
        return real(pipe, images, prompts, *a, **k)
    monkeypatch.setattr(D, 'invert_images', flaky)
    with pytest.raises(KeyboardInterrupt): G.generate(out, split, 'diff-ii', **kw)
    assert len(list(inv.glob('*.safetensors'))) == 2 and not list(inv.glob('.*.tmp'))
    assert not (out/'manifest.jsonl').exists() or not read_manifest(out, report=False)
    calls.clear(); monkeypatch.setattr(D, 'invert_images', lambda *a, **k: (calls.append(len(a[1])), real(*a, **k))[1])
    man = G.generate(out, **{k: v for k, v in kw.items() if k in ('device', 'progress')})    # resume from the plan alone
    needed = {i for t in G.Plan.load(out).tasks if t.params['start'] == 'circle' for i in t.params['items']}
    assert sum(calls) == len(needed) - 2                                                   # only the missing inversions
    assert len(list(inv.glob('*.safetensors'))) == len(needed)
    rows = read_manifest(man)
    assert len(rows) == 16 and all(r['soft_label'] == {r['target_label']: 1.0} for r in rows)
    calls.clear(); G.generate(out, split, 'diff-ii', **kw); assert calls == []                # finished: nothing recomputed

def test_diffusemix_plan_and_generate(split, tmp_path):
    p = G.make_plan(split, 'diffusemix', multiplier=2)
    assert p.hash == G.make_plan(Split.load(split.path), 'diffusemix', multiplier=2).hash and len(p) == 16
    assert set(np.bincount([split.train_items.index(split.item(t.source_item)) for t in p.tasks])) == {2}
    assert all(t.soft_label == {str(t.source_label): 1.0} and t.source_label == t.target_label == split.item(t.source_item).label
               for t in p.tasks)
    code = G.make_plan(split, 'diffusemix', mode='code')
    assert len(code) == 8 * len(M.DIFFUSEMIX_PROMPTS) and {t.params['concat'] for t in code.tasks} == {'code'}
    man = G.generate(tmp_path/'dm', split, 'diffusemix', multiplier=1, edit_steps=2, fractal_pool=3, device='cpu', progress=False)
    rows = read_manifest(man)
    assert len(rows) == 8 and all(r['soft_label'] == {r['target_label']: 1.0} for r in rows)
    assert all(Image.open(r['file']).size == split.load_image(r['source_item']).size for r in rows)
