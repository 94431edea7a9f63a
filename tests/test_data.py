"""The data stage: every official layout (through `make_fixture`), bad input of every kind, and `diffmix data`."""
import argparse, json, pickle, re, shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffmix_nb import data as D
from diffmix_nb.core import safe_name
from fixtures import FIXTURE_LAYOUTS, make_fixture, _mat_struct
from diffmix_nb.data import (SPLITS, BadImageError, ClassInfo, Split, SplitMismatchError, check_images, cli_register,
                             default_split_path, load_dataset_spec, make_split)

# (number of classes, class 1's name, superclass) of each fixture written with 3 classes
EXPECTED = {
    'cub': (3, 'Laysan Albatross', 'bird'), 'aircraft': (3, 'F-16A/B', 'aircraft'), 'flowers': (3, 'hard-leaved pocket orchid', 'flower'),
    'cars': (3, 'Ram C/V Cargo Van Minivan 2012', 'car'), 'dogs': (3, 'Japanese spaniel', 'dog'),
    'pets': (3, 'american bulldog', 'animal'), 'folder': (3, 'crème brûlée', 'object'), 'folder_split': (3, 'crème brûlée', 'object'),
    'hf': (3, 'crème brûlée', 'object'), 'fashion_mnist': (10, 'Trouser', 'top'),
}
SPLIT_SIZES = {'cub': [6, 0, 6], 'aircraft': [6, 3, 3], 'flowers': [6, 3, 3], 'cars': [6, 0, 6], 'dogs': [6, 0, 6], 'pets': [6, 0, 6],
               'folder': [12, 0, 0], 'folder_split': [6, 3, 3], 'hf': [6, 0, 6], 'fashion_mnist': [40, 0, 20]}

def _parser():
    p = argparse.ArgumentParser(prog='diffmix'); cli_register(p.add_subparsers(dest='command')); return p

def _cli(*argv) -> int:
    "Run `diffmix data ...` through the real entry point and return its exit status (3 = bad input)."
    from diffmix_nb.cli import main
    return main(['data', *map(str, argv)])

@pytest.fixture(scope='module')
def fx(tmp_path_factory):
    "Every layout written once (read-only for the tests that share it)."
    root = tmp_path_factory.mktemp('fixtures')
    return {lay: make_fixture(lay, root/lay) for lay in FIXTURE_LAYOUTS}

# --- layouts ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('layout', list(FIXTURE_LAYOUTS))
def test_layout_reads_and_splits(fx, layout, tmp_path):
    spec = load_dataset_spec(FIXTURE_LAYOUTS[layout], fx[layout])
    n, name1, sup = EXPECTED[layout]
    assert (spec.num_classes, spec.classes[1].name, spec.classes[0].superclass) == (n, name1, sup)
    assert [c.label for c in spec.classes] == list(range(n))
    assert [sum(spec.counts(s).values()) for s in SPLITS] == SPLIT_SIZES[layout]
    assert len({it.id for it in spec.items}) == len(spec.items)
    for it in spec.items[:5]:
        if ':' not in it.source: assert (Path(spec.root)/it.source).is_file() and not Path(it.source).is_absolute()
        assert D.source_image(it.source, spec.root, spec.loader_kwargs).mode == 'RGB'
    sp = make_split(spec, shots=1, check=True)
    assert sp.counts() == [1] * n and sp.skipped == spec.skipped and not {i.id for i in sp.train_items} & {i.id for i in sp.val_items}
    f = sp.save(tmp_path/'s.json'); back = Split.load(f, verify=True)
    assert back.hash == sp.hash and back.classes == sp.classes and back.loader_kwargs == sp.loader_kwargs

def test_fixture_images_encode_the_label(fx):
    "Images of one class share a hue: a loader that shifted labels would mix them."
    spec = load_dataset_spec('dogs', fx['dogs'])
    means = {}
    for it in spec.items: means.setdefault(it.label, []).append(np.asarray(D.source_image(it.source, spec.root)).mean((0, 1)))
    spread = max(np.ptp(np.array(v), 0).max() for v in means.values())
    centres = [np.mean(v, 0) for v in means.values()]
    assert min(np.abs(a - b).max() for i, a in enumerate(centres) for b in centres[i + 1:]) > spread

