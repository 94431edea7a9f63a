"""Concept learning (TI + LoRA) on random tiny models: invariants, vanilla-diffusers round trip, resume, modes, import."""
import argparse, contextlib, hashlib, io, json, os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffusers, transformers
for _lib in (diffusers, transformers): _lib.utils.logging.disable_progress_bar(); _lib.utils.logging.set_verbosity_error()

from diffusers import StableDiffusionImg2ImgPipeline
from safetensors.torch import load_file
from diffmix_nb.core import load_json, safe_name, load_checkpoint
from diffmix_nb.data import ClassInfo, Item, Split
from diffmix_nb import data as dm
from diffmix_nb.tiny import save_tiny_sd, build_tiny_sd
from diffmix_nb.concepts import (ConceptTrainer, Concepts, ConceptsError, finetune_config, learn_concepts, save_concepts,
                                 import_official, denoising_loss, cli_register, CONCEPTS_JSON, LORA_WEIGHTS, CONCEPTS_FORMAT)

CLASSES = [ClassInfo('T-shirt/top', 0, 'top'), ClassInfo('Black_footed Albatross', 1, 'bird'), ClassInfo('Bag', 2, 'bag')]

@pytest.fixture(scope='module')
def world(tmp_path_factory):
    "A random tiny SD folder and a split file over synthetic images (square and non-square), with test items."
    d = tmp_path_factory.mktemp('concepts')
    base = save_tiny_sd(d/'base', seed=0)
    rng = np.random.default_rng(0)
    (d/'img').mkdir(); items = []
    for lab in range(3):
        for k in range(3):
            size = (28, 28) if k != 1 else (40, 28)           # one non-square image per class: exercises the crop
            a = (rng.random((size[1], size[0], 1)) * 60 + np.array([80 * lab, 200 - 60 * lab, 40 + 50 * k])).clip(0, 255)
            fn = f'{lab}_{k}.png'; Image.fromarray(a.astype(np.uint8)).save(d/'img'/fn)
            items.append(Item(f'{lab}-{k}', fn, lab, 'test' if k == 2 else 'train', hashlib.sha1((d/'img'/fn).read_bytes()).hexdigest()))
    split = Split('synthetic', str(d/'img'), CLASSES, items, seed=0)
    split.save(d/'split.json')
    return dict(d=d, base=base, split=Split.load(d/'split.json'))

def _vanilla(base):
    p = StableDiffusionImg2ImgPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True); return p

def _trainer(w, **kw):
    its = w['split'].train_items
    return ConceptTrainer([w['split'].load_image(i) for i in its], [i.label for i in its], CLASSES,
                          finetune_config('tiny', **{'batch_size': 4, **kw}), base_model=w['base'], device='cpu')

def test_only_new_rows_and_lora_change(world):
    tr = _trainer(world); tr.train(4, progress=False)
    ref = build_tiny_sd(seed=0)
    te0, te1 = ref['text_encoder'], tr.export_text_encoder()
    W0, W1 = te0.get_input_embeddings().weight.detach(), te1.get_input_embeddings().weight.detach()
    assert W1.shape[0] == W0.shape[0] + 3
    assert torch.equal(W1[:len(W0)], W0)
    assert not torch.equal(W1[len(W0):], tr.init_rows)
    assert torch.equal(tr.init_rows, W0[42170].expand(3, -1))     # every row starts at CLIP's `ktn`
    s0, s1 = te0.state_dict(), te1.state_dict()
    assert all(torch.equal(v, s0[k]) for k, v in s1.items() if 'token_embedding' not in k)
    u0, u1 = ref['unet'].state_dict(), tr.unet.state_dict()
    frozen = {k.replace('.base_layer', ''): v for k, v in u1.items() if 'lora_' not in k}
    assert sorted(frozen) == sorted(u0) and all(torch.equal(frozen[k], v) for k, v in u0.items())
    trainable = [n for n, p in tr.unet.named_parameters() if p.requires_grad]
    assert trainable and all('lora_' in n for n in trainable)
    targets = {n.split('.lora_')[0].rsplit('.', 1)[-1] if not n.split('.lora_')[0].endswith('to_out.0') else 'to_out.0' for n in trainable}
    assert targets == {'to_q', 'to_k', 'to_v', 'to_out.0'}
    assert any(p.abs().sum() > 0 for n, p in tr.unet.named_parameters() if 'lora_B' in n)   # LoRA moved off zero

