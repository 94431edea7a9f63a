"Checks of diffmix_nb.perf: SD-1.5 shapes and FLOPs (meta, no compute), OOM back-off, memory estimates, the tiny suite, CLI, accelerate launch."
import json, os, shutil, statistics, subprocess, sys, warnings
from pathlib import Path

import pytest
import torch

from diffmix_nb import perf, runtime
from diffmix_nb.core import n_params
from diffmix_nb.perf import (SPEC_UNET_GFLOP, STAGES, format_table, max_batch_for_memory, memory_estimate, mfu,
                             peak_tflops_for, run_suite, sd15_components, unet_flops)
from diffmix_nb.runtime import is_oom, oom_backoff, optimize_unet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def sd15():
    return sd15_components(device='meta')


@pytest.fixture(scope='module')
def tiny():
    from diffmix_nb.tiny import build_tiny_sd
    return build_tiny_sd()


def test_sd15_components_are_sd15_shaped(sd15):
    test = {k: n_params(sd15[k]) for k in ('unet', 'vae', 'text_encoder')}
    assert test == dict(unet=859_520_964, vae=83_653_863, text_encoder=123_060_480)
    u, v, t = sd15['unet'].config, sd15['vae'].config, sd15['text_encoder'].config
    assert u.down_block_types == ('CrossAttnDownBlock2D',) * 3 + ('DownBlock2D',)
    assert u.up_block_types == ('UpBlock2D',) + ('CrossAttnUpBlock2D',) * 3
    assert (u.sample_size, u.layers_per_block, u.cross_attention_dim, u.attention_head_dim) == (64, 2, 768, 8)
    assert tuple(v.block_out_channels) == (128, 256, 512, 512) and v.latent_channels == 4
    assert (t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.vocab_size) == (768, 12, 12, 49408)
    assert len(sd15['tokenizer']) == 49408
    half = sd15_components(torch.bfloat16, 'meta')
    assert half['unet'].dtype == torch.bfloat16 and not any(p.requires_grad for p in half['unet'].parameters())


def test_unet_flops_match_spec(sd15):
    f1 = unet_flops(sd15['unet'], 1, 512)
    assert abs(f1['per_sample_excluding_attention'] / 1e9 - SPEC_UNET_GFLOP) < 0.01 * SPEC_UNET_GFLOP
    assert 790e9 < f1['total'] < 815e9 and 120e9 < f1['attention'] < 130e9
    assert unet_flops(sd15['unet'], 3, 512)['total'] == 3 * f1['total']
    assert unet_flops(sd15['unet'], 1, 256)['total'] < f1['total'] / 3        # 4x fewer pixels
    fb = unet_flops(sd15['unet'], 1, 512, backward=True)
    assert 1.9 < fb['total'] / f1['total'] < 2.3


def test_classifier_flops():
    r50 = perf.classifier_flops('resnet50', 224, 1000, backward=False)
    assert abs(r50 / 1e9 - 8.2) < 0.2                                           # 4.1 GMAC
    assert 2.5 < perf.classifier_flops('resnet50', 224, 1000) / r50 < 3.5        # training step ~ 3x forward


def test_peaks_and_mfu():
    assert peak_tflops_for('NVIDIA H100 80GB HBM3') == (790.0, 'measured (published roofline)')
    assert peak_tflops_for('NVIDIA H100 PCIe')[0] == 756.0
    assert peak_tflops_for('Tesla T4')[0] is None
    assert perf.default_peak_tflops('cpu')[0] is None
    assert mfu(10, 1e12, 100) == pytest.approx(0.1)
    assert mfu(None, 1e12, 100) is None and mfu(10, 1e12, None) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU error')
def test_cuda_request_without_gpu_is_an_error():
    with pytest.raises(RuntimeError, match='no CUDA device'): perf.resolve_device('cuda')


