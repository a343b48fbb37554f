"""Bad input for ``python -m train.translate``: the corpus, bad numbers and paths, and stand-in servers on
127.0.0.1 that answer garbage. Each case ends in a message and a non-zero exit (or, for garbage from the
service, a clean partial success: the good records written, the bad ones listed, exit 1), never a traceback,
and the input folder is left exactly as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from testkit.translate_server import (
    EMPTY,
    GARBAGE,
    HANG,
    NO_ELEMENT,
    REDIRECT_LOOP,
    TRUNCATE,
    FakeTranslateServer,
)
from tests.reliability.conftest import assert_clean_failure, invoke, invoke_subprocess
from tests.reliability.corpus import BAD_JSONL, BAD_NUMBERS, write_corpus

MODULE = "train.translate"
RECORDS = [{"id": f"r{i}", "prompt": f"Question {i}", "response": f"Answer {i}."} for i in range(3)]


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(input folder holding in.jsonl, output folder); the tests check the input folder is unchanged."""
    source = tmp_path / "in"
    source.mkdir()
    (source / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
    return source, tmp_path / "out"


def argv(source: Path, out: Path, server: FakeTranslateServer, *extra: str) -> list[str]:
    return [
        str(source), str(out), "--url", server.url, "--cache", str(out.parent / "cache"), "--no-progress",
        "--backoff", "0.001", "--backoff-max", "0.01", "--max-attempts", "2", "--timeout", "2", *extra,
    ]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- the bad-input corpus


@pytest.mark.parametrize("name", sorted(BAD_JSONL))
def test_corpus_file_fails_cleanly_and_is_left_alone(tmp_path, fake_server, unchanged, name):
    server = fake_server()
    inputs = tmp_path / "in"
    source = write_corpus(inputs, [name])[name]
    out = tmp_path / "out" / "out.jsonl"

    with unchanged(inputs):
        outcome = invoke(MODULE, argv(source, out, server))

    if name == "huge_prompt" and outcome.code == 0:  # a legal record, only long: translated in chunks
        [record] = read(out)
        assert record["prompt"] == json.loads(BAD_JSONL[name])["prompt"].upper()
        assert all(len(text) < 5000 for text in server.texts)
        return
    assert_clean_failure(outcome, contains=str(source))
    assert outcome.code == 2 and not out.exists() and server.request_count == 0


# --------------------------------------------------------------------------- bad numbers

NUMBER_FLAGS = ["--concurrency", "--timeout", "--max-attempts", "--retries", "--backoff", "--backoff-max",
                "--max-chars"]
ZERO_IS_FINE = {"--retries", "--backoff", "--backoff-max"}


@pytest.mark.parametrize(
    ("flag", "value"),
    [(flag, value) for flag in NUMBER_FLAGS for value in BAD_NUMBERS if not (value == "0" and flag in ZERO_IS_FINE)],
)
def test_bad_number_is_refused_before_any_request(folders, fake_server, unchanged, flag, value):
    inputs, out = folders
    server = fake_server()
    args = argv(inputs / "in.jsonl", out / "out.jsonl", server)
    if flag == "--retries":  # --retries and --max-attempts are alternatives
        index = args.index("--max-attempts")
        del args[index : index + 2]

    with unchanged(inputs):
        outcome = invoke(MODULE, [*args, flag, value])

    assert_clean_failure(outcome)
    assert outcome.code == 2 and flag in outcome.err  # "-inf" looks like an option: "expected one argument"
    assert server.request_count == 0 and not (out / "out.jsonl").exists()


def test_bad_number_through_python_dash_m(folders):
    inputs, out = folders
    outcome = invoke_subprocess(MODULE, [str(inputs / "in.jsonl"), str(out / "o.jsonl"), "--timeout", "nan"],
                                timeout=60)
    assert_clean_failure(outcome, contains="--timeout")
    assert outcome.code == 2


# --------------------------------------------------------------------------- bad settings and paths


@pytest.mark.parametrize(
    ("extra", "contains"),
    [
        (["--url", "not a url"], "--url"),
        (["--url", "file:///etc/passwd"], "--url"),
        (["--url", "http://127.0.0.1:0x50/m"], "--url"),
        (["--url", ""], "--url"),
        (["--source-lang", "klingon"], "--source-lang"),
        (["--target-lang", ""], "--target-lang"),
        (["--fields", "promt"], '"promt"'),
        (["--fields", "id"], "holds no text"),
        (["--translator", "deepl"], "--translator"),
    ],
)
def test_bad_setting_is_refused_before_any_request(folders, fake_server, unchanged, extra, contains):
    inputs, out = folders
    server = fake_server()
    records = [{**r, "id": i} for i, r in enumerate(RECORDS)]  # an "id" with no text, for the --fields case
    (inputs / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    args = argv(inputs / "in.jsonl", out / "out.jsonl", server)
    if extra[0] == "--url":
        args = [a for a in args if a != server.url and a != "--url"]

    with unchanged(inputs):
        outcome = invoke(MODULE, [*args, *extra])

    assert_clean_failure(outcome, contains=contains)
    assert server.request_count == 0 and not out.exists()


@pytest.mark.parametrize("which", ["out_is_in", "failures_is_in", "failures_is_out", "failures_is_a_user_file",
                                   "out_is_a_folder", "out_folder_is_a_file", "missing_input"])
def test_bad_path_is_refused_and_nothing_is_touched(folders, fake_server, unchanged, which):
    inputs, out = folders
    server = fake_server()
    source = inputs / "in.jsonl"
    (inputs / "notes.txt").write_text("a user's notes\n")
    (inputs / "a_file").write_text("not a folder\n")
    target, extra = out / "out.jsonl", []
    if which == "out_is_in":
        target = source
    elif which == "failures_is_in":
        extra = ["--failures", str(source)]
    elif which == "failures_is_out":
        extra = ["--failures", str(target)]
    elif which == "failures_is_a_user_file":
        extra = ["--failures", str(inputs / "notes.txt")]
    elif which == "out_is_a_folder":
        target = inputs
    elif which == "out_folder_is_a_file":
        target = inputs / "a_file" / "out.jsonl"
    else:
        source = inputs / "missing.jsonl"

    with unchanged(inputs):
        outcome = invoke(MODULE, argv(source, target, server, *extra))

    assert_clean_failure(outcome)
    assert outcome.code == 2 and server.request_count == 0


# --------------------------------------------------------------------------- garbage from the service

GARBAGE_ANSWERS = [GARBAGE, TRUNCATE, NO_ELEMENT, EMPTY, REDIRECT_LOOP, HANG, 500, 429, 403]


@pytest.mark.parametrize("answer", GARBAGE_ANSWERS, ids=str)
def test_garbage_for_one_record_is_a_clean_partial_success(folders, fake_server, unchanged, answer):
    inputs, out = folders
    data = [dict(r) for r in RECORDS]
    data[1]["response"] = "Answer 1 POISON"
    (inputs / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data), encoding="utf-8")
    server = fake_server(fail_when={"POISON": answer}, hang_s=1.0, retry_after_s=0)

    with unchanged(inputs):
        outcome = invoke(MODULE, argv(inputs / "in.jsonl", out / "out.jsonl", server, "--timeout", "0.3"))

    assert_clean_failure(outcome, contains="1 record(s) failed")
    assert outcome.code == 1
    assert [r["id"] for r in read(out / "out.jsonl")] == ["r0", "r2"]
    [failure] = read(out / "out.jsonl.failures.jsonl")
    assert failure["index"] == 1 and failure["field"] == "response" and failure["reason"]


@pytest.mark.parametrize("answer", GARBAGE_ANSWERS, ids=str)
def test_garbage_for_every_record_fails_cleanly_and_keeps_an_earlier_output(
    folders, fake_server, unchanged, answer
):
    inputs, out = folders
    out.mkdir()
    earlier = out / "out.jsonl"
    earlier.write_text('{"prompt": "an earlier run", "response": "kept"}\n')
    server = fake_server(fail_when={"": answer}, hang_s=1.0, retry_after_s=0)  # "" is in every text

    with unchanged(inputs, earlier):
        outcome = invoke(MODULE, argv(inputs / "in.jsonl", earlier, server, "--timeout", "0.3"))

    assert_clean_failure(outcome, contains="3 record(s) failed")
    assert outcome.code == 1 and "not written" in outcome.err
    assert sorted(f["index"] for f in read(out / "out.jsonl.failures.jsonl")) == [0, 1, 2]
