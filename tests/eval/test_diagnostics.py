"""Judge diagnostics on verdicts made by the real eval.judge against the stand-in server, and on hand-made ones.

The stand-in scores each answer by its ``[score=N]`` tag (conftest's table) and adds ``bias`` to Assistant 1,
so every flip and every point of position bias below is known by hand.
"""

import json

import pytest

from eval import cost
from eval.answers import load_answers
from eval.diagnostics import (
    FORWARD,
    MISSING,
    SCORED,
    SWAPPED,
    UNPARSABLE,
    diagnose,
    explanation,
    flip_stats,
    length_stats,
    main,
    pearson,
    question_rows,
    ranks,
    show_question,
    spearman,
    summary_table,
)
from eval.judge import main as judge_main
from eval.report import build_report
from eval.report import main as report_main
from eval.sets import load_eval_set
from eval.verdicts import JudgePrompt, JudgmentCache, build_tasks, judgments_path, unparsable_path
from testkit.openai_server import Behaviour, FakeOpenAIServer
from vichat.cli import run
from vichat.errors import ViChatError


def _judge(judge_argv, url, *extra):
    argv = judge_argv(*extra)
    argv[argv.index("--base-url") + 1] = url
    assert run(judge_main, argv) == 0


def _report(tiny_set, workdir, url, variants=("A", "B"), price=None):
    return build_report(load_eval_set(tiny_set), list(variants), workdir, endpoint=url, price=price)


def _by_label(data):
    return {d.label: d for d in data.diagnostics}


# ------------------------------------------------------------------------------- through the real judge


def test_a_biased_judge_flips_more_and_favours_assistant_1(judge_argv, server, tiny_set, workdir, capsys):
    _judge(judge_argv, server.url, "--variants", "A,B")
    fair = _by_label(_report(tiny_set, workdir, server.url))
    with FakeOpenAIServer(Behaviour(bias=1.0)) as biased_server:
        _judge(judge_argv, biased_server.url, "--variants", "A,B")
        biased = _by_label(_report(tiny_set, workdir, biased_server.url))
    for label in ("reference vs A", "reference vs B"):
        assert fair[label].flips.both_orders == biased[label].flips.both_orders == 4
        assert fair[label].flips.flip_rate == 0 and fair[label].flips.position_bias == 0
        assert biased[label].flips.flip_rate > fair[label].flips.flip_rate
        assert biased[label].flips.position_bias > 0
    # reference vs A (8/6, 10/5, 5/5, 8/4), one point to whoever is shown first, capped at 10:
    # g3 5 = 5 becomes 6 > 5 forward and 5 < 6 swapped: a reversal; the others keep their winner.
    # Assistant 1's advantage over both orders: g1 (3 - 1) / 2 = 1, g2 (5 - 4) / 2 = 0.5 (cap), g3 1, k1 1.
    a = biased["reference vs A"].flips
    assert (a.reversals, a.half_flips, a.flip_rate, a.position_bias) == (1, 0, 0.25, 0.875)
    # reference vs B (8/8, 10/9, 5/4, 8/8): g1 and k1 reverse; g2 10 > 9 then 10 = 10 and g3 6 > 4 then
    # 5 = 5 are half flips: (2 + 2 / 2) / 4.
    b = biased["reference vs B"].flips
    assert (b.reversals, b.half_flips, b.flip_rate, b.position_bias) == (2, 2, 0.75, 0.875)


def test_cli_prints_the_reports_numbers_and_shows_one_question(judge_argv, server, tiny_set, workdir, capsys):
    server.behaviour.bias = 1.0
    _judge(judge_argv, server.url, "--variants", "A")
    capsys.readouterr()
    argv = ["--set", str(tiny_set), "--out-dir", str(workdir), "--variants", "A", "--price", "1,2"]
    assert run(main, argv) == 0
    out = capsys.readouterr().out
    assert "## Judge diagnostics" in out
    row = next(line for line in out.splitlines() if line.startswith("| reference vs A |"))
    assert "| 4/4 | 25.0% (1 + 0 half) | +0.88 |" in row
    assert run(report_main, [*argv[:4], "--variants", "A", "--price", "1,2"]) == 0
    md = (workdir / "report" / "tiny.md").read_text(encoding="utf-8")
    assert row in md.splitlines()  # the report and the CLI print the same line

    assert run(main, [*argv, "--show", "g1"]) == 0
    shown = capsys.readouterr().out
    # forward: reference (8, +1 bias) first; swapped: A (6, +1 bias) first; each order's reasons shown
    assert "forward (reference shown first): reference 9, A 6" in shown
    assert "Assistant 1 scores 9 and Assistant 2 scores 6 for the reasons given." in shown
    assert "swapped (A shown first): A 7, reference 8" in shown
    assert "Assistant 1 scores 7 and Assistant 2 scores 8 for the reasons given." in shown
    assert "Đáp g1 [score=8]" in shown and "A trả lời g1 [score=6]" in shown
    assert run(main, [*argv, "--show", "nope"]) == 2
    assert "no such question in the tiny set" in capsys.readouterr().err


