"""tiny-sd v2 pretraining (nbs/15_tiny.ipynb): exact resume, pickle-free checkpoints, export, and the CLIP tokenizer
loaded from the shipped folder (no open_clip)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from diffmix_nb.tiny import pretrain_tiny_sd_v2, export_tiny_sd, read_fashion_mnist
from diffmix_nb.models import load_pipeline, clip_tokenizer, CLIP_TOKENIZER_DIR
from diffmix_nb.core import load_checkpoint

@pytest.fixture(scope='module')
def data():
    x, y = read_fashion_mnist('test')
    return x[:48], y[:48]

def _unet(work):
    return load_checkpoint(Path(work)/'unet.pt')

def test_resume_is_exact(data, tmp_path):
    kw = dict(data=data, vae_steps=2, batch_size=4, warmup=2, checkpoint_every=1000)
    torch.set_num_threads(1)
    pretrain_tiny_sd_v2(tmp_path/'a', unet_steps=4, **kw)                      # in one go
    pretrain_tiny_sd_v2(tmp_path/'b', unet_steps=2, **kw)                      # stopped at 2 ...
    assert _unet(tmp_path/'b')['state']['step'] == 2
    pretrain_tiny_sd_v2(tmp_path/'b', unet_steps=4, **kw)                      # ... resumed (and extended) to 4
    a, b = _unet(tmp_path/'a'), _unet(tmp_path/'b')
    assert a['state']['step'] == b['state']['step'] == 4
    for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), k
    for k in a['ema']: assert torch.equal(a['ema'][k], b['ema'][k]), k
    assert a['state']['log'][-1][0] == b['state']['log'][-1][0] == 4   # (b's last entry averages only steps 3-4)
    # every checkpoint is a safetensors file (no pickle) that loads back
    from safetensors import safe_open
    for f in ('vae.pt', 'unet.pt', 'latents.pt'):
        with safe_open(str(tmp_path/'b'/f), 'pt') as h: assert list(h.keys())
        load_checkpoint(tmp_path/'b'/f)
    log = (tmp_path/'b'/'log.txt').read_text()
    assert 'unet step 4/4' in log and 'checkpoint' in log

def test_export(data, tmp_path):
    pretrain_tiny_sd_v2(tmp_path/'w', data=data, vae_steps=2, unet_steps=2, batch_size=4, warmup=1)
    out = export_tiny_sd(tmp_path/'w', tmp_path/'tiny-sd-v2')
    from safetensors import safe_open
    with safe_open(str(out/'unet'/'diffusion_pytorch_model.safetensors'), 'pt') as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}
    pipe = load_pipeline(out, device='cpu')
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 8 and pipe.vae.config.scaling_factor == 1.0
    assert pipe.unet.dtype == torch.float32
    with pytest.raises(FileNotFoundError, match='no UNet checkpoint'): export_tiny_sd(tmp_path/'empty', tmp_path/'x')

def test_clip_tokenizer_offline(tmp_path):
    tok = clip_tokenizer()
    assert tok('a photo of a cat').input_ids == [49406, 320, 1125, 539, 320, 2368, 49407] and len(tok) == 49408
    tok.add_tokens(['<class_0>'])
    assert tok('a <class_0> top').input_ids[2] == 49408
    with pytest.raises(FileNotFoundError, match='merges.txt'):
        (tmp_path/'t').mkdir(); (tmp_path/'t'/'vocab.json').write_text('{}'); clip_tokenizer(source=tmp_path/'t')
    pyproject = Path(__file__).parents[1]/'pyproject.toml'
    assert 'open_clip' not in pyproject.read_text()
