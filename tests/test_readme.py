"""The README's Python example runs as written, so the README cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_opens_with_the_two_commands() -> None:
    head = "\n".join(README.read_text(encoding="utf-8").splitlines()[:10])
    assert "make demo" in head and "make test" in head


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    blocks = _python_blocks()
    assert blocks, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})
    assert (tmp_path / "first.png").is_file()
    assert "checkpoint_sha256" in capsys.readouterr().out


def test_api_verbs_are_not_shadowed_by_subpackages() -> None:
    """`genloop.train(...)` etc. must stay functions even after every subpackage has been imported
    (a subpackage named like a verb would replace the function on first import)."""
    import importlib
    import pkgutil

    import genloop

    for mod in pkgutil.walk_packages(genloop.__path__, "genloop."):
        if not mod.name.endswith("__main__"):
            importlib.import_module(mod.name)
    for verb in genloop._API:
        assert callable(getattr(genloop, verb)) and not isinstance(getattr(genloop, verb), type(genloop)), verb