def test_cub_root_can_be_the_archive_folder(fx):
    a, b = load_dataset_spec('cub', fx['cub']), load_dataset_spec('cub', fx['cub']/'CUB_200_2011')
    assert [i.source for i in a.items] == ['CUB_200_2011/' + i.source for i in b.items]
    assert D.cub_class_name('001.Black_footed_Albatross') == 'Black footed Albatross'

def test_aircraft_merge_val(fx):
    spec = load_dataset_spec('aircraft', fx['aircraft'], merge_val=True)
    assert [sum(spec.counts(s).values()) for s in SPLITS] == [9, 0, 3] and spec.loader_kwargs == {'merge_val': True}
    sp = make_split(spec, shots=1, val_per_class=1)          # validation now drawn from the merged pool
    assert sp.counts('val') == [1, 1, 1]

def test_pets_species_superclass_and_stray_files(fx):
    spec = load_dataset_spec('pets', fx['pets'], superclass='species')
    assert [c.superclass for c in spec.classes] == ['cat', 'dog', 'dog']
    assert all(not it.source.endswith('.mat') for it in spec.items)          # unlisted files in images/ are ignored
    with pytest.raises(ValueError, match='superclass'): load_dataset_spec('pets', fx['pets'], superclass='mammal')

def test_flowers_names_and_fallback(fx):
    assert load_dataset_spec('flowers', fx['flowers']).classes[0].name == 'pink primrose'
    assert load_dataset_spec('flowers', fx['flowers'], class_names=False).classes[2].name == 'flower_3'
    assert len(D.FLOWERS102_CLASSES) == 102 and len(set(D.FLOWERS102_CLASSES)) == 102

def test_folder_report_and_split_layout(fx):
    spec = load_dataset_spec('folder', fx['folder'])
    assert spec.skipped == [{'source': 'README.txt', 'reason': 'not inside a class folder'}]
    assert all(re.fullmatch(r'[a-z0-9-]+', it.id) for it in spec.items)   # ids are file-name safe
    assert load_dataset_spec('folder', fx['folder_split'], layout='flat').classes[0].name == 'test'   # forced flat: split dirs are classes

def test_hf_imagefolder_string_labels_and_split_names(fx, tmp_path):
    spec = load_dataset_spec('hf', 'imagefolder', data_dir=str(fx['folder_split']), cache_dir=str(tmp_path/'cache'))
    assert [c.name for c in spec.classes] == ['apple', 'crème brûlée', 'sea_urchin x..y']
    assert [sum(spec.counts(s).values()) for s in SPLITS] == [6, 3, 3]
    datasets = pytest.importorskip('datasets')
    ds = datasets.DatasetDict({'holdout': datasets.Dataset.from_dict(
        {'img': [Image.new('RGB', (8, 8), (i * 80, 0, 0)) for i in range(3)], 'y': ['b', 'a', 'b']},
        features=datasets.Features({'img': datasets.Image(), 'y': datasets.Value('string')}))})
    ds.save_to_disk(str(tmp_path/'strs'))
    with pytest.raises(ValueError, match='holdout'): load_dataset_spec('hf', tmp_path/'strs', image_column='img', label_column='y')
    with pytest.raises(ValueError, match="no column 'image'"): load_dataset_spec('hf', tmp_path/'strs', splits={'holdout': 'train'})
    s2 = load_dataset_spec('hf', tmp_path/'strs', image_column='img', label_column='y', splits={'holdout': 'train'})
    assert [c.name for c in s2.classes] == ['a', 'b'] and [it.label for it in s2.items] == [1, 0, 1]

