"""The one arrow of the house (DESIGN.md §2): sources -> train -> vichat -> ui / eval. ``vichat/`` is the
shared library every other part imports, so it imports none of them, not even lazily inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from vichat.paths import REPO_ROOT

ABOVE = {"eval", "train", "ui", "bench", "tests", "app", "testkit"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def test_vichat_imports_nothing_above_it():
    files = sorted((REPO_ROOT / "vichat").rglob("*.py"))
    assert len(files) > 20
    wrong = [
        f"{path.relative_to(REPO_ROOT)}:{line}: imports {name}"
        for path in files
        for line, name in _imports(path)
        if name.split(".")[0] in ABOVE
    ]
    assert not wrong, "\n".join(wrong)


def test_the_screens_live_outside_the_library():
    assert not (REPO_ROOT / "vichat" / "ui").exists()
    assert {"chat.py", "compare.py", "judge.py", "train.py", "datasets.py"} <= {
        p.name for p in (REPO_ROOT / "ui").glob("*.py")
    }


@pytest.mark.parametrize("source", ["import eval.judge\n", "def f():\n    from train import config\n"])
def test_the_check_sees_lazy_imports(tmp_path, source):
    path = tmp_path / "m.py"
    path.write_text(source, encoding="utf-8")
    assert any(name.split(".")[0] in ABOVE for _, name in _imports(path))
