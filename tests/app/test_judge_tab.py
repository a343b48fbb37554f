"""The Judge tab's diagnostics without a browser: verdicts made by the stand-in judge through the real eval.judge
(the tab's own run), then the table and the per-question viewer checked against ``python -m eval.diagnostics``.

The stand-in scores an answer by its ``[score=N]`` tag (else a hash of its text) and adds ``bias`` to
Assistant 1's, so with tagged answers every flip, every point of position bias and every reason is known.
"""

from __future__ import annotations

import json

import gradio as gr
import pytest

from eval.answers import REFERENCE, answers_path, load_answers
from eval.diagnostics import main as diagnostics_main
from testkit.openai_server import Behaviour, FakeOpenAIServer
from ui.judge import SUMMARY_WIDTHS, JudgeRunner, first_questions, pick_comparison, view_question
from vichat.cli import run

KEY = "sk-judge-tab-" + "K3Y" * 8
JUDGE = "stand-in-judge"  # no list price: only the price box can give the cost in dollars
FIRST, SECOND = "general-001", "general-002"
OUTPUTS = ("table", "chart", "bars", "files", "status", "kept", "section", "diagnostics", "notes")


@pytest.fixture()
def runner(tiny_registry, tmp_path):
    r = JudgeRunner(tiny_registry, tmp_path / "eval")
    for name in ("answer", "score_and_diagnose"):
        method = getattr(r, name)
        setattr(r, name, lambda *a, _m=method, **k: _m(*a, progress=lambda *x, **y: None, **k))
    return r


def scored(runner, variants, n, url, key=KEY, single_order=False, price="", judge=JUDGE) -> dict:
    """The Run button's last step, its outputs by name (the two pickers as ``comparisons``/``questions``)."""
    out = runner.score_and_diagnose(variants, "general", n, url, judge, key, single_order, price)
    assert len(out) == len(OUTPUTS) + 2
    named = dict(zip(OUTPUTS, out, strict=False))
    named["comparisons"], named["questions"] = out[-2], out[-1]
    return named


def viewed(kept, comparison, question) -> dict:
    names = ("question", "first", "second", "scores", "forward", "swapped", "cli")
    return dict(zip(names, view_question(kept, comparison, question), strict=True))


def cli(capsys, out_dir, *argv) -> str:
    capsys.readouterr()
    assert run(diagnostics_main, ["--set", "general", "--out-dir", str(out_dir), *argv]) == 0
    return capsys.readouterr().out


def markdown_rows(frame) -> list[str]:
    return ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]


def write_answers(out_dir, variant: str, scores: dict[str, int]) -> None:
    """Answers tagged with the score the stand-in gives them (the reference's replace the set's own)."""
    path = answers_path(out_dir, "general", variant)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {"id": qid, "variant": variant, "answer": f"{variant} trả lời {qid} [score={s}]", "settings": {}}
        for qid, s in scores.items()
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines), encoding="utf-8")


# ------------------------------------------------------------------------------ the tab and the CLI agree


def test_the_tab_shows_what_the_cli_prints_for_answers_made_in_the_tab(runner, tmp_path, capsys):
    variants = ["bloom-base", "bloom-chat"]
    runner.answer(variants, "general", 3, False)  # the tiny models' real answers
    with FakeOpenAIServer(Behaviour(bias=1.0)) as server:
        out = scored(runner, variants, 3, server.url, price="1,2")
        assert server.calls == 12  # 3 questions x 2 variants x 2 orders
        url = server.url
    assert out["status"].startswith("12 calls")
    assert out["section"]["visible"]
    labels = [d.label for d in out["kept"]]
    assert labels == ["reference vs bloom-base", "reference vs bloom-chat"]
    table = out["diagnostics"]
    assert list(table.columns)[:3] == ["comparison", "both orders", "flip rate"]
    assert len(SUMMARY_WIDTHS) == len(table.columns)  # a width for each of summary_table's columns
    assert list(table["comparison"]) == labels and list(table["both orders"]) == ["3/3", "3/3"]

    printed = cli(capsys, runner.out_dir, "--variants", ",".join(variants), "--judge-model", JUDGE,
                  "--base-url", url, "--price", "1,2")  # fmt: skip
    for row in markdown_rows(table):  # the same numbers, cell for cell: one code path
        assert row in printed.splitlines(), row
    assert all(cell.startswith("$") for cell in table["cost (estimated)"])  # the price box reached the report
    assert out["notes"].startswith("Both orders: questions judged") and out["notes"] in printed

    assert out["comparisons"]["choices"] == labels and out["comparisons"]["value"] == labels[0]
    questions = out["questions"]["choices"]
    ids = [q.id for q in first_questions("general", 3).questions]
    assert [value for _, value in questions] == ids
    assert all(label.startswith(f"{qid} · Generic") for label, qid in questions)
    assert out["questions"]["value"] == ids[0]

    shown = viewed(out["kept"], labels[0], ids[0])
    answers = load_answers(runner.out_dir, first_questions("general", 3), "bloom-base")
    references = {q.id: q.reference for q in first_questions("general", 3).questions}
    assert shown["first"]["value"] == references[ids[0]] and shown["second"]["value"] == answers[ids[0]]
    assert shown["first"]["label"] == f"reference's answer ({len(references[ids[0]])} characters)"
    assert shown["second"]["label"] == f"bloom-base's answer ({len(answers[ids[0]])} characters)"
    assert shown["forward"]["label"] == "forward (reference shown first): the judge's reasons"
    assert shown["swapped"]["label"] == "swapped (bloom-base shown first): the judge's reasons"
    for order in ("forward", "swapped"):
        reasons = shown[order]["value"]
        assert reasons.startswith("Assistant 1 scores ") and reasons.endswith(" for the reasons given.")
    assert shown["cli"] == cli(capsys, runner.out_dir, "--variants", ",".join(variants), "--judge-model", JUDGE,
                               "--base-url", url, "--show", ids[0])  # fmt: skip

    other = pick_comparison(out["kept"], labels[1])
    assert other["value"] == ids[0] and [v for _, v in other["choices"]] == ids
    assert viewed(out["kept"], labels[1], ids[1])["second"]["label"].startswith("bloom-chat's answer")

    files = out["files"]
    assert any(f.endswith("general.questions.jsonl") for f in files)  # the per-question rows to download
    assert KEY not in repr(out) and KEY not in repr(shown)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(KEY in p.read_bytes().decode("utf-8", "replace") for p in written)


