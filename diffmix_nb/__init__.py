"""Diffusion-based data augmentation for image classification (Diff-Mix, Diff-II, DiffuseMix and their baselines), as literate nbdev notebooks

Modules:

- `diffmix_nb.core`: The few mechanisms every stage shares: one config (a *preset*) that picks base model, resolution, steps and dataset; explicit seeding; file names that never come from raw class names; and writes that are either complete or absent.
- `diffmix_nb.tiny`: The real CLIP tokenizer built offline, diffusers components at toy sizes, vanilla `save_pretrained` folders, and the pretraining that produced the shipped `tiny-sd` and `tiny-ip2p` base models from Fashion-MNIST with coarse captions."""

__version__ = "0.1.0"