def test_oom_backoff_halves_on_cuda_oom():
    calls = []
    def fn(bs):
        calls.append(bs)
        if bs > 5: raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB')
        return bs * 10
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        assert oom_backoff(fn, 48) == (30, 3)
    assert calls == [48, 24, 12, 6, 3] and len(w) == 4
    with pytest.raises(torch.cuda.OutOfMemoryError): oom_backoff(fn, 48, min_batch_size=8, verbose=False)
    with pytest.raises(KeyError): oom_backoff(lambda bs: {}['x'], 8)
    assert is_oom(RuntimeError('CUDA error: out of memory')) and not is_oom(ValueError('out of range'))


def test_memory_estimate_tiny(tiny):
    kw = dict(vae=tiny['vae'], text_encoder=tiny['text_encoder'], vae_scale_factor=2)
    e1, e8 = (memory_estimate(tiny['unet'], 32, b, torch.float32, **kw) for b in (1, 8))
    assert e1['weights_gb'] == e8['weights_gb'] > 0
    assert e8['activations_gb'] == pytest.approx(8 * e1['activations_gb'])
    w = e1['weights_gb']
    assert max_batch_for_memory(tiny['unet'], 32, w * 0.5, torch.float32, reserve_gb=0, **kw) == 0
    small, big = (max_batch_for_memory(tiny['unet'], 32, w + x, torch.float32, reserve_gb=0, **kw) for x in (0.01, 0.1))
    assert 0 < small < big


def test_optimize_unet_keeps_outputs(tiny):
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
    import copy
    u = copy.deepcopy(tiny['unet']); u.set_attn_processor(AttnProcessor())
    x, t, e = torch.randn(2, 4, 16, 16), torch.tensor([1, 999]), torch.randn(2, 77, 32)
    with torch.no_grad(): ref = u(x, t, e).sample
    o = optimize_unet(u)
    assert all(type(p) is AttnProcessor2_0 for p in o.attn_processors.values())
    assert o.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(): assert torch.allclose(o(x, t, e).sample, ref, atol=1e-4)


def test_run_suite_tiny_all_stages():
    res = run_suite('tiny', 'cpu', verbose=False, strict=True,
                    finetune=dict(steps=1, warmup=1, n_images=8),
                    translate=dict(n=4, baseline_n=1, batch_sizes=(4,), steps=10),
                    diffii=dict(n=2, baseline_n=1, batch_size=2, inversion_steps=4, steps=4),
                    classifier=dict(steps=1, warmup=1, models=(('resnet18', 32, 8, {}),)))
    assert [r['stage'] for r in res['rows']] == ['finetune', 'translate b4', 'diffii invert', 'diffii denoise', 'classifier resnet18@32']
    for r in res['rows']:
        # interleaved stages report the median of their per-round ratios; the others ours / baseline
        expect = statistics.median(r['round_ratios']) if r.get('round_ratios') else r['ours'] / r['baseline']
        assert r['error'] is None and r['ours'] > 0 and r['baseline'] > 0 and r['ratio'] == pytest.approx(expect, rel=5e-3)
        assert r['flops_per_unit'] > 0 and r['ours_mfu'] is None
        assert r['ours_config'] and r['baseline_config']
    assert res['rows'][1]['ours_config']['prompt'] == 'cached embeddings'
    assert res['num_processes'] == 1 and res['peak_tflops'] is None and res['dtype'] == 'fp32'
    assert set(STAGES) <= set(res['stage_seconds'])
    json.dumps(res)
    assert 'translate b4' in format_table(res)


def test_run_suite_rejects_unknown_stage():
    with pytest.raises(ValueError, match='unknown stage'): run_suite('tiny', 'cpu', only='finetune,render', verbose=False)
    with pytest.raises(ValueError, match='size'): run_suite('huge', 'cpu', verbose=False)


def test_cli_writes_json(tmp_path, capsys):
    from diffmix_nb.cli import main
    out = tmp_path/'perf.json'
    assert main(['perf', '--size', 'tiny', '--device', 'cpu', '--only', 'classifier', '--peak-tflops', '1', '--json', str(out)]) == 0
    r = json.loads(out.read_text())
    assert {'device_name', 'torch', 'diffusers', 'transformers', 'git_commit', 'rows', 'peak_tflops'} <= set(r)
    assert r['peak_tflops'] == 1.0 and all(row['ours_mfu'] is not None for row in r['rows'])
    if shutil.which('git') and (ROOT/'.git').exists(): assert r['git_commit'] and len(r['git_commit']) == 40
    assert 'classifier resnet18@32' in capsys.readouterr().out


