"""train.build: cleaning, sizes and ratios, seeded split, Table I, mixtures from specs, decontamination, cards."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from train.build import BuildArgs, build, build_all, dedupe_key, main
from vichat.cli import run
from vichat.errors import DataError, SettingsError
from vichat.paths import REPO_ROOT


def pairs(prefix: str, count: int, words: int = 5) -> list[dict]:
    return [
        {"id": f"{prefix}-{i}", "prompt": f"{prefix} question {i}", "response": " ".join([f"w{i}"] * words)}
        for i in range(count)
    ]


@pytest.fixture
def chat_files(tmp_path, jsonl):
    alpaca = pairs("alpaca", 20)
    alpaca.append(
        {"id": "dup", "prompt": "  ALPACA question 3 ", "response": "W3  w3 w3 w3\tw3"}
    )  # duplicate of 3
    alpaca.append({"id": "long", "prompt": "too long", "response": "word " * 600})
    gpt4all = pairs("gpt4all", 30)
    gpt4all.append(dict(alpaca[0]))  # duplicate across components: alpaca keeps it
    a = jsonl.write(tmp_path / "alpaca.jsonl", alpaca)
    with a.open("a") as stream:
        stream.write('{"prompt": "empty response", "response": "  "}\n')
    g = jsonl.write(tmp_path / "gpt4all.jsonl", gpt4all)
    return a, g


def chat_args(files, out: Path, **kwargs) -> BuildArgs:
    return BuildArgs(
        mixture="chat", out_dir=str(out), alpaca=[str(files[0])], gpt4all=[str(files[1])], **kwargs
    )


def test_cleaning_is_counted_and_the_split_covers_everything(tmp_path, chat_files, jsonl):
    out = tmp_path / "mix"

    report = build(chat_args(chat_files, out, val_fraction=0.1))

    alpaca, gpt4all = report.components
    assert (alpaca.read, alpaca.empty, alpaca.duplicates, alpaca.over_long, alpaca.selected) == (
        23,
        1,
        1,
        1,
        20,
    )
    assert (gpt4all.read, gpt4all.duplicates, gpt4all.selected) == (31, 1, 30)
    train, validation = jsonl.read(out / "train.jsonl"), jsonl.read(out / "validation.jsonl")
    assert len(validation) == 5 and len(train) == 45
    keys = [dedupe_key(r) for r in train + validation]
    assert len(set(keys)) == 50
    assert {r["id"] for r in train + validation} == {f"alpaca-{i}" for i in range(20)} | {
        f"gpt4all-{i}" for i in range(30)
    }


def test_same_seed_same_files_other_seed_other_order(tmp_path, chat_files):
    build(chat_args(chat_files, tmp_path / "a", seed=7))
    build(chat_args(chat_files, tmp_path / "b", seed=7))
    build(chat_args(chat_files, tmp_path / "c", seed=8))
    read = lambda d: (tmp_path / d / "train.jsonl").read_bytes()  # noqa: E731
    assert read("a") == read("b") != read("c")


def test_table_one_report_matches_the_written_data(tmp_path, chat_files, jsonl):
    out = tmp_path / "mix"
    build(chat_args(chat_files, out, val_fraction=0.2))

    rows = {row["dataset"]: row for row in csv.DictReader((out / "stats.csv").open())}
    assert list(rows) == ["Alpaca", "GPT4All", "Chat mixture", "train", "validation"]
    train = jsonl.read(out / "train.jsonl")
    tokens = sum(len(r["prompt"].split()) + len(r["response"].split()) for r in train)
    assert int(rows["train"]["samples"]) == len(train) and int(rows["train"]["total_tokens"]) == tokens
    assert float(rows["train"]["avg_tokens_per_sample"]) == pytest.approx(tokens / len(train), abs=0.05)
    assert int(rows["Chat mixture"]["samples"]) == int(rows["Alpaca"]["samples"]) + int(
        rows["GPT4All"]["samples"]
    )
    markdown = (out / "stats.md").read_text()
    assert "| dataset | samples | avg tokens/sample | total tokens |" in markdown
    assert f"| train | {len(train)} |" in markdown
    assert json.loads((out / "stats.json").read_text())["components"][0]["over_long"] == 1


def test_sizes_pick_a_seeded_sample(tmp_path, chat_files, jsonl):
    report = build(chat_args(chat_files, tmp_path / "m", sizes=["alpaca=4", "gpt4all=all"], val_fraction=0))

    assert [c.selected for c in report.components] == [4, 30]
    assert sum(r["id"].startswith("alpaca") for r in jsonl.read(tmp_path / "m" / "train.jsonl")) == 4


def test_ratios_give_the_largest_mixture_or_the_total(tmp_path, chat_files):
    largest = build(chat_args(chat_files, tmp_path / "r1", ratios=["alpaca=1", "gpt4all=1"]))
    capped = build(chat_args(chat_files, tmp_path / "r2", ratios=["alpaca=1", "gpt4all=3"], total=12))

    assert [c.selected for c in largest.components] == [20, 20]
    assert [c.selected for c in capped.components] == [3, 9]


def test_malformed_line_stops_the_build_unless_skipped(tmp_path, chat_files, capsys):
    with chat_files[1].open("a") as stream:
        stream.write("not json\n")
    argv = ["--mixture", "chat", "--alpaca", str(chat_files[0]), "--gpt4all", str(chat_files[1])]

    assert run(main, [*argv, "--out-dir", str(tmp_path / "x")]) == 2
    assert "gpt4all.jsonl:32: malformed JSON" in capsys.readouterr().err
    with pytest.raises(DataError):
        build(chat_args(chat_files, tmp_path / "y"))
    report = build(chat_args(chat_files, tmp_path / "z", skip_invalid=True))
    assert report.components[1].invalid == 1


def test_mixture_components_are_checked(tmp_path, chat_files):
    with pytest.raises(SettingsError, match="needs --chatdoctor"):
        build(BuildArgs(mixture="doctor", out_dir=str(tmp_path), alpaca=[str(chat_files[0])]))
    with pytest.raises(SettingsError, match="--gpt4all is not part of the doctor mixture"):
        build(
            BuildArgs(
                mixture="doctor",
                out_dir=str(tmp_path),
                alpaca=[str(chat_files[0])],
                chatdoctor=[str(chat_files[1])],
                gpt4all=[str(chat_files[1])],
            )
        )
    with pytest.raises(SettingsError, match="--ratios needs a ratio"):
        build(chat_args(chat_files, tmp_path / "r", ratios=["alpaca=1"]))


def test_doctor_mixture_from_several_chatdoctor_files(tmp_path, jsonl):
    a = jsonl.write(tmp_path / "a.jsonl", pairs("alpaca", 4))
    hcm = jsonl.write(tmp_path / "hcm.jsonl", pairs("hcm", 5))
    icliniq = jsonl.write(tmp_path / "icliniq.jsonl", pairs("icliniq", 3))

    report = build(
        BuildArgs(
            mixture="doctor",
            out_dir=str(tmp_path / "d"),
            alpaca=[str(a)],
            chatdoctor=[str(hcm), str(icliniq)],
        )
    )

    assert [(c.name, c.selected) for c in report.components] == [("alpaca", 4), ("chatdoctor", 8)]
    assert "| Doctor mixture | 12 |" in (tmp_path / "d" / "stats.md").read_text()


def test_hf_tokenizer_from_a_local_folder_decides_over_long(tmp_path, jsonl):
    word_level = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Split(
        pattern="", behavior="isolated"
    )  # one token per character
    PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]").save_pretrained(tmp_path / "tok")
    a = jsonl.write(
        tmp_path / "a.jsonl", [{"prompt": "abc", "response": "de"}, {"prompt": "x" * 30, "response": "y"}]
    )
    g = jsonl.write(tmp_path / "g.jsonl", [{"prompt": "hi", "response": "ok"}])

    report = build(
        chat_args((a, g), tmp_path / "m", tokenizer=str(tmp_path / "tok"), max_tokens=10, val_fraction=0)
    )

    assert report.components[0].over_long == 1
    assert report.table["train"].total_tokens == 5 + 4  # characters, as this tokenizer counts
    assert report.tokenizer == str(tmp_path / "tok")


# --------------------------------------------------------------------------- mixtures from specs


LEAK = "Viết một bài thơ lục bát ngắn về mùa thu Hà Nội."  # restates eval general-073


@pytest.fixture
def real_like(tmp_path, jsonl):
    """Small stand-ins for the collected files, one record of each restating an eval question."""
    alpaca = pairs("alpaca", 30) + [{"prompt": LEAK, "response": "Thu về trên phố ..."}]
    lima = pairs("lima", 10)
    vimed = pairs("vimed", 12) + [
        {
            "prompt": "Chào bác sĩ, em 24 tuổi, nam, ở Hà Nội, khu em đang có nhiều người bị sốt xuất huyết. "
            "Em sốt cao 39 độ được ba ngày, đau nhức người, đau hốc mắt.",
            "response": "...",
        }
    ]
    ours = tmp_path / "ours"
    ours.mkdir()
    return {
        "alpaca-vi": jsonl.write(tmp_path / "alpaca-vi.jsonl", alpaca),
        "lima-vi": jsonl.write(tmp_path / "lima-vi.jsonl", lima),
        "vimedaqa": jsonl.write(tmp_path / "vimedaqa.jsonl", vimed),
        "ours_a": jsonl.write(ours / "general_a.jsonl", pairs("ours-a", 4)),
        "ours_b": jsonl.write(ours / "general_b.jsonl", pairs("ours-b", 3)),
    }


def spec_args(files, out, **kwargs):
    chat = f"alpaca-vi:20={files['alpaca-vi']},lima-vi={files['lima-vi']},ours={files['ours_a'].parent}/general_*.jsonl"
    doctor = f"alpaca-vi={files['alpaca-vi']},vimedaqa={files['vimedaqa']},ours=none"
    return BuildArgs(out_dir=str(out), chat=chat, doctor=doctor, tokenizer="whitespace", **kwargs)


def test_chat_and_doctor_from_specs_with_caps_decontamination_table_one_and_cards(tmp_path, real_like, jsonl):
    out = tmp_path / "mixtures"

    chat, doctor = build_all(spec_args(real_like, out, val_fraction=0.1))

    assert [(c.name, c.read, c.contaminated, c.available, c.selected) for c in chat.components] == [
        ("alpaca-vi", 31, 1, 30, 20),
        ("lima-vi", 10, 0, 10, 10),
        ("ours", 7, 0, 7, 7),
    ]
    assert [(c.name, c.contaminated, c.selected) for c in doctor.components] == [
        ("alpaca-vi", 1, 30),
        ("vimedaqa", 1, 12),
    ]
    written = jsonl.read(out / "chat" / "train.jsonl") + jsonl.read(out / "chat" / "validation.jsonl")
    assert len(written) == 37 and LEAK not in {r["prompt"] for r in written}
    table = (out / "table1.md").read_text()
    assert "| LIMA-vi | 10 |" in table and "GPT4All | 150.0k | 365 | 61.0M" in table
    assert "| Chat | " in table and "| Doctor | " in table  # each mixture named on its first row
    assert "in place of GPT4All, which cannot be had offline" in table
    assert "Alpaca-vi 1" in table and "ViMedAQA 1" in table
    card = (out / "doctor" / "README.md").read_text()
    for text in ("CC BY-NC 4.0", "none stated", "non-commercial", "eval near-duplicates", "general-073"):
        assert text in card, text
    assert "the project's" in (out / "chat" / "README.md").read_text()


def test_caps_are_a_seeded_sample(tmp_path, real_like, jsonl):
    build_all(spec_args(real_like, tmp_path / "a", seed=3))
    build_all(spec_args(real_like, tmp_path / "b", seed=3))
    build_all(spec_args(real_like, tmp_path / "c", seed=4))
    ids = lambda d: sorted(r["id"] for r in jsonl.read(tmp_path / d / "chat" / "train.jsonl"))  # noqa: E731
    assert ids("a") == ids("b") != ids("c")


def test_repeat_up_weights_a_source_in_train_only(tmp_path, real_like, jsonl):
    spec = f"lima-vi={real_like['lima-vi']},ours*3={real_like['ours_a'].parent}/general_*.jsonl"
    out = tmp_path / "m"

    report = build(BuildArgs(out_dir=str(out), chat=spec, tokenizer="whitespace", val_fraction=0.2))

    train = [r["id"] for r in jsonl.read(out / "chat" / "train.jsonl")]
    validation = [r["id"] for r in jsonl.read(out / "chat" / "validation.jsonl")]
    ours = {f"ours-{p}-{i}" for p, n in (("a", 4), ("b", 3)) for i in range(n)}
    held_out = ours & set(validation)
    assert held_out and not held_out & set(train)  # no copy of a held-out record is trained on
    assert all(train.count(i) == 3 for i in ours - held_out)
    assert all(train.count(i) == 1 for i in set(train) - ours)
    assert len(set(validation)) == len(validation)
    assert [(c.name, c.selected) for c in report.components] == [("lima-vi", 10), ("ours", 7)]
    assert report.table["train"].samples == len(train)
    assert "each training record 3 times" in (out / "chat" / "README.md").read_text()


def test_exclude_leaves_out_an_earlier_builds_held_out_records(tmp_path, real_like, jsonl):
    first = tmp_path / "first"
    build(
        BuildArgs(
            out_dir=str(first),
            chat=f"lima-vi={real_like['lima-vi']},ours=none",
            tokenizer="whitespace",
            val_fraction=0.3,
        )
    )
    held_out = jsonl.read(first / "chat" / "validation.jsonl")
    assert held_out
    second = tmp_path / "second"
    spec = f"lima-vi={real_like['lima-vi']},alpaca-vi:5={real_like['alpaca-vi']},ours=none"

    report = build(
        BuildArgs(
            out_dir=str(second),
            chat=spec,
            tokenizer="whitespace",
            val_fraction=0,
            exclude=[str(first / "chat" / "validation.jsonl")],
        )
    )

    train = jsonl.read(second / "chat" / "train.jsonl")
    assert not {r["id"] for r in held_out} & {r["id"] for r in train}
    assert len([r for r in train if r["id"].startswith("lima")]) == 10 - len(held_out)
    assert [(c.name, c.excluded) for c in report.components] == [("lima-vi", len(held_out)), ("alpaca-vi", 0)]
    assert (
        f"LIMA-vi: {len(held_out)} record(s) left out, found in --exclude (validation.jsonl)"
        in (second / "chat" / "README.md").read_text()
    )


def test_exclude_file_that_is_malformed_stops_the_build(tmp_path, real_like):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n', encoding="utf-8")
    with pytest.raises(DataError, match="--exclude .*bad.jsonl: 1 malformed"):
        build(
            BuildArgs(
                out_dir=str(tmp_path / "m"),
                chat=f"lima-vi={real_like['lima-vi']},ours=none",
                tokenizer="whitespace",
                exclude=[str(bad)],
            )
        )
    assert not (tmp_path / "m" / "chat" / "train.jsonl").exists()


def test_ours_defaults_to_the_projects_data_and_none_leaves_it_out(tmp_path, real_like):
    args = BuildArgs(
        out_dir=str(tmp_path / "m"), chat=f"lima-vi={real_like['lima-vi']}", tokenizer="whitespace"
    )
    report = build(args)
    ours = report.components[1]
    assert ours.name == "ours" and ours.files == sorted(
        str(p) for p in (REPO_ROOT / "assets/data").glob("general_*.jsonl")
    )
    assert ours.contaminated == 0  # our data is clean: see tests/train/test_decontam.py


@pytest.mark.parametrize(
    "spec, message",
    [
        ("alpaca-vi", "NAME[:CAP][*REPEAT]=PATH"),
        ("alpaca-vi:0=a.jsonl", "cap must be >= 1"),
        ("alpaca-vi:nan=a.jsonl", "must be a whole number"),
        ("ours*0=a.jsonl", "repeat count must be >= 1"),
        ("ours:5*x=a.jsonl", "repeat count must be a whole number"),
        ("alpaca-vi=/nonexistent/*.jsonl", "no file matches"),
        ("alpaca-vi=/nonexistent/a.jsonl", "no such file"),
    ],
)
def test_bad_specs_are_refused_with_a_message(tmp_path, spec, message):
    with pytest.raises((SettingsError, DataError), match=re.escape(message)):
        build_all(BuildArgs(out_dir=str(tmp_path / "m"), chat=spec, tokenizer="whitespace"))


def test_an_empty_mixture_is_an_error_and_nothing_is_written(tmp_path, jsonl):
    only_leaks = jsonl.write(tmp_path / "leaks.jsonl", [{"prompt": LEAK, "response": "..."}])
    out = tmp_path / "m"
    args = BuildArgs(out_dir=str(out), chat=f"lima-vi={only_leaks},ours=none", tokenizer="whitespace")

    with pytest.raises(DataError, match="no records left"):
        build_all(args)
    assert not (out / "chat" / "train.jsonl").exists()
    assert (
        run(
            main,
            ["--out-dir", str(out), "--chat", f"lima-vi={only_leaks},ours=none", "--tokenizer", "whitespace"],
        )
        == 2
    )


def test_an_out_dir_holding_an_input_is_refused_and_the_input_kept(tmp_path, jsonl):
    train = jsonl.write(tmp_path / "train.jsonl", pairs("a", 5))
    before = train.read_bytes()
    argv = ["--mixture", "chat", "--alpaca", str(train), "--gpt4all", str(train), "--out-dir", str(tmp_path)]

    assert run(main, argv) == 2
    assert train.read_bytes() == before
    with pytest.raises(SettingsError, match="holds input files"):
        build(BuildArgs(out_dir=str(tmp_path), chat=f"lima-vi={train},ours=none", tokenizer="whitespace"))


def test_a_second_build_on_the_same_out_dir_is_refused(tmp_path, chat_files):
    from vichat.files import OutputBusyError, OutputLock

    with OutputLock(tmp_path / "mix", "another build"), pytest.raises(OutputBusyError, match="in use"):
        build(chat_args(chat_files, tmp_path / "mix"))


def test_a_record_with_a_lone_surrogate_does_not_crash_the_build(tmp_path, jsonl):
    bad = {"prompt": "a\ud800", "response": "b"}
    assert dedupe_key(bad)  # no UnicodeEncodeError
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"prompt": "a\\ud800", "response": "b"}\n{"prompt": "ok", "response": "fine"}\n')
    outcome = run(
        main,
        [
            "--out-dir",
            str(tmp_path / "m"),
            "--chat",
            f"lima-vi={path},ours=none",
            "--tokenizer",
            "whitespace",
        ],
    )
    assert outcome == 2  # named as a bad line, not a traceback
    report = build(
        BuildArgs(
            out_dir=str(tmp_path / "k"),
            chat=f"lima-vi={path},ours=none",
            tokenizer="whitespace",
            skip_invalid=True,
        )
    )
    assert report.components[0].invalid == 1 and report.components[0].selected == 1