def test_vanilla_pipeline_matches_in_memory_model(world):
    "Multi-vector tokens, rank != alpha, non-square images: the folder in vanilla diffusers == the trained model."
    tr = _trainer(world, num_vectors=2, rank=4, alpha=8, init='superclass'); tr.train(3, progress=False)
    out = save_concepts(tr, world['d']/'rt', split=world['split'])
    c = Concepts.load(out)
    info = load_json(out/CONCEPTS_JSON)
    assert info['format'] == CONCEPTS_FORMAT and info['steps_done'] == 3 and info['split']['hash'] == world['split'].hash
    assert [x['tokens'] for x in info['classes']][1] == ['<class_1>', '<class_1>_1'] and info['config']['rank'] == 4
    for cl in c.classes:
        f = out/cl.embedding
        assert f.name == f'{safe_name(cl.name)}.safetensors'
        sd = load_file(f); assert list(sd) == [cl.token] and sd[cl.token].shape == (2, tr.rows.shape[1])
    assert c.prompt(1) == 'a photo of a <class_1> bird' and c.prompt(1, 'at sea') == 'a photo of a <class_1> bird at sea'
    vanilla = _vanilla(world['base'])
    with pytest.raises(ConceptsError, match='not in the tokenizer'): c.check(vanilla)
    c.apply(vanilla); c.check(vanilla)
    c.apply(vanilla)                                                   # idempotent on the same pipeline
    mem = tr.pipeline()
    ims = [world['split'].load_image(i) for i in world['split'].train_items[:2]]
    prompts = [c.prompt(0), c.prompt(1, 'flying over water')]
    def run(p):
        with torch.no_grad():
            e = p.encode_prompt(prompts, 'cpu', 1, False)[0]
            eps = p.unet(torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 900]), e).sample
            img = p(prompts, image=ims, strength=0.6, num_inference_steps=5, guidance_scale=7.5,
                    generator=torch.Generator().manual_seed(3), output_type='np').images
        return e, eps, torch.from_numpy(img)
    for a, b in zip(run(vanilla), run(mem)): torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # (equality above also proves the LoRA scale alpha/rank survived: the metadata carries lora_alpha=8, r=4)
    assert vanilla.unet.peft_config

def test_check_catches_renamed_tokens(world):
    tr = _trainer(world, mode='ti'); tr.train(1, progress=False)
    c = Concepts.load(save_concepts(tr, world['d']/'ti', split=world['split']))
    assert c.lora is None and not (c.root/LORA_WEIGHTS).exists()
    pipe = c.apply(_vanilla(world['base'])); assert c.check(pipe)['tokens'] == 3
    c.classes[2].token = '<bag>'                                       # trained as <class_2>, prompted as <bag>
    c.classes[2].tokens = ['<bag>']
    with pytest.raises(ConceptsError, match='<bag>'): c.check(pipe)
    plain = Concepts.plain(world['split'], world['base'])
    assert plain.prompt(1) == 'a photo of a Black footed Albatross bird'
    p0 = _vanilla(world['base']); assert plain.apply(p0) is p0; plain.check(p0)

def test_lora_only_mode(world):
    out = learn_concepts(world['split'], world['d']/'lora', base_model=world['base'], mode='lora', steps=2, batch_size=4,
                         progress=False, device='cpu')
    c = Concepts.load(out)
    assert c.mode == 'lora' and not (out/'learned_embeds').exists() and c.prompt(0) == 'a photo of a T-shirt/top top'
    p = c.apply(_vanilla(world['base'])); c.check(p)
    assert p.unet.peft_config

