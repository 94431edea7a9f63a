"Checks of the study's design machinery (diffmix_nb.study): job plans, budget estimate, paired bootstrap, claims, the CLI, the results page JSON."
import json
from pathlib import Path

import numpy as np
import pytest

from diffmix_nb.cli import main
from diffmix_nb.study import (DESIGNS, MIN_UNITS, STUDY_METHODS, bootstrap_ci, claims_table, compare, differences_table, estimate_budget,
                              plan_jobs, ranking_agreement, study_reading, study_runs)

ROOT = Path(__file__).resolve().parents[1]


def _fake_study(splits=3, seeds=3, effect=1.0, methods=('original', 'real-mix', 'diff-mix', 'diff-mix-hard', 'diff-aug')):
    rng = np.random.default_rng(1); runs = []
    for k in range(splits):
        for r in range(seeds):
            base = 60 + 4 * k
            for i, m in enumerate(methods): runs.append(dict(method=m, split_seed=k, seed=r, test_acc=base + effect * i + rng.normal(0, 0.2)))
    syn = {m: dict(n=250, faithfulness=0.3 + 0.1 * i, diversity=0.7 - 0.05 * i, vendi=2.0) for i, m in enumerate(methods) if m != 'original'}
    return dict(format='diffmix_nb.study/2', settings={'5shot': dict(runs=runs, synthetic=syn, real=dict(faithfulness=0.95, diversity=0.5, vendi=3.0))})


def test_full_design_size_and_quick_subset():
    full, quick = plan_jobs(**DESIGNS['full']), plan_jobs(**DESIGNS['quick'])
    clf = [j for j in full if j['kind'] == 'classifier']
    assert {(j['split_seed'], j['seed']) for j in clf} == {(k, r) for k in range(3) for r in range(3)}   # 3 x 3 per setting
    assert {j['setting'] for j in quick} == {'5shot'} and len(quick) < len(full) / 5
    assert len({(j['setting'], j['split_seed'], j['name']) for j in full if j['kind'] == 'generate'}) == len([j for j in full if j['kind'] == 'generate'])


def test_paired_bootstrap_and_claims():
    st = _fake_study()
    c = compare(st, '5shot', 'diff-mix', 'real-mix')
    assert c['n'] == 9 and c['lo'] > 0 and c['verdict'] == 'holds'
    # a big common split shift cancels: the unpaired spread is ~4 points, the paired interval is narrow
    assert c['half_width'] < 0.5
    md, rows = claims_table(st)
    assert {r['claim'] for r in rows} >= {'Diff-Mix > Real-Mix', 'soft > hard labels', 'Diff-Mix > Diff-Aug > Original'}
    soft = next(r for r in rows if r['claim'] == 'soft > hard labels')
    assert soft['verdict'] == 'refuted' and 'one-hot label is wrong' in soft['why']   # hard is +1 point per unit here
    assert 'paired units' in study_reading(st)


def test_too_few_units_never_get_a_verdict():
    st = _fake_study(splits=1, seeds=MIN_UNITS - 1, effect=5.0)
    assert compare(st, '5shot', 'diff-mix')['verdict'] == 'unresolved'
    assert 'too few' in claims_table(st)[1][0]['why']


def test_bootstrap_nested_is_wider_with_split_effects():
    v = np.array([0.0, 0.1, 0.2, 3.0, 3.1, 3.2]); cl = [0, 0, 0, 1, 1, 1]
    assert bootstrap_ci(v, cl, resample='nested')['half_width'] > bootstrap_ci(v)['half_width']


def test_committed_study_renders():
    study = json.loads((ROOT/'nbs/results/tiny_study.json').read_text())
    for s in study['settings']:
        assert study_runs(study, s)
    md, rows = differences_table(study)
    assert rows and all(r['lo'] <= r['mean'] <= r['hi'] for r in rows)
    ra = ranking_agreement(study, n_boot=200)
    assert ra is None or -1 <= ra['rho'] <= 1


