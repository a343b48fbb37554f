"""Bad-input suite for the data readers: ``vichat.data validate|stats`` and ``train.collect`` for every source.

Every file of the shared corpus (malformed JSONL, UTF-16, a JSON array, huge and deeply nested values, NaN,
lone surrogates, empty files...) and a set of bad JSON and Parquet files goes through each CLI: each must
fail with a message and a non-zero exit status, no traceback, no file of the input folder changed, and (for
``train.collect``) no output written.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from tests.reliability.conftest import assert_clean_failure, invoke, invoke_subprocess
from tests.reliability.corpus import BAD_JSONL, write_corpus
from train.sources import SOURCES

CORPUS = sorted(BAD_JSONL)


def _parquet(rows: list[dict]) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(rows).to_parquet(buffer)
    return buffer.getvalue()


GOOD_PARQUET = _parquet(
    [{"question": "Cúm là gì?", "answer": "Một bệnh do virus.", "title": "Cúm", "topic": 1}]
)
ROW = {
    "instruction": "Xin chào",
    "input": "Chào",
    "output": "Chào bạn",
    "prompt": ["Xin chào"],
    "response": ["Chào"],
}

BAD_FILES: dict[str, tuple[str, bytes]] = {
    "json_cut_short": (".json", (b'[{"instruction": "a", "input": "", "output": "b"},\n{"instr')),
    "json_missing_comma": (".json", b'[{"input": "a", "output": "b"}\n{"input": "c", "output": "d"}]'),
    "json_utf16": (".json", json.dumps([ROW]).encode("utf-16")),
    "json_utf16le_no_bom": (".json", json.dumps([ROW]).encode("utf-16-le")),
    "json_invalid_utf8": (".json", b'[{"input": "\xff", "output": "b"}]'),
    "json_nan": (".json", b'[{"input": "a", "output": "b", "prompt": "a", "response": "b", "score": NaN}]'),
    "json_huge_int": (".json", b'[{"input": "a", "output": "b", "id": ' + b"9" * 5000 + b"}]"),
    "json_deep": (".json", b'[{"input": "a", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]"),
    "json_surrogate": (
        ".json",
        b'[{"input": "a\\ud800", "output": "b", "prompt": "a\\udc00", "response": "b"}]',
    ),
    "json_not_rows": (".json", b'["just", "strings"]'),
    "json_scalar": (".json", b"42"),
    "json_empty": (".json", b""),
    "json_empty_list": (".json", b"[]"),
    "json_trailing_garbage": (".json", b'[{"input": "a", "output": "b"}] trailing'),
    "json_wrong_columns": (".json", b'[{"question_text": "a", "reply": "b"}]'),
    "parquet_garbage": (".parquet", b"PAR1 this is not a parquet file"),
    "parquet_cut_short": (".parquet", GOOD_PARQUET[: len(GOOD_PARQUET) // 2]),
    "parquet_wrong_columns": (".parquet", _parquet([{"q": "a", "a": "b"}])),
    "parquet_empty_cells": (
        ".parquet",
        _parquet(
            [
                {
                    c: None
                    for c in ("question", "answer", "input", "output", "instruction", "prompt", "response")
                }
            ]
        ),
    ),
    "csv_html": (".csv", b"<html><body>404 Not Found</body></html>\n"),
}


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    return write_corpus(tmp_path / "corpus")


@pytest.mark.parametrize("command", ["validate", "stats"])
@pytest.mark.parametrize("name", CORPUS)
def test_vichat_data_fails_cleanly_on_every_bad_file(tmp_path, corpus, unchanged, command, name):
    with unchanged(tmp_path / "corpus"):
        outcome = invoke("vichat.data", [command, str(corpus[name])])
    assert_clean_failure(outcome)
    if command == "validate":
        assert str(corpus[name]) in outcome.text  # the message names the file (and line)


def test_vichat_data_names_each_missing_file_and_checks_the_rest(tmp_path, corpus, unchanged):
    files = [str(tmp_path / "gone1.jsonl"), str(corpus["malformed"]), str(tmp_path / "gone2.jsonl")]
    for command in ("validate", "stats"):
        with unchanged(tmp_path / "corpus"):
            outcome = invoke("vichat.data", [command, *files])
        assert_clean_failure(outcome, contains="2 of 3 file(s) could not be read")
        assert "gone1.jsonl: no such file" in outcome.err and "gone2.jsonl: no such file" in outcome.err
        assert str(corpus["malformed"]) in outcome.out


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_collect_fails_cleanly_on_the_whole_corpus(tmp_path, corpus, unchanged, source):
    out = tmp_path / "out" / "collected.jsonl"
    for name in CORPUS:
        with unchanged(tmp_path / "corpus"):
            outcome = invoke(
                "train.collect", ["--source", source, "--from", str(corpus[name]), "--out", str(out)]
            )
        assert_clean_failure(outcome)
        assert "error:" in outcome.err, (name, outcome.text)
        assert not out.exists(), f"{source} wrote an output from {name}"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_collect_fails_cleanly_on_bad_json_and_parquet_files(tmp_path, unchanged, source):
    folder = tmp_path / "bad"
    folder.mkdir()
    out = tmp_path / "out.jsonl"
    for name, (suffix, data) in BAD_FILES.items():
        path = folder / f"{name}{suffix}"
        path.write_bytes(data)
        with unchanged(folder):
            outcome = invoke("train.collect", ["--source", source, "--from", str(path), "--out", str(out)])
        assert_clean_failure(outcome)
        assert str(path) in outcome.err or "no rows" in outcome.err, (name, outcome.text)
        assert not out.exists(), f"{source} wrote an output from {name}"


def test_collect_refuses_to_write_onto_its_input_or_a_folder(tmp_path, unchanged):
    data = tmp_path / "data"
    data.mkdir()
    path = data / "a.jsonl"
    path.write_text('{"prompt": "Xin chào", "response": "Chào bạn"}\n')
    with unchanged(data):
        onto_input = invoke(
            "train.collect", ["--source", "alpaca-vi", "--from", str(data), "--out", str(path)]
        )
        onto_folder = invoke(
            "train.collect", ["--source", "alpaca-vi", "--from", str(path), "--out", str(data)]
        )
    assert_clean_failure(onto_input, contains="would overwrite the input")
    assert_clean_failure(onto_folder, contains="is a folder")


def test_collect_names_every_missing_input(tmp_path):
    outcome = invoke(
        "train.collect",
        [
            "--source",
            "lima-vi",
            "--from",
            str(tmp_path / "a.json"),
            str(tmp_path / "b.json"),
            "--out",
            str(tmp_path / "o.jsonl"),
        ],
    )
    assert_clean_failure(outcome, contains="no such file")
    assert "a.json" in outcome.err and "b.json" in outcome.err


@pytest.mark.parametrize("module", ["vichat.data", "train.collect"])
def test_python_m_runs_through_the_one_runner(tmp_path, corpus, module):
    argv = (
        ["validate", str(corpus["deep_nesting"]), str(tmp_path / "gone.jsonl")]
        if module == "vichat.data"
        else [
            "--source",
            "alpaca-vi",
            "--from",
            str(corpus["lone_surrogate"]),
            "--out",
            str(tmp_path / "o.jsonl"),
        ]
    )
    outcome = invoke_subprocess(module, argv, timeout=120)
    assert_clean_failure(outcome)
