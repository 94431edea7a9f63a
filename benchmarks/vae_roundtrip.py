"""Would a better-trained tiny VAE keep more class evidence? Train one, then measure its round trip.

Trains a VAE with `diffmix_nb.tiny.train_tiny_vae` (the v2 architecture with `--channels` latent channels, or
continuing an existing VAE with `--init`; resumable from `--work`), then prints the oracle's accuracy on the VAE round
trips of held-out test images beside the untouched and merely resized images (`keep_ceiling.py`'s rows, measured the
same way). The shipped VAE's own figures come from `keep_ceiling.py --vae diffmix_nb/assets/tiny-sd/vae --strengths`.

    python benchmarks/vae_roundtrip.py --init diffmix_nb/assets/tiny-sd/vae --lr 3e-4 --steps 3000 --work /tmp/vae8c
    python benchmarks/vae_roundtrip.py --channels 16 --steps 3000 --work /tmp/vae16
"""
import argparse, json, time
from pathlib import Path

import torch

from keep_ceiling import keep_ceiling
from diffmix_nb.tiny import read_fashion_mnist, train_tiny_vae, TINY_VAE_V2


def main():
    from diffusers import AutoencoderKL
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--init', default=None, help='continue training this VAE folder (fresh optimiser) instead of a new one')
    p.add_argument('--channels', type=int, default=8, help='latent channels of a new VAE')
    p.add_argument('--steps', type=int, default=3000); p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--lr', type=float, default=1e-3); p.add_argument('--work', default='runs/vae')
    p.add_argument('--per-class', type=int, default=100); p.add_argument('--json', default=None)
    a = p.parse_args(); t0 = time.perf_counter(); work = Path(a.work); work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    vae = (AutoencoderKL.from_pretrained(a.init).float() if a.init else
           AutoencoderKL(**{**TINY_VAE_V2, 'latent_channels': a.channels}))
    vae, info = train_tiny_vae(vae, read_fashion_mnist('train')[0], a.steps, a.batch_size, a.lr, 1e-5, seed=1 if a.init else 0,
                               layout='resize', work_dir=work, checkpoint_minutes=10, progress=True, log_file=work/'log.txt')
    vae.save_pretrained(work/'vae')
    res = keep_ceiling(per_class=a.per_class, strengths=(), vae=work/'vae')
    res.update(trained=(f'{a.init} + {a.steps} steps at lr {a.lr}' if a.init else f'new, {a.channels} channels, {a.steps} steps'),
               seconds=round(time.perf_counter() - t0))
    print(json.dumps({k: v for k, v in res.items() if k != 'per_class'}, indent=1))
    if a.json: Path(a.json).write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
