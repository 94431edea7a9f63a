"""Copy the light part of a `diffmix bench` folder, so that a study can go on in a later session on a fresh machine.

    python tools/carry_bench.py runs/bench carry/bench      # after `diffmix bench --report ...` has cached scores.json

Finished splits keep what the report reads: split.json, every classifier's results.json, each generation folder's
manifest, plan and cached scores.json (no images, no weights). Unfinished splits keep everything but classifier
weights (concepts, images), so `diffmix bench` resumes them job by job: `cp -r carry/bench/. runs/bench`.
"""
import json, shutil, sys
from pathlib import Path

from diffmix_nb.study import plan_jobs

LIGHT = ('manifest.jsonl', 'manifest.filtered.jsonl', 'plan.json', 'scores.json')


def split_finished(d: Path, setting: str, k: int) -> bool:
    "Every classifier job the full design plans for this split has a finished results.json."
    for j in plan_jobs(settings=(setting,), split_seeds=(k,)):
        if j['kind'] != 'classifier': continue
        f = d/'clf'/j['name']/f"seed{j['seed']}"/'results.json'
        if not f.exists() or json.loads(f.read_text()).get('status') != 'finished': return False
    return True


def carry(src, dst) -> dict:
    src, dst = Path(src), Path(dst); report = {}
    if dst.exists(): shutil.rmtree(dst)
    dst.mkdir(parents=True)
    if (src/'jobs.jsonl').exists(): shutil.copy2(src/'jobs.jsonl', dst/'jobs.jsonl')
    for sd in sorted(p for p in src.iterdir() if p.is_dir()):
        if (sd/'sweep.json').exists(): (dst/sd.name).mkdir(exist_ok=True); shutil.copy2(sd/'sweep.json', dst/sd.name/'sweep.json')
        for d in sorted(sd.glob('split*')):
            if not (d/'split.json').exists(): continue
            out = dst/sd.name/d.name; done = split_finished(d, sd.name, int(d.name[5:]))
            if done:
                files = [d/'split.json', *d.glob('clf/*/seed*/results.json'), *(f for n in LIGHT for f in d.glob(f'gen/*/{n}'))]
                missing = [g for g in d.glob('gen/*') if not (g/'scores.json').exists()]
                if missing: raise SystemExit(f"{missing[0]}: no scores.json; run `diffmix bench --report-only --report DIR` on {src} first")
            else:
                files = [f for f in d.rglob('*') if f.is_file() and not (f.parts[len(d.parts)] == 'clf' and f.suffix == '.safetensors')]
            for f in files:
                t = out/f.relative_to(d); t.parent.mkdir(parents=True, exist_ok=True); shutil.copy2(f, t)
            report[f'{sd.name}/{d.name}'] = 'finished (light)' if done else 'unfinished (resumable)'
    return report


if __name__ == '__main__':
    if len(sys.argv) != 3: raise SystemExit(__doc__)
    for k, v in carry(*sys.argv[1:]).items(): print(f'{k}: {v}')