def test_accelerate_launch_two_processes(tmp_path):
    "DDP on the CPU: `accelerate launch --multi_gpu` starts torchrun + gloo (`--cpu` alone would start one process)."
    out = tmp_path/'perf.json'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--multi_gpu', '--num_processes', '2', '--num_machines', '1',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '-m', 'diffmix_nb.cli', 'perf', '--size', 'tiny', '--device', 'cpu',
           '--only', 'classifier', '--json', str(out)]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r['num_processes'] == 2
    for row in r['rows']:
        assert len(row['per_process']) == 2 and row['ours_config']['ddp'] is True
        assert row['ours'] == pytest.approx(sum(x['ours'] for x in row['per_process']))
    assert p.stdout.count('results:') == 1                                   # only the main process reports


def test_translate_flop_formula_counts_the_real_unet_calls():
    "The FLOPs per image of the translation / Diff-II rows assume these numbers of UNet samples per image: count them."
    from diffmix_nb.generate import translate
    ours, _ = perf.suite_pipelines('tiny', 'cpu')
    seen = []
    h = perf._unwrap(ours.unet).register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    from diffmix_nb.diffii import invert_images, diffii_generate
    try:
        translate(ours, perf._random_images(3, 32), 'a photo of a top', 0.7, [0, 1, 2], 25, 7.5, 'dpm++', 32, batch_size=3)
        assert sum(seen) == 3 * 2 * int(25 * 0.7) and set(seen) == {6}
        seen.clear(); xT = invert_images(ours, perf._random_images(2, 32), ['a', 'b'], 7, 32)
        assert sum(seen) == 2 * 7                                               # inversion: guidance 1, one sample per step
        seen.clear(); diffii_generate(ours, xT, ['a', 'b'], ['x', 'y'], 0.3, 5, 7.5)
        assert sum(seen) == 2 * 2 * 5                                           # denoise: guided pair per step
    finally: h.remove()


def test_optimize_switch(monkeypatch):
    "One switch ($DIFFMIX_OPTIMIZE) for generation, fine-tuning and the classifier; channels-last stays off on the CPU in `auto`."
    assert runtime.optimize_settings('cpu')['channels_last'] is False and runtime.optimize_settings('cuda')['channels_last'] is True
    monkeypatch.setenv(runtime.OPTIMIZE_ENV, 'off')
    assert runtime.optimize_settings('cpu') == dict(level='off', sdpa=False, channels_last=False, compile=False, fused_optimizer=False)
    with runtime.optimize_level('on'): assert runtime.optimize_settings('cpu')['channels_last'] is True
    assert os.environ[runtime.OPTIMIZE_ENV] == 'off'
    monkeypatch.setenv(runtime.OPTIMIZE_ENV, 'turbo')
    with pytest.raises(ValueError, match='DIFFMIX_OPTIMIZE'): runtime.optimize_settings('cpu')


def test_optimize_reaches_every_stage(monkeypatch):
    "The switch is applied by the fine-tuning trainer (fused AdamW), generation's pipeline and the classifier (fused SGD)."
    from diffmix_nb.concepts import ConceptTrainer, finetune_config
    from diffmix_nb.data import ClassInfo
    from PIL import Image
    import numpy as np
    ims = [Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(2)]
    for level, fused in (('auto', True), ('off', None)):
        with runtime.optimize_level(level), warnings.catch_warnings():
            warnings.simplefilter('ignore')
            tr = ConceptTrainer(ims, [0, 1], [ClassInfo('a', 0, 'top'), ClassInfo('b', 1, 'top')], finetune_config('tiny', batch_size=2),
                                base_model=perf.TINY_SD, device='cpu')
        assert tr.optimizer.optimizer.defaults['fused'] is fused
    seen = []
    real = runtime.optimize_pipeline
    monkeypatch.setattr(runtime, 'optimize_pipeline', lambda pipe, *a, **k: (seen.append(a), real(pipe, *a, **k))[1])
    from diffmix_nb.generate import GenContext
    from diffmix_nb.data import load_dataset_spec, make_split
    ctx = GenContext(make_split(load_dataset_spec('fashion_mnist'), shots=1, seed=0), str(perf.TINY_SD), device='cpu', dtype=torch.float32)
    with runtime.optimize_level('on'): ctx.pipe
    assert seen and seen[0][0] is True                                          # channels_last forced by 'on'


