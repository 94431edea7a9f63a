"""Heavier checks of the generation engine (nbs/30_generate.ipynb): determinism, kill-and-resume, two processes,
per-task batching, the CLIP filter, the CLI, and the registries other methods plug into."""
import json, os, signal, socket, subprocess, sys, textwrap, time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffmix_nb.core import atomic_write
from diffmix_nb.data import ClassInfo, Item, Split
from diffmix_nb import generate as G

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1'}
N_TASKS = 36   # real-mix at multiplier 3 on the 12-image toy split

@pytest.fixture(scope='session')
def toy_split(tmp_path_factory):
    "Three classes with awkward names, four images each, of two different sizes."
    root = tmp_path_factory.mktemp('toy-data')
    classes = [ClassInfo('T-shirt/top', 0, 'top'), ClassInfo('Black_footed Albatross', 1, 'bird'), ClassInfo('Ünï/code_x', 2, 'bag')]
    items, rng = [], np.random.default_rng(0)
    for c in classes:
        for k in range(4):
            size = (28, 28) if k % 2 == 0 else (40, 30)
            arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            rel = f'c{c.label}/{k}.png'; (root/rel).parent.mkdir(exist_ok=True); Image.fromarray(arr).save(root/rel)
            items.append(Item(f'toy-{c.label}-{k}', rel, c.label, 'train'))
    items.append(Item('toy-test-0', 'c0/0.png', 0, 'test'))
    split = Split('toy', str(root), classes, items)
    split.save(root/'split.json')
    return Split.load(root/'split.json')

@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory):
    from diffmix_nb.tiny import save_tiny_sd
    return save_tiny_sd(tmp_path_factory.mktemp('models')/'tiny-sd')

@pytest.fixture(scope='session')
def tiny_pipe(tiny_model):
    from diffmix_nb.models import load_pipeline
    return load_pipeline(tiny_model, device='cpu')

def _kw(tiny_model): return dict(multiplier=3, num_inference_steps=6, batch_size=4, device='cpu', base_model=str(tiny_model), progress=False)

RUNNER = textwrap.dedent('''
    import sys
    from diffmix_nb.generate import generate
    out, split, model = sys.argv[1:4]
    generate(out, split, 'real-mix', multiplier=3, num_inference_steps=6, batch_size=int(sys.argv[4]), device='cpu',
             base_model=model, progress=False)
''')

def _check_complete(out: Path):
    "Exactly the planned images: one row per task in plan order, every file decodes, nothing else on disk."
    plan = G.Plan.load(out)
    rows = [json.loads(l) for l in (out/'manifest.jsonl').read_text().splitlines()]
    assert [r['id'] for r in rows] == [t.id for t in plan.tasks]
    assert all(set(r) == set(G.MANIFEST_FIELDS) for r in rows)
    for r in rows:
        with Image.open(out/r['path']) as im: im.load()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.png')) == sorted(r['path'] for r in rows)
    assert not [p for p in out.rglob('*') if p.name.endswith('.tmp')]
    assert not list(out.glob('manifest.rank*.jsonl'))
    return plan, rows

def test_soft_label_worked_values():
    np.testing.assert_allclose(G.soft_label(0, 1, 0.7, 2)[[1, 0]], [0.837, 0.163], atol=5e-4)
    np.testing.assert_allclose(G.soft_label(0, 1, 0.7, 2, gamma=0.8)[[1, 0]], [0.752, 0.248], atol=5e-4)
    assert G.soft_label(1, 1, 0.3, 3).tolist() == [0, 1, 0]

def test_plan_deterministic_and_safe(toy_split, tmp_path):
    for method in ('real-mix', 'real-aug', 'real-gen', 'real-filter'):
        for strength in (0.7, 'uniform', 'beta'):
            a = G.make_plan(toy_split, method, seed=3, multiplier=2, strength=strength)
            b = G.make_plan(Split.load(toy_split.path), method, seed=3, multiplier=2, strength=strength)
            assert [json.dumps(G.asdict(t)) for t in a.tasks] == [json.dumps(G.asdict(t)) for t in b.tasks]
            assert len(a) == 24 and all(G._ID_RE.fullmatch(t.id) and '/' not in t.id for t in a.tasks)
    assert G.make_plan(toy_split, 'real-mix', seed=4).hash != G.make_plan(toy_split, 'real-mix', seed=3).hash
    # the plan is on disk before any image is made
    G.generate(tmp_path/'g', toy_split, 'real-mix', plan_only=True, device='cpu')
    assert (tmp_path/'g'/'plan.json').exists() and not (tmp_path/'g'/'images').exists()
    h = json.loads((tmp_path/'g'/'plan.json').read_text())
    assert h['split']['hash'] == toy_split.hash and h['method'] == 'real-mix' and h['n_tasks'] == 60
    daf = G.make_plan(toy_split, 'da-fusion', prompts=lambda l: f'a photo of a <c{l}> thing', num_variants=10)
    assert len(daf) == 120 and {t.strength for t in daf.tasks} <= {0.25, 0.5, 0.75, 1.0}
    assert all(t.source_label == t.target_label for t in daf.tasks)

