"""Fixture writers for the tests and the data notebook: a tiny synthetic copy of every official dataset layout.

Test code, not part of the installed library. Each writer reproduces its layout's file names, tables and `.mat` field
structure at a small scale, with class names as awkward as the real ones, so the loaders read them exactly as they
would read the real archives.
"""
from __future__ import annotations
import gzip, struct
from pathlib import Path

import numpy as np
from PIL import Image
from collections import Counter

from diffmix_nb.data import SPLITS

_FX_NAMES = {
    'cub': ['001.Black_footed_Albatross', '002.Laysan_Albatross', '003.Sooty_Albatross', '004.Groove_billed_Ani', '005.Crested_Auklet'],
    'aircraft': ['707-320', 'F-16A/B', 'Falcon 2000', 'DC-3', 'F/A-18'],
    'cars': ['AM General Hummer SUV 2000', 'Ram C/V Cargo Van Minivan 2012', 'Acura RL Sedan 2012', 'Audi S4 Sedan 2012'],
    'dogs': ['n02085620-Chihuahua', 'n02085782-Japanese_spaniel', 'n02086240-Shih-Tzu', 'n02113799-standard_poodle'],
    'pets': [('Abyssinian', 1), ('american_bulldog', 2), ('american_pit_bull_terrier', 2), ('Bengal', 1), ('Birman', 1)],
    'folder': ['apple', 'crème brûlée', 'sea_urchin x..y', 'Ünïcödé 猫', 'zebra'],
    'hf': ['T-shirt/top', 'crème brûlée', 'sea_urchin', '../etc', 'zebra'],
}

def _fx_name(layout: str, c: int):
    names = _FX_NAMES[layout]
    if c < len(names): return names[c]
    return {'cub': f'{c + 1:03d}.Bird_{c + 1}', 'dogs': f'n{90000000 + c:08d}-dog_{c + 1}', 'pets': (f'breed_{c + 1}', 1 + c % 2)
           }.get(layout, f'class {c + 1}')

