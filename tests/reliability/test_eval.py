"""The eval CLIs over the bad-input corpus and bad numbers: a message, exit status 2, no traceback, no call
to the judge, and no input or existing output file lost or changed.

Each CLI reads an eval set (``--set``) and most read answer files from the out-dir; both get every corpus
entry. Every numeric flag gets every bad number. A stand-in judge on 127.0.0.1 counts that none of this
reaches it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.answers import answers_path
from testkit.openai_server import FakeOpenAIServer
from tests.reliability.conftest import assert_clean_failure, invoke
from tests.reliability.corpus import BAD_JSONL, BAD_NUMBERS, write_corpus

KEY = "sk-reliability-" + "K3Y" * 6
QUESTIONS = [
    {"id": "g1", "category": "Generic", "question": "Câu hỏi một?", "reference": "Đáp một"},
    {"id": "k1", "category": "Knowledge", "question": "Câu hỏi hai?", "reference": "Đáp hai"},
]


@pytest.fixture(scope="module")
def judge_server():
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture()
def world(tmp_path, judge_server, monkeypatch):
    """A good eval set, an out-dir holding A's answers to it, the corpus, and a key in the environment."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    good = tmp_path / "tiny.jsonl"
    good.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    out = tmp_path / "runs"
    path = answers_path(out, "tiny", "A")
    path.parent.mkdir(parents=True)
    path.write_text(
        "".join(
            json.dumps({"id": q["id"], "variant": "A", "answer": "Trả lời", "settings": {}}) + "\n"
            for q in QUESTIONS
        ),
        encoding="utf-8",
    )
    corpus = write_corpus(tmp_path / "corpus")
    calls = judge_server.calls

    class World:
        set_file, out_dir, bad = good, out, corpus
        url = judge_server.url

        @staticmethod
        def no_calls() -> None:
            assert judge_server.calls == calls, "a bad input reached the judge"

    return World


def argv_for(module: str, world, set_path: str) -> list[str]:
    out = str(world.out_dir)
    judge = ["--base-url", world.url, "--retries", "0", "--max-retries", "0", "--timeout", "5"]
    return {
        "eval.sets": ["--set", set_path],
        "eval.answers": ["--variants", "reference", "--set", set_path, "--out-dir", out, *judge],
        "eval.judge": ["--variants", "A", "--set", set_path, "--out-dir", out, *judge],
        "eval.report": ["--set", set_path, "--out-dir", out, "--report-dir", out + "/report"],
        "eval.diagnostics": ["--set", set_path, "--out-dir", out],
        "eval.offline": ["--variants", "A", "--set", set_path, "--out-dir", out],
    }[module]


CLIS = ["eval.sets", "eval.answers", "eval.judge", "eval.report", "eval.diagnostics", "eval.offline"]

# What each corpus entry is, as an eval set: the line the message must name (None: the file as a whole).
SET_LINE = {name: 1 for name in BAD_JSONL} | {"malformed": 1, "empty_file": None, "blank_lines": None}


@pytest.mark.parametrize("name", sorted(BAD_JSONL))
@pytest.mark.parametrize("module", CLIS)
def test_bad_eval_set(module, name, world, unchanged):
    bad = world.bad[name]
    with unchanged(world.bad[name].parent, world.out_dir):
        outcome = invoke(module, argv_for(module, world, str(bad)))
    assert_clean_failure(outcome, contains=bad.name)
    assert outcome.code == 2
    line = SET_LINE[name]
    if line is not None:
        assert f"{bad.name}:{line}:" in outcome.err, outcome.err
    world.no_calls()


@pytest.mark.parametrize("kind", ["folder", "missing", "empty"])
@pytest.mark.parametrize("module", CLIS)
def test_set_that_is_no_file(module, kind, world, unchanged, tmp_path):
    target = {"folder": str(world.bad["utf16"].parent), "missing": str(tmp_path / "nope.jsonl"), "empty": ""}[
        kind
    ]
    says = {"folder": "is a folder", "missing": "not found", "empty": "--set is empty"}[kind]
    with unchanged(world.set_file, world.out_dir):
        outcome = invoke(module, argv_for(module, world, target))
    assert_clean_failure(outcome, contains=says)
    assert outcome.code == 2
    world.no_calls()


# An answers file with nothing in it is a valid "nothing answered yet" for eval.answers, which appends to it.
ANSWER_CASES = [
    (module, name)
    for module in ("eval.answers", "eval.judge", "eval.report", "eval.offline")
    for name in sorted(BAD_JSONL)
    if not (module == "eval.answers" and name in ("empty_file", "blank_lines"))
    and not (module == "eval.report" and name in ("empty_file", "blank_lines"))
]


