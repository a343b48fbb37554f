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
from vichat.cli import run as run_cli
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
    assert run_cli(main, ["--source", "alpaca", "--from", str(path), "--out", str(tmp_path / "o.jsonl")]) == 2
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
        rows = [{**ICLINIQ_ROWS[0], "input": f"Case {n}: {ICLINIQ_ROWS[0]['input']}"} for n in range(3)]
        dataset = datasets.Dataset.from_list(rows)
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
    with pytest.raises(SourceUnavailableError, match=r"tatsu-lab/alpaca.*--from PATH"):
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


def test_every_source_names_its_hub_id_or_where_to_get_it():
    assert {name: source.hub_id for name, source in SOURCES.items()} == {
        "alpaca": "tatsu-lab/alpaca",
        "gpt4all": "nomic-ai/gpt4all_prompt_generations",
        "healthcaremagic": "lavita/ChatDoctor-HealthCareMagic-100k",
        "icliniq": "lavita/ChatDoctor-iCliniq",
        "genmedgpt": None,  # no hub dataset holds GenMedGPT-5k as published
        "alpaca-vi": None,
        "lima-vi": None,
        "vimedaqa": "tmnam20/ViMedAQA",
    }
    assert {source.split for source in SOURCES.values()} == {"train"}
    assert SOURCES["vimedaqa"].config == "all"
    assert "GAIR/lima" in SOURCES["lima-vi"].where and "Kent0n-Li/ChatDoctor" in SOURCES["genmedgpt"].where
    assert all(source.where for source in SOURCES.values() if source.hub_id is None)


# --------------------------------------------------------------------------- real layouts (issue 15)


def write_jsonl_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def collect_cli(
    tmp_path: Path, source: str, *inputs: Path | str, out: str = "out.jsonl"
) -> tuple[int, str, str]:
    """``python -m train.collect`` in process, through the one runner: (exit status, stdout, stderr)."""
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    argv = ["--source", source, "--from", *map(str, inputs), "--out", str(tmp_path / out)]
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = run_cli(main, argv)
    return code, stdout.getvalue(), stderr.getvalue()