def test_translate_keeps_each_task(tiny_pipe, toy_split):
    ims = [toy_split.load_image(it) for it in toy_split.train_items[:4]]
    prompts = ['a photo of a top', 'a photo of a bag', 'a photo of a bird', 'a photo of a top']
    kw = dict(num_inference_steps=8, guidance_scale=7.5)
    out = G.translate(tiny_pipe, ims, prompts, [0.3, 0.9, 0.9, 0.6], [10, 11, 12, 13], **kw)
    assert [o.size for o in out] == [i.size for i in ims]
    for j in range(4):    # batched == alone: prompt, strength and seed belong to the task, not to the batch
        alone = G.translate(tiny_pipe, [ims[j]], [prompts[j]], [[0.3, 0.9, 0.9, 0.6][j]], [10 + j], **kw)[0]
        assert np.abs(np.asarray(alone, np.int16) - np.asarray(out[j], np.int16)).max() <= 2
    again = G.translate(tiny_pipe, ims[1:3], prompts[1:3], 0.9, [11, 99], **kw)
    assert np.abs(np.asarray(again[0], np.int16) - np.asarray(out[1], np.int16)).max() <= 2
    assert np.abs(np.asarray(again[1], np.int16) - np.asarray(out[2], np.int16)).max() > 2    # another seed differs
    t2i = G.text_to_image(tiny_pipe, prompts[:2], [1, 2], num_inference_steps=4)
    assert [o.size for o in t2i] == [(32, 32)] * 2

@pytest.fixture(scope='session')
def resumed_run(toy_split, tiny_model, tmp_path_factory):
    "One process, SIGKILLed after a few images, then run again to the end: (folder, ids finished before the kill, mtimes)."
    out = tmp_path_factory.mktemp('gen')/'one'
    script = out.parent/'run.py'; script.write_text(RUNNER)
    p = subprocess.Popen([sys.executable, str(script), str(out), toy_split.path, str(tiny_model), '1'], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    shard, t0 = out/'manifest.rank0.jsonl', time.time()
    while time.time() - t0 < 90 and p.poll() is None:
        if shard.exists() and len(shard.read_text().splitlines()) >= 3: break
        time.sleep(0.01)
    alive = p.poll() is None
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert alive, p.stdout.read().decode()[-2000:]
    n_killed = len(G.Manifest(shard).rows())
    with open(shard, 'a') as f: f.write('{"id": "real-mix-s0-0000')       # what a kill inside a write leaves
    before = {r['id']: (out/r['path']).stat().st_mtime_ns for r in G.Manifest(shard).rows()}
    done_at_kill = (out/'manifest.jsonl').exists()
    r = subprocess.run([sys.executable, str(script), str(out), toy_split.path, str(tiny_model), '4'], env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out, n_killed, done_at_kill, before

def test_kill_and_resume(resumed_run):
    out, n_killed, done_at_kill, before = resumed_run
    assert 3 <= n_killed < N_TASKS and not done_at_kill
    plan, rows = _check_complete(out)
    assert len(rows) == N_TASKS
    path = {r['id']: r['path'] for r in rows}
    assert all((out/path[i]).stat().st_mtime_ns == m for i, m in before.items())   # finished tasks were not redone

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_two_processes_same_images(toy_split, tiny_model, resumed_run, tmp_path_factory):
    one = resumed_run[0]                    # one process (killed and resumed)
    base = tmp_path_factory.mktemp('gen2'); two = base/'two'
    script = base/'run.py'; script.write_text(RUNNER)
    # accelerate launch on a CPU-only machine: --multi_gpu starts the processes (torchrun), gloo backend
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', str(_free_port()),
           str(script), str(two), toy_split.path, str(tiny_model), '4']
    r2 = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stdout[-2000:] + r2.stderr[-3000:]
    _, rows1 = _check_complete(one); _, rows2 = _check_complete(two)
    assert [r['id'] for r in rows1] == [r['id'] for r in rows2]
    assert [{k: v for k, v in r.items()} for r in rows1] == rows2
    worst = max(np.abs(np.asarray(Image.open(one/a['path']), np.int16) - np.asarray(Image.open(two/b['path']), np.int16)).max()
                for a, b in zip(rows1, rows2))
    assert worst <= 2, worst
    print('max pixel difference, 1 vs 2 processes:', worst)

def test_clip_filter(toy_split, tiny_pipe, tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPImageProcessor
    from diffmix_nb.models import clip_tokenizer
    out = tmp_path/'g'
    man = G.generate(out, toy_split, 'real-aug', multiplier=10/12, num_inference_steps=4, batch_size=8, device='cpu',
                     pipeline=tiny_pipe, progress=False)
    clip = tmp_path/'clip'
    CLIPModel(CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
                         vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                            image_size=32, patch_size=8), projection_dim=16)).save_pretrained(clip)
    clip_tokenizer(clip); CLIPImageProcessor(size={'shortest_edge': 32}, crop_size={'height': 32, 'width': 32}).save_pretrained(clip)
    f = G.clip_filter(man, clip, 'thing', drop=0.1, device='cpu')
    rows, kept = G.Manifest(man).rows(), G.Manifest(f).rows()
    assert len(rows) == 10 and len(kept) == 9
    scores = json.loads((out/'clip_scores.json').read_text())['scores']
    dropped = (set(r['id'] for r in rows) - set(r['id'] for r in kept)).pop()
    assert scores[dropped] == min(scores.values())
    # real-filter refuses to run without a CLIP model, and filters when given one
    with pytest.raises(ValueError, match='clip'): G.generate(tmp_path/'rf', toy_split, 'real-filter', device='cpu')
    m = G.generate(tmp_path/'rf', toy_split, 'real-filter', multiplier=10/12, num_inference_steps=4, device='cpu',
                   pipeline=tiny_pipe, clip_model=str(clip), progress=False)
    assert m.name == 'manifest.filtered.jsonl' and len(G.Manifest(m).rows()) == 9

