"""train.collect / train.sources on tiny local files in each source's real column layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pandas as pd
import pytest

from train.collect import CollectArgs, SourceUnavailableError, collect, main
from train.sources import SOURCES, gpt4all_text
from vichat.data import read_jsonl_strict
from vichat.errors import DataError

REPO = Path(__file__).resolve().parents[2]

ALPACA_ROWS = [  # tatsu-lab/alpaca: instruction, input, output, text
    {
        "instruction": "Give three tips for staying healthy.",
        "input": "",
        "output": "1. Eat well.",
        "text": "...",
    },
    {
        "instruction": "Translate the sentence.",
        "input": "  Hello world  ",
        "output": "Xin chào",
        "text": "...",
    },
    {"instruction": "Say nothing.", "input": "", "output": "", "text": "..."},
]
GPT4ALL_ROWS = [  # nomic-ai/gpt4all_prompt_generations: prompt, response, source
    {
        "prompt": "How do I loop in Python?",
        "response": "<p>Use a for loop:</p><pre><code>for i in range(3):\n    print(i &lt; 2)\n</code></pre>"
        "<p>The <code>range</code> call makes 0, 1, 2 &amp; stops.</p>",
        "source": "unified_chip2",
    },
    {"prompt": "Plain question?", "response": "Plain answer with 3 < 4.", "source": "laion/unified_chip2"},
]
HCM_ROWS = [  # lavita/ChatDoctor-HealthCareMagic-100k: instruction, input, output
    {
        "instruction": "If you are a doctor, please answer the medical questions based on the patient's description.",
        "input": "Hi doctor, I have had a cough for three weeks.",
        "output": "Hi, a cough after a cold can last weeks; see a doctor if it passes eight.",
    },
    {"instruction": "If you are a doctor, ...", "input": "   ", "output": "Unanswerable."},
]
ICLINIQ_ROWS = [  # lavita/ChatDoctor-iCliniq: input, answer_icliniq, answer_chatgpt, answer_chatdoctor
    {
        "input": "Hello doctor, my child has a fever of 39 C.",
        "answer_icliniq": "Hi. Give paracetamol by weight and watch for warning signs.",
        "answer_chatgpt": "I am not a doctor, but...",
        "answer_chatdoctor": "Hello, thanks for your query.",
    }
]


def run(tmp_path: Path, source: str, rows_file: Path, **kwargs) -> list[dict]:
    out = tmp_path / f"{source}.out.jsonl"
    collect(CollectArgs(source=source, out=str(out), from_file=str(rows_file), **kwargs))
    return read_jsonl_strict(out)


def test_alpaca_json_list_joins_instruction_and_input(tmp_path):
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps(ALPACA_ROWS))

    records = run(tmp_path, "alpaca", path)

    assert records == [
        {
            "id": "alpaca-0",
            "source": "alpaca",
            "prompt": "Give three tips for staying healthy.",
            "response": "1. Eat well.",
        },
        {
            "id": "alpaca-1",
            "source": "alpaca",
            "prompt": "Translate the sentence.\n\nHello world",
            "response": "Xin chào",
        },
    ]


def test_alpaca_parquet_from_the_hub_layout(tmp_path):
    path = tmp_path / "train-00000-of-00001.parquet"
    pd.DataFrame(ALPACA_ROWS).to_parquet(path)

    records = run(tmp_path, "alpaca", path, limit=1)

    assert [r["prompt"] for r in records] == ["Give three tips for staying healthy."]


def test_gpt4all_jsonl_turns_html_into_fenced_code_and_keeps_origin(tmp_path):
    path = tmp_path / "gpt4all.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in GPT4ALL_ROWS))

    first, second = run(tmp_path, "gpt4all", path)

    assert first["response"] == (
        "Use a for loop:\n\n```\nfor i in range(3):\n    print(i < 2)\n```\n\nThe `range` call makes 0, 1, 2 & stops."
    )
    assert first["source"] == "gpt4all" and first["origin"] == "unified_chip2"
    assert second["response"] == "Plain answer with 3 < 4."


def test_gpt4all_text_leaves_plain_text_alone():
    assert gpt4all_text("  a &lt; b, no markup ") == "a &lt; b, no markup"


def test_healthcaremagic_csv_uses_the_patients_words_as_prompt(tmp_path):
    path = tmp_path / "hcm.csv"
    pd.DataFrame(HCM_ROWS).to_csv(path, index=False)
    out = tmp_path / "hcm.jsonl"

    report = collect(CollectArgs(source="healthcaremagic", out=str(out), from_file=str(path)))

    assert read_jsonl_strict(out) == [
        {
            "id": "healthcaremagic-0",
            "source": "healthcaremagic",
            "prompt": HCM_ROWS[0]["input"],
            "response": HCM_ROWS[0]["output"],
        }
    ]
    assert (report.rows, report.written, report.skipped_empty) == (2, 1, 1)


def test_icliniq_parquet_uses_the_icliniq_doctors_answer(tmp_path):
    path = tmp_path / "icliniq.parquet"
    pd.DataFrame(ICLINIQ_ROWS).to_parquet(path)

    [record] = run(tmp_path, "icliniq", path)
    [chatgpt] = run(tmp_path, "icliniq", path, response_column="answer_chatgpt")

    assert record["prompt"] == ICLINIQ_ROWS[0]["input"]
    assert record["response"] == ICLINIQ_ROWS[0]["answer_icliniq"]
    assert chatgpt["response"] == ICLINIQ_ROWS[0]["answer_chatgpt"]


def test_icliniq_in_the_instruction_input_output_layout(tmp_path):
    path = tmp_path / "icliniq.jsonl"
    path.write_text(
        json.dumps({"instruction": "If you are a doctor...", "input": "Q?", "output": "A."}) + "\n"
    )

    [record] = run(tmp_path, "icliniq", path)

    assert (record["prompt"], record["response"]) == ("Q?", "A.")


def test_wrong_layout_names_the_expected_columns(tmp_path, capsys):
    path = tmp_path / "wrong.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")

    with pytest.raises(DataError, match="input and answer_icliniq or output"):
        run(tmp_path, "icliniq", path)
    assert main(["--source", "alpaca", "--from", str(path), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "instruction, input and output" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


def test_malformed_local_jsonl_names_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(ALPACA_ROWS[0]) + "\n\n{oops\n")

    with pytest.raises(DataError, match=r"broken\.jsonl:3: malformed JSON"):
        run(tmp_path, "alpaca", path)


def test_json_lines_with_a_json_name_and_unknown_formats(tmp_path):
    lines = tmp_path / "alpaca.json"
    lines.write_text("".join(json.dumps(row) + "\n" for row in ALPACA_ROWS))
    assert len(run(tmp_path, "alpaca", lines)) == 2
    other = tmp_path / "alpaca.txt"
    other.write_text("x")
    with pytest.raises(DataError, match="unsupported format"):
        run(tmp_path, "alpaca", other)


def test_hub_path_loads_the_real_dataset_id(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, split, streaming):
        calls.append((path, split, streaming))
        dataset = datasets.Dataset.from_list(ICLINIQ_ROWS * 3)
        return dataset.to_iterable_dataset() if streaming else dataset

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = tmp_path / "hub.jsonl"

    collect(CollectArgs(source="icliniq", out=str(out)))
    collect(CollectArgs(source="icliniq", out=str(tmp_path / "two.jsonl"), limit=2))

    assert calls == [
        ("lavita/ChatDoctor-iCliniq", "train", False),
        ("lavita/ChatDoctor-iCliniq", "train", True),
    ]
    assert len(read_jsonl_strict(out)) == 3 and len(read_jsonl_strict(tmp_path / "two.jsonl")) == 2


def test_hub_errors_become_a_message_with_the_from_flag(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'tatsu-lab/alpaca' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(SourceUnavailableError, match=r"tatsu-lab/alpaca.*--from FILE"):
        collect(CollectArgs(source="alpaca", out=str(tmp_path / "o.jsonl")))


def test_offline_cli_prints_one_clear_error(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    argv = [
        sys.executable,
        "-m",
        "train.collect",
        "--source",
        "healthcaremagic",
        "--out",
        str(tmp_path / "o.jsonl"),
    ]

    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert "lavita/ChatDoctor-HealthCareMagic-100k" in result.stderr and "--from" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_every_source_has_a_hub_id_and_a_train_split():
    assert {name: source.hub_id for name, source in SOURCES.items()} == {
        "alpaca": "tatsu-lab/alpaca",
        "gpt4all": "nomic-ai/gpt4all_prompt_generations",
        "healthcaremagic": "lavita/ChatDoctor-HealthCareMagic-100k",
        "icliniq": "lavita/ChatDoctor-iCliniq",
    }
    assert {source.split for source in SOURCES.values()} == {"train"}