def test_hf_split_reopens_in_a_fresh_process_state(fx, tmp_path):
    spec = load_dataset_spec('hf', fx['hf'])
    f = make_split(spec, shots=1).save(tmp_path/'hf.json')
    D._SOURCE_CONTEXTS.clear(); D._hf_datasets.cache_clear(); D._hf_image_view.cache_clear()
    sp = pickle.loads(pickle.dumps(Split.load(f)))       # as a DataLoader worker would get it
    D._SOURCE_CONTEXTS.clear()
    assert sp.load_image(sp.train_items[0]).size == (32, 32)
    assert json.loads(Path(f).read_text())['loader_kwargs']['from_disk'] is True

def test_unknown_names():
    with pytest.raises(KeyError, match='Unknown dataset'): load_dataset_spec('imagenet', '.')
    with pytest.raises(KeyError, match='Unknown fixture'): make_fixture('imagenet', '/tmp/never')

# --- bad input ----------------------------------------------------------------------------------------------------

def test_odd_image_modes_through_a_loader(tmp_path):
    root = make_fixture('folder', tmp_path/'f', n_classes=2, per_class=6)
    spec = load_dataset_spec('folder', root)
    p = Image.new('P', (16, 16)); p.info['transparency'] = 0
    odd = [(Image.new('L', (16, 16), 128), 'JPEG'), (Image.new('CMYK', (16, 16), (0, 255, 0, 0)), 'JPEG'),
           (Image.new('RGBA', (16, 16), (0, 0, 255, 0)), 'PNG'), (Image.fromarray(np.full((16, 16), 40000, np.uint16)), 'PNG'),
           (Image.new('LA', (16, 16), (50, 255)), 'PNG'), (p, 'PNG')]
    for it, (im, fmt) in zip(spec.items, odd): im.save(root/it.source, format=fmt)   # e.g. a PNG named .jpg, as in Pets
    sp = make_split(spec, shots=1, check=True)
    assert sp.skipped == [{'source': 'README.txt', 'reason': 'not inside a class folder'}]
    imgs = [sp.load_image(it) for it in sp.items]
    assert {im.mode for im in imgs} == {'RGB'} and len(imgs) == 12
    got = {it.id: D.source_image(it.source, spec.root).getpixel((0, 0)) for it in spec.items[:6]}
    assert got[spec.items[0].id] == (128, 128, 128) and got[spec.items[2].id] == (255, 255, 255)   # transparent -> white
    assert got[spec.items[3].id] == (156, 156, 156)                                                   # 16-bit scaled to 8-bit

def test_corrupt_and_missing_files_policy(tmp_path):
    root = make_fixture('cub', tmp_path/'cub', n_classes=2, per_class=8)
    spec = load_dataset_spec('cub', root)
    trunc, gone, junk = spec.items[0], spec.items[1], spec.items[2]
    (root/trunc.source).write_bytes((root/trunc.source).read_bytes()[:120])
    (root/gone.source).unlink()
    (root/junk.source).write_bytes(b'<html>404 not found</html>')
    # check=True: left out, reported with the file's name and why
    sp = make_split(spec, shots=1, check=True)
    rep = {r['id']: r for r in sp.skipped}
    assert set(rep) == {trunc.id, gone.id, junk.id} and 'not found' in rep[gone.id]['reason']
    assert all(r['source'] in r['reason'] for r in rep.values())
    assert not set(rep) & {it.id for it in sp.items}
    f = sp.save(tmp_path/'s.json'); assert len(Split.load(f).skipped) == 3
    # check_images alone reports the same
    good, bad = check_images(spec); assert {b['id'] for b in bad} == set(rep) and len(good) == len(spec.items) - 3
    # no check: the missing file fails the split, a corrupt one fails its first read; both name the file
    with pytest.raises(BadImageError, match=re.escape(gone.source)): make_split(spec, shots=1)
    shutil.copy(root/spec.items[3].source, root/gone.source)
    nocheck = make_split(spec, shots=3, val_per_class=1)
    assert trunc.id in {it.id for it in nocheck.items}
    with pytest.raises(BadImageError, match=re.escape(trunc.source)): nocheck.load_image(trunc.id)