@pytest.mark.parametrize("module, name", ANSWER_CASES)
def test_bad_answers_file(module, name, world, unchanged):
    """A's answers file holds a corpus entry; the eval set itself is good."""
    variant = "openai:A" if module == "eval.answers" else "A"  # answers needs a kind it can make
    answers_path(world.out_dir, "tiny", variant).write_bytes(BAD_JSONL[name])
    argv = argv_for(module, world, str(world.set_file))
    if module == "eval.answers":
        argv[argv.index("--variants") + 1] = f"reference,{variant}"
    if module == "eval.report":
        argv += ["--variants", "A"]
    with unchanged(world.set_file, world.out_dir):
        outcome = invoke(module, argv)
    assert_clean_failure(outcome)
    assert outcome.code == 2
    if name not in ("empty_file", "blank_lines"):
        assert "A.jsonl" in outcome.err
    world.no_calls()


# flag -> (CLIs that take it, values that are valid for it)
NUMBER_FLAGS = {
    "--concurrency": (["eval.judge"], set()),
    "--max-calls": (["eval.judge"], {"0"}),
    "--timeout": (["eval.judge", "eval.answers"], set()),
    "--retries": (["eval.judge", "eval.answers"], {"0"}),
    "--max-retries": (["eval.judge", "eval.answers"], {"0"}),
    "--backoff": (["eval.judge"], {"0"}),
    "--batch-size": (["eval.answers", "eval.offline"], set()),
    "--limit": (["eval.answers"], set()),
    "--seed": (["eval.answers", "eval.sets"], {"0"}),
    "--openai-max-tokens": (["eval.answers"], set()),
    "--icliniq": (["eval.sets"], set()),
}
NUMBER_CASES = [
    (module, flag, value)
    for flag, (modules, valid) in NUMBER_FLAGS.items()
    for module in modules
    for value in BAD_NUMBERS
    if value not in valid
]


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


@pytest.mark.parametrize("module, flag, value", NUMBER_CASES)
def test_bad_number(module, flag, value, world, unchanged):
    argv = argv_for(module, world, str(world.set_file))
    if module == "eval.sets":  # the sample flags: refused before the hub is asked
        argv += ["--out", str(world.out_dir / "sample.jsonl")]
        if flag != "--icliniq":
            argv += ["--icliniq", "3"]
    with unchanged(world.set_file, world.out_dir):
        outcome = invoke(module, _set_flag(argv, flag, value))
    assert_clean_failure(outcome, contains=flag)
    assert outcome.code == 2
    assert KEY not in outcome.text
    world.no_calls()
    assert not (world.out_dir / "sample.jsonl").exists()


def test_bad_numbers_name_the_flag_and_its_range(world):
    outcome = invoke(
        "eval.judge", _set_flag(argv_for("eval.judge", world, str(world.set_file)), "--retries", "-5")
    )
    assert_clean_failure(outcome, contains="--retries must be in [0, 100] (got -5)")
    outcome = invoke(
        "eval.judge", _set_flag(argv_for("eval.judge", world, str(world.set_file)), "--timeout", "-1")
    )
    assert_clean_failure(outcome, contains="--timeout must be in (0, 86400] (got -1)")
    world.no_calls()


@pytest.mark.parametrize("price", ["nan,1", "1,inf", "-1,2", "1", "a,b"])
def test_bad_price(price, world, unchanged):
    argv = [*argv_for("eval.judge", world, str(world.set_file)), "--price", price]
    with unchanged(world.set_file, world.out_dir):
        outcome = invoke("eval.judge", argv)
    assert_clean_failure(outcome, contains="--price")
    assert outcome.code == 2
    world.no_calls()


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1/v1", "127.0.0.1:9/v1", "http://", "http://127.0.0.1:port/v1"]
)
@pytest.mark.parametrize("module", ["eval.judge", "eval.answers"])
def test_bad_base_url(module, url, world, unchanged):
    with unchanged(world.set_file, world.out_dir):
        outcome = invoke(module, _set_flag(argv_for(module, world, str(world.set_file)), "--base-url", url))
    assert_clean_failure(outcome, contains="--base-url must be an http(s) URL")
    assert outcome.code == 2
    world.no_calls()


def test_the_good_world_works(world):
    """The same command lines succeed on good input, so the failures above are the bad input's."""
    outcome = invoke("eval.sets", argv_for("eval.sets", world, str(world.set_file)))
    assert outcome.code == 0, outcome.text
    outcome = invoke("eval.judge", [*argv_for("eval.judge", world, str(world.set_file)), "--dry-run"])
    assert outcome.code == 0, outcome.text
    outcome = invoke("eval.offline", argv_for("eval.offline", world, str(world.set_file)))
    assert outcome.code == 0, outcome.text
    world.no_calls()


def test_cli_main_wiring_goes_through_the_one_runner():
    for module in CLIS:
        source = (
            Path(__file__)
            .resolve()
            .parents[2]
            .joinpath(*module.split("."))
            .with_suffix(".py")
            .read_text("utf-8")
        )
        assert "from vichat.cli import run\n\n    raise SystemExit(run(main))" in source, module
