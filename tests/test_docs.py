"""The API reference renders: `show_doc` (what nbdev's docs build calls for every exported symbol) works on each one."""
import importlib, pkgutil
import pytest
import diffmix_nb

MODULES = sorted(m.name for m in pkgutil.iter_modules(diffmix_nb.__path__) if not m.name.startswith('_'))

@pytest.mark.parametrize('modname', MODULES)
def test_show_doc_renders_every_export(modname):
    from nbdev.showdoc import show_doc
    mod = importlib.import_module(f'diffmix_nb.{modname}')
    names = getattr(mod, '__all__', [])
    assert names, f"diffmix_nb.{modname} exports nothing (missing #| export cells?)"
    bad = []
    for n in names:
        obj = getattr(mod, n)
        if not (callable(obj) or isinstance(obj, type)): continue
        try:
            md = show_doc(obj)._repr_markdown_()
            assert n.split('.')[-1] in md
        except Exception as e: bad.append(f"{n}: {type(e).__name__}: {e}")
    assert not bad, f"show_doc fails in diffmix_nb.{modname}: {bad[:5]}"