def test_alpaca_vi_reads_a_folder_of_jsonl_files_in_natural_order_and_drops_repeats(tmp_path):
    folder = tmp_path / "alpaca-vi"
    folder.mkdir()
    write_jsonl_rows(  # vi_alpaca_reduced_N.jsonl: prompt (input folded in) and response
        folder / "vi_alpaca_reduced_10.jsonl",
        [{"prompt": "Ba màu chính là gì?", "response": "Đỏ, xanh lam và vàng."}],
    )
    write_jsonl_rows(
        folder / "vi_alpaca_reduced_2.jsonl",
        [
            {"prompt": "Đưa ra ba mẹo để giữ sức khỏe.", "response": "1. Ăn uống cân bằng."},
            {"prompt": "Viết một câu.", "response": "  "},
            {"prompt": "BA MÀU  CHÍNH là gì?", "response": "Đỏ, xanh lam và vàng."},  # repeats file 10's row
        ],
    )
    (folder / ".vi_alpaca_reduced_3.jsonl.x.tmp").write_text("{oops")  # a write in progress: not an input
    (folder / "README.md").write_text("not data")

    code, out, err = collect_cli(tmp_path, "alpaca-vi", folder)

    assert code == 0, err
    records = read_jsonl_strict(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [
        "alpaca-vi-vi_alpaca_reduced_2-0",
        "alpaca-vi-vi_alpaca_reduced_2-2",
    ]
    assert [r["source"] for r in records] == ["alpaca-vi", "alpaca-vi"]
    assert "wrote 2 alpaca-vi records" in out and "4 rows read, 2 dropped" in out
    assert "dropped 1: empty prompt or answer (e.g. vi_alpaca_reduced_2.jsonl:2)" in out
    assert "dropped 1: duplicate of an earlier row (e.g. vi_alpaca_reduced_10.jsonl:1)" in out


def test_globs_and_several_paths_are_the_same_inputs(tmp_path):
    for n in (1, 2):
        write_jsonl_rows(
            tmp_path / f"vi_alpaca_reduced_{n}.jsonl", [{"prompt": f"Câu {n}?", "response": "Vâng."}]
        )

    quoted = collect_cli(tmp_path, "alpaca-vi", tmp_path / "vi_alpaca_reduced_*.jsonl", out="a.jsonl")
    expanded = collect_cli(
        tmp_path,
        "alpaca-vi",
        tmp_path / "vi_alpaca_reduced_1.jsonl",
        tmp_path / "vi_alpaca_reduced_2.jsonl",
        out="b.jsonl",
    )

    assert quoted[0] == expanded[0] == 0
    assert read_jsonl_strict(tmp_path / "a.jsonl") == read_jsonl_strict(tmp_path / "b.jsonl")
    assert len(read_jsonl_strict(tmp_path / "a.jsonl")) == 2


LIMA_CHECKPOINT_11 = [  # Vietnamese_Translation_Azure_GPT_4_0_1030_checkpoint_11.json: lists of turns
    {
        "prompt": ["Vì sao bầu trời có màu xanh?"],
        "response": ["Vì ánh sáng xanh bị tán xạ mạnh nhất trong khí quyển."],
    },
    {
        "prompt": ["Hãy viết một bài thơ ngắn về mùa thu.", "Bây giờ hãy dịch nó sang văn xuôi."],
        "response": ["Lá vàng rơi khắp lối, gió heo may về.", "Mùa thu đến, lá vàng rơi và gió lạnh thổi."],
    },
    {"prompt": [None], "response": ["Câu trả lời không có câu hỏi nào cả."]},
    {"prompt": "|||TRANSLATION_FAILED|||Why is it behead?", "response": ["Chúng ta không dùng tiền tố de."]},
    {
        "prompt": ["Làm sao để thoát khỏi vim?"],
        "response": ["Press Escape, then type :q and press Enter to quit without saving the file."],
    },
]
LIMA_CHECKPOINT_22 = [  # the checkpoints overlap: the first row is file 11's again
    LIMA_CHECKPOINT_11[0],
    {"prompt": "Thủ đô của Việt Nam là gì?", "response": "Thủ đô của Việt Nam là Hà Nội."},  # plain strings
    {"prompt": ["Một", "Hai"], "response": ["Chỉ một câu trả lời cho hai lượt hỏi."]},
]


def test_lima_vi_folds_multi_turn_conversations_and_drops_what_translation_broke(tmp_path):
    from vichat.prompts import history_instruction

    folder = tmp_path / "lima-vi"
    folder.mkdir()
    for number, rows in ((22, LIMA_CHECKPOINT_22), (11, LIMA_CHECKPOINT_11)):
        name = f"Vietnamese_Translation_Azure_GPT_4_0_1030_checkpoint_{number}.json"
        (folder / name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")

    code, out, err = collect_cli(tmp_path, "lima-vi", folder)

    assert code == 0, err
    records = read_jsonl_strict(tmp_path / "out.jsonl")
    prefix = "lima-vi-Vietnamese_Translation_Azure_GPT_4_0_1030_checkpoint_"
    assert [r["id"] for r in records] == [
        prefix + "11-0",
        prefix + "11-1-1",
        prefix + "11-1-2",
        prefix + "22-1",
    ]
    poem, prose = LIMA_CHECKPOINT_11[1]["prompt"], LIMA_CHECKPOINT_11[1]["response"]
    assert records[1]["prompt"] == poem[0] and records[1]["response"] == prose[0]
    assert records[2]["prompt"] == history_instruction([(poem[0], prose[0])], poem[1])
    assert records[2]["prompt"].startswith("Cuộc trò chuyện trước đó:\nNgười dùng: Hãy viết")
    assert records[2]["response"] == prose[1]
    assert records[3] == {
        "id": prefix + "22-1",
        "source": "lima-vi",
        "prompt": "Thủ đô của Việt Nam là gì?",
        "response": "Thủ đô của Việt Nam là Hà Nội.",
    }
    assert "8 rows read, 5 dropped; 2 records from 1 multi-turn conversations" in out
    for line in (
        "dropped 1: duplicate of an earlier row (e.g. Vietnamese_Translation_Azure_GPT_4_0_1030_checkpoint_22.json:1 (row 1))",
        "dropped 1: a prompt or answer that is not text (null or a number)",
        "dropped 1: translation failed (marked |||TRANSLATION_FAILED|||, English left)",
        "dropped 1: not in Vietnamese",
        "dropped 1: prompt and response turns differ in number",
    ):
        assert line in out, out


def test_lima_vi_drops_answers_the_translation_cut_off_and_keeps_short_unpunctuated_ones(tmp_path):
    sentence = "Mùa thu ở Hà Nội có gió heo may, lá vàng rơi trên những con phố cổ yên bình. "
    long_whole = sentence * 13  # ~1,000 characters ending in a full stop
    cut = long_whole + "Những buổi chiều người ta thường ngồi bên hồ và ng"  # stops mid-word, as ~600 rows do
    rows = [
        {"prompt": ["Tả mùa thu Hà Nội."], "response": [long_whole]},
        {"prompt": ["Tả mùa thu Hà Nội thật dài."], "response": [cut]},
        {
            "prompt": ["Kể tên ba loại quả."],
            "response": ["- Cam\n- Bưởi\n- Xoài"],
        },  # short, no full stop: kept
        {  # a cut answer in any turn drops the conversation
            "prompt": ["Viết về Huế.", "Viết tiếp đi."],
            "response": ["Huế là cố đô của Việt Nam, nằm bên sông Hương thơ mộng.", cut],
        },
    ]
    folder = tmp_path / "lima-vi"
    folder.mkdir()
    (folder / "Vietnamese_Translation_Azure_GPT_4_0_1030_checkpoint_33.json").write_text(
        json.dumps(rows, ensure_ascii=False), encoding="utf-8"
    )

    code, out, err = collect_cli(tmp_path, "lima-vi", folder)

    assert code == 0, err
    records = read_jsonl_strict(tmp_path / "out.jsonl")
    assert [r["response"] for r in records] == [long_whole.strip(), "- Cam\n- Bưởi\n- Xoài"]
    assert "dropped 2: answer cut off mid-sentence (over 900 characters" in out, out


def test_vimedaqa_parquet_keeps_title_keyword_and_topic(tmp_path):
    rows = [  # validation-00000-of-00001.parquet columns
        {
            "question_idx": "drug_6717",
            "question": "Bảo quản thuốc Cafein ở nhiệt độ bao nhiêu?",
            "answer": "Bảo quản thuốc Cafein ở nhiệt độ dưới 30 độ C.",
            "context": "- Bảo quản nơi khô thoáng. - Nhiệt độ bảo quản dưới 30 độ C.",
            "title": "Cách bảo quản thuốc Cafein",
            "keyword": "Cafein",
            "topic": 2,
            "article_url": "https://youmed.vn/tin-tuc/thuoc-cafein/",
            "author": "Dược sĩ",
            "author_url": "https://youmed.vn/tin-tuc/bac-si/",
        },
        {
            "question_idx": "disease_1",
            "question": "Cúm là gì?",
            "answer": None,
            "context": "",
            "title": "Cúm",
            "keyword": "cúm",
            "topic": 1,
            "article_url": "",
            "author": "",
            "author_url": "",
        },
    ]
    path = tmp_path / "validation-00000-of-00001.parquet"
    pd.DataFrame(rows).to_parquet(path)

    code, out, err = collect_cli(tmp_path, "vimedaqa", tmp_path)  # a folder: its .parquet files

    assert code == 0, err
    assert read_jsonl_strict(tmp_path / "out.jsonl") == [
        {
            "id": "vimedaqa-0",
            "source": "vimedaqa",
            "prompt": rows[0]["question"],
            "response": rows[0]["answer"],
            "title": "Cách bảo quản thuốc Cafein",
            "keyword": "Cafein",
            "question_idx": "drug_6717",
            "topic": "drug",
        }
    ]
    assert "dropped 1: empty prompt or answer (e.g. validation-00000-of-00001.parquet: row 2)" in out


GENMEDGPT_ROWS = [  # chatdoctor5k.json
    {
        "instruction": "If you are a doctor, please answer the medical questions based on the patient's description.",
        "input": "Doctor, I have been experiencing sudden and frequent panic attacks.",
        "output": "It sounds like you may be suffering from panic disorder.",
    }
]


def test_genmedgpt_json_uses_the_patients_words_and_has_no_hub_copy(tmp_path):
    path = tmp_path / "chatdoctor5k.json"
    path.write_text(json.dumps(GENMEDGPT_ROWS, indent=4))

    [record] = run(tmp_path, "genmedgpt", path)
    with pytest.raises(
        SourceUnavailableError, match=r"no copy on the Hugging Face hub.*Kent0n-Li/ChatDoctor"
    ):
        collect(CollectArgs(source="genmedgpt", out=str(tmp_path / "hub.jsonl")))

    assert (record["prompt"], record["response"]) == (GENMEDGPT_ROWS[0]["input"], GENMEDGPT_ROWS[0]["output"])
    assert not (tmp_path / "hub.jsonl").exists()


def test_vimedaqa_from_the_hub_asks_for_its_config(tmp_path, monkeypatch):
    calls = []

    def fake_load_dataset(path, *config, split, streaming):
        calls.append((path, config, split))
        return datasets.Dataset.from_list(
            [{"question": "Cúm là gì?", "answer": "Một bệnh do virus.", "topic": 1}]
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    [record] = run_hub(tmp_path, "vimedaqa")

    assert calls == [("tmnam20/ViMedAQA", ("all",), "train")]
    assert record["topic"] == "disease"


def run_hub(tmp_path: Path, source: str) -> list[dict]:
    out = tmp_path / f"{source}.hub.jsonl"
    collect(CollectArgs(source=source, out=str(out)))
    return read_jsonl_strict(out)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '[\n  {"instruction": "a", "input": "", "output": "b"},\n  {"instruction": "c", "input": ""\n',
            ":3: malformed JSON: the file ends in the middle of a row",
        ),
        (
            '[\n  {"instruction": "a", "input": "", "output": "b"}\n  {"instruction": "c"}\n]',
            ":3: malformed JSON: expected , or ]",
        ),
        ('[\n  {"instruction": "a", "input": "", "output": NaN}\n]', ":2: NaN is not valid JSON"),
        (
            '[\n  {"instruction": "a", "input": "", "output": "b"},\n  "just text"\n]',
            ":3 (row 2): expected a JSON object",
        ),
        (
            '[{"instruction": "a\\ud800", "input": "", "output": "b"}]',
            ':1: field "instruction" holds a lone UTF-16',
        ),
        ("", "the file is empty"),
    ],
    ids=["cut-short", "missing-comma", "nan", "not-an-object", "lone-surrogate", "empty"],
)
def test_bad_json_files_name_the_file_and_line_and_write_nothing(tmp_path, content, message):
    path = tmp_path / "alpaca_data.json"
    path.write_text(content, encoding="utf-8")

    code, out, err = collect_cli(tmp_path, "alpaca", path)

    assert code == 2 and "Traceback" not in err
    assert (f"{path}{message}" if message.startswith(":") else message) in err, err
    assert not (tmp_path / "out.jsonl").exists()


