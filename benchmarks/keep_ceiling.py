"""Where Real-Guidance loses class evidence, measured on images the oracle never trained on.

The `diffmix gates` keep rate translates the 5-shot training images, which come from Fashion-MNIST's training set,
the set the oracle was trained on: part of the oracle's accuracy on those sources is memory of the exact pixels. This
script repeats the measurement on `--per-class` held-out test images per class (in no split and not in the oracle's
training), at each stage of an img2img translation with the base model and the class-name prompt:

- `source`: the oracle on the untouched images (its honest accuracy: the ceiling of every keep rate);
- `resample`: on the images resized to the model's side and back, as `translate` resizes them (no model at all);
- `roundtrip`: on their VAE round trips (encode, decode, no denoising, resized back the same way);
- `keep@s`: on Real-Guidance translations at each `--strengths` value (the tiny preset's sampler and guidance);
- `keep@s | source right`: the same, only over the images the oracle gets right on the source, so the oracle's own
  errors drop out and what is left is the translation's.

    python benchmarks/keep_ceiling.py --json runs/keep_ceiling.json
    python benchmarks/keep_ceiling.py --model path/to/another/tiny-sd --strengths 0.3 0.5 0.7
    python benchmarks/keep_ceiling.py --vae path/to/a/retrained/vae --strengths      # round trip of another VAE only
    python benchmarks/keep_ceiling.py --guidance-scale 1 --prompt '' --json runs/keep_noprompt.json   # is it the prompt?

`--vae` swaps the VAE of the round-trip row only: a different VAE's latents do not fit the model's UNet, so give no
strengths with it.
"""
import argparse, json, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffmix_nb.core import TINY_SD, derive_seed, get_preset
from diffmix_nb.concepts import Concepts
from diffmix_nb.data import FMNIST_CLASSES
from diffmix_nb.gates import vae_roundtrip
from diffmix_nb.generate import translate, _resolution
from diffmix_nb.models import load_pipeline
from diffmix_nb.study import load_oracle, oracle_predict, to_oracle_input, tiny_split
from diffmix_nb.tiny import read_fashion_mnist


def held_out_images(per_class: int) -> tuple[list, torch.Tensor]:
    "The first `per_class` test images of each class, as RGB PIL images (as a split's `load_image` returns them)."
    X, Y = read_fashion_mnist('test')
    idx = np.concatenate([np.flatnonzero(Y == c)[:per_class] for c in range(10)])
    return [Image.fromarray(X[i]).convert('RGB') for i in idx], torch.tensor(Y[idx])


@torch.no_grad()
def keep_ceiling(model=TINY_SD, per_class: int = 100, strengths=(0.5,), preset: str = 'tiny', batch_size: int = 50,
                 vae=None, guidance_scale: float | None = None,
                 prompt: str | None = None) -> dict:   # one prompt for every image instead of the class-name prompts
    oracle, g = load_oracle(), get_preset(preset)['generate']
    gs = g['guidance_scale'] if guidance_scale is None else guidance_scale
    ims, y = held_out_images(per_class)
    hit = lambda outs: (oracle_predict(oracle, to_oracle_input(outs)).argmax(1) == y).float()
    pipe = load_pipeline(str(model), device='cpu'); pipe.set_progress_bar_config(disable=True); side = _resolution(pipe)
    plain = Concepts.plain(tiny_split('5shot', seed=0), str(model))   # prompts depend on the class only
    if vae is not None:
        from diffusers import AutoencoderKL
        other = AutoencoderKL.from_pretrained(vae).float().eval()
    rows = {'source': hit(ims),
            'resample': hit([im.resize((side, side), Image.BICUBIC).resize(im.size, Image.LANCZOS) for im in ims]),
            'roundtrip': hit(vae_roundtrip(other if vae is not None else pipe.vae, ims, side))}
    for s in strengths:
        outs = translate(pipe, ims, [plain.prompt(int(c)) if prompt is None else prompt for c in y], s, [derive_seed('keep-ceiling', i) for i in range(len(ims))],
                         g['num_inference_steps'], gs, g['scheduler'], batch_size=batch_size)
        rows[f'keep@{s}'] = hit(outs)
    right = rows['source'].bool()
    res = {k: float(v.mean()) for k, v in rows.items()}
    res.update({f'{k} | source right': float(v[right].mean()) for k, v in rows.items() if k != 'source'})
    res['per_class'] = {FMNIST_CLASSES[c]: {k: round(float(v[y == c].mean()), 3) for k, v in rows.items()} for c in range(10)}
    return dict(model=str(model), vae=str(vae) if vae is not None else None, n=len(ims), strengths=list(strengths), guidance_scale=gs, prompt=prompt, **res)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=str(TINY_SD)); p.add_argument('--per-class', type=int, default=100)
    p.add_argument('--strengths', type=float, nargs='*', default=[0.5]); p.add_argument('--json', default=None)
    p.add_argument('--vae', default=None, help='measure the round trip with this VAE folder instead')
    p.add_argument('--guidance-scale', type=float, default=None, help="classifier-free guidance (default: the tiny preset's)")
    p.add_argument('--prompt', default=None, help='one prompt for every image (\'\' for none) instead of the class-name prompts')
    a = p.parse_args(); t0 = time.perf_counter()
    if a.vae and a.strengths: p.error('--vae measures the round trip only: pass --strengths with no values')
    res = keep_ceiling(a.model, a.per_class, a.strengths, vae=a.vae, guidance_scale=a.guidance_scale, prompt=a.prompt); res['seconds'] = round(time.perf_counter() - t0)
    w = max(len(k) for k in res if isinstance(res[k], float))
    for k, v in res.items():
        if isinstance(v, float): print(f'{k:<{w}}  {v:.3f}')
    print(f"{'class':<12}" + ''.join(f'{k:>11}' for k in next(iter(res['per_class'].values()))))
    for c, d in res['per_class'].items(): print(f'{c:<12}' + ''.join(f'{v:>11.2f}' for v in d.values()))
    print(f"({res['n']} held-out test images, {res['seconds']} s)")
    if a.json: Path(a.json).parent.mkdir(parents=True, exist_ok=True); Path(a.json).write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
