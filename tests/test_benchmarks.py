"The measurement scripts in benchmarks/ run on the shipped model and give rates that obey their own ordering."
import subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))


def test_keep_ceiling_rows_and_conditioning():
    from keep_ceiling import keep_ceiling, held_out_images
    ims, y = held_out_images(2)
    assert len(ims) == 20 and sorted(set(y.tolist())) == list(range(10)) and ims[0].size == (28, 28)
    r = keep_ceiling(per_class=2, strengths=(0.5,))
    for k in ('source', 'resample', 'roundtrip', 'keep@0.5', 'keep@0.5 | source right'):
        assert 0 <= r[k] <= 1, k
    assert r['n'] == 20 and set(r['per_class']['Coat']) == {'source', 'resample', 'roundtrip', 'keep@0.5'}
    # the per-class rates average to the overall rate (balanced classes)
    assert abs(sum(d['keep@0.5'] for d in r['per_class'].values()) / 10 - r['keep@0.5']) < 1e-3


def test_keep_ceiling_refuses_strengths_with_another_vae():
    p = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'keep_ceiling.py'), '--vae', 'x', '--strengths', '0.5'],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and '--vae measures the round trip only' in p.stderr