def test_utf16_json_and_broken_parquet_are_clear_errors(tmp_path):
    utf16 = tmp_path / "chatdoctor5k.json"
    utf16.write_bytes(json.dumps(GENMEDGPT_ROWS).encode("utf-16"))
    parquet = tmp_path / "validation-00000-of-00001.parquet"
    pd.DataFrame([{"question": "q", "answer": "a"}]).to_parquet(parquet)
    parquet.write_bytes(parquet.read_bytes()[:-20])  # cut short, as by a failed download

    code, _, err = collect_cli(tmp_path, "genmedgpt", utf16)
    assert code == 2 and "file is UTF-16" in err and "save it as UTF-8" in err
    code, _, err = collect_cli(tmp_path, "vimedaqa", parquet)
    assert code == 2 and f"{parquet}: cannot read as parquet" in err


def test_every_missing_input_is_named(tmp_path):
    good = write_jsonl_rows(tmp_path / "a.jsonl", [{"prompt": "Câu?", "response": "Vâng."}])

    code, _, err = collect_cli(
        tmp_path, "alpaca-vi", tmp_path / "nope1.jsonl", good, tmp_path / "nope2.jsonl"
    )
    assert code == 2 and "nope1.jsonl" in err and "nope2.jsonl" in err
    code, _, err = collect_cli(tmp_path, "alpaca-vi", tmp_path / "none_*.jsonl")
    assert code == 2 and "no files match" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = collect_cli(tmp_path, "lima-vi", empty)
    assert code == 2 and "no .json files in this folder" in err
    assert not (tmp_path / "out.jsonl").exists()


