"""Bad input that used to pass silently (nbs/80_bad_input.ipynb lists every case): each is now a clear error naming the
problem and the fix, or a counted, reported skip. Plus: seeded runs repeat bit for bit on CPU."""
import json, os, shutil, warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffmix_nb.core import TINY_SD, save_json, model_fingerprint, normal_permissions, atomic_write
from fixtures import make_fixture
from diffmix_nb.data import (ClassInfo, Item, Split, load_dataset_spec, make_split, LOADERS, OutsideRootError,
                             DuplicateContentError, SplitMismatchError)
from diffmix_nb.cli import main


def _cli(*args) -> int: return main([str(a) for a in args])

@pytest.fixture
def cub(tmp_path):
    "A CUB layout with 3 classes, 4 training and 4 test images each."
    return make_fixture('cub', tmp_path/'cub', n_classes=3, per_class=8)

def _swapped(a: Split, path) -> Split:
    "Split B: the same images as `a`, with class ids 1 and 2 swapped."
    sw = {0: 0, 1: 2, 2: 1}
    names = {c.label: c for c in a.classes}
    classes = [ClassInfo(names[sw[l]].name, l, names[sw[l]].superclass) for l in range(3)]
    b = Split(a.dataset, a.root, classes, [Item(it.id, it.source, sw[it.label], it.split, it.sha1) for it in a.items],
              seed=a.seed, shots=a.shots)
    b.save(path); return Split.load(path)

# 1. a manifest generated from another split whose labels differ
def _generation(split: Split, out: Path) -> Path:
    "A finished generation folder of `split` (a real plan, solid-colour images, the engine's manifest rows)."
    from diffmix_nb import generate as G
    plan = G.make_plan(split, 'real-mix', seed=0, multiplier=1)
    plan.save(out); rows = []
    for t in plan.tasks:
        rel = G.image_relpath(t); (out/rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (16, 16), (t.target_label * 80, 0, 0)).save(out/rel); rows.append(G.manifest_row(t, rel))
    G.Manifest(out/'manifest.jsonl').write(rows)
    return out/'manifest.jsonl'

def test_manifest_from_a_split_with_other_labels(tmp_path, cub):
    from diffmix_nb.classify import SyntheticMixDataset, train_classifier
    from diffmix_nb.data import read_manifest
    a = make_split(load_dataset_spec('cub', cub), shots=2, val_per_class=1); a.save(tmp_path/'a.json'); a = Split.load(tmp_path/'a.json')
    man = _generation(a, tmp_path/'gen')
    b = _swapped(a, tmp_path/'b.json')
    assert read_manifest(man).plans[0]['split_hash'] == a.hash
    with pytest.raises(ValueError, match=r"generated from another split file .* would train the wrong class, e\.g\. row"):
        SyntheticMixDataset(b, [man])
    SyntheticMixDataset(a, [man])                                   # its own split: fine
    res = train_classifier(a, [man], cfg=dict(epochs=1, batch_size=6, test_limit=6), progress=False)
    assert res['manifest_splits'] == [dict(manifest=str(man), split_hash=a.hash)]
    assert res['determinism']['deterministic'] is True
    c = Split.load(tmp_path/'a.json'); c.seed = 5; c.save(tmp_path/'c.json')   # another split file, same labels: accepted
    SyntheticMixDataset(Split.load(tmp_path/'c.json'), [man])

# 2. concepts learned on base model Y used with another base model X
def _fake_concepts(folder: Path, split: Split, base_model) -> Path:
    from safetensors.torch import save_file
    from diffmix_nb.concepts import CONCEPTS_FORMAT
    classes = []
    for c in split.classes:
        rel = f'learned_embeds/c{c.label}.safetensors'; (folder/'learned_embeds').mkdir(parents=True, exist_ok=True)
        save_file({f'<class_{c.label}>': torch.zeros(1, 32)}, folder/rel)
        classes.append(dict(name=c.name, label=c.label, superclass=c.superclass, token=f'<class_{c.label}>',
                            tokens=[f'<class_{c.label}>'], embedding=rel))
    save_json(dict(format=CONCEPTS_FORMAT, base_model=str(base_model), base_model_fingerprint=model_fingerprint(base_model),
                   mode='ti', classes=classes, lora=None), folder/'concepts.json')
    return folder

