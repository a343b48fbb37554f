"""Harness for the bad-input suite: run a CLI (in process, through the one runner, or as ``python -m``) and
check that it failed cleanly: a message, a non-zero exit status, no traceback, and no file lost or changed."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def invoke(module: str, argv: list[str], cwd: Path | None = None) -> Outcome:
    """``python -m module argv`` in this process: the module's ``main`` through ``vichat.cli.run``.

    An exception that escapes the runner is a traceback the user would see: it fails the test.
    ``SystemExit`` (argparse's usage errors) counts as an exit status.
    """
    from vichat.cli import run

    mod = importlib.import_module(module)
    out, err = io.StringIO(), io.StringIO()
    old = Path.cwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = run(mod.main, argv)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
                if not isinstance(e.code, int) and e.code is not None:
                    err.write(str(e.code))
    finally:
        os.chdir(old)
    return Outcome(code, out.getvalue(), err.getvalue())


def invoke_subprocess(module: str, argv: list[str], cwd: Path | None = None, timeout: float = 300,
                      env: dict | None = None) -> Outcome:
    """The real ``python -m module`` (checks the ``__main__`` wiring too)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", module, *argv], cwd=cwd or REPO, capture_output=True, text=True,
        timeout=timeout, env=full_env,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def snapshot(*roots: Path) -> dict[str, str]:
    """Path -> sha256 of every file under ``roots`` (lock files excluded)."""
    digest = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            if path.name.startswith(".") and path.name.endswith(".lock"):
                continue
            digest[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def assert_clean_failure(outcome: Outcome, *, contains: str | None = None) -> None:
    """Non-zero exit, a message, no traceback."""
    assert outcome.code not in (0, None), f"exit 0 on bad input:\n{outcome.text}"
    assert "Traceback" not in outcome.text, outcome.text
    assert outcome.err.strip() or outcome.out.strip(), "failed without a message"
    if contains is not None:
        assert contains.lower() in outcome.text.lower(), outcome.text


@pytest.fixture
def unchanged():
    """``with unchanged(dir1, file2): ...`` asserts no file under them was lost, added-over or changed."""

    @contextlib.contextmanager
    def check(*roots: Path):
        before = snapshot(*roots)
        yield
        after = snapshot(*roots)
        lost = sorted(set(before) - set(after))
        changed = sorted(p for p in before if p in after and before[p] != after[p])
        assert not lost, f"files lost: {lost}"
        assert not changed, f"files changed: {changed}"

    return check