def _fx_image(rng: np.random.Generator, label: int, n_classes: int, size: int) -> Image.Image:
    "A noisy square whose hue encodes the class, with a random darker box."
    hue = int(255 * label / max(n_classes, 1))
    a = np.empty((size, size, 3), np.uint8)
    a[...] = np.array(Image.new('HSV', (1, 1), (hue, 200, 220)).convert('RGB')).reshape(3)
    a = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    x, y = rng.integers(0, size // 2, 2); w = max(size // 3, 1)
    a[y:y + w, x:x + w] //= 2
    return Image.fromarray(a)

def _fx_split(i: int, with_val: bool) -> str:
    return ('train', 'val', 'test')[i % 3] if with_val else ('train', 'test')[i % 2]

def _fx_write(img: Image.Image, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format='PNG' if path.suffix == '.png' else 'JPEG', quality=92)

def _fx_rows(layout, n_classes, per_class, size, seed, with_val):
    "Yield (class index, index in class, global index, split, image) for a fixture, in a seeded shuffled order."
    rng = np.random.default_rng(seed)
    rows = [(c, i) for c in range(n_classes) for i in range(per_class)]
    order = rng.permutation(len(rows))
    for n, k in enumerate(order):
        c, i = rows[k]
        yield c, i, n, _fx_split(i, with_val), _fx_image(rng, c, n_classes, size)

def _mat_struct(rows: list[dict]) -> np.ndarray:
    "A MATLAB 1xN struct array (what `loadmat` returns for the real annotation files)."
    keys = list(rows[0]); a = np.empty((1, len(rows)), dtype=[(k, 'O') for k in keys])
    for j, r in enumerate(rows):
        for k in keys: a[k][0, j] = np.array([[r[k]]]) if not isinstance(r[k], str) else np.array([r[k]])
    return a

def _mat_cells(values: list) -> np.ndarray:
    a = np.empty((len(values), 1), dtype=object)
    for j, v in enumerate(values): a[j, 0] = np.array([v])
    return a

def _fx_cub(root, n, k, size, seed):
    base = root/'CUB_200_2011'; images, labels, is_train = [], [], []
    for c, i, g, split, img in _fx_rows('cub', n, k, size, seed, False):
        folder = _fx_name('cub', c); stem = folder.split('.', 1)[1]
        rel = f'{folder}/{stem}_{i + 1:04d}_{1000 + g}.jpg'; _fx_write(img, base/'images'/rel)
        images.append(rel); labels.append(c + 1); is_train.append(int(split == 'train'))
    (base/'classes.txt').write_text(''.join(f'{c + 1} {_fx_name("cub", c)}\n' for c in range(n)))
    (base/'images.txt').write_text(''.join(f'{j + 1} {p}\n' for j, p in enumerate(images)))
    (base/'image_class_labels.txt').write_text(''.join(f'{j + 1} {l}\n' for j, l in enumerate(labels)))
    (base/'train_test_split.txt').write_text(''.join(f'{j + 1} {t}\n' for j, t in enumerate(is_train)))

def _fx_aircraft(root, n, k, size, seed):
    base = root/'fgvc-aircraft-2013b'/'data'; lines = {s: [] for s in SPLITS}
    for c, i, g, split, img in _fx_rows('aircraft', n, k, size, seed, True):
        iid = f'{1000000 + 37 * g:07d}'; _fx_write(img, base/'images'/f'{iid}.jpg')
        lines[split].append(f'{iid} {_fx_name("aircraft", c)}\n')
    (base/'variants.txt').write_text(''.join(f'{_fx_name("aircraft", c)}\n' for c in range(n)))
    for s in SPLITS: (base/f'images_variant_{s}.txt').write_text(''.join(sorted(lines[s])))
    (base/'images_variant_trainval.txt').write_text(''.join(sorted(lines['train'] + lines['val'])))

def _fx_flowers(root, n, k, size, seed):
    from scipy.io import savemat
    rows = list(_fx_rows('flowers', n, k, size, seed, True)); labels = np.zeros((1, len(rows)), np.uint8)
    ids = {s: [] for s in SPLITS}
    for c, i, g, split, img in rows:
        _fx_write(img, root/'jpg'/f'image_{g + 1:05d}.jpg'); labels[0, g] = c + 1; ids[split].append(g + 1)
    savemat(root/'imagelabels.mat', {'labels': labels})
    savemat(root/'setid.mat', {key: np.array([sorted(ids[s])], np.uint16) for key, s in (('trnid', 'train'), ('valid', 'val'), ('tstid', 'test'))})

def _fx_cars(root, n, k, size, seed):
    from scipy.io import savemat
    annos = {'train': [], 'test': []}
    for c, i, g, split, img in _fx_rows('cars', n, k, size, seed, False):
        fname = f'{len(annos[split]) + 1:05d}.jpg'; _fx_write(img, root/f'cars_{split}'/fname)
        annos[split].append(dict(bbox_x1=1, bbox_y1=1, bbox_x2=size - 1, bbox_y2=size - 1, **{'class': c + 1}, fname=fname))
    (root/'devkit').mkdir(parents=True, exist_ok=True)
    names = np.empty((1, n), dtype=object)
    for c in range(n): names[0, c] = np.array([_fx_name('cars', c)])
    savemat(root/'devkit'/'cars_meta.mat', {'class_names': names})
    savemat(root/'devkit'/'cars_train_annos.mat', {'annotations': _mat_struct(annos['train'])})
    savemat(root/'cars_test_annos_withlabels.mat', {'annotations': _mat_struct(annos['test'])})

def _fx_dogs(root, n, k, size, seed):
    from scipy.io import savemat
    lists = {'train': [], 'test': []}
    for c, i, g, split, img in _fx_rows('dogs', n, k, size, seed, False):
        folder = _fx_name('dogs', c); wnid = folder.split('-', 1)[0]
        rel = f'{folder}/{wnid}_{1000 + g}.jpg'; _fx_write(img, root/'Images'/rel); lists[split].append((rel, c + 1))
    for split, rows in lists.items():
        rows.sort()
        savemat(root/f'{split}_list.mat', {'file_list': _mat_cells([r for r, _ in rows]),
                                           'annotation_list': _mat_cells([r[:-4] for r, _ in rows]),
                                           'labels': np.array([[l] for _, l in rows], np.float64)})

def _fx_pets(root, n, k, size, seed):
    lines = {'train': [], 'test': []}; per_species = Counter()
    names = sorted((_fx_name('pets', c) for c in range(n)), key=lambda t: t[0].lower())   # official ids: alphabetical
    for c, i, g, split, img in _fx_rows('pets', n, k, size, seed, False):
        breed, species = names[c]; stem = f'{breed}_{i + 1}'
        _fx_write(img, root/'images'/f'{stem}.jpg')
        breed_id = sum(1 for b, s in names[:c + 1] if s == species)
        lines[split].append(f'{stem} {c + 1} {species} {breed_id}\n')
    (root/'annotations').mkdir(parents=True, exist_ok=True)
    (root/'annotations'/'trainval.txt').write_text(''.join(sorted(lines['train'])))
    (root/'annotations'/'test.txt').write_text(''.join(sorted(lines['test'])))
    (root/'images'/'Abyssinian_1.mat').write_bytes(b'MATLAB stray file the real archive ships')   # not listed: ignored

def _fx_folder(root, n, k, size, seed, split_dirs=False):
    for c, i, g, split, img in _fx_rows('folder', n, k, size, seed, split_dirs):
        sub = root/split if split_dirs else root
        _fx_write(img, sub/_fx_name('folder', c)/f'{i:03d}.jpg')
    (root/'README.txt').write_text('not an image: skipped with a report\n')

def _fx_folder_split(root, n, k, size, seed): _fx_folder(root, n, k, size, seed, split_dirs=True)

def _fx_hf(root, n, k, size, seed):
    import datasets
    rows = {'train': [], 'test': []}
    for c, i, g, split, img in _fx_rows('hf', n, k, size, seed, False): rows[split].append((img, c))
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=[_fx_name('hf', c) for c in range(n)])})
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict({'image': [r[0] for r in v], 'label': [r[1] for r in v]}, features=feats)
                               for s, v in rows.items()})
    bars = datasets.is_progress_bar_enabled(); datasets.disable_progress_bars()
    try: dd.save_to_disk(str(root))
    finally:
        if bars: datasets.enable_progress_bars()