def test_report_writes_the_section_and_the_questions_file(judge_argv, server, tiny_set, workdir, tmp_path):
    server.script("garbage")  # the first call's answer cannot be read: noted, asked again, paid twice
    argv = judge_argv("--variants", "A", "--concurrency", "1")
    argv[argv.index("--base-url") + 1] = server.url
    assert run(judge_main, argv) == 1
    report_dir = tmp_path / "rep"
    report_argv = ["--set", str(tiny_set), "--out-dir", str(workdir), "--report-dir", str(report_dir)]
    assert run(report_main, report_argv) == 0
    rows = [
        json.loads(line) for line in (report_dir / "tiny.questions.jsonl").read_text("utf-8").splitlines()
    ]
    assert [r["id"] for r in rows] == ["g1", "g2", "g3", "k1"]
    g1 = rows[0]
    assert g1["forward"]["status"] == UNPARSABLE and g1["forward"]["scores"] is None
    assert g1["forward"]["explanation"] == "Tôi không thể chấm điểm câu trả lời này."
    assert g1["swapped"]["status"] == SCORED and g1["swapped"]["scores"] == [6, 8]
    assert g1["first_answer"] == "Đáp g1 [score=8]" and g1["second_answer"] == "A trả lời g1 [score=6]"
    assert g1["averaged"] == [8, 6] and g1["flip"] is None
    md = (report_dir / "tiny.md").read_text(encoding="utf-8")
    assert "## Judge diagnostics" in md and "| reference vs A | 3/4 |" in md
    assert "1 verdict(s) could not be read" in md

    assert run(judge_main, argv) == 0  # the rerun asks the unreadable one again
    assert server.calls == 9
    d = _by_label(_report(tiny_set, workdir, server.url, ("A",), price=(1.0, 2.0)))["reference vs A"]
    assert d.unparsable == 0 and d.flips.both_orders == 4
    # actual usage is what the stand-in reported for each of the 9 calls (the unreadable one included)
    sent = [r["body"]["messages"] for r in server.requests]
    prompt_tokens = sum(len(json.dumps(messages)) // 4 for messages in sent)  # as the stand-in counts them
    path = judgments_path(workdir, "tiny", "gpt-4")
    records = [
        json.loads(line) for p in (path, unparsable_path(path)) for line in p.read_text("utf-8").splitlines()
    ]
    completion_tokens = sum(r["usage"]["completion_tokens"] for r in records)
    assert len(records) == 9 and completion_tokens > 0
    assert (d.cost.calls, d.cost.prompt_tokens, d.cost.completion_tokens) == (
        9,
        prompt_tokens,
        completion_tokens,
    )
    assert d.cost.usd == pytest.approx((prompt_tokens + 2 * completion_tokens) / 1e6)
    # the estimate eval.judge made for each call is kept in its record and summed for the same calls
    assert d.cost.recomputed == 0
    assert d.cost.estimated_prompt_tokens == cost.estimate(sent, None).prompt_tokens
    assert d.cost.estimated_completion_tokens == 9 * cost.COMPLETION_TOKENS_PER_CALL


# ------------------------------------------------------------------------------- hand-made verdicts


@pytest.fixture()
def hand_made(tiny_set, workdir):
    """Verdicts written by hand into the real cache for reference vs A, keyed as eval.judge keys them."""
    es = load_eval_set(tiny_set)
    answers = {v: load_answers(workdir, es, v) for v in ("reference", "A")}
    prompt = JudgePrompt.load()
    tasks, _ = build_tasks(
        es, answers, [("reference", "A")], (FORWARD, SWAPPED), "gpt-4", prompt.version,
        endpoint="http://judge.test/v1",
    )  # fmt: skip
    by = {(t.question_id, t.order): t for t in tasks}
    cache = JudgmentCache(judgments_path(workdir, "tiny", "gpt-4"))
    # (question, order): Assistant 1, Assistant 2 as written; None: an unreadable answer
    written = {
        ("g1", FORWARD): (8, 6),  # reference wins ...
        ("g1", SWAPPED): (7, 5),  # ... then A shown first wins: a reversal, +2 for Assistant 1 both times
        ("g2", FORWARD): (9, 7),  # reference wins ...
        ("g2", SWAPPED): (7, 7),  # ... then a tie: half a flip; Assistant 1 (+2 + 0) / 2 = +1
        ("g3", FORWARD): (6, 5),  # reference wins both ways: no flip, (+1 - 1) / 2 = 0
        ("g3", SWAPPED): (5, 6),
        ("k1", FORWARD): (4, 8),  # one order only: no flip counted
        ("k1", SWAPPED): None,
    }
    for (qid, order), scores in written.items():
        task = by[(qid, order)]
        record = {
            "key": task.key, "question_id": qid, "order": order, "scores": None if scores is None else list(scores),
            "raw": "không đọc được" if scores is None else f"{scores[0]} {scores[1]}\nLý do cho {qid} {order}.",
            "usage": {"prompt_tokens": 100, "completion_tokens": 10},
        }  # fmt: skip
        if qid != "g3":
            record["estimate"] = {"prompt_tokens": 90, "completion_tokens": 250}
        cache.add(record)
    cache.close()
    return tasks, JudgmentCache(judgments_path(workdir, "tiny", "gpt-4")), prompt


def test_hand_made_verdicts_give_exact_numbers(hand_made):
    tasks, cache, prompt = hand_made
    d = diagnose("reference", "A", tasks, cache, price=(30.0, 60.0), prompt=prompt)
    f = d.flips
    assert (f.both_orders, f.reversals, f.half_flips) == (3, 1, 1)
    assert f.flip_rate == pytest.approx(1.5 / 3) and f.position_bias == pytest.approx((2 + 1 + 0) / 3)
    rows = {r.question_id: r for r in d.rows}
    assert rows["k1"].forward.status == SCORED and rows["k1"].swapped.status == UNPARSABLE
    assert rows["k1"].swapped.explanation == "không đọc được" and d.unparsable == 1
    assert rows["g2"].forward.explanation == "Lý do cho g2 forward."
    assert rows["g2"].swapped.explanation == "Lý do cho g2 swapped."
    assert rows["g1"].averaged == (6.5, 6.5)  # (8 + 5) / 2 for the reference, (6 + 7) / 2 for A
    c = d.cost
    assert (c.calls, c.prompt_tokens, c.completion_tokens, c.without_usage) == (8, 800, 80, 0)
    assert c.usd == pytest.approx((800 * 30 + 80 * 60) / 1e6)
    # six records carry the estimate (90 + 250); g3's two are recomputed from their prompts as eval.judge would
    g3 = [t for t in tasks if t.question_id == "g3"]
    again = cost.estimate((prompt.messages(t.question, t.answer_1, t.answer_2) for t in g3), None)
    assert c.recomputed == 2
    assert c.estimated_prompt_tokens == 6 * 90 + again.prompt_tokens
    assert c.estimated_completion_tokens == 6 * 250 + 2 * cost.COMPLETION_TOKENS_PER_CALL
    table = summary_table([d])
    assert table[1][:4] == ["reference vs A", "3/4", "50.0% (1 + 1 half)", "+1.00"]
    assert table[1][6] == f"800 + 80 ({6 * 90 + again.prompt_tokens:,} + {6 * 250 + 2 * 250:,})"
    assert table[1][7] == f"$0.0288 (${c.estimated_usd:,.4f})"
    text = show_question([d], "k1")
    assert "swapped (A shown first): unparsable" in text and "không đọc được" in text


def test_a_question_with_no_verdict_has_no_row(hand_made, tiny_set, workdir):
    tasks, cache, _ = hand_made
    rows = question_rows("reference", "A", tasks, cache)
    assert [r.question_id for r in rows] == ["g1", "g2", "g3", "k1"]
    empty = JudgmentCache(workdir / "elsewhere.jsonl")
    assert question_rows("reference", "A", tasks, empty) == []
    assert flip_stats([]).flip_rate is None and flip_stats([]).position_bias is None
    d = diagnose("reference", "A", tasks, empty)
    assert d.rows == () and d.cost.calls == 0 and d.cost.usd is None
    with pytest.raises(ViChatError, match="no verdict for question 'g1'"):
        show_question([d], "g1")


# ------------------------------------------------------------------------------- length


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = 1, 2, 3, 4; y = 1, 3, 2, 4: sxy = 4, sxx = syy = 5
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert ranks([10, 20, 20, 5]) == [2, 3.5, 3.5, 1]
    # a monotone but not linear relation: Spearman 1, Pearson below 1
    xs, ys = [1, 2, 3, 4, 5], [1, 2, 4, 8, 100]
    assert spearman(xs, ys) == pytest.approx(1.0) and pearson(xs, ys) < 0.9
    assert pearson([1, 2], [1, 2]) is None  # too few points
    assert pearson([1, 2, 3], [5, 5, 5]) is None and spearman([4, 4, 4], [1, 2, 3]) is None  # no spread
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


def test_pearson_and_spearman_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    xs = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
    ys = [2, 7, 1, 8, 2, 8, 1, 8, 2, 8]
    assert pearson(xs, ys) == pytest.approx(stats.pearsonr(xs, ys)[0])
    assert spearman(xs, ys) == pytest.approx(stats.spearmanr(xs, ys)[0])


@pytest.mark.parametrize("longer_is_better", [True, False])
def test_length_correlation_sign_through_the_judge(
    longer_is_better, judge_argv, server, tiny_set, workdir, write_answers
):
    """Answers whose score rises (or falls) with their length: both correlations take that sign."""
    es = load_eval_set(tiny_set)
    scores = {"g1": (1, 2), "g2": (2, 4), "g3": (3, 6), "k1": (4, 8)}  # reference, L

    def padded(side: str, qid: str, score: int) -> str:
        return f"{side} {qid} [score={score}] " + "x" * (10 * score if longer_is_better else 100 - 10 * score)

    write_answers(workdir, "tiny", "reference", {q: padded("R", q, s[0]) for q, s in scores.items()})
    write_answers(workdir, "tiny", "L", {q: padded("L", q, s[1]) for q, s in scores.items()})
    _judge(judge_argv, server.url, "--variants", "L")
    (d,) = build_report(es, ["L"], workdir, endpoint=server.url).diagnostics
    sign = 1 if longer_is_better else -1
    each, gap = d.length.score_vs_length, d.length.difference
    assert (each.n, gap.n) == (8, 4)
    # every score is 10 characters apart per point, in the same direction: monotone, so Spearman is exact
    assert each.spearman == pytest.approx(sign) and gap.spearman == pytest.approx(sign)
    assert sign * each.pearson > 0.99 and gap.pearson == pytest.approx(sign)
    assert length_stats(d.rows).unit == "characters"


def test_explanation_is_the_text_after_the_score_line():
    assert explanation("8 7\nBoth are fine.\nMore.", (8, 7)) == "Both are fine.\nMore."
    assert explanation("**8/10 và 7/10**\n\nLý do.", (8, 7)) == "Lý do."
    assert explanation("1. 8\n2. 7\nReasons.", (8, 7)) == "Reasons."
    one_line = "Assistant 1 scores 8 and Assistant 2 scores 7 because the first is more detailed."
    assert explanation(one_line, (8, 7)) == one_line  # the reasons are on the score line: kept whole
    assert explanation("8 7", (8, 7)) == "8 7"  # nothing after the scores: the text itself
    assert explanation("  nonsense  ", None) == "nonsense"


def test_missing_order_is_noted(hand_made):
    tasks, cache, _ = hand_made
    forward_only = [t for t in tasks if t.order == FORWARD]
    d = diagnose("reference", "A", forward_only, cache)
    assert all(r.swapped.status == MISSING for r in d.rows) and d.flips.both_orders == 0
    assert d.flips.flip_rate is None