def test_concepts_with_another_base_model(tmp_path, cub):
    from diffmix_nb import generate as G
    from diffmix_nb.concepts import ConceptsError
    split = make_split(load_dataset_spec('cub', cub), shots=2, val_per_class=1); split.save(tmp_path/'s.json')
    y = Path(shutil.copytree(TINY_SD, tmp_path/'model-y'))
    x = Path(shutil.copytree(TINY_SD, tmp_path/'model-x'))
    cfg = json.loads((x/'unet'/'config.json').read_text()); cfg['sample_size'] = cfg.get('sample_size', 4) + 1
    (x/'unet'/'config.json').write_text(json.dumps(cfg))                 # another model
    cdir = _fake_concepts(tmp_path/'concepts', split, y)
    with pytest.raises(ConceptsError, match='--allow-other-base-model'): G.make_plan(split, 'diff-mix', concepts=cdir, base_model=x)
    moved = shutil.move(str(y), tmp_path/'moved'/'y-renamed')             # the same model, moved: accepted
    G.make_plan(split, 'diff-mix', concepts=cdir, base_model=moved)
    with pytest.warns(UserWarning, match='allowed by the caller'):
        G.make_plan(split, 'diff-mix', concepts=cdir, base_model=x, allow_other_base_model=True)
    assert _cli('generate', '--split', tmp_path/'s.json', '--method', 'diff-mix', '--concepts', cdir, '--base-model', x,
                '--out', tmp_path/'g', '--plan-only') == 3                    # bad input: exit 3 (the CLI convention)
    assert not (tmp_path/'g'/'plan.json').exists()

# 3. a symlinked (or copied) class folder; a flat folder without test items
def test_symlinked_or_copied_class_folder(tmp_path):
    root = make_fixture('folder', tmp_path/'f', n_classes=2, per_class=3)
    (root/'linked').symlink_to(root/'apple', target_is_directory=True)
    with pytest.raises(DuplicateContentError, match=r"linked is a symbolic link to the class folder .*apple"):
        load_dataset_spec('folder', root)
    (root/'linked').unlink(); shutil.copytree(root/'apple', root/'copied')
    with pytest.raises(DuplicateContentError, match=r"identical bytes: .*'apple'.*'copied'|identical bytes: .*'copied'.*'apple'"):
        make_split(load_dataset_spec('folder', root), shots=1, val_per_class=1)
    shutil.rmtree(root/'copied')
    with pytest.warns(UserWarning, match='0 test items'):
        assert _cli('data', 'split', '--dataset', 'folder', '--root', root, '--shots', 1, '--val-per-class', 1, '--out', tmp_path/'s.json') == 0
    assert any('no test items' in n for n in json.loads((tmp_path/'s.json').read_text())['notes'])

# 4. paths that escape the dataset root
def test_paths_outside_the_root(tmp_path, cub, capsys):
    (tmp_path/'outside.jpg').write_bytes((next((cub/'CUB_200_2011'/'images').rglob('*.jpg'))).read_bytes())
    f = cub/'CUB_200_2011'/'images.txt'; lines = f.read_text().splitlines()
    lines[-1] = lines[-1].split()[0] + ' ../../../outside.jpg'; f.write_text('\n'.join(lines) + '\n')
    with pytest.raises(OutsideRootError, match=r"outside the dataset root .*\.\./\.\./\.\./outside\.jpg"): load_dataset_spec('cub', cub)
    with pytest.raises(OutsideRootError): make_split(LOADERS['cub'](cub), shots=1, val_per_class=1, check=True)   # a loader called directly
    assert _cli('data', 'split', '--dataset', 'cub', '--root', cub, '--shots', 1, '--out', tmp_path/'s.json') == 3   # bad input
    assert 'outside the dataset root' in capsys.readouterr().err and not (tmp_path/'s.json').exists()

# 5. split options with silent semantics
def test_split_options(tmp_path, cub, capsys):
    for v in (-2, 0):
        assert _cli('data', 'split', '--dataset', 'cub', '--root', cub, '--shots', 1, '--val-per-class', v, '--out', tmp_path/'x.json') == 3
        assert f'val_per_class={v}' in capsys.readouterr().err
    assert _cli('data', 'summary', '--dataset', 'cub', '--root', cub, '--val-per-class', 100, '--out', tmp_path/'full.json') == 0
    out = capsys.readouterr().out
    assert 'validation capped in 3 class(es)' in out and '4 images -> 3 val instead of 100' in out
    assert _cli('data', 'split', '--dataset', 'cub', '--root', cub, '--shots', 10, '--allow-fewer', '--out', tmp_path/'few.json') == 0
    assert 'training images come first' in capsys.readouterr().out
    few = Split.load(tmp_path/'few.json'); assert few.counts() == [4, 4, 4] and few.counts('val') == [0, 0, 0]

def test_split_hash_covers_seed_shots_and_options(tmp_path, cub):
    s = make_split(load_dataset_spec('cub', cub), shots=1, val_per_class=1); s.save(tmp_path/'s.json')
    for key, value in (('seed', 7), ('shots', 2), ('imbalance', 0.5), ('loader_kwargs', {'x': 1})):
        d = json.loads((tmp_path/'s.json').read_text()); d[key] = value; (tmp_path/'e.json').write_text(json.dumps(d))
        with pytest.raises(SplitMismatchError, match='was edited'): Split.load(tmp_path/'e.json')
    old = Split(**{**s.__dict__, 'hash_version': 1, 'path': None}); old.save(tmp_path/'old.json')
    with pytest.warns(UserWarning, match='older diffmix_nb'): assert Split.load(tmp_path/'old.json').hash == old.hash
    old.save(tmp_path/'keep.json'); before = (tmp_path/'keep.json').read_bytes()      # `data split` again over an older file of
    with pytest.warns(UserWarning, match='kept as it is'):                               # the same content keeps it: stages that
        assert _cli('data', 'split', '--dataset', 'cub', '--root', cub, '--shots', 1, '--val-per-class', 1,   # used it still match
                    '--out', tmp_path/'keep.json') == 0
    assert (tmp_path/'keep.json').read_bytes() == before