def test_registries_accept_new_methods(toy_split, tiny_pipe, tmp_path):
    "How Diff-II / DiffuseMix plug in: a planner and a sampler, nothing else."
    def plan_flip(req):
        return [req.task(k, it, it.label, it.label, 1.0, 'flip', params=dict(note='x')) for k, it in enumerate(req.train[:5])]
    G.register_method('toy-flip', plan_flip, sampler='flip', prompts='none')
    @G.register_sampler('flip')
    def flip(ctx, tasks): return [im.transpose(Image.FLIP_LEFT_RIGHT) for im in ctx.source_images(tasks)]
    try:
        man = G.generate(tmp_path/'f', toy_split, 'toy-flip', device='cpu', pipeline=tiny_pipe, progress=False)
        rows = G.Manifest(man).rows()
        assert len(rows) == 5 and rows[0]['soft_label'] == {str(rows[0]['target_label']): 1.0}
        src = toy_split.load_image(rows[0]['source_item'])
        assert np.array_equal(np.asarray(Image.open(man.parent/rows[0]['path'])), np.asarray(src)[:, ::-1])
    finally:
        G.METHODS.pop('toy-flip', None); G.SAMPLERS.pop('flip', None)

def test_cli_plan_only(toy_split, tmp_path, capsys):
    import argparse
    ap = argparse.ArgumentParser(); G.cli_register(ap.add_subparsers())
    a = ap.parse_args(['generate', '--split', toy_split.path, '--method', 'real-mix', '--out', str(tmp_path/'p'),
                       '--strength', 'beta', '--gamma', '0.8', '--multiplier', '2', '--plan-only', '--json'])
    assert a.func(a) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r['tasks'] == 24
    plan = G.Plan.load(tmp_path/'p')
    assert plan.header['options']['gamma'] == 0.8 and all(0.1 <= t.strength <= 0.9 for t in plan.tasks)
    assert all(abs(sum(t.soft_label.values()) - 1) < 1e-9 for t in plan.tasks)

def test_plain_methods_use_the_presets_base_model(toy_split):
    "real-* methods without --base-model take the preset's model (sd15: Stable Diffusion 1.5), never silently the tiny one."
    from diffmix_nb.core import get_preset
    for preset in ('tiny', 'sd15'):
        plan = G.make_plan(toy_split, "real-aug", preset=preset, multiplier=1)
        assert plan.header['base_model'] == get_preset(preset)['base_model'], (preset, plan.header['base_model'])

def test_out_of_memory_halves_the_batch(toy_split, tiny_model, tmp_path):
    "A sampler that runs out of CUDA memory above 4 images gets the same tasks again in halves; every planned image is made."
    import torch, warnings
    calls = []
    @G.register_sampler('oom-test')
    def _oom(ctx, tasks):
        calls.append(len(tasks))
        if len(tasks) > 4: raise torch.cuda.OutOfMemoryError('CUDA out of memory (simulated)')
        return [Image.new('RGB', (8, 8), (len(tasks), 0, 0)) for _ in tasks]
    G.register_method('oom-test', lambda req: [req.task(k, it, it.label, it.label, 1.0, 'oom-test', 'x', {}, prompt='')
                                               for k, it in enumerate(req.train)], prompts='none')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        G.generate(tmp_path/'g', split=toy_split, method='oom-test', batch_size=16, device='cpu', progress=False)
    rows = G.Manifest(tmp_path/'g'/'manifest.jsonl').rows()
    n = len(toy_split.train_items)
    assert len(rows) == n and calls[:2] == [n, n // 2]          # 12 fails, 6 fails, then batches of 3 succeed
    assert sum(c for c in calls if c <= 4) == n                 # every task made exactly once
    assert any('out of memory' in str(x.message) for x in w)