def test_committed_study_ran_at_the_presets_finetune_steps():
    "The results page and the tiny preset describe the same concepts: the study's recorded steps are the preset's."
    from diffmix_nb.core import get_preset
    study = json.loads((ROOT/'nbs/results/tiny_study.json').read_text())
    recorded = {s: st.get('finetune_steps') for s, st in study['settings'].items()}
    assert all(recorded.values()), f"the study does not record its fine-tuning steps: {recorded}"
    assert all(v == [get_preset('tiny')['finetune']['steps']] for v in recorded.values()), recorded


def test_cli_estimate(tmp_path, capsys):
    rows = [dict(kind=k, setting='5shot', seconds=s, ran=True) for k, s in (('split', 1), ('concepts', 50), ('generate', 30), ('classifier', 20))]
    (tmp_path/'jobs.jsonl').write_text('\n'.join(json.dumps(r) for r in rows) + '\n')
    assert main(['bench', '--out', str(tmp_path), '--estimate']) == 0
    out = capsys.readouterr().out
    assert 'classifier' in out and 'total' in out and ' h' in out


def test_score_manifest_by_label_or_by_target(tmp_path):
    "The sweep scores against the class translated into; the study against the soft label's argmax."
    from PIL import Image
    from diffmix_nb.study import load_oracle, oracle_predict, score_manifest, to_oracle_input
    rng = np.random.default_rng(0); oracle = load_oracle(); rows = []
    ims = [Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)) for _ in range(4)]
    pred = oracle_predict(oracle, to_oracle_input(ims)).argmax(1).tolist()
    (tmp_path/'images').mkdir()
    for i, (im, p) in enumerate(zip(ims, pred)):
        im.save(tmp_path/'images'/f'{i}.png'); src = (p + 1) % 10      # low strength: the label still leans to the source
        rows.append(dict(id=str(i), path=f'images/{i}.png', source_label=src, target_label=p, strength=0.1, soft_label={str(src): 0.7, str(p): 0.3}))
    (tmp_path/'manifest.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    assert score_manifest(tmp_path/'manifest.jsonl', oracle, intended='target')['faithfulness'] == 1.0
    assert score_manifest(tmp_path/'manifest.jsonl', oracle)['faithfulness'] == 0.0
    with pytest.raises(ValueError, match='intended'): score_manifest(tmp_path/'manifest.jsonl', oracle, intended='source')


def test_score_folder_caches_beside_the_manifest(tmp_path):
    "A carried bench keeps manifests and scores.json, not images: the cache answers while the manifest is unchanged."
    from PIL import Image
    from diffmix_nb.study import load_oracle, score_folder
    rng = np.random.default_rng(0); oracle = load_oracle(); (tmp_path/'images').mkdir(); rows = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path/'images'/f'{i}.png')
        rows.append(dict(id=str(i), path=f'images/{i}.png', source_label=0, target_label=1, soft_label={'1': 1.0}))
    (tmp_path/'manifest.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    first = score_folder(tmp_path, oracle)
    assert json.loads((tmp_path/'scores.json').read_text())['scores'] == first
    for f in (tmp_path/'images').iterdir(): f.unlink()
    assert score_folder(tmp_path, oracle) == first                       # no image read
    (tmp_path/'manifest.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows[:2]))
    with pytest.raises(FileNotFoundError): score_folder(tmp_path, oracle)  # a changed manifest is scored again, never served stale


def test_bench_workers_run_units_side_by_side(tmp_path):
    "Two (setting, split) units in two processes: every job once, the same folders as one process, nothing redone after."
    from diffmix_nb.study import bench
    kw = dict(settings=('5shot',), methods=['original'], split_seeds=(0, 1), seeds=(0,), epochs=1, test_limit=50, classifier=dict(img_size=32))
    log = bench(tmp_path, workers=2, log=lambda *a: None, **kw)
    assert sorted(r['id'] for r in log) == sorted(['5shot/split0/split/split', '5shot/split1/split/split',
                                                    '5shot/split0/classifier/original/seed0', '5shot/split1/classifier/original/seed0'])
    assert all(r['ran'] for r in log) and len((tmp_path/'jobs.jsonl').read_text().splitlines()) == 4
    assert all((tmp_path/'5shot'/f'split{k}'/'clf'/'original'/'seed0'/'results.json').exists() for k in (0, 1))
    assert not any(r['ran'] for r in bench(tmp_path, workers=2, log=lambda *a: None, **kw))