def test_the_output_never_replaces_an_input(tmp_path):
    path = write_jsonl_rows(tmp_path / "data.jsonl", [{"prompt": "Câu?", "response": "Vâng."}])
    before = path.read_bytes()

    code, _, err = collect_cli(tmp_path, "alpaca-vi", path, out="data.jsonl")

    assert code == 2 and "would overwrite the input" in err
    assert path.read_bytes() == before


def test_a_run_that_keeps_nothing_fails_and_keeps_the_old_output(tmp_path):
    path = write_jsonl_rows(tmp_path / "data.jsonl", [{"prompt": " ", "response": "Vâng."}])
    (tmp_path / "out.jsonl").write_text("old\n")

    code, _, err = collect_cli(tmp_path, "alpaca-vi", path)

    assert code == 2 and "all 1 rows were dropped" in err and "empty prompt or answer" in err
    assert (tmp_path / "out.jsonl").read_text() == "old\n"


def test_a_json_array_named_jsonl_is_told_to_be_renamed(tmp_path):
    path = tmp_path / "alpaca.jsonl"
    path.write_text(json.dumps(ALPACA_ROWS, indent=2))

    code, _, err = collect_cli(tmp_path, "alpaca", path)

    assert code == 2 and "this is a JSON array, not JSON Lines" in err and "alpaca.json" in err


@pytest.mark.parametrize("limit", ["0", "-3", "nan", "2.5", "abc"])
def test_bad_limits_are_refused(tmp_path, limit, capsys):
    path = write_jsonl_rows(tmp_path / "a.jsonl", [{"prompt": "Câu?", "response": "Vâng."}])
    with pytest.raises(SystemExit) as stop:
        main(
            [
                "--source",
                "alpaca-vi",
                "--from",
                str(path),
                "--out",
                str(tmp_path / "o.jsonl"),
                "--limit",
                limit,
            ]
        )
    assert stop.value.code == 2 and "--limit must be" in capsys.readouterr().err
