"""train.build over the bad-input corpus, bad numbers, an out-dir that holds its inputs, empty inputs, a busy
out-dir: every case a message, exit 2, no traceback, and no input lost or changed."""

from __future__ import annotations

import pytest

from tests.reliability.conftest import assert_clean_failure, invoke
from tests.reliability.corpus import BAD_JSONL, BAD_NUMBERS, GOOD, write_corpus

MODULE = "train.build"
COMMON = ["--tokenizer", "whitespace"]

# What each bad file is answered with (all exit 2): a bad line names file:line; a file with no usable record
# is "no records" (the source) or "no records left" (the mixture: its only record was empty); a huge prompt is
# refused by the reader (vichat.data) as a bad line.
EXPECTED = {
    "empty_file": "no records",
    "blank_lines": "no records",
    "empty_strings": "no records left",
}


@pytest.fixture
def good(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "good.jsonl"
    path.write_text(GOOD * 3 + GOOD.replace("Xin chào", "Tạm biệt"), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(BAD_JSONL))
def test_every_bad_file_fails_cleanly_and_is_left_as_it_was(tmp_path, unchanged, name):
    paths = write_corpus(tmp_path / "corpus", [name])
    out = tmp_path / "out"
    argv = ["--out-dir", str(out), "--chat", f"lima-vi={paths[name]},ours=none", *COMMON]

    with unchanged(tmp_path / "corpus"):
        outcome = invoke(MODULE, argv)

    assert_clean_failure(outcome, contains=EXPECTED.get(name))
    assert outcome.code == 2
    assert not (out / "chat" / "train.jsonl").exists()


def test_the_paper_flags_fail_cleanly_on_a_bad_file_too(tmp_path, unchanged, good):
    paths = write_corpus(tmp_path / "corpus", ["malformed"])
    argv = [
        "--mixture",
        "chat",
        "--alpaca",
        str(good),
        "--gpt4all",
        str(paths["malformed"]),
        "--out-dir",
        str(tmp_path / "out"),
        *COMMON,
    ]
    with unchanged(tmp_path / "corpus", good):
        outcome = invoke(MODULE, argv)
    assert_clean_failure(outcome, contains="malformed.jsonl:2")


# Values that are fine for a flag are left out (seed 0, a validation fraction of 0).
NUMBER_FLAGS = {
    "--seed": {"0"},
    "--val-fraction": {"0"},
    "--max-tokens": set(),
    "--decontam-threshold": set(),
}


@pytest.mark.parametrize(
    "flag, value",
    [(flag, value) for flag, fine in NUMBER_FLAGS.items() for value in BAD_NUMBERS if value not in fine],
)
def test_bad_numbers_are_refused_naming_the_flag(tmp_path, unchanged, good, flag, value):
    argv = [
        "--out-dir",
        str(tmp_path / "out"),
        "--chat",
        f"lima-vi={good},ours=none",
        *COMMON,
        f"{flag}={value}",
    ]
    with unchanged(good):
        outcome = invoke(MODULE, argv)
    assert_clean_failure(outcome, contains=flag)


@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_a_bad_cap_is_refused_naming_the_source(tmp_path, good, value):
    outcome = invoke(MODULE, ["--out-dir", str(tmp_path / "o"), "--chat", f"lima-vi:{value}={good}", *COMMON])
    assert_clean_failure(outcome, contains="lima-vi")


@pytest.mark.parametrize("value", [v for v in BAD_NUMBERS if v != ""])
def test_bad_total_and_sizes_with_the_paper_flags(tmp_path, good, value):
    base = [
        "--mixture",
        "chat",
        "--alpaca",
        str(good),
        "--gpt4all",
        str(good),
        "--out-dir",
        str(tmp_path / "o"),
    ]
    total = invoke(MODULE, [*base, *COMMON, "--ratios", "alpaca=1", "gpt4all=1", f"--total={value}"])
    sizes = invoke(MODULE, [*base, *COMMON, "--sizes", f"alpaca={value}"])
    ratios = invoke(MODULE, [*base, *COMMON, "--ratios", f"alpaca={value}", "gpt4all=1"])
    assert_clean_failure(total, contains="--total")
    if value not in ("0",):  # alpaca=0 is a valid size
        assert_clean_failure(sizes, contains="--sizes")
    if value not in ("0", "inf"):  # a zero ratio is valid; inf is refused as not finite
        assert_clean_failure(ratios, contains="--ratios")


def test_out_dir_that_is_the_inputs_folder_is_refused_and_nothing_changes(tmp_path, unchanged, good):
    train = good.parent / "train.jsonl"  # a previous build's output, now an input
    train.write_text(GOOD, encoding="utf-8")
    for argv in (
        ["--mixture", "chat", "--alpaca", str(train), "--gpt4all", str(good), "--out-dir", str(good.parent)],
        ["--chat", f"lima-vi={train},ours=none", "--out-dir", str(good.parent)],
        ["--chat", f"lima-vi={good.parent}/*.jsonl,ours=none", "--out-dir", str(good.parent)],
    ):
        with unchanged(good.parent):
            outcome = invoke(MODULE, [*argv, *COMMON])
        assert_clean_failure(outcome, contains="input")
    assert not (good.parent / "validation.jsonl").exists()


def test_an_eval_folder_as_out_dir_is_refused(tmp_path, unchanged, good):
    from vichat.paths import REPO_ROOT

    with unchanged(REPO_ROOT / "assets" / "eval"):
        outcome = invoke(
            MODULE,
            [
                "--mixture",
                "chat",
                "--alpaca",
                str(good),
                "--gpt4all",
                str(good),
                "--out-dir",
                str(REPO_ROOT / "assets" / "eval"),
                *COMMON,
            ],
        )
    assert_clean_failure(outcome, contains="holds input files")


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "nothing to build"),
        (["--chat", ""], "names no source"),
        (["--chat", "lima-vi="], "NAME[:CAP][*REPEAT]=PATH"),
        (["--chat", "lima-vi=/nonexistent/x.jsonl,ours=none"], "no such file"),
        (["--chat", "lima-vi=/nonexistent/*.jsonl"], "no file matches"),
        (["--mixture", "chat"], "needs --alpaca"),
    ],
)
def test_empty_and_missing_inputs(tmp_path, argv, message):
    outcome = invoke(MODULE, ["--out-dir", str(tmp_path / "o"), *argv, *COMMON])
    assert_clean_failure(outcome, contains=message)


def test_a_busy_out_dir_is_refused_and_left_alone(tmp_path, unchanged, good):
    from vichat.files import OutputLock

    out = tmp_path / "out"
    with OutputLock(out / "chat", "another build"), unchanged(out, good):
        outcome = invoke(MODULE, ["--chat", f"lima-vi={good},ours=none", "--out-dir", str(out), *COMMON])
    assert_clean_failure(outcome, contains="in use")
