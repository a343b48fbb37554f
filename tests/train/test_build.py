"""train.build: cleaning, sizes and ratios, seeded split, and the Table I report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from train.build import BuildArgs, build, dedupe_key, main
from vichat.errors import DataError, SettingsError


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

    assert main([*argv, "--out-dir", str(tmp_path / "x")]) == 2
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