# ------------------------------------------------------------------------------------- known by hand


def test_a_biased_judge_flips_and_the_viewer_shows_each_orders_reasons(runner, tmp_path):
    write_answers(runner.out_dir, REFERENCE, {FIRST: 8, SECOND: 6})
    write_answers(runner.out_dir, "bloom-chat", {FIRST: 6, SECOND: 6})
    with FakeOpenAIServer(Behaviour(bias=1.0)) as server:
        out = scored(runner, ["bloom-chat"], 2, server.url, price="1,2")
    # first: reference 8 + 1 > 6 forward, 8 > 6 + 1 swapped: no flip; advantage of Assistant 1 (3 - 1) / 2.
    # second: 6 + 1 > 6 forward, 6 < 6 + 1 swapped: a reversal; advantage (1 + 1) / 2.
    row = out["diagnostics"].iloc[0]
    assert row["comparison"] == "reference vs bloom-chat" and row["both orders"] == "2/2"
    assert row["flip rate"] == "50.0% (1 + 0 half)" and row["position bias (points)"] == "+1.00"
    assert out["questions"]["choices"] == [
        (f"{FIRST} · Generic", FIRST),
        (f"{SECOND} · Generic · flips with the order", SECOND),
    ]

    shown = viewed(out["kept"], "reference vs bloom-chat", FIRST)
    assert shown["question"].startswith(f"**{FIRST}** (Generic) · reference vs bloom-chat")
    assert first_questions("general", 1).questions[0].question in shown["question"]
    assert shown["first"]["value"] == f"reference trả lời {FIRST} [score=8]"
    assert shown["second"]["value"] == f"bloom-chat trả lời {FIRST} [score=6]"
    assert shown["scores"].values.tolist() == [
        ["forward", "reference", "9", "6", "scored"],
        ["swapped", "bloom-chat", "8", "7", "scored"],  # as (reference, bloom-chat): 8 and 6 + 1
        ["mean of the orders judged", "", "8.5", "6.5", "flip 0"],
    ]
    assert list(shown["scores"].columns) == ["order", "shown first", "reference", "bloom-chat", "verdict"]
    assert shown["forward"]["value"] == "Assistant 1 scores 9 and Assistant 2 scores 6 for the reasons given."
    assert shown["swapped"]["value"] == "Assistant 1 scores 7 and Assistant 2 scores 8 for the reasons given."
    assert "forward (reference shown first): reference 9, bloom-chat 6" in shown["cli"]
    assert "swapped (bloom-chat shown first): bloom-chat 7, reference 8" in shown["cli"]
    flipped = viewed(out["kept"], "reference vs bloom-chat", SECOND)["scores"].values.tolist()
    assert flipped[-1] == ["mean of the orders judged", "", "6.5", "6.5", "flip 1"]


