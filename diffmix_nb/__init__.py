"""Diffusion-based data augmentation for image classification (Diff-Mix, Diff-II, DiffuseMix and their baselines), as literate nbdev notebooks

Modules:

- `diffmix_nb.classify`: timm backbones, the papers' transforms and schedule, the synthetic-mixing dataset that reads manifests, CutMix / Mixup / CMO / DRW baselines, validation-based model selection, seeds, tables and curves.
- `diffmix_nb.concepts`: One new token per class and one shared LoRA on a frozen Stable Diffusion, learned from the split file's training images only, written as files that `load_textual_inversion` and `load_lora_weights` of plain diffusers read.
- `diffmix_nb.core`: The few mechanisms every stage shares: one config (a *preset*) that picks base model, resolution, steps and dataset; explicit seeding; file names that never come from raw class names; and writes that are either complete or absent.
- `diffmix_nb.diffii`: New images of a class from the space *between and around* its real images: invert every real image to noise, walk the great circle through two inversions of the same class, and denoise the point reached with the class prompt, adding a scene phrase only during the first, noisiest steps.
- `diffmix_nb.diffusemix`: Label-preserving augmentation from an instruction-editing model: restyle an image ("snowy", "watercolor art"), keep half of the original beside half of the edit, and blend in a little of a fractal pattern.
- `diffmix_nb.gates`: Five quality gates for a tiny-world base model, each measured with the shipped Fashion-MNIST oracle and printed by `diffmix gates`: coarse-class accuracy, Fréchet distance per coarse class, colour cast, Diff-Gen agreement after 5-shot fine-tuning, and Real-Guidance faithfulness.
- `diffmix_nb.generate`: One engine for every synthetic-data method: a deterministic *plan* of tasks, a batched img2img / txt2img operator where every task keeps its own prompt, strength and seed, and a resumable, sharded executor that writes images atomically and one manifest row per finished image.
- `diffmix_nb.models`: Everything that touches a Stable-Diffusion-shaped model folder before a stage uses it: the offline CLIP tokenizer, `load_pipeline` for any diffusers folder or hub id, the one prompt encoder, SD-1.5-sized components with random weights for timing and smoke runs, and which preset a given model belongs to.
- `diffmix_nb.perf`: One suite that times every expensive stage (concept fine-tuning, batched translation, Diff-II inversion and denoising, classifier training) against a reference-style loop in the same process, counts the UNet's FLOPs to turn images/s into a fraction of the GPU's peak, estimates memory per batch, and backs off instead of crashing when a batch does not fit.
- `diffmix_nb.runtime`: How every stage runs on its hardware: one switch (`$DIFFMIX_OPTIMIZE`) that decides fused attention, channels-last weights, fused optimiser steps and `torch.compile`, and one way to survive a batch that does not fit in GPU memory.
- `diffmix_nb.smoke`: SD-1.5-sized and InstructPix2Pix-sized models with random weights, written as vanilla diffusers folders, driven through every stage by the same commands a GPU user types, at 64 px, with the peak memory and time of each stage.
- `diffmix_nb.tiny`: The real CLIP tokenizer built offline, diffusers components at toy sizes, vanilla `save_pretrained` folders, and the pretraining that produced the shipped `tiny-sd` and `tiny-ip2p` base models from Fashion-MNIST with coarse captions."""

__version__ = "0.1.0"
