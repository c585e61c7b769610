"""ovkit.compat's import hook: fixes run lazily, once, when (and if) their module is imported."""
import sys

from ovkit.compat.hooks import ImportHooks


def test_fix_runs_after_first_import_only(tmp_path, monkeypatch):
    (tmp_path / 'ovkit_probe_mod.py').write_text('value = 1\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    hooks = ImportHooks()
    calls = []
    hooks.after_import('ovkit_probe_mod', lambda m: calls.append(m.value))
    hooks.install()
    try:
        assert calls == []  # nothing imported yet: nothing patched
        import ovkit_probe_mod  # noqa: F401
        assert calls == [1]  # ran once, on the executed module
        del sys.modules['ovkit_probe_mod']
        import ovkit_probe_mod  # noqa: F401,F811
        assert calls == [1]  # a fix is applied once
    finally:
        sys.meta_path.remove(hooks)
        sys.modules.pop('ovkit_probe_mod', None)


def test_fix_runs_at_once_when_module_is_loaded():
    hooks = ImportHooks()
    seen = []
    hooks.after_import('json', lambda m: seen.append(m.__name__))
    assert seen == ['json']


def test_replacement_serves_our_file(tmp_path):
    stub = tmp_path / 'stub.py'
    stub.write_text('SERVED = True\n')
    hooks = ImportHooks()
    hooks.replacements['ovkit_missing_upstream_mod'] = (str(stub), False)
    hooks.install()
    try:
        import ovkit_missing_upstream_mod as mod
        assert mod.SERVED
    finally:
        sys.meta_path.remove(hooks)
        sys.modules.pop('ovkit_missing_upstream_mod', None)
