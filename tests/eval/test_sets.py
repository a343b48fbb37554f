"""Eval sets load, and every problem names the file and the line."""

import json

import pytest

from eval.sets import BUILTIN, GENERAL_CATEGORIES, EvalSetUnavailableError, load_eval_set, set_name
from vichat.errors import DataError


def _write(tmp_path, lines):
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _row(**kw):
    row = {"id": "q1", "category": "Generic", "question": "Hỏi?", "reference": "Đáp."}
    row.update(kw)
    return json.dumps(row, ensure_ascii=False)


def test_loads_a_path(tiny_set):
    s = load_eval_set(tiny_set)
    assert s.name == "tiny" and len(s) == 4
    assert s.categories == ["Generic", "Knowledge"]
    assert s.counts() == {"Generic": 3, "Knowledge": 1}
    assert s.by_id["k1"].category == "Knowledge"


def test_category_case_is_normalised(tmp_path):
    s = load_eval_set(_write(tmp_path, [_row(category="common-sense")]))
    assert s.questions[0].category == "Common-Sense"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "expected a JSON object"),
        (_row(question=""), "'question' is missing or empty"),
        (json.dumps({"id": "q9", "category": "Generic", "question": "Hỏi?"}), "'reference' is missing"),
        (_row(id="q9", category="Poetry"), "unknown category 'Poetry'"),
        (_row(), "duplicate id 'q1' (first on line 1)"),
    ],
)
def test_errors_name_file_and_line(tmp_path, bad, message):
    path = _write(tmp_path, [_row(), "", bad])
    with pytest.raises(DataError) as e:
        load_eval_set(path)
    assert f"{path}:3" in str(e.value)
    assert message in str(e.value)


def test_empty_file_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="no questions"):
        load_eval_set(_write(tmp_path, [""]))
    with pytest.raises(EvalSetUnavailableError, match="general, medical"):
        load_eval_set(tmp_path / "nope.jsonl")


def test_set_names():
    assert set_name("general") == "general"
    assert set_name("/x/y/my-set.jsonl") == "my-set"


@pytest.mark.skipif(not BUILTIN["general"].exists(), reason="assets/eval/general.jsonl not written yet")
def test_builtin_general_matches_the_paper():
    s = load_eval_set("general")
    assert len(s) == 80
    assert s.counts() == dict(GENERAL_CATEGORIES)


@pytest.mark.skipif(not BUILTIN["medical"].exists(), reason="assets/eval/medical.jsonl not written yet")
def test_builtin_medical_loads():
    s = load_eval_set("medical")
    assert s.categories == ["Medical"] and len(s) > 0


def test_icliniq_offline_is_a_clear_error(monkeypatch):
    import datasets

    from eval.sets import load_icliniq

    def offline(*args, **kwargs):
        raise ConnectionError(
            "Couldn't reach 'lavita/ChatDoctor-iCliniq' on the Hub (LocalEntryNotFoundError)"
        )

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(EvalSetUnavailableError, match="needs a network.*built-in 'medical' set"):
        load_icliniq(10)


def test_icliniq_sample_is_seeded(monkeypatch, tmp_path):
    import datasets

    from eval.sets import load_icliniq, write_eval_set

    rows = datasets.Dataset.from_dict(
        {"input": [f"question {i}" for i in range(50)], "answer_chatgpt": [f"answer {i}" for i in range(50)]}
    )
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: rows)
    first, again, other = load_icliniq(5, seed=1), load_icliniq(5, seed=1), load_icliniq(5, seed=2)
    assert first.questions == again.questions != other.questions
    assert len(first) == 5 and first.categories == ["Medical"]
    assert load_eval_set(write_eval_set(first, tmp_path / "m.jsonl")).questions == first.questions


def test_cli_summary(tiny_set, capsys):
    from eval.sets import main
    from vichat.cli import run

    assert run(main, ["--set", str(tiny_set)]) == 0
    assert "tiny: 4 questions" in capsys.readouterr().out