def test_an_unreadable_verdict_is_shown_raw_and_a_single_order_run_says_so(runner):
    write_answers(runner.out_dir, REFERENCE, {FIRST: 8, SECOND: 6})
    write_answers(runner.out_dir, "bloom-chat", {FIRST: 6, SECOND: 6})
    with FakeOpenAIServer(Behaviour(script=["garbage"])) as server:
        out = scored(runner, ["bloom-chat"], 2, server.url)
    assert "1 verdict(s) unreadable" in out["status"]
    assert "1 verdict(s) could not be read" in out["notes"]
    rows = out["kept"][0].rows
    bad = next(
        r for r in rows for v in (r.forward, r.swapped) if v.status == "unparsable"
    )  # whichever came first
    order = "forward" if bad.forward.status == "unparsable" else "swapped"
    shown = viewed(out["kept"], "reference vs bloom-chat", bad.question_id)
    assert shown[order]["label"].endswith("shown first): unreadable: the judge's raw answer")
    assert shown[order]["value"] == "Tôi không thể chấm điểm câu trả lời này."
    line = next(r for r in shown["scores"].values.tolist() if r[0] == order)
    assert line[2:] == ["-", "-", "unparsable"]
    assert shown["scores"].values.tolist()[-1][-1] == "flip needs both orders"

    with FakeOpenAIServer(Behaviour()) as server:
        out = scored(runner, ["bloom-chat"], 2, server.url, single_order=True)
    row = out["diagnostics"].iloc[0]
    assert row["both orders"] == "0/2" and row["flip rate"] == "-"
    assert "no question was judged in both orders" in out["notes"]
    shown = viewed(out["kept"], "reference vs bloom-chat", FIRST)
    assert shown["swapped"]["label"] == "swapped (bloom-chat shown first): not judged"
    assert shown["scores"].values.tolist()[1] == ["swapped", "bloom-chat", "-", "-", "missing"]


def test_the_price_box_prices_the_cached_verdicts_with_or_without_a_key(runner, capsys):
    write_answers(runner.out_dir, REFERENCE, {FIRST: 8, SECOND: 6})
    write_answers(runner.out_dir, "bloom-chat", {FIRST: 6, SECOND: 6})
    with FakeOpenAIServer(Behaviour()) as server:
        unpriced = scored(runner, ["bloom-chat"], 2, server.url)
        assert unpriced["diagnostics"].iloc[0]["cost (estimated)"] == "- (-)"  # no list price for the judge
        cached = scored(runner, ["bloom-chat"], 2, "", key="", price="10,20")  # no key: nothing is asked
        assert server.calls == 4
    assert cached["status"].startswith("No API key") and cached["section"]["visible"]
    cell = cached["diagnostics"].iloc[0]["cost (estimated)"]
    assert cell.startswith("$") and cell != "- (-)"
    printed = cli(
        capsys, runner.out_dir, "--variants", "bloom-chat", "--judge-model", JUDGE, "--price", "10,20"
    )
    assert markdown_rows(cached["diagnostics"])[0] in printed.splitlines()


def test_without_verdicts_the_section_stays_hidden_and_the_viewer_blank(runner):
    runner.answer(["bloom-chat"], "general", 1, False)
    out = scored(runner, ["bloom-chat"], 1, "", key="")
    assert out["status"].startswith("No API key") and out["bars"]["visible"]
    assert out["kept"] == [] and not out["section"]["visible"] and out["diagnostics"].empty
    assert out["questions"] == {"__type__": "update", "choices": [], "value": None}
    shown = viewed(out["kept"], out["comparisons"]["value"], out["questions"]["value"])
    assert shown["question"] == "" and shown["cli"] == "" and shown["scores"].empty


# ------------------------------------------------------------------------------------------ bad input


def test_the_viewer_and_the_price_box_refuse_bad_input_with_a_message(runner):
    with pytest.raises(gr.Error, match="no judge diagnostics yet"):
        view_question([], "reference vs bloom-chat", FIRST)
    with pytest.raises(gr.Error, match="no judge diagnostics yet"):
        pick_comparison(None, "reference vs bloom-chat")
    write_answers(runner.out_dir, REFERENCE, {FIRST: 8})
    write_answers(runner.out_dir, "bloom-chat", {FIRST: 6})
    with FakeOpenAIServer(Behaviour()) as server:
        for price in ("abc", "1", "-1,2", "nan,1"):
            for key in (KEY, ""):
                with pytest.raises(gr.Error, match="the price box: --price"):
                    scored(runner, ["bloom-chat"], 1, server.url, key=key, price=price)
        assert server.calls == 0  # refused before any call
        kept = scored(runner, ["bloom-chat"], 1, server.url)["kept"]
    with pytest.raises(gr.Error, match=r"no comparison 'reference vs nope' in this run: choose one of"):
        view_question(kept, "reference vs nope", FIRST)
    with pytest.raises(gr.Error, match=r"no verdict for question 'general-080' in reference vs bloom-chat"):
        view_question(kept, "reference vs bloom-chat", "general-080")
    with pytest.raises(gr.Error, match="no verdict for question"):
        view_question(kept, "reference vs bloom-chat", ["not", "an", "id"])