def _idx_bytes(a: np.ndarray) -> bytes:
    return gzip.compress(struct.pack('>HBB', 0, 8, a.ndim) + struct.pack('>' + 'I' * a.ndim, *a.shape) + a.astype(np.uint8).tobytes(), mtime=0)

def _fx_fashion_mnist(root, n, k, size, seed):
    rng = np.random.default_rng(seed); root.mkdir(parents=True, exist_ok=True)
    for part, m in (('train', k), ('t10k', max(k // 2, 1))):
        y = np.repeat(np.arange(10), m); x = np.stack([np.asarray(_fx_image(rng, l, 10, 28).convert('L')) for l in y])
        (root/f'{part}-images-idx3-ubyte.gz').write_bytes(_idx_bytes(x)); (root/f'{part}-labels-idx1-ubyte.gz').write_bytes(_idx_bytes(y))

_FIXTURE_WRITERS = dict(cub=_fx_cub, aircraft=_fx_aircraft, flowers=_fx_flowers, cars=_fx_cars, dogs=_fx_dogs, pets=_fx_pets,
                        folder=_fx_folder, folder_split=_fx_folder_split, hf=_fx_hf, fashion_mnist=_fx_fashion_mnist)

FIXTURE_LAYOUTS: dict[str, str] = {   # layout -> the loader that reads it
    'cub': 'cub', 'aircraft': 'aircraft', 'flowers': 'flowers', 'cars': 'cars', 'dogs': 'dogs', 'pets': 'pets',
    'folder': 'folder', 'folder_split': 'folder', 'hf': 'hf', 'fashion_mnist': 'fashion_mnist'}

def make_fixture(layout: str, # a key of `FIXTURE_LAYOUTS`
                 root, # folder to write (created); pass it as the loader's root
                 n_classes: int=3, # classes (Fashion-MNIST always has 10)
                 per_class: int=4, # images per class over all official splits
                 size: int=32, # image side in pixels
                 seed: int=0) -> Path:
    "Write a tiny synthetic dataset in the official `layout` under `root` and return `root`."
    if layout not in FIXTURE_LAYOUTS: raise KeyError(f"Unknown fixture layout {layout!r}; known: {sorted(FIXTURE_LAYOUTS)}")
    root = Path(root); root.mkdir(parents=True, exist_ok=True)
    _FIXTURE_WRITERS[layout](root, n_classes, per_class, size, seed)
    return root
