"Heavier checks of diffmix_nb.classify: manifests, mixing modes, checkpoints, resume, NaN stop, CLI, accelerate launch."
import json, os, shutil, subprocess, sys, time, warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import diffmix_nb.classify as classify
from diffmix_nb.core import load_checkpoint
from diffmix_nb.data import read_manifest
from diffmix_nb.classify import (smooth_targets, soft_cross_entropy, cutmix, mixup, cmo_paste, class_balanced_weights, LR_TABLE,
                                 default_lr, soft_target, SyntheticMixDataset, build_backbone, save_backbone,
                                 load_backbone_weights, train_classifier, NonFiniteLossError, run_seeds, results_table,
                                 plot_curves, loader_throughput, accuracy_report, load_groups, cli_register)
from diffmix_nb.cli import main          # the one entry point (classify has no main of its own)
from diffmix_nb.data import load_dataset_spec, make_split
from diffmix_nb import data as dm_data

TINY = dict(epochs=2, batch_size=10, test_limit=200)



def write_manifest(folder, split, specs, extra_lines=()):
    "specs: (source item, target label, soft label dict or None); images are flipped real images."
    folder = Path(folder); (folder/'img').mkdir(parents=True, exist_ok=True)
    rows = []
    for k, (it, tgt, soft) in enumerate(specs):
        fn = f'img/{k}.png'
        split.load_image(it).transpose(Image.Transpose.FLIP_TOP_BOTTOM).save(folder/fn)
        rows.append(dict(id=f'r{k}', path=fn, source_item=it.id, source_label=it.label, target_label=tgt, strength=0.7,
                         seed=k, method='test', soft_label={str(c): w for c, w in (soft or {tgt: 1.0}).items()}))
    (folder/'manifest.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows) + ''.join(extra_lines))
    return folder


@pytest.fixture(scope='module')
def mixed(split, tmp_path_factory):
    "A manifest with a soft-labelled row for 2 images of every class except class 9 (which has none)."
    specs = []
    for c in range(9):
        for it in [i for i in split.train_items if i.label == c][:2]:
            specs.append((it, c, {(c + 1) % 10: 0.2, c: 0.8}))
    return write_manifest(tmp_path_factory.mktemp('gen'), split, specs)


# ---------------------------------------------------------------- labels and losses

def test_label_smoothing_reference_formula():
    y = torch.tensor([[0., 0.3, 0.7, 0.]])
    t = smooth_targets(y, 0.1)
    torch.testing.assert_close(t, 0.1 / 3 + 0.9 * y)
    assert abs(float(t.sum()) - (1 + 0.1 / 3)) < 1e-6          # documented: not renormalised
    torch.testing.assert_close(smooth_targets(y, 0.1, 'normalized').sum(), torch.tensor(1.0))
    z = torch.randn(5, 4); lab = torch.randint(0, 4, (5,))
    torch.testing.assert_close(soft_cross_entropy(z, F.one_hot(lab, 4).float()), F.cross_entropy(z, lab))
    w = torch.tensor([1., 2., 3., 4.])
    torch.testing.assert_close(soft_cross_entropy(z, F.one_hot(lab, 4).float(), w[lab]), F.cross_entropy(z, lab, weight=w))


def test_cutmix_mixup_cmo_labels_follow_pixels():
    x = torch.cat([torch.zeros(6, 3, 16, 16), torch.ones(6, 3, 16, 16)]); y = F.one_hot(torch.tensor([0] * 6 + [1] * 6), 2).float()
    for s in range(5):
        xc, yc = cutmix(x, y, torch.Generator().manual_seed(s), prob=0.5)
        torch.testing.assert_close(yc[:, 1], xc.mean((1, 2, 3)))
        xm, ym = mixup(x, y, torch.Generator().manual_seed(s)); torch.testing.assert_close(ym[:, 1], xm.mean((1, 2, 3)))
        xo, yo = cmo_paste(x[:6], y[:6], x[6:], y[6:], torch.Generator().manual_seed(s))
        torch.testing.assert_close(yo[:, 1], xo.mean((1, 2, 3)))
    a = cutmix(x, y, torch.Generator().manual_seed(3))[0]; b = cutmix(x, y, torch.Generator().manual_seed(3))[0]
    assert torch.equal(a, b)
    frac = np.mean([(cutmix(x, y, torch.Generator().manual_seed(s), prob=0.5)[0] != x).flatten(1).any(1).float().mean()
                    for s in range(40)])
    assert 0.25 < frac < 0.5        # prob 0.5, minus partners from the same half (no visible change)


def test_class_balanced_weights_and_lr_table():
    w = class_balanced_weights([500, 50, 5])
    assert w[2] > w[1] > w[0] and abs(float(w.sum()) - 3) < 1e-5
    assert default_lr('fgvc_aircraft', 'resnet50', 224) == 0.10 and default_lr('stanford_dogs', 'vit_base_patch16_384', 384) == 1e-5
    assert default_lr('oxford_flowers102', 'resnet50', 448) == 0.05 and default_lr('fashion_mnist', 'resnet50', 224) is None
    assert set(LR_TABLE) == {'cub', 'flowers', 'cars', 'aircraft', 'dogs', 'pets'}


# ---------------------------------------------------------------- manifests

def test_read_manifest_reports_and_skips(split, tmp_path):
    its = split.train_items
    d = write_manifest(tmp_path/'a', split, [(its[0], 3, None), (its[1], 4, None), (its[2], 5, None)],
                       extra_lines=['{"id": "x", "path": "img/missing.png", "target_label": 1}\n', '{"id": "cut', '\n'])
    (d/'img/1.png').write_bytes(b'not an image')                       # unreadable
    with pytest.warns(UserWarning, match='skipped 3 row'):
        rows = read_manifest(d)
    assert [r['id'] for r in rows] == ['r0', 'r2'] and len(rows.skipped) == 3
    assert any('missing' in why for _, why in rows.skipped) and any('unreadable' in why for _, why in rows.skipped)
    assert rows[0]['soft_label'] == {3: 1.0} and Path(rows[0]['file']).is_absolute()
    # truncated PNG: passes the header check, caught by verify='decode'
    raw = (d/'img/2.png').read_bytes(); (d/'img/2.png').write_bytes(raw[:len(raw) // 2])
    with pytest.warns(UserWarning): assert len(read_manifest(d, verify='decode')) == 1
    # several manifests combine; the same one twice is deduplicated
    e = write_manifest(tmp_path/'b', split, [(its[5], 0, None)])
    with pytest.warns(UserWarning, match='duplicate'):
        both = read_manifest([d, e/'manifest.jsonl', e])
    assert len(both) == 3 and len(both.sources) == 3
    with pytest.raises(FileNotFoundError, match='no manifest'): read_manifest(tmp_path/'nowhere')


def test_rows_from_other_splits_are_refused(split, tmp_path):
    test_it, val_it = split.test_items[0], split.val_items[0]
    d = write_manifest(tmp_path/'t', split, [(test_it, 0, None)])
    with pytest.raises(dm_data.TestSplitLeakError, match=test_it.id): SyntheticMixDataset(split, [d])
    d = write_manifest(tmp_path/'v', split, [(val_it, 0, None)])
    with pytest.raises(ValueError, match='val split'): SyntheticMixDataset(split, [d])
    assert len(SyntheticMixDataset(split, [d], allow_foreign_sources=True).rows) == 1
    d = write_manifest(tmp_path/'l', split, [(split.train_items[0], 12, None)])
    with pytest.raises(ValueError, match='outside 0..9'): SyntheticMixDataset(split, [d])


# ---------------------------------------------------------------- mixing modes

def fetches(ds, epochs=20):
    out = []
    for e in range(epochs):
        ds.set_epoch(e); out += [(i, *ds.choose(i)) for i in range(len(ds))]
    return out


def test_uniform_mode_rate_and_soft_labels(split, mixed):
    ds = SyntheticMixDataset(split, [mixed], mode='uniform', p=0.3, seed=1)
    f = fetches(ds)
    rate = sum(k == 'synthetic' for _, k, _ in f) / len(f)
    assert 0.25 < rate < 0.35
    assert len({w for _, k, w in f if k == 'synthetic'}) > 10             # draws spread over the pool
    i, _, j = next(t for t in f[-len(ds):] if t[1] == 'synthetic')
    x, y = ds[i]
    assert x.shape == (3, 32, 32) and torch.equal(y, soft_target(ds.rows[j], 10)) and abs(float(y.sum()) - 1) < 1e-6


def test_same_class_never_mislabels(split, mixed):
    ds = SyntheticMixDataset(split, [mixed], mode='same-class', p=1.0)
    for i, k, w in fetches(ds, 5):
        it = ds.items[i]
        if k == 'synthetic': assert ds.rows[w]['target_label'] == it.label
        else: assert it.label == 9 and w is it            # class 9 has no synthetic rows: the real sample
    for i in range(len(ds)):
        assert int(ds[i][1].argmax()) == ds.items[i].label


def test_own_variants_and_none_and_concat(split, mixed):
    ds = SyntheticMixDataset(split, [mixed], mode='own-variants', p=1.0)
    for i, k, w in fetches(ds, 3):
        if k == 'synthetic': assert ds.rows[w]['source_item'] == ds.items[i].id
        else: assert not ds.by_source.get(ds.items[i].id)
    assert all(k == 'real' for _, k, _ in fetches(SyntheticMixDataset(split, [mixed], mode='none', p=1.0), 2))
    dc = SyntheticMixDataset(split, [mixed], mode='concat')
    assert len(dc) == 50 + 18 and dc.choose(50) == ('synthetic', 0) and dc.choose(49)[0] == 'real'


def test_long_tail_mode_draws_inverse_frequency(split, tmp_path):
    tr = split.train_items
    items = [i for i in tr if i.label == 0] + [i for i in tr if i.label == 1][:1] + [i for i in tr if i.label == 2][:3]
    d = write_manifest(tmp_path, split, [(items[0], 0, None), (items[1], 1, None), (items[2], 2, None), (items[3], 2, None)])
    ds = SyntheticMixDataset(split, [d], mode='long-tail', p=1.0, items=items)
    cls = Counter(ds.rows[w]['target_label'] for _, k, w in fetches(ds, 400) if k == 'synthetic')
    n = sum(cls.values()); expect = np.array([1 / 6, 1 / 2, 1 / 4]); expect /= expect.sum()
    np.testing.assert_allclose([cls[c] / n for c in range(3)], expect, atol=0.03)


def test_determinism_across_workers_and_bad_synthetic_image(split, mixed, tmp_path):
    ds = SyntheticMixDataset(split, [mixed], mode='uniform', p=0.5, seed=3)
    ds.set_epoch(2)
    a = next(iter(torch.utils.data.DataLoader(ds, batch_size=50, num_workers=0)))
    b = next(iter(torch.utils.data.DataLoader(ds, batch_size=50, num_workers=2)))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.set_epoch(3); assert not torch.equal(next(iter(torch.utils.data.DataLoader(ds, batch_size=50)))[0], a[0])
    # an image that breaks after the manifest was read: the real sample with its own label, counted
    g = shutil.copytree(mixed, tmp_path/'g'); rows = read_manifest(g)
    for r in rows: Path(r['file']).write_bytes(Path(r['file']).read_bytes()[:60])
    dz = SyntheticMixDataset(split, rows, mode='uniform', p=1.0)
    with pytest.warns(UserWarning, match='unreadable'):
        ys = [dz[i][1] for i in range(len(dz))]
    assert all(int(y.argmax()) == it.label and float(y.max()) == 1.0 for y, it in zip(ys, dz.items))
    assert sum(dz.failures.values()) == len(dz)


# ---------------------------------------------------------------- backbones

def test_backbone_local_checkpoints(tmp_path):
    m = build_backbone('resnet18', 10)
    save_backbone(m, tmp_path/'folder', 'resnet18')
    torch.save(m.state_dict(), tmp_path/'plain.pth')
    for src in (tmp_path/'folder', tmp_path/'folder'/'model.safetensors', tmp_path/'plain.pth'):
        m2 = build_backbone('resnet18', 10, pretrained=src)
        for (k, v), (_, w) in zip(m.state_dict().items(), m2.state_dict().items()): assert torch.equal(v, w), k
    m5 = build_backbone('resnet18', 5, pretrained=tmp_path/'plain.pth')
    assert torch.equal(m5.conv1.weight, m.conv1.weight) and m5.fc.out_features == 5
    with pytest.raises(ValueError, match=r"do not fit.*missing key"): build_backbone('resnet34', 10, pretrained=tmp_path/'plain.pth')
    # other key names, same layout: match='order'
    torch.save({f'w{i}': v for i, (k, v) in enumerate(m.state_dict().items()) if 'num_batches' not in k}, tmp_path/'renamed.pth')
    with pytest.raises(ValueError, match='unexpected'): build_backbone('resnet18', 10, pretrained=tmp_path/'renamed.pth')
    m3 = build_backbone('resnet18', 10); load_backbone_weights(m3, tmp_path/'renamed.pth', match='order')
    assert torch.equal(m3.layer3[0].conv2.weight, m.layer3[0].conv2.weight)
    with pytest.raises(FileNotFoundError): build_backbone('resnet18', 10, pretrained=tmp_path/'nope.pth')
    c = build_backbone('resnet18', 10, stem='cifar'); assert c(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- training

def test_train_selection_and_results_file(split, tmp_path):
    r = train_classifier(split, cfg=TINY, out_dir=tmp_path/'r', seed=0, progress=False)
    assert r['status'] == 'finished' and r['protocol'] == 'val-selected' and r['split']['test'] == 200
    assert r['split']['hash'] == split.hash and r['split']['test_subset'] and len(r['curves']['val_acc']) == 2
    assert r['test_acc'] is not None and r['test_acc_last'] is not None and r['test_acc_oracle'] is None
    assert r['val_acc'] == max(r['curves']['val_acc'])
    saved = json.loads((tmp_path/'r'/'results.json').read_text())
    assert saved['run_key'] == r['run_key'] and saved['config']['batch_size'] == 10
    assert (tmp_path/'r'/'best.safetensors').exists() and not list((tmp_path/'r').glob('.*tmp')) and not list((tmp_path/'r').glob('*.pt'))
    o = train_classifier(split, cfg={**TINY, 'selection': 'oracle-test'}, seed=0, progress=False)
    assert o['protocol'].startswith('oracle-test') and o['test_acc'] == max(o['curves']['test_acc']) == o['test_acc_oracle']
    assert 'oracle-test' in results_table(o)
    l = train_classifier(split, cfg={**TINY, 'selection': 'last'}, seed=0, progress=False)
    assert l['selected_epoch'] == 1 and l['test_acc'] == l['test_acc_last']


def test_resume_matches_uninterrupted_run(split, tmp_path):
    cfg = dict(epochs=3, batch_size=10, test_limit=100, cutmix=True)
    full = train_classifier(split, cfg=cfg, out_dir=tmp_path/'a', seed=1, progress=False)
    part = train_classifier(split, cfg=cfg, out_dir=tmp_path/'b', seed=1, stop_after=2, progress=False)
    assert part['status'] == 'stopped' and part['epochs_done'] == 2
    res = train_classifier(split, cfg=cfg, out_dir=tmp_path/'b', seed=1, progress=False)
    from safetensors.torch import load_file
    a = load_file(tmp_path/'a'/'last.safetensors'); b = load_file(tmp_path/'b'/'last.safetensors')
    for k in a: torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    np.testing.assert_allclose(full['curves']['train_loss'], res['curves']['train_loss'], rtol=1e-4)
    assert full['test_acc'] == res['test_acc']
    with pytest.raises(RuntimeError, match='another configuration'):
        train_classifier(split, cfg={**cfg, 'lr': 0.01, 'epochs': 4}, out_dir=tmp_path/'b', seed=1, progress=False)


def test_nan_loss_stops_and_keeps_checkpoint(split, tmp_path, monkeypatch):
    calls = {'n': 0}; real = classify.soft_cross_entropy
    def flaky(*a, **k):
        calls['n'] += 1; l = real(*a, **k)
        return l * float('nan') if calls['n'] > 10 else l       # 5 steps per epoch: NaN in epoch 2
    monkeypatch.setattr(classify, 'soft_cross_entropy', flaky)
    with pytest.raises(NonFiniteLossError, match='last good checkpoint') as e:
        train_classifier(split, cfg=dict(epochs=4, batch_size=10, test_limit=100), out_dir=tmp_path, progress=False)
    assert 'epoch 2' in str(e.value)
    assert load_checkpoint(tmp_path/'last.safetensors')['epoch'] == 1
    assert load_checkpoint(tmp_path/'last.safetensors')['optimizer'] is not None   # a run that can go on keeps its optimizer
    assert json.loads((tmp_path/'results.json').read_text())['status'] == 'diverged'


@pytest.mark.parametrize('extra', [dict(loss='cmo'), dict(loss='cmo-drw', recipe='longtail'), dict(loss='drw', cutmix=True, mixup=True),
                                   dict(mixup=True, smoothing='normalized')])
def test_baselines_run(split, mixed, extra):
    r = train_classifier(split, [mixed], cfg={**TINY, 'epochs': 3, **extra}, progress=False)
    assert r['status'] == 'finished' and all(np.isfinite(r['curves']['train_loss']))
    assert r['mode'] == 'uniform' and r['p'] == 0.3 and r['synthetic_rows'] == 18


def test_long_tail_and_group_reports(tmp_path):
    spec = load_dataset_spec('fashion_mnist')
    lt = make_split(spec, imbalance=0.002, val_per_class=3, seed=0)       # 5400 .. 5 per class: too big to train here
    counts = lt.counts()
    assert counts[0] > 20 and min(counts) < 20
    preds = [it.label for it in lt.test_items[:100]]
    rep = accuracy_report(preds, [it.label for it in lt.test_items[:100]], 10, counts, (20, 5), groups=['g'] * 100)
    assert rep['acc'] == 100.0 and rep['groups'] == {'g': 100.0}
    (tmp_path/'g.csv').write_text('id,place\na,land\nb,water\n')
    assert load_groups(tmp_path/'g.csv', 'place') == {'a': 'land', 'b': 'water'}
    with pytest.raises(ValueError, match='needs columns'): load_groups(tmp_path/'g.csv', 'group')


def test_long_tail_training_reports_many_medium_few(split):
    import dataclasses
    from diffmix_nb.data import Split
    keep_n = [5, 5, 4, 3, 2, 1, 1, 1, 1, 1]
    tr = [it for c in range(10) for it in [i for i in split.train_items if i.label == c][:keep_n[c]]]
    f = {k.name: getattr(split, k.name) for k in dataclasses.fields(Split)}
    lt = Split(**{**f, 'items': tr + split.val_items + split.test_items, 'imbalance': 0.2, 'path': None})
    r = train_classifier(lt, cfg={**TINY, 'epochs': 1, 'batch_size': 8, 'shot_thresholds': 'auto', 'loss': 'cmo-drw'}, progress=False)
    t = r['test']                                  # auto: many > 3, medium 1..3, few < 1 (none)
    assert t['many'] is not None and t['medium'] is not None and t['few'] is None and r['split']['train'] == 24


def test_per_group_accuracy_in_training(split):
    groups = {it.id: ('even' if int(it.id.split('-')[1]) % 2 == 0 else 'odd') for it in split.test_items}
    r = train_classifier(split, cfg={**TINY, 'epochs': 1}, groups=groups, progress=False)
    assert set(r['test']['groups']) == {'even', 'odd'} and r['test']['worst_group'] <= r['test_acc'] + 1e-9


def test_run_seeds_table_plot(split, tmp_path):
    res = run_seeds(split, cfg={**TINY, 'epochs': 1}, seeds=(0, 1), out_dir=tmp_path, progress=False)
    s = res['summary']['test_acc']
    assert s['n'] == 2 and abs(s['mean'] - np.mean(s['values'])) < 1e-9 and (tmp_path/'summary.json').exists()
    tab = results_table({'baseline': res})
    assert '| baseline | val-selected | 2 |' in tab and '±' in tab
    fig = plot_curves(res); assert fig.get_size_inches()[0] <= 6


def test_loader_throughput(split, mixed):
    tp = loader_throughput(split, [mixed], mode='uniform', p=0.5, batch_size=10, n_batches=4, train_steps=1, verbose=False)
    assert tp['loader_images_per_s'] > 0 and tp['train_images_per_s'] > 0 and 0.2 < tp['synthetic_fraction'] < 0.8


# ---------------------------------------------------------------- CLI and accelerate

def test_cli(split, mixed, tmp_path, capsys):
    import argparse
    ap = argparse.ArgumentParser(); sub = ap.add_subparsers(dest='cmd'); cli_register(sub)
    a = ap.parse_args(['train', '--split', split.path, '--manifest', str(mixed), '--mode', 'same-class', '--p', '0.4',
                       '--epochs', '1', '--batch-size', '10', '--seeds', '0', '--test-limit', '100', '--loss', 'drw',
                       '--cutmix', '--selection', 'last', '--out', str(tmp_path/'o'), '--json'])
    assert a.func(a) == 0
    out = json.loads(capsys.readouterr().out)
    assert out['mode'] == 'same-class' and out['p'] == 0.4 and out['selection'] == 'last'
    cfg = json.loads((tmp_path/'o'/'seed0'/'results.json').read_text())['config']
    assert cfg['loss'] == 'drw' and cfg['cutmix'] is True and cfg['epochs'] == 1
    assert main(['train', '--split', str(tmp_path/'none.json')]) == 3
    assert main(['train', '--split', split.path, '--manifest', str(tmp_path/'nowhere'), '--seeds', '0']) == 3


def test_accelerate_launch_two_cpu_processes(split, tmp_path):
    "DDP on CPU: `accelerate launch --multi_gpu` (torchrun + gloo; `--cpu` alone would start one process)."
    import socket
    accel = Path(sys.executable).parent/'accelerate'
    if not accel.exists(): pytest.skip('accelerate CLI not installed')
    with socket.socket() as so: so.bind(('127.0.0.1', 0)); port = so.getsockname()[1]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    t = time.time()
    p = subprocess.run([str(accel), 'launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1', '--mixed_precision', 'no',
                        '--dynamo_backend', 'no', '--main_process_port', str(port), '-m', 'diffmix_nb.cli', 'train',
                        '--split', split.path, '--epochs', '2', '--batch-size', '10', '--seeds', '0', '--test-limit', '100',
                        '--out', str(tmp_path/'ddp'), '--json'], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count('"summary"') == 1                    # only the main process prints
    r = json.loads((tmp_path/'ddp'/'seed0'/'results.json').read_text())
    assert r['num_processes'] == 2 and r['status'] == 'finished' and r['split']['test'] == 100
    assert len(r['curves']['val_acc']) == 2 and time.time() - t < 120


def test_checkpoint_resume_is_bit_identical_and_old_format_resumes(split, tmp_path):
    "Checkpoints are safetensors + JSON; resuming gives the same weights bit for bit; an old `last.pt` resumes weights-only; a broken one warns."
    from safetensors.torch import load_file
    cfg = dict(epochs=3, batch_size=10, test_limit=50)
    full = train_classifier(split, cfg=cfg, out_dir=tmp_path/'a', seed=2, progress=False)
    assert sorted(f.name for f in (tmp_path/'a').iterdir()) == ['best.safetensors', 'last.safetensors', 'results.json']
    train_classifier(split, cfg=cfg, out_dir=tmp_path/'b', seed=2, stop_after=1, progress=False)
    assert (tmp_path/'b'/'last.optim.safetensors').exists()
    res = train_classifier(split, cfg=cfg, out_dir=tmp_path/'b', seed=2, progress=False)
    assert not (tmp_path/'b'/'last.optim.safetensors').exists()          # finished: weights only
    a, b = load_file(tmp_path/'a'/'last.safetensors'), load_file(tmp_path/'b'/'last.safetensors')
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert full['curves']['train_loss'] == res['curves']['train_loss'] and full['test_acc'] == res['test_acc']
    # an old-format folder: the same stopped run written as last.pt / best.pt (torch.save of plain tensors and numbers)
    train_classifier(split, cfg=cfg, out_dir=tmp_path/'c', seed=2, stop_after=1, progress=False)
    ck = load_checkpoint(tmp_path/'c'/'last.safetensors'); bk = load_checkpoint(tmp_path/'c'/'best.safetensors')
    torch.save(ck, tmp_path/'c'/'last.pt'); torch.save(bk, tmp_path/'c'/'best.pt')
    for n in ('last.safetensors', 'last.optim.safetensors', 'best.safetensors'): (tmp_path/'c'/n).unlink()
    with pytest.warns(UserWarning, match='old-format'):
        old = train_classifier(split, cfg=cfg, out_dir=tmp_path/'c', seed=2, progress=False)
    c = load_file(tmp_path/'c'/'last.safetensors')
    assert all(torch.equal(a[k], c[k]) for k in a) and old['test_acc'] == full['test_acc']
    assert classify.load_classifier(tmp_path/'c')[2]['run_key'] == full['run_key']
    # a checkpoint that cannot be read: a clear warning, and the run starts again (no crash)
    (tmp_path/'d').mkdir(); (tmp_path/'d'/'last.pt').write_bytes(b'not a checkpoint')
    with pytest.warns(UserWarning, match='cannot resume'):
        again = train_classifier(split, cfg=cfg, out_dir=tmp_path/'d', seed=2, progress=False)
    assert again['test_acc'] == full['test_acc']
