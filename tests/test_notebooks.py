"""Execute every notebook in nbs/ (cells flagged slow/cuda/notest are skipped), one pytest test per notebook.

Set DIFFMIX_TEST_FLAGS="slow" (space separated) to also run the flagged cells, as `nbdev-test --flags slow` would.
Each notebook runs in its own process, in its own folder, so notebooks cannot leak state into each other.
"""
import os, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'

def notebooks():
    return sorted(p for p in NBS.rglob('*.ipynb')
                  if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)
                  and '.ipynb_checkpoints' not in p.parts and not (p.parent/'.notest').exists())

@pytest.mark.parametrize('nb', notebooks(), ids=lambda p: str(p.relative_to(NBS)))
def test_notebook(nb):
    force = os.environ.get('DIFFMIX_TEST_FLAGS', '').split()
    skip = [f for f in ('notest', 'slow', 'cuda') if f not in force]
    code = textwrap.dedent(f"""
        import sys
        from nbdev.test import test_nb
        ok, t = test_nb({str(nb)!r}, skip_flags={skip!r}, force_flags={force!r}, cell_timing_min=10)
        print(f'{{t:.1f}} s'); sys.exit(0 if ok else 1)""")
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1'), 'MPLBACKEND': 'Agg', 'HF_HUB_OFFLINE': '1'}
    r = subprocess.run([sys.executable, '-c', code], cwd=nb.parent, env=env, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0: pytest.fail(f"{nb.name} failed:\n{r.stdout[-4000:]}\n{r.stderr[-8000:]}", pytrace=False)
    print(r.stdout.strip().splitlines()[-1])
