"The structure the Architecture page describes: no import cycle between modules, small functions, one home per helper."
import importlib.util, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('architecture', ROOT/'tools'/'architecture.py')
arch = importlib.util.module_from_spec(spec); spec.loader.exec_module(arch)

# Bodies allowed over 80 lines, each with its reason (the Architecture page lists them too).
LONG_OK: dict[str, str] = {}


def test_no_import_cycle():
    g = arch.import_graph()
    assert arch.cycles(g) == [], arch.cycles(g)


def test_stage_modules_sit_above_their_foundations():
    g = arch.import_graph()
    for low in ('core', 'data', 'models', 'runtime'):   # foundations import nothing above them
        assert not g[low] - {'core', 'data'}, (low, g[low])
    assert 'perf' not in set().union(*(g[m] for m in g if m not in ('smoke', 'perf'))), 'only the smoke test may import the benchmark suite'


def test_no_long_bodies():
    long = [(m, n, L) for m, n, L in arch.long_bodies(80) if f'{m}.{n}' not in LONG_OK]
    assert long == [], long


def test_one_definition_per_shared_helper():
    "Each of these names is defined in exactly one module."
    import ast
    names = ('n_params', 'check_options', 'versions', 'git_commit', 'accelerator', 'save_checkpoint', 'load_checkpoint',
             'IMAGE_EXTS', 'FMNIST_DIR', 'load_pipeline', 'clip_tokenizer', 'encode_prompts', 'build_sd15_random', 'preset_of',
             'oom_backoff', 'is_oom', 'apply_optimize', 'quiet_hub_logs', 'EDIT_PROMPTS', 'MANIFEST_FIELDS', 'read_manifest',
             '_check_options', '_save_ckpt', '_versions', '_accelerator', '_git_commit', 'quiet_hf', 'MANIFEST_KEYS',
             'model_preset', '_preset_of', 'image_grid', 'sample_grid', 'run_with_oom_backoff', 'batched_with_oom_backoff')
    seen = {}
    for m, p in arch.modules().items():
        for n in ast.parse(p.read_text()).body:
            targets = ([n.name] if isinstance(n, (ast.FunctionDef, ast.ClassDef)) else
                       [t.id for t in n.targets if isinstance(t, ast.Name)] if isinstance(n, ast.Assign) else
                       [n.target.id] if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) else [])
            for t in targets:
                if t in names: seen.setdefault(t, []).append(m)
    dup = {k: v for k, v in seen.items() if len(v) > 1}
    assert dup == {}, dup