def test_resume_matches_uninterrupted_run(world):
    sp, kw = world['d']/'split.json', dict(base_model=world['base'], steps=6, batch_size=4, checkpoint_every=3, progress=False, device='cpu')
    full = learn_concepts(sp, world['d']/'full', **kw)
    def crash(step, loss):
        if step == 4: raise RuntimeError('simulated kill at step 4')
    with pytest.raises(RuntimeError, match='simulated kill'): learn_concepts(sp, world['d']/'res', callback=crash, **kw)
    assert not (world['d']/'res'/CONCEPTS_JSON).exists()
    assert load_checkpoint(world['d']/'res'/'checkpoint'/'state.safetensors')['step'] == 3   # safetensors, no pickle
    res = learn_concepts(sp, world['d']/'res', **kw)
    a, b = Concepts.load(full), Concepts.load(res)
    for t, e in a.embeddings().items(): torch.testing.assert_close(e, b.embeddings()[t], atol=1e-6, rtol=0)
    la, lb = load_file(full/LORA_WEIGHTS), load_file(res/LORA_WEIGHTS)
    assert la.keys() == lb.keys()
    for k in la: torch.testing.assert_close(la[k], lb[k], atol=1e-6, rtol=0)
    assert load_json(full/'losses.json') == load_json(res/'losses.json')
    # finished: a re-run returns without training; more steps extend; other settings are refused
    mtime = (res/CONCEPTS_JSON).stat().st_mtime_ns
    learn_concepts(sp, world['d']/'res', **kw); assert (res/CONCEPTS_JSON).stat().st_mtime_ns == mtime
    assert Concepts.load(learn_concepts(sp, world['d']/'res', **{**kw, 'steps': 7})).info['steps_done'] == 7
    with pytest.raises(ValueError, match='other settings'): learn_concepts(sp, world['d']/'res', **{**kw, 'steps': 8, 'lr_ti': 0.5})

def test_test_split_refused(world):
    with pytest.raises(dm.TestSplitLeakError):
        learn_concepts(world['split'], world['d']/'leak', base_model=world['base'], steps=1, items=world['split'].test_items,
                       progress=False, device='cpu')
    assert not (world['d']/'leak'/CONCEPTS_JSON).exists()

def test_loss_falls_when_overfitting(world):
    tr = _trainer(world, lr_lora=1e-2, lr_ti=1e-2)
    its = world['split'].train_items
    ims, prs = [world['split'].load_image(i) for i in its], [tr.prompt(i.label) for i in its]
    before = denoising_loss(tr.pipeline(), ims, prs)
    losses = tr.train(40, progress=False)
    after = denoising_loss(tr.pipeline(), ims, prs)
    assert after < 0.95 * before, (before, after)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])

def test_latent_cache_equals_encoding_for_uncropped_images(world):
    "Same draws, square images (no crop): the cached posterior sample equals encoding the image at the step."
    cached, fresh = _trainer(world, mode='ti'), _trainer(world, mode='ti', cache_latents=False)
    assert cached.pixels is None and fresh.cache is None
    idx = torch.tensor([0, 2, 4]); flips = torch.tensor([False, True, False]); off = torch.zeros(3, 2, dtype=torch.long)
    eps = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    assert all(cached.shapes[i] == (32, 32) for i in idx.tolist())
    torch.testing.assert_close(fresh._latents(idx, flips, off, eps), cached._latents(idx, flips, off, eps), atol=1e-5, rtol=1e-5)