def test_empty_class_folder_is_an_error(tmp_path):
    root = make_fixture('folder', tmp_path/'f')
    (root/'empty one').mkdir(); (root/'empty one'/'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='empty one'): load_dataset_spec('folder', root)
    assert _cli('summary', '--dataset', 'folder', '--root', root, '--out', tmp_path/'s.json') == 3

def test_missing_and_malformed_layouts(tmp_path, fx):
    with pytest.raises(FileNotFoundError, match='CUB_200_2011'): load_dataset_spec('cub', tmp_path)
    with pytest.raises(ValueError, match='needs --root'): load_dataset_spec('cars', None)
    with pytest.raises(FileNotFoundError, match='does not exist'): load_dataset_spec('dogs', tmp_path/'nope')
    cub = shutil.copytree(fx['cub'], tmp_path/'cub')
    lab = cub/'CUB_200_2011'/'image_class_labels.txt'
    lines = lab.read_text().splitlines(); lines[0] = '1 9'; lab.write_text('\n'.join(lines) + '\n')
    with pytest.raises(ValueError, match='image_class_labels.txt'): load_dataset_spec('cub', cub)
    air = shutil.copytree(fx['aircraft'], tmp_path/'air')
    tr = air/'fgvc-aircraft-2013b/data/images_variant_train.txt'
    tr.write_text(tr.read_text() + '1234567 Concorde\n')
    with pytest.raises(ValueError, match=r"images_variant_train.txt:\d+: variant 'Concorde'"): load_dataset_spec('aircraft', air)
    pets = shutil.copytree(fx['pets'], tmp_path/'pets')
    (pets/'annotations/test.txt').write_text('Abyssinian_2 1 1\n')
    with pytest.raises(ValueError, match=r'test.txt:1: expected 4 fields'): load_dataset_spec('pets', pets)
    cars = shutil.copytree(fx['cars'], tmp_path/'cars')
    from scipy.io import savemat
    savemat(cars/'cars_test_annos_withlabels.mat', {'annotations': _mat_struct([dict(bbox_x1=1, fname='00001.jpg')])})
    with pytest.raises(ValueError, match='withlabels'): load_dataset_spec('cars', cars)

def test_k_larger_than_a_class(fx):
    spec = load_dataset_spec('cub', fx['cub'])
    with pytest.raises(ValueError, match=r"class 'Black footed Albatross' \(label 0\) has only 2 images .* fewer than shots=3"):
        make_split(spec, shots=3)
    sp = make_split(spec, shots=2)          # the default validation size shrinks to what is left (here nothing), with a note
    assert sp.counts() == [2, 2, 2] and sp.counts('val') == [0, 0, 0] and 'validation capped' in sp.notes[0]
    with pytest.raises(ValueError, match=r"fewer than shots=2 \+ 1 validation"): make_split(spec, shots=2, val_per_class=1)
    sp = make_split(spec, shots=3, val_per_class=1, allow_fewer=True)   # training first: the class is kept whole
    assert sp.counts() == [2, 2, 2] and sp.counts('val') == [0, 0, 0] and 'training images come first' in sp.notes[0]
    assert _cli('split', '--dataset', 'cub', '--root', fx['cub'], '--shots', 5, '--out', '/tmp/never-written.json') == 3
    assert not Path('/tmp/never-written.json').exists()

def test_awkward_class_names_never_become_paths(tmp_path, fx):
    air = shutil.copytree(fx['aircraft'], tmp_path/'air')
    v = air/'fgvc-aircraft-2013b/data/variants.txt'; old = v.read_text().splitlines()[2]
    for f in air.glob('fgvc-aircraft-2013b/data/*.txt'): f.write_text(f.read_text().replace(old, '../../etc/passwd x..y'))
    spec = load_dataset_spec('aircraft', air)
    names = [c.name for c in spec.classes] + [c.name for c in load_dataset_spec('folder', fx['folder']).classes] + ['Ünïcödé 猫', '..', '_']
    assert '../../etc/passwd x..y' in names and 'F-16A/B' in names
    assert all(it.source.startswith('fgvc-aircraft-2013b/data/images/') and '..' not in it.source for it in spec.items)
    for n in names:
        s = safe_name(n)
        assert re.fullmatch(r'[a-z0-9-]+', s) and s not in ('.', '..') and Path(s).name == s
    assert len({safe_name(n) for n in names}) == len(set(names))
    sp = make_split(spec, shots=1); f = sp.save(tmp_path/'s.json')
    assert Split.load(f).classes[2].name == '../../etc/passwd x..y'                        # the name survives verbatim
    p = default_split_path('../evil/../name', shots=1); assert p.parent == Path('data/splits') and '/' not in p.name

def test_split_file_no_longer_matches_the_data(tmp_path):
    root = make_fixture('flowers', tmp_path/'flowers')
    spec = load_dataset_spec('flowers', root)
    sp = make_split(spec, shots=1); f = sp.save(tmp_path/'s.json')
    assert Split.load(f, verify=True).hash == sp.hash
    it = sp.train_items[0]
    Image.new('RGB', (32, 32), (0, 0, 0)).save(root/it.source, format='JPEG')      # someone replaced the image
    with pytest.raises(SplitMismatchError, match='hash mismatch'): Split.load(f, verify=True)
    with pytest.raises(SplitMismatchError, match=re.escape(it.source)): Split.load(f).load_image(it.id)
    (root/it.source).unlink()
    with pytest.raises(BadImageError, match='file not found'): Split.load(f).load_image(it.id)
    # the split file itself edited by hand
    d = json.loads(Path(f).read_text()); d['items'][0]['label'] = 1 - d['items'][0]['label']; Path(f).write_text(json.dumps(d))
    with pytest.raises(SplitMismatchError, match='edited'): Split.load(f)

def test_moved_dataset_reads_with_root_override(tmp_path):
    root = make_fixture('dogs', tmp_path/'dogs')
    sp = make_split(load_dataset_spec('dogs', root), shots=1); f = sp.save(tmp_path/'s.json')
    moved = root.rename(tmp_path/'elsewhere')
    with pytest.raises(BadImageError, match='file not found'): Split.load(f).load_image(sp.train_items[0])
    assert Split.load(f, verify=True, root=moved).load_image(sp.train_items[0]).size == (32, 32)

# --- CLI ----------------------------------------------------------------------------------------------------------

def test_cli_summary_text_and_json(fx, tmp_path, capsys):
    out = tmp_path/'cars.json'
    assert _cli('summary', '--dataset', 'cars', '--root', fx['cars'], '--shots', 1, '--seed', 3, '--out', out) == 0
    txt = capsys.readouterr().out
    sp = Split.load(out, verify=True)
    assert 'Ram C/V Cargo Van Minivan 2012' in txt and sp.hash in txt and str(out) in txt and '1-shot, seed 3' in txt
    assert re.search(r'train 3 \| val 3 \| test 6', txt)
    assert _cli('summary', '--dataset', 'cars', '--root', fx['cars'], '--shots', 1, '--seed', 3, '--out', out, '--json') == 0
    r = json.loads(capsys.readouterr().out)
    assert r['hash'] == sp.hash and r['sizes'] == {'train': 3, 'val': 3, 'test': 6} and r['pool']['test'] == 6
    assert r['classes'][1] == {'label': 1, 'name': 'Ram C/V Cargo Van Minivan 2012', 'superclass': 'car', 'train': 1, 'val': 1, 'test': 2}

def test_cli_summary_only_reads(fx, tmp_path, monkeypatch, capsys):
    "A summary writes nothing without --out: two datasets (one folder name, two roots) summarise side by side in one cwd."
    a = make_fixture('folder', tmp_path/'a'/'imgs', n_classes=2, per_class=6)
    b = make_fixture('folder', tmp_path/'b'/'imgs', n_classes=3, per_class=6)   # same default split path as `a`, other content
    cwd = tmp_path/'cwd'; cwd.mkdir(); monkeypatch.chdir(cwd)
    tree = lambda: sorted((str(q), q.stat().st_size, q.stat().st_mtime_ns) for q in tmp_path.rglob('*'))
    before = tree()
    for _ in range(2):
        for root in (a, b, fx['cars']):
            ds = 'cars' if root == fx['cars'] else 'folder'
            assert _cli('summary', '--dataset', ds, '--root', root, '--shots', 1, '--val-per-class', 1) == 0, capsys.readouterr().err
            assert 'not written' in capsys.readouterr().out
    assert tree() == before and not Path('data').exists()
    assert _cli('summary', '--dataset', 'folder', '--root', b, '--shots', 1, '--val-per-class', 1, '--out', 's.json', '--json') == 0
    assert Split.load('s.json').num_classes == 3 and json.loads(capsys.readouterr().out)['path'] == 's.json'   # --out writes

def test_cli_split_default_path_options_and_overwrite_guard(fx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _cli('split', '--dataset', 'aircraft', '--root', fx['aircraft'], '--shots', 1) == 0
    p = Path('data/splits/aircraft-1shot-seed0.json'); assert p.exists()
    assert f"hash {Split.load(p).hash}" in capsys.readouterr().out
    assert _cli('split', '--dataset', 'aircraft', '--root', fx['aircraft'], '--shots', 1) == 0      # same content: fine
    # loader options go in with --option and change the default file name
    assert _cli('split', '--dataset', 'aircraft', '--root', fx['aircraft'], '--shots', 1, '--option', 'merge_val=true', '--json') == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r['sizes']['val'] == 6 and Split.load(r['path']).loader_kwargs == {'merge_val': True} and r['path'] != str(p)
    # a different split over an existing file is refused unless --force
    assert _cli('split', '--dataset', 'aircraft', '--root', fx['aircraft'], '--shots', 2, '--out', p) == 3
    assert 'exists with different content' in capsys.readouterr().err
    assert _cli('split', '--dataset', 'aircraft', '--root', fx['aircraft'], '--shots', 2, '--out', p, '--force') == 0
    assert Split.load(p).shots == 2
    # long-tail and full default names
    assert _cli('split', '--dataset', 'fashion_mnist', '--root', fx['fashion_mnist'], '--imbalance', 100) == 0
    assert Path('data/splits/fashion_mnist-lt0.01-seed0.json').exists()
    assert _cli('split', '--dataset', 'folder', '--root', fx['folder'], '--val-per-class', 1, '--no-check') == 0
    assert len(list(Path('data/splits').glob('folder-folder-*-full-val1-seed0.json'))) == 1

def test_cli_preset_default_dataset_and_errors(fx, tmp_path, capsys):
    args = _parser().parse_args(['data', 'split', '--root', str(fx['fashion_mnist']), '--shots', '1', '--out', str(tmp_path/'t.json')])
    assert args.func(args) == 0 and Split.load(tmp_path/'t.json').dataset == 'fashion_mnist'     # tiny preset's dataset
    assert _cli('summary', '--dataset', 'nope', '--root', tmp_path) == 3
    assert "Unknown dataset 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit): _parser().parse_args(['data', 'split', '--shots', '1', '--imbalance', '0.1'])
    with pytest.raises(SystemExit): _parser().parse_args(['data', 'split', '--option', 'novalue'])

def test_cli_through_the_diffmix_entry_point(fx, tmp_path, capsys, monkeypatch):
    cli = pytest.importorskip('diffmix_nb.cli')
    monkeypatch.setattr(cli, 'STAGE_MODULES', ['data'])        # only this stage: the others are tested on their own
    assert cli.main(['data', 'summary', '--dataset', 'hf', '--root', str(fx['hf']), '--shots', '1', '--out', str(tmp_path/'h.json')]) == 0
    assert 'T-shirt/top' in capsys.readouterr().out
