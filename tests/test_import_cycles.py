"""The layout rules of sflnet/ and cli/: no import cycle (lazy imports inside functions count) and
no module over 600 lines, checked by validation/import_cycles.py from the source alone."""

import importlib.util
import pathlib
import textwrap

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "validation" / "import_cycles.py"



def load_script():
    spec = importlib.util.spec_from_file_location("import_cycles", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_in_sflnet_and_cli():
    script = load_script()
    found = script.cycles(script.import_graph(script.find_modules()))
    assert found == []


def test_no_module_over_600_lines():
    script = load_script()
    too_long = {path for path, _ in script.oversized(script.find_modules())}
    assert too_long == set()


def test_the_checker_finds_a_lazy_cycle_and_a_package_init_cycle(tmp_path, monkeypatch):
    """A cycle closed by an import inside a function, and one through a package's __init__, are both found."""
    script = load_script()
    root = tmp_path / "sflnet"
    (root / "pkg").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "a.py").write_text("from sflnet.b import f\n")
    (root / "b.py").write_text(textwrap.dedent("""
        def f():
            from sflnet import a
            return a
    """))
    (root / "pkg" / "__init__.py").write_text("from sflnet.c import g\n")
    (root / "pkg" / "inner.py").write_text("X = 1\n")
    (root / "c.py").write_text("from sflnet.pkg.inner import X\ndef g():\n    return X\n")
    (root / "d.py").write_text("\n" * 601)
    monkeypatch.setattr(script, "REPO", tmp_path)
    monkeypatch.setattr(script, "PACKAGES", {"sflnet": root})
    modules = script.find_modules()
    assert script.cycles(script.import_graph(modules)) == [["sflnet.a", "sflnet.b"], ["sflnet.c", "sflnet.pkg"]]
    assert script.oversized(modules) == [("sflnet/d.py", 601)]