# also: skipped rows by kind, resume messages, permissions, weights-only resume
def test_skipped_rows_are_counted_by_kind(tmp_path, cub):
    from diffmix_nb.data import read_manifest
    a = make_split(load_dataset_spec('cub', cub), shots=2, val_per_class=1)
    man = _generation(a, tmp_path/'gen'); lines = man.read_text().splitlines()
    gone = json.loads(lines[0])['path']; (man.parent/gone).unlink()
    man.write_text('\n'.join(lines + ['{broken', json.dumps({'id': 'x'})]) + '\n')
    with pytest.warns(UserWarning, match=r"skipped 3 row\(s\) \(2 unparseable, 1 missing/unreadable image, 0 duplicate\)"):
        rows = read_manifest(man)
    assert len(rows) == len(lines) - 1

def test_classifier_says_it_resumes(tmp_path, cub, capsys):
    from diffmix_nb.classify import train_classifier
    s = make_split(load_dataset_spec('cub', cub), shots=2, val_per_class=1)
    cfg = dict(epochs=2, batch_size=6, test_limit=6)
    train_classifier(s, cfg=cfg, out_dir=tmp_path/'r', stop_after=1, progress=False)
    train_classifier(s, cfg=cfg, out_dir=tmp_path/'r', progress=False)
    assert 'resuming from epoch 1 of 2' in capsys.readouterr().err

def test_result_files_are_group_readable(tmp_path):
    from safetensors.torch import save_file
    old = os.umask(0o027)
    try:
        save_file({'w': torch.ones(2)}, tmp_path/'w.safetensors'); os.chmod(tmp_path/'w.safetensors', 0o600)
        normal_permissions(tmp_path)
        with atomic_write(tmp_path/'ck.pt') as f: torch.save({'a': 1}, f)
        assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o640)}
    finally: os.umask(old)

def test_tiny_pretraining_resumes_weights_only(tmp_path):
    from diffmix_nb.tiny import _train_loop
    def run(work, model, crash_at=None):
        def loss(step, g):
            if step == crash_at: raise KeyboardInterrupt('killed')
            return model(torch.randn(4, 2, generator=g)).pow(2).mean()
        return _train_loop('lin', model, loss, steps=4, lr=1e-2, seed=0, work_dir=work, checkpoint_every=1, warmup=1,
                           progress=False, ema_decay=0.9)
    torch.manual_seed(0); m = torch.nn.Linear(2, 1)
    with pytest.raises(KeyboardInterrupt): run(tmp_path/'a', m, crash_at=2)
    torch.manual_seed(1); m2, _ = run(tmp_path/'a', torch.nn.Linear(2, 1))      # resumes from the step-2 checkpoint
    torch.manual_seed(0); m3, _ = run(tmp_path/'b', torch.nn.Linear(2, 1))
    assert all(torch.equal(p, q) for p, q in zip(m2.state_dict().values(), m3.state_dict().values()))

# same command, same numbers
def _pipeline(split_path, out: Path) -> dict:
    from diffmix_nb.concepts import learn_concepts
    from diffmix_nb.generate import generate
    from diffmix_nb.classify import train_classifier
    cdir = learn_concepts(split_path, out/'concepts', steps=12, batch_size=8, checkpoint_every=6, progress=False, device='cpu')
    man = generate(out/'gen', split_path, 'diff-mix', concepts=cdir, multiplier=1, num_inference_steps=4, batch_size=8,
                   device='cpu', progress=False)
    return train_classifier(split_path, [man], cfg=dict(epochs=2, batch_size=10), seed=0, progress=False)

def test_seeded_pipeline_repeats_bit_for_bit(tmp_path):
    "fine-tune -> generate -> train twice with 2 threads: identical LoRA, token and image files, identical accuracy."
    root = make_fixture('fashion_mnist', tmp_path/'fm', per_class=6)
    s = make_split(load_dataset_spec('fashion_mnist', root), shots=2, val_per_class=1); s.save(tmp_path/'s.json')
    threads = torch.get_num_threads(); torch.set_num_threads(2)
    try: r1, r2 = _pipeline(tmp_path/'s.json', tmp_path/'run1'), _pipeline(tmp_path/'s.json', tmp_path/'run2')
    finally: torch.set_num_threads(threads)
    files = lambda d: {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob('*'))
                       if p.is_file() and p.suffix in ('.safetensors', '.png', '.jsonl')}
    f1, f2 = files(tmp_path/'run1'), files(tmp_path/'run2')
    assert f1.keys() == f2.keys() and any(k.endswith('pytorch_lora_weights.safetensors') for k in f1)
    assert [k for k in f1 if f1[k] != f2[k]] == []
    assert (r1['test_acc'], r1['curves']['train_loss']) == (r2['test_acc'], r2['curves']['train_loss'])