def test_class_balanced_sampler(world):
    its = [i for i in world['split'].train_items] + [world['split'].train_items[0]] * 10   # class 0 heavily over-represented
    tr = ConceptTrainer([world['split'].load_image(i) for i in its], [i.label for i in its], CLASSES,
                        finetune_config('tiny', batch_size=8, class_balanced=True, mode='ti'), base_model=world['base'], device='cpu')
    lab = torch.cat([tr.labels[tr._batch_indices(s, torch.Generator().manual_seed(s))] for s in range(100)])
    frac = torch.bincount(lab, minlength=3).float() / len(lab)
    assert (frac - 1 / 3).abs().max() < 0.06, frac

def test_import_official(world, tmp_path):
    tr = _trainer(world); tr.train(1, progress=False)
    ours = Concepts.load(save_concepts(tr, tmp_path/'ours'))
    off = tmp_path/'official'; off.mkdir()
    e = ours.embeddings()
    torch.save(dict(learned_embeds_dict={f'<{c.label}x>': e[c.token][0] for c in ours.classes},
                    name2placeholder={c.name.replace(' ', '_'): f'<{c.label}x>' for c in ours.classes},
                    placeholder2name={f'<{c.label}x>': c.name for c in ours.classes}), off/'learned_embeds.pt')
    (off/LORA_WEIGHTS).write_bytes((ours.root/LORA_WEIGHTS).read_bytes())
    imp = Concepts.load(import_official(off/'learned_embeds.pt', tmp_path/'imp', classes=world['split'], base_model=world['base']))
    assert imp.mode == 'ti+lora' and imp.prompt(1) == 'a photo of a <1x> bird'
    torch.testing.assert_close(imp.embeddings()['<1x>'], e['<class_1>'])
    p = imp.apply(_vanilla(world['base'])); imp.check(p)
    torch.save({'learned_embeds_dict': {}}, off/'bad.pt')
    with pytest.raises(ValueError, match='not an official'): import_official(off/'bad.pt', tmp_path/'x')
    class Evil:   # pickled code must not load
        def __reduce__(self): return (print, ('pwned',))
    torch.save({'learned_embeds_dict': Evil(), 'name2placeholder': {}, 'placeholder2name': {}}, off/'evil.pt')
    with pytest.raises(ValueError, match='weights-only'): import_official(off/'evil.pt', tmp_path/'y')

def test_cli(world, capsys):
    parser = argparse.ArgumentParser(prog='diffmix'); cli_register(parser.add_subparsers(dest='command'))
    args = parser.parse_args(['finetune', '--split', str(world['d']/'split.json'), '--out', str(world['d']/'cli'), '--base-model',
                              str(world['base']), '--steps', '1', '--batch-size', '2', '--num-vectors', '2', '--init', 'classname',
                              '--class-balanced', '--no-cache', '--device', 'cpu', '--json'])
    assert args.func(args) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r['steps_done'] == 1 and r['classes'] == 3
    cfg = load_json(world['d']/'cli'/CONCEPTS_JSON)['config']
    assert (cfg['num_vectors'], cfg['init'], cfg['class_balanced'], cfg['cache_latents']) == (2, 'classname', True, False)
    args = parser.parse_args(['finetune', '--out', 'x'])
    assert args.func(args) == 2


def test_accelerate_launch_two_processes_finetune(tmp_path):
    "`accelerate launch` with 2 CPU processes (torchrun + gloo) fine-tunes, and only the main process writes the concepts folder."
    import subprocess, sys, os, json
    from diffmix_nb.data import load_dataset_spec, make_split
    make_split(load_dataset_spec('fashion_mnist'), shots=2, seed=0, val_per_class=1).save(tmp_path/'split.json')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'diffmix_nb.cli', 'finetune', '--split', str(tmp_path/'split.json'),
           '--out', str(tmp_path/'concepts'), '--steps', '3', '--batch-size', '2']
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    meta = json.loads((tmp_path/'concepts'/'concepts.json').read_text())
    assert meta['steps_done'] == 3 and len(meta['classes']) == 10
    from diffmix_nb.concepts import Concepts
    Concepts.load(tmp_path/'concepts').load_pipeline()      # loads into a vanilla pipeline and passes `check`
