"""Shared fixtures for the data pipeline tests: a stand-in translation service and JSONL helpers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from testkit.translate_server import FakeTranslateServer
from train.translate import TranslateSettings


@pytest.fixture
def fast_settings(tmp_path: Path) -> Callable[..., TranslateSettings]:
    """Translation settings with tiny backoff delays and a cache in the test's folder."""

    def make(server: FakeTranslateServer, **overrides: Any) -> TranslateSettings:
        values: dict[str, Any] = {
            "url": server.url,
            "cache_dir": str(tmp_path / "cache"),
            "concurrency": 4,
            "timeout_s": 2.0,
            "max_attempts": 4,
            "backoff_s": 0.001,
            "backoff_max_s": 0.01,
            "progress": False,
        }
        values.update(overrides)
        return TranslateSettings(**values)

    return make


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records), encoding="utf-8"
    )
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def jsonl() -> Any:
    """The write/read helpers, as a fixture (test modules are not importable as a package)."""

    class Helpers:
        write = staticmethod(write_jsonl)
        read = staticmethod(read_jsonl)

    return Helpers