def test_classifier_checkpoints_are_batched(monkeypatch, tmp_path):
    "The training loop writes last/best checkpoints at most every CHECKPOINT_SECONDS (and at the end), not every epoch; resume still works."
    from diffmix_nb import classify
    from diffmix_nb.data import load_dataset_spec, make_split
    sp = make_split(load_dataset_spec('fashion_mnist'), shots=2, seed=0, val_per_class=2)
    writes = []
    real = classify.save_checkpoint
    monkeypatch.setattr(classify, 'save_checkpoint', lambda obj, path: (writes.append((Path(path).name, obj['epoch'])), real(obj, path))[1])
    monkeypatch.setattr(classify, 'CHECKPOINT_SECONDS', 1e9)
    cfg = dict(epochs=4, batch_size=10, test_limit=50)
    part = classify.train_classifier(sp, cfg=cfg, out_dir=tmp_path, stop_after=2, progress=False)
    assert part['status'] == 'stopped' and [w for w in writes if w[0] == 'last.safetensors'] == [('last.safetensors', 1)]
    res = classify.train_classifier(sp, cfg=cfg, out_dir=tmp_path, progress=False)
    assert res['status'] == 'finished' and [w for w in writes if w[0] == 'last.safetensors'] == [('last.safetensors', 1), ('last.safetensors', 3)]
    assert classify.train_classifier(sp, cfg=cfg, progress=False)['test_acc'] == res['test_acc']   # same as an uninterrupted run


def test_bench_classifier_uses_the_training_settings():
    "On the CPU ours is what train_classifier runs: fused SGD, default layout (channels-last measured slower there)."
    rows = perf.bench_classifier('tiny', 'cpu', steps=1, warmup=1, repeats=1, models=(('resnet18', 32, 4, {}),))
    cfg = rows[0]['ours_config']
    assert cfg['fused_optimizer'] is True and cfg['channels_last'] is False and rows[0]['baseline_config']['fused_optimizer'] is False


@pytest.mark.skipif(not os.environ.get('DIFFMIX_SMOKE'), reason='set DIFFMIX_SMOKE=tiny (about a minute) or sd15 (15-40 min, 14 GB RAM at the 2-process stage)')
def test_smoke(tmp_path):
    "`diffmix smoke`: every stage on the tiny or the real-size random models, each in its own process, and the 2-process run."
    from diffmix_nb.smoke import run_smoke, SMOKE_STAGES
    size = os.environ['DIFFMIX_SMOKE'] if os.environ['DIFFMIX_SMOKE'] in ('tiny', 'sd15') else 'tiny'
    out = Path(os.environ.get('DIFFMIX_SMOKE_DIR') or tmp_path)
    rep = run_smoke(out, size, verbose=False)
    assert rep['ok'], [(r['stage'], r['error']) for r in rep['stages'] if r['rc']]
    assert [r['stage'] for r in rep['stages']] == ['models', *SMOKE_STAGES]
    v = {r['stage']: r.get('value') for r in rep['stages']}
    assert v['ddp']['lora_identical'] and v['ddp']['rows_identical'] and v['ddp']['processes'] == 2
    assert v['ddp']['shards_sum'] == v['ddp']['plan_tasks'] and v['ddp']['shards_cover_plan'] and v['ddp']['shards_disjoint']
    assert v['load']['dtype'] == 'torch.float32' and v['load']['token_ids'] == [v['load']['vocab'] - 2]
    o = v['optimize']
    assert o['finetune']['max_abs_lora'] < 1e-4 and o['classifier']['max_abs_logits'] < 1e-2 and o['translate']['mean_abs_px'] < 2
    if size == 'sd15':
        assert rep['models']['params']['unet'] == 859_520_964 and rep['models']['params']['ip2p_unet'] == 859_532_484
