"""Checks that each method's protocol is applied without being asked for: classifier use from the manifest, the long-tail
recipe, the papers' backbones, DA-Fusion's concept recipe, and the baselines' formulas (each test fails if its formula changes)."""
import json, math, warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import diffmix_nb.classify as classify
from diffmix_nb.classify import (resolve_classifier_use, manifest_methods, train_classifier, classifier_config, cutmix, mixup,
                                 smooth_targets, soft_cross_entropy, class_balanced_weights, cmo_window, drw_start_epoch,
                                 build_backbone, torchvision_vit_to_timm, SWAG_VIT, default_batch_size, weights_source)
from diffmix_nb.cli import main          # the one entry point (classify has no main of its own)
from diffmix_nb.classify import classifier_use, register_classifier_use, CLASSIFIER_USES   # the registry lives in classify
from diffmix_nb.data import load_dataset_spec, make_split, longtail_counts, Split, read_manifest

TINY = dict(epochs=1, batch_size=10, test_limit=100)



def write_gen(folder, split, method, n_per_class=2, row_method=True):
    "A generation folder: same-class flipped copies of training images, rows tagged with `method` (or only plan.json)."
    folder = Path(folder); (folder/'img').mkdir(parents=True, exist_ok=True); rows = []
    for c in range(split.num_classes):
        for k, it in enumerate([i for i in split.train_items if i.label == c][:n_per_class]):
            fn = f'img/{c}-{k}.png'; split.load_image(it).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(folder/fn)
            r = dict(id=f'{c}-{k}', path=fn, source_item=it.id, source_label=c, target_label=c, strength=0.5, seed=k,
                     soft_label={str(c): 1.0})
            if row_method: r['method'] = method
            rows.append(r)
    (folder/'manifest.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (folder/'plan.json').write_text(json.dumps(dict(format='diffmix_nb.plan/1', method=method)))
    return folder


# ---------------------------------------------------------------- 1. the manifest decides how its images are used

def test_registry_has_each_methods_use():
    s5, s1, full, lt = (SimpleNamespace(shots=5, imbalance=None), SimpleNamespace(shots=1, imbalance=None),
                        SimpleNamespace(shots=None, imbalance=None), SimpleNamespace(shots=None, imbalance=0.01))
    pick = lambda m, s, **k: (classifier_use(m, s, **k)['mode'], classifier_use(m, s, **k)['p'])
    for m in ('diff-mix', 'diff-aug', 'diff-gen', 'real-mix', 'real-aug', 'real-gen', 'real-filter'):
        assert [pick(m, s) for s in (s1, s5, full, lt)] == [('uniform', 0.5), ('uniform', 0.3), ('uniform', 0.1), ('long-tail', 0.3)]
    assert pick('diff-ii', s5) == ('same-class', 0.5) and pick('diff-ii', lt) == ('long-tail', 0.5)
    assert pick('da-fusion', s5) == ('own-variants', 0.5) and pick('da-fusion', lt) == ('own-variants', 0.5)
    assert pick('diffusemix', s5) == ('concat', 0.0) and pick('diffusemix', s5, protocol='replace') == ('own-variants', 0.5)
    with pytest.raises(KeyError, match='no classifier protocol'): classifier_use('diff-mix', s5, protocol='replace')
    with pytest.raises(ValueError, match='probability'): register_classifier_use('bad', 'uniform', p=1.5)
    assert 'bad' not in CLASSIFIER_USES


def test_method_is_read_from_rows_or_plan_header(split, tmp_path):
    a = read_manifest(write_gen(tmp_path/'a', split, 'da-fusion', row_method=False))
    assert manifest_methods(a) == {'da-fusion': [str(tmp_path/'a'/'manifest.jsonl')]}
    u = resolve_classifier_use(split, a)
    assert (u['mode'], u['p'], u['method'], u['source']) == ('own-variants', 0.5, 'da-fusion', 'registered for da-fusion')
    assert resolve_classifier_use(split, a, mode='uniform')['p'] == 0.3          # explicit mode: its default p


def test_train_cli_uses_diff_ii_protocol_and_says_so(split, tmp_path, capsys):
    g = write_gen(tmp_path/'gen', split, 'diff-ii')
    assert main(['train', '--split', split.path, '--manifest', str(g), '--epochs', '1', '--batch-size', '10', '--seeds', '0',
                 '--test-limit', '100', '--out', str(tmp_path/'o')]) == 0
    out = capsys.readouterr().out
    assert 'classifier use: mode same-class, p 0.5 (registered for diff-ii)' in out
    res = json.loads((tmp_path/'o'/'seed0'/'results.json').read_text())
    assert (res['mode'], res['p'], res['config']['mode']) == ('same-class', 0.5, 'same-class')
    assert res['classifier_use']['method'] == 'diff-ii'
    assert json.loads((tmp_path/'o'/'summary.json').read_text())['classifier_use']['mode'] == 'same-class'


def test_mixing_methods_needs_explicit_mode(split, tmp_path, capsys):
    a, b = write_gen(tmp_path/'a', split, 'diff-ii'), write_gen(tmp_path/'b', split, 'diff-mix', n_per_class=1)
    assert main(['train', '--split', split.path, '--manifest', str(a), '--manifest', str(b), '--seeds', '0']) == 3
    err = capsys.readouterr().err
    assert "'diff-ii'" in err and "'diff-mix'" in err and '--mode' in err
    rows = read_manifest([a, b])
    assert resolve_classifier_use(split, rows, mode='same-class')['mode'] == 'same-class'


def test_study_reads_the_registry():
    from diffmix_nb.study import _clf_cfg, STUDY_METHODS
    s5, lt = SimpleNamespace(shots=5, imbalance=None), SimpleNamespace(shots=None, imbalance=0.1)
    assert not any('mode' in spec.get('clf', {}) for spec in STUDY_METHODS.values() if spec['gen'])   # nothing hard-coded
    assert (_clf_cfg('diff-ii', '5shot', s5)['mode'], _clf_cfg('diff-ii', '5shot', s5)['p']) == ('same-class', 0.5)
    assert _clf_cfg('diff-mix', 'lt', lt)['mode'] == 'long-tail' and _clf_cfg('diff-mix', 'lt', lt)['recipe'] == 'longtail'
    assert STUDY_METHODS['da-fusion']['concepts'] == 'da-fusion'


# ---------------------------------------------------------------- 2. long-tail

def test_longtail_validation_carve_out_keeps_the_formula():
    from diffmix_nb.study import tiny_split
    lt = tiny_split('lt', seed=0)
    train, val = lt.counts('train'), lt.counts('val')
    assert len(set(val)) == 1 and val[0] == 20                              # balanced validation, like the test split
    assert train == longtail_counts([50] * 10, 0.1)                         # the formula on the pool left after validation
    assert max(train) == 50 and sorted(train, reverse=True)[8] == 5         # head = avg, rank C-2 = IF x avg


def test_longtail_finetuning_is_class_balanced_by_default(tmp_path):
    from diffmix_nb.concepts import learn_concepts
    from diffmix_nb.study import tiny_split
    lt, fs = tiny_split('lt', seed=0), tiny_split('5shot', seed=0)
    cfg = lambda d: json.loads((d/'concepts.json').read_text())['config']['class_balanced']
    kw = dict(steps=1, batch_size=4, mode='ti', progress=False, checkpoint_every=0)
    assert cfg(learn_concepts(lt, tmp_path/'lt', **kw)) is True
    assert cfg(learn_concepts(lt, tmp_path/'lt-off', class_balanced=False, **kw)) is False
    assert cfg(learn_concepts(fs, tmp_path/'fs', **kw)) is False


# ---------------------------------------------------------------- 3. backbones

def test_presets_backbones_and_batch_table():
    c = classifier_config(None, preset='sd15')
    assert c['backbone'] == 'resnet50.tv_in1k' and c['batch_size'] == 256
    assert classifier_config(None, dict(img_size=448), preset='sd15')['batch_size'] == 64
    assert classifier_config(None, dict(backbone=SWAG_VIT, img_size=384), preset='sd15')['batch_size'] == 32
    assert classifier_config(None, dict(img_size=448, batch_size=48), preset='sd15')['batch_size'] == 48       # explicit wins
    assert classifier_config(None, dict(recipe='longtail'), preset='sd15')['batch_size'] == 128               # long-tail recipe's own
    assert 'resnet50-0676ba61' in weights_source('resnet50.tv_in1k', True)                                   # torchvision V1
    assert 'SWAG_E2E' in weights_source(SWAG_VIT, True) and weights_source('resnet18', False) == 'random initialisation'


def test_swag_vit_from_a_local_torchvision_file(tmp_path):
    from torchvision.models import vit_b_16
    torch.manual_seed(0)
    tv = vit_b_16(image_size=384).eval(); torch.save(tv.state_dict(), tmp_path/'vit_b_16_swag.pth')
    m = build_backbone(SWAG_VIT, 1000, pretrained=tmp_path/'vit_b_16_swag.pth').eval()
    x = torch.randn(1, 3, 384, 384)
    with torch.no_grad(): torch.testing.assert_close(m(x), tv(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match='no timm counterpart'): torchvision_vit_to_timm({'heads.pre_logits.weight': torch.zeros(1)})


# ---------------------------------------------------------------- 4. DA-Fusion concepts

def test_dafusion_concepts_recipe_and_prompt(tmp_path, split):
    from diffmix_nb.concepts import learn_concepts, Concepts, finetune_config
    from diffmix_nb.generate import make_plan
    c = finetune_config('sd15', mode='da-fusion')
    assert (c.num_vectors, c.init, c.steps, c.lr_ti, c.scale_lr, c.batch_size, c.uses_lora) == (4, 'classname', 2000, 5e-4, True, 8, False)
    d = learn_concepts(split, tmp_path/'daf', mode='da-fusion', steps=1, batch_size=2, progress=False, checkpoint_every=0)
    cp = Concepts.load(d)
    assert cp.mode == 'da-fusion' and cp.prompt(3) == 'a photo of a <class_3>' and len(cp[3].tokens) == 4
    info = json.loads((d/'concepts.json').read_text())
    assert info['prompt_template'] == 'a photo of a {token}' and info['config']['lr_ti'] == 5e-4 and info['config']['scale_lr']
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        plan = make_plan(split, 'da-fusion', concepts=d, num_variants=1)
    assert plan.tasks[0].prompt == f'a photo of a <class_{plan.tasks[0].target_label}>'
    # the prompt has no superclass word, so the pipeline check must not ask for one (it once did: DA-Fusion could not generate)
    pipe = cp.load_pipeline(device='cpu')
    assert cp.check(pipe) == dict(mode='da-fusion', classes=10, tokens=40, lora=False)


# ---------------------------------------------------------------- 5. baselines: the values, not only finiteness

def test_label_smoothing_is_eps_over_c_minus_1():
    y = F.one_hot(torch.tensor([3]), 10).float()
    t = smooth_targets(y, 0.1)
    assert torch.allclose(t[0, 3], torch.tensor(0.9 + 0.1 / 9)) and torch.allclose(t[0, 0], torch.tensor(0.1 / 9))
    cfg = classifier_config(None)
    assert (cfg['label_smoothing'], cfg['smoothing']) == (0.1, 'reference')
    z = torch.randn(1, 10)
    torch.testing.assert_close(soft_cross_entropy(z, t), -(t * z.log_softmax(-1)).sum())


def test_mixup_lambda_is_beta_alpha_alpha():
    x = torch.tensor([[0.], [1.]]).view(2, 1, 1, 1); y = torch.eye(2)
    def lams(alpha, n=3000):
        out = []
        for s in range(n):
            xm, ym = mixup(x, y, torch.Generator().manual_seed(s), alpha)
            if ym[0, 1] > 0 or ym[0, 0] < 1: out.append(float(ym[0, 0]))    # partner swapped: ym[0, 0] = lambda
        return np.array(out)
    for a in (0.2, 2.0):
        l = lams(a); var = 1 / (4 * (2 * a + 1))                          # Beta(a, a): mean 1/2, variance 1/(4(2a+1))
        assert abs(l.mean() - 0.5) < 0.03 and abs(l.var() - var) < 0.15 * var, (a, l.mean(), l.var(), var)


def test_cutmix_label_is_the_pasted_area(monkeypatch):
    monkeypatch.setattr(classify, '_beta', lambda a, g: 0.5)          # every box asks for half the image
    x = torch.cat([torch.zeros(8, 1, 16, 16), torch.ones(8, 1, 16, 16)]); y = F.one_hot(torch.tensor([0] * 8 + [1] * 8), 2).float()
    seen = []
    for s in range(20):
        xc, yc = cutmix(x, y, torch.Generator().manual_seed(s), prob=1.0)
        area = (xc != x).flatten(1).float().mean(1)                        # the fraction of pixels really pasted
        moved = area > 0
        torch.testing.assert_close(yc[moved].max(1).values, 1 - area[moved])   # label = 1 - pasted area ...
        seen += area[moved].tolist()
    assert any(abs(a - 0.5) > 0.05 for a in seen)                          # ... which is not 1 - lambda when the box is clipped


def _imbalanced(split):
    import dataclasses
    keep_n = [5, 5, 4, 3, 2, 1, 1, 1, 1, 1]
    tr = [it for c in range(10) for it in [i for i in split.train_items if i.label == c][:keep_n[c]]]
    f = {k.name: getattr(split, k.name) for k in dataclasses.fields(Split)}
    return Split(**{**f, 'items': tr + split.val_items + split.test_items, 'imbalance': 0.2, 'path': None}), keep_n


def test_drw_weights_and_start_epoch_in_training(split, monkeypatch):
    lt, counts = _imbalanced(split)
    log, orig = [], classify.soft_cross_entropy
    epoch = {'e': -1}
    monkeypatch.setattr(classify, 'lr_at', lambda it, total, cfg: (epoch.__setitem__('e', it // 3), 0.01)[1])
    monkeypatch.setattr(classify, 'soft_cross_entropy', lambda z, t, sw=None: (log.append((epoch['e'], sw)), orig(z, t, sw))[1])
    train_classifier(lt, cfg=dict(TINY, epochs=4, batch_size=8, loss='drw', drw_start=0.5, drw_beta=0.99), progress=False)
    assert drw_start_epoch(dict(loss='drw', drw_start=0.5), 4) == 2
    assert all(sw is None for e, sw in log if e < 2) and all(sw is not None for e, sw in log if e >= 2)
    raw = np.array([(1 - 0.99) / (1 - 0.99 ** n) for n in counts]); want = raw / raw.sum() * 10
    got = sorted({round(float(v), 5) for e, sw in log if sw is not None for v in sw})
    assert got and all(np.isclose(want, g, atol=1e-5).any() for g in got)        # every weight is some class's (1-b)/(1-b^n)
    assert not np.allclose(want, want[0])                                         # and they differ (the test can fail)


def test_cmo_pastes_only_inside_its_epoch_window(split, monkeypatch):
    lt, _ = _imbalanced(split)
    epoch, pasted, orig = {'e': -1}, [], classify.cmo_paste
    monkeypatch.setattr(classify, 'lr_at', lambda it, total, cfg: (epoch.__setitem__('e', it // 3), 0.01)[1])
    monkeypatch.setattr(classify, 'cmo_paste', lambda *a, **k: (pasted.append(epoch['e']), orig(*a, **k))[1])
    train_classifier(lt, cfg=dict(TINY, epochs=5, batch_size=8, loss='cmo', cmo_prob=1.0, cmo_start=1, cmo_end=3), progress=False)
    assert sorted(set(pasted)) == [1, 2, 3]
    assert cmo_window(dict(loss='cmo', cmo_start=None, cmo_end=None), 200) == (4, 196)
    assert cmo_window(dict(loss='cmo', cmo_start=None, cmo_end=None), 30) == (1, 29)


def test_results_table_reports_many_medium_few():
    from diffmix_nb.classify import results_table
    run = dict(format='diffmix_nb.results/1', protocol='val-selected', config=dict(epochs=2), test_acc=50.0, test_acc_last=40.0,
               val_acc=45.0, test=dict(acc=50.0, many=70.0, medium=50.0, few=None))
    tab = results_table({'lt run': run})
    assert '| lt run | 70.00 | 50.00 | - |' in tab and 'many-shot' in tab
    assert 'many-shot' not in results_table({'fs': {**run, 'test': dict(acc=50.0)}})
