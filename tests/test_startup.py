"""Start-up: `vitlab --help`, a command's --help and a usage error never import torch; the
package's public names are imported on first use; `vitlab models` reads the figures it counted
before from its cache, and they are `model_stats`'s. Timings: benchmarks/startup.py (speeds are
measured, never asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

import vitlab
from vitlab import cli, flops

# every command, as `vitlab --help` lists them
COMMANDS = re.findall(r"^    ([a-z]+)  ", cli.build_parser().format_help(), flags=re.M)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_help_and_usage_errors_do_not_import_torch():
    assert len(COMMANDS) >= 14 and {"train", "eval", "bench", "presets"} <= set(COMMANDS)
    r = _python(f"""
        import contextlib, io, sys
        from vitlab import cli
        for argv in [["--help"], *[[c, "--help"] for c in {COMMANDS!r}], ["bench", "--rounds", "x"], ["nope"],
                     ["bench", "--batch", "2", "--help"]]:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                try:
                    cli.main(argv)
                except SystemExit:
                    pass
        import vitlab
        vitlab.__version__, vitlab.__all__, dir(vitlab)
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy")))
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_python_m_vitlab_help_imports_no_torch():
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "vitlab", "--help"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.startswith("usage: vitlab")
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "vitlab.cli" in imported and "torch" not in imported


def test_presets_command_imports_no_torch():
    r = _python("""
        import contextlib, io, sys
        from vitlab import cli
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli.main(["presets"]) == 0
        print("torch" in sys.modules)
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_public_names_are_imported_on_first_use():
    from vitlab.flops import count_flops
    from vitlab.models import create_model, list_models
    from vitlab.run.load import load_run
    from vitlab.weights import load_pretrained

    assert vitlab.__all__ == ["create_model", "list_models", "load_pretrained", "count_flops", "load_run",
                              "__version__"]
    assert (vitlab.create_model, vitlab.list_models, vitlab.load_pretrained, vitlab.count_flops, vitlab.load_run) == \
        (create_model, list_models, load_pretrained, count_flops, load_run)
    assert set(vitlab.__all__) <= set(dir(vitlab))
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        vitlab.nothing  # noqa: B018


# --------------------------------------------------------------------------- the figures of `vitlab models`


NAMES = ["vit_mnist", "resnet18"]


def test_cached_figures_are_model_stats(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    counted = {n: flops.model_stats(n) for n in NAMES}
    assert flops.cached_model_stats(NAMES, path=path) == counted
    assert path.is_file()

    def no_counting(*a, **k):
        raise AssertionError("counted again")

    monkeypatch.setattr(flops, "model_stats", no_counting)
    assert flops.cached_model_stats(NAMES, path=path) == counted  # read back, the same
    assert flops.cached_model_stats(["vit_mnist"], path=path) == {"vit_mnist": counted["vit_mnist"]}


def test_cache_is_counted_again_when_the_code_or_the_size_changes(tmp_path, monkeypatch):
    path = tmp_path / "stats.json"
    flops.cached_model_stats(["vit_mnist"], path=path)
    calls = []
    real = flops.model_stats
    monkeypatch.setattr(flops, "model_stats", lambda n, s=None: calls.append((n, s)) or real(n, s))

    assert flops.cached_model_stats(["vit_mnist"], img_size=56, path=path)["vit_mnist"] == real("vit_mnist", 56)
    assert calls == [("vit_mnist", 56)]  # another size: its own entry

    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "code": "other"}))  # other code (torch, vitlab.models, flops.py)
    flops.cached_model_stats(["vit_mnist"], path=path)
    assert calls[-1] == ("vit_mnist", None)

    for junk in ("not json", "[]", json.dumps({"code": json.loads(path.read_text())["code"],
                                                "entries": {"x": [1]}})):
        path.write_text(junk)
        assert flops.cached_model_stats(["vit_mnist"], path=path) == {"vit_mnist": real("vit_mnist")}


def test_a_cache_that_cannot_be_written_is_no_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert flops.cached_model_stats(["vit_mnist"], path=blocker / "vitlab" / "stats.json") == \
        {"vit_mnist": flops.model_stats("vit_mnist")}


def test_models_command_uses_the_cache(cache, capsys):
    assert cli.main(["models", "--family", "vt"]) == 0
    first = capsys.readouterr().out
    assert (cache / "vitlab" / "model_stats.json").is_file()  # conftest: XDG_CACHE_HOME per test
    assert cli.main(["models", "--family", "vt"]) == 0
    assert capsys.readouterr().out == first
    rows = {line.split()[0]: line.split() for line in first.splitlines() if line.startswith("vt_resnet")}
    for name, row in rows.items():
        params, macs, shape = flops.model_stats(name)
        assert row[1:4] == [f"{params:,}", "x".join(map(str, shape)), flops.format_macs(macs).split()[0]]
