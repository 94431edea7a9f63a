"""Repository invariants: the library is what the notebooks export, notebooks are clean, README renders from
index.ipynb, and the documentation site lists every notebook with working internal links."""
import json, re, shutil, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS, LIB = ROOT/'nbs', ROOT/'diffmix_nb'
sys.path.insert(0, str(ROOT/'tools'))

def _scratch(tmp_path):
    shutil.copytree(NBS, tmp_path/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints', '_proc'))
    shutil.copy(ROOT/'pyproject.toml', tmp_path)
    (tmp_path/'diffmix_nb').mkdir(); shutil.copy(LIB/'__init__.py', tmp_path/'diffmix_nb')
    return tmp_path

def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"

def test_library_in_sync_with_notebooks(tmp_path):
    d = _scratch(tmp_path); _run(['nbdev-export'], d)
    gen = {p.name: p.read_text() for p in (d/'diffmix_nb').glob('*.py')}
    out_of_sync = [n for n, t in gen.items() if not (LIB/n).exists() or (LIB/n).read_text() != t]
    assert not out_of_sync, f"run `nbdev-export` and commit: {out_of_sync} differ from what the notebooks export"
    hand_written = {p.name for p in LIB.glob('*.py')} - set(gen)
    assert not hand_written, f"modules not exported by any notebook (edit notebooks, not modules): {sorted(hand_written)}"

def test_notebooks_clean(tmp_path):
    d = _scratch(tmp_path); _run(['nbdev-clean'], d)
    dirty = [str(p.relative_to(NBS)) for p in NBS.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts
             and p.read_text() != (d/'nbs'/p.relative_to(NBS)).read_text()]
    assert not dirty, f"run `nbdev-clean` and commit: {dirty}"

def test_readme_renders_from_index():
    from readme import render
    assert (ROOT/'README.md').read_text() == render(NBS/'index.ipynb'), "run `python tools/readme.py` and commit README.md"

def _site_notebooks():
    return sorted(str(p.relative_to(NBS)) for p in NBS.rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts
                  and not any(s.startswith(('_', '.')) for s in p.relative_to(NBS).parts))

def test_sidebar_lists_every_notebook():
    side = (NBS/'sidebar.yml').read_text()
    listed = re.findall(r'([\w./-]+\.ipynb)', side)
    missing = [n for n in _site_notebooks() if n not in listed]
    dangling = [n for n in listed if not (NBS/n).exists()]
    assert not missing, f"nbs/sidebar.yml does not list {missing}"
    assert not dangling, f"nbs/sidebar.yml lists missing notebooks {dangling}"
    assert (NBS/'_quarto.yml').exists()

def _md_targets(md):
    "Relative link and image targets of markdown text (with `<img src>`), anchors dropped."
    out = re.findall(r'\]\(([^)\s]+)(?:\s+"[^"]*")?\)', md) + re.findall(r'<img\b[^>]*\bsrc="([^"]+)"', md)
    return [t.split('#')[0] for t in out if t.split('#')[0] and not re.match(r'[a-z][a-z0-9+.-]*:|/', t, re.I)]

def test_internal_links_resolve():
    "On the documentation site a notebook's links resolve relative to the notebook (nbs/), so they must exist there."
    bad = []
    for n in _site_notebooks():
        nb = json.loads((NBS/n).read_text())
        for c in nb['cells']:
            if c['cell_type'] != 'markdown': continue
            for target in _md_targets(''.join(c['source'])):
                if not target.endswith(('.ipynb', '.md', '.png', '.jpg', '.svg', '.html')): continue
                p = (NBS/n).parent/target
                if target.endswith('.html'): p = p.with_suffix('.ipynb')
                if not p.exists(): bad.append(f"{n} -> {target}")
    assert not bad, f"broken internal links (relative to the notebook, as the docs site resolves them): {bad}"

def test_readme_links_resolve_from_root():
    "README.md sits at the repo root, where GitHub resolves its links and images: each one must exist from there."
    targets = _md_targets((ROOT/'README.md').read_text())
    assert any(t.startswith('nbs/images/') for t in targets), "README.md shows no image from nbs/images"
    bad = [t for t in targets if not (ROOT/t).exists()]
    assert not bad, f"README.md links that do not resolve from the repo root: {bad} (fix nbs/index.ipynb, run tools/readme.py)"

def test_readme_links_rebased():
    from readme import rebase_links
    md = '![a](images/x.png) [b](52_results.ipynb#sec) [c](https://x.org/y.ipynb) [d](#top) <img src="images/y.png" width="9">'
    test = rebase_links(md)
    assert test == ('![a](nbs/images/x.png) [b](nbs/52_results.ipynb#sec) [c](https://x.org/y.ipynb) [d](#top) '
                    '<img src="nbs/images/y.png" width="9">'), test

_OUTSIDE = re.compile('|'.join([r'\b(METHODS|RESULTS|DESIGN|STYLE|ENVIRONMENT)' + r'\.md\b', r'\.\./shared\b', '/work/' + 'shared',
                                r'\bMETHODS (section|[0-9])']))

def test_no_reference_outside_the_repo():
    "Nothing in the project points to a document that is not in it (the methods and results pages live in nbs/)."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, capture_output=True, text=True).stdout.split()
    bad = []
    for f in files:
        p = ROOT/f
        if not p.is_file() or p.suffix in ('.png', '.jpg', '.safetensors', '.bin', '.gz', '.pt'): continue
        try: text = p.read_text()
        except (UnicodeDecodeError, OSError): continue
        for i, line in enumerate(text.splitlines(), 1):
            if _OUTSIDE.search(line): bad.append(f"{f}:{i}: {line.strip()[:100]}")
    assert not bad, "references to files outside the repository (link nbs/methods.ipynb or nbs/published.ipynb instead):\n" + '\n'.join(bad)
