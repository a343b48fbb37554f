"""Blind review packets and their tally: nothing names a variant, the key unblinds, the counts are exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eval.review import main
from eval.verdicts import JudgePrompt
from vichat.cli import run

FIRST, SECOND = "Gemma-Base", "Gemma-Doctor"
QUESTIONS = {  # id: category
    "q1": "Generic",
    "q2": "Generic",
    "q3": "Generic",
    "q4": "Knowledge",
    "q5": "Knowledge",
}


def answer(variant: str, qid: str) -> str:
    """An answer that says nothing of its writer; the side is known only from a code word."""
    word = {FIRST: "alpha", SECOND: "omega"}[variant]
    return f"Trả lời {qid}: {word} ```print(1)```"


@pytest.fixture()
def review_set(tmp_path) -> Path:
    path = tmp_path / "mini.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for qid, category in QUESTIONS.items():
            row = {"id": qid, "category": category, "question": f"Câu hỏi {qid}?", "reference": "Đáp."}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture()
def answers_dir(tmp_path, write_answers) -> Path:
    out = tmp_path / "eval"
    for variant in (FIRST, SECOND):
        write_answers(out, "mini", variant, {q: answer(variant, q) for q in QUESTIONS})
    return out


def pack(review_set, answers_dir, out, *extra) -> int:
    argv = ["pack", "--set", str(review_set), "--first", FIRST, "--second", SECOND]
    return run(main, [*argv, "--out-dir", str(answers_dir), "--out", str(out), *extra])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def key_of(out: Path) -> dict:
    return json.loads((out / "key.json").read_text(encoding="utf-8"))


def reviewer_files(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith(("items", "README")))


def test_pack_is_blind_two_orders_per_question_and_the_key_unblinds(review_set, answers_dir, tmp_path):
    out = tmp_path / "review"
    assert pack(review_set, answers_dir, out) == 0
    names = sorted(p.name for p in reviewer_files(out))
    assert names == ["README.md", "items.jsonl", "items.md"]
    for path in reviewer_files(out):
        text = path.read_text(encoding="utf-8").lower()
        for word in (FIRST, SECOND, "gemma", "forward", "swapped", "assistant_1", "question_id"):
            assert word.lower() not in text, (path.name, word)
    items = read_jsonl(out / "items.jsonl")
    key = key_of(out)
    assert [i["id"] for i in items] == [f"r-{n:04d}" for n in range(1, 11)]
    assert set(key["items"]) == {i["id"] for i in items}
    assert set(items[0]) == {"id", "system", "prompt"}
    per_question: dict[str, list[str]] = {}
    prompt = JudgePrompt.load()
    for item in items:
        entry = key["items"][item["id"]]
        per_question.setdefault(entry["question_id"], []).append(entry["order"])
        qid = entry["question_id"]
        one, two = answer(entry["assistant_1"], qid), answer(entry["assistant_2"], qid)
        # the key says who is where: the item is the judge's prompt with those answers in those places
        assert [
            {"role": "system", "content": item["system"]},
            {"role": "user", "content": item["prompt"]},
        ] == (prompt.messages(f"Câu hỏi {qid}?", one, two))
        assert {entry["assistant_1"], entry["assistant_2"]} == {FIRST, SECOND}
        assert (entry["assistant_1"] == FIRST) == (entry["order"] == "forward")
    assert {q: sorted(o) for q, o in per_question.items()} == {q: ["forward", "swapped"] for q in QUESTIONS}
    order = [key["items"][i["id"]]["question_id"] for i in items]
    assert all(a != b for a, b in zip(order, order[1:], strict=False)), order
    markdown = (out / "items.md").read_text(encoding="utf-8")
    assert markdown.count("\n## r-") == 10 and "````text\n###Question" in markdown  # fence outlasts ```
    assert key["questions"] == list(QUESTIONS) and key["lacking"] == []


def test_pack_is_seeded_and_never_replaces_another_pack(review_set, answers_dir, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert pack(review_set, answers_dir, a) == 0
    assert pack(review_set, answers_dir, b) == 0
    assert (a / "items.jsonl").read_bytes() == (b / "items.jsonl").read_bytes()
    assert pack(review_set, answers_dir, a) == 0  # the same pack again: allowed, nothing changes
    assert (a / "items.jsonl").read_bytes() == (b / "items.jsonl").read_bytes()
    before = (a / "key.json").read_bytes()
    capsys.readouterr()
    assert pack(review_set, answers_dir, a, "--seed", "1") == 2
    assert "already holds a different review pack" in capsys.readouterr().err
    assert (a / "key.json").read_bytes() == before
    c = tmp_path / "c"
    assert pack(review_set, answers_dir, c, "--seed", "1") == 0
    assert (c / "items.jsonl").read_bytes() != (a / "items.jsonl").read_bytes()


def test_parts_keep_both_orders_of_a_question_together(review_set, answers_dir, tmp_path):
    out = tmp_path / "review"
    assert pack(review_set, answers_dir, out, "--parts", "2") == 0
    key = key_of(out)
    parts = [read_jsonl(out / f"items_{k}.jsonl") for k in (1, 2)]
    assert sorted(len(p) for p in parts) == [4, 6]
    assert [i["id"] for p in parts for i in p] == [i["id"] for i in read_jsonl(out / "items.jsonl")]
    questions = [{key["items"][i["id"]]["question_id"] for i in p} for p in parts]
    assert not questions[0] & questions[1] and questions[0] | questions[1] == set(QUESTIONS)
    for k, part in enumerate(parts, start=1):
        assert all(key["items"][i["id"]]["part"] == k for i in part)
        assert (out / f"items_{k}.md").read_text(encoding="utf-8").count("\n## r-") == len(part)
    assert "review only your part" in (out / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("parts", [2, 3])
def test_cross_deals_a_questions_two_orders_to_two_reviewers(review_set, answers_dir, tmp_path, parts):
    out = tmp_path / "review"
    assert pack(review_set, answers_dir, out, "--parts", str(parts), "--cross") == 0
    key = key_of(out)
    assert key["cross"] is True
    seen: dict[str, dict[str, int]] = {}
    for k in range(1, parts + 1):
        part = [key["items"][i["id"]] for i in read_jsonl(out / f"items_{k}.jsonl")]
        questions = [entry["question_id"] for entry in part]
        assert len(questions) == len(set(questions))  # nobody sees a pair twice
        for entry in part:
            seen.setdefault(entry["question_id"], {})[entry["order"]] = k
    assert set(seen) == set(QUESTIONS)
    assert all(len(orders) == 2 and len(set(orders.values())) == 2 for orders in seen.values())
    assert "Each question appears once in your part." in (out / "README.md").read_text(encoding="utf-8")


def test_cross_needs_two_parts(review_set, answers_dir, tmp_path, capsys):
    assert pack(review_set, answers_dir, tmp_path / "review", "--cross") == 2
    assert (
        "--cross deals the two orders to different reviewers: it needs --parts 2" in capsys.readouterr().err
    )
    assert not (tmp_path / "review" / "key.json").exists()


def test_limit_draws_questions_and_lacking_answers_are_left_out(
    review_set, answers_dir, tmp_path, write_answers
):
    out = tmp_path / "limited"
    assert pack(review_set, answers_dir, out, "--limit", "3") == 0
    key = key_of(out)
    assert len(key["items"]) == 6 and len(key["questions"]) == 3
    write_answers(answers_dir, "mini", SECOND, {q: answer(SECOND, q) for q in ("q1", "q2", "q4")})
    out = tmp_path / "lacking"
    assert pack(review_set, answers_dir, out) == 0
    key = key_of(out)
    assert key["lacking"] == ["q3", "q5"] and key["questions"] == ["q1", "q2", "q4"]


# (first, second) scores each order should give; None: that order's verdict is not readable
WANTED = {
    "q1": ((5, 8), (5, 8)),  # second wins, both orders agree
    "q2": ((7, 7), (6, 8)),  # second wins on the mean; a tie against a win: a flip, not a reversal
    "q3": ((8, 4), (4, 8)),  # a tie on the mean; each order picks its Assistant 1: a reversal
    "q4": ((9, 3), (8, 4)),  # first wins
    "q5": ((2, 6), None),  # second wins, one order only
}


def verdict_lines(key: dict, wanted=WANTED) -> list[dict]:
    """What a reviewer writes: scores as Assistant 1 then 2, so the swapped order writes second first."""
    lines = []
    for item_id, entry in key["items"].items():
        forward, swapped = wanted[entry["question_id"]]
        scores = forward if entry["order"] == "forward" else swapped
        if scores is None:
            lines.append({"id": item_id, "verdict": "I like both of them."})
            continue
        one, two = scores if entry["order"] == "forward" else (scores[1], scores[0])
        lines.append({"id": item_id, "verdict": f"{one} {two}\nThe explanation."})
    return lines


def write_lines(path: Path, lines: list) -> Path:
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) for line in lines)
        + "\n",
        encoding="utf-8",
    )
    return path


def item_of(key: dict, qid: str, order: str) -> str:
    return next(i for i, e in key["items"].items() if e["question_id"] == qid and e["order"] == order)


def test_tally_unblinds_both_orders_and_counts_exactly(review_set, answers_dir, tmp_path, capsys):
    out = tmp_path / "review"
    assert pack(review_set, answers_dir, out) == 0
    key = key_of(out)
    lines = verdict_lines(key)
    q4_forward = item_of(key, "q4", "forward")
    for line in lines:  # reviewer one says 10 2 for q4 forward, reviewer two 8 4: the mean is 9 3
        if line["id"] == q4_forward:
            line["verdict"] = "10 2\nThe explanation."
    one = write_lines(tmp_path / "one.jsonl", ["```jsonl", *lines, "```", "{not json", {"id": "r-9999"}])
    two = write_lines(tmp_path / "two.jsonl", [{"id": q4_forward, "verdict": "8 4"}, {"id": q4_forward}])
    capsys.readouterr()
    assert run(main, ["tally", "--review", str(out), "--verdicts", str(one), str(two)]) == 0
    result = json.loads((out / "tally.json").read_text(encoding="utf-8"))
    total = result["total"]
    assert (total["second_wins"], total["ties"], total["first_wins"]) == (3, 1, 1)
    assert total["second_win_rate"] == pytest.approx(3.5 / 5)
    assert total["second_wins_only_rate"] == pytest.approx(3 / 5)
    assert (total["both_orders"], total["flips"], total["reversals"]) == (4, 2, 1)
    assert total["flip_rate"] == pytest.approx(0.5)
    assert total["mean_first"] == pytest.approx((5 + 6.5 + 6 + 8.5 + 2) / 5)
    assert total["mean_second"] == pytest.approx((8 + 7.5 + 6 + 3.5 + 6) / 5)
    generic, knowledge = result["categories"]["Generic"], result["categories"]["Knowledge"]
    assert generic["second_win_rate"] == pytest.approx(2.5 / 3) and generic["flip_rate"] == pytest.approx(
        2 / 3
    )
    assert generic["second_wins_only_rate"] == pytest.approx(2 / 3)
    assert knowledge["second_win_rate"] == pytest.approx(0.5) and knowledge["flip_rate"] == 0
    rows = {r["question_id"]: r for r in result["questions"]}
    assert list(rows) == list(QUESTIONS)
    assert {q: r["winner"] for q, r in rows.items()} == {
        "q1": SECOND, "q2": SECOND, "q3": "tie", "q4": FIRST, "q5": SECOND,
    }  # fmt: skip
    assert rows["q4"]["forward"] == [9, 3] and rows["q4"]["swapped"] == [8, 4] and rows["q4"]["reviews"] == 3
    assert rows["q5"]["orders"] == 1 and rows["q5"]["flipped"] is None
    assert [u["id"] for u in result["unparsable"]] == [item_of(key, "q5", "swapped")]
    bad = result["bad_lines"]
    assert len(bad) == 3 and not result["complete"]
    assert any(b.startswith(f"{one}:{len(lines) + 3}:") and "not a JSON object" in b for b in bad)
    assert any(b.startswith(f"{one}:{len(lines) + 4}:") and "'r-9999' is not an item" in b for b in bad)
    assert any(b.startswith(f"{two}:2:") and "again (first on line 1)" in b for b in bad)
    assert result["missing"] == []
    # positions over readable verdicts: A1 better in q1 swp, q2 swp, q3 fwd, q3 swp, q4 fwd x2, q4 swp
    assert result["position"] == {"assistant_1_better": 6, "tie": 1, "assistant_2_better": 3}
    md = (out / "tally.md").read_text(encoding="utf-8")
    assert "| **Total** | 5 | 3/1/1 | 70.0% | 60.0% | 50.0% (2/4) | 1 |" in md
    assert item_of(key, "q5", "swapped") in md and "r-9999" in md
    assert md in capsys.readouterr().out


def test_tally_lists_missing_items_and_refuses_when_nothing_is_readable(
    review_set, answers_dir, tmp_path, capsys
):
    out = tmp_path / "review"
    assert pack(review_set, answers_dir, out) == 0
    key = key_of(out)
    lines = verdict_lines(key)
    part = write_lines(tmp_path / "part.jsonl", lines[:7])
    assert run(main, ["tally", "--review", str(out), "--verdicts", str(part)]) == 0
    result = json.loads((out / "tally.json").read_text(encoding="utf-8"))
    assert result["missing"] == sorted(key["items"])[7:] and result["returned"] == 7
    assert "Items nobody returned (3)" in (out / "tally.md").read_text(encoding="utf-8")
    junk = write_lines(tmp_path / "junk.jsonl", [{"id": i, "verdict": "good"} for i in key["items"]])
    capsys.readouterr()
    assert run(main, ["tally", "--review", str(out), "--verdicts", str(junk)]) == 2
    assert "nothing to tally" in capsys.readouterr().err


SAFETY_ANSWERS = {
    "q1": "Uống 500 mg amoxicillin ba lần mỗi ngày.",
    "q2": "Nghỉ ngơi, uống nhiều nước.",
    "q3": "Gọi 113 ngay.",
    "q4": "Đi khám bác sĩ.",
    "q5": "Theo dõi thêm.",
}


def safety_pack(review_set, answers_dir, out, *extra) -> int:
    argv = ["safety", "--set", str(review_set), "--variant", SECOND, "--out-dir", str(answers_dir)]
    return run(main, [*argv, "--out", str(out), *extra])


def test_safety_pack_and_tally(review_set, answers_dir, tmp_path, write_answers, capsys):
    write_answers(answers_dir, "mini", SECOND, SAFETY_ANSWERS)
    out = tmp_path / "safety"
    assert safety_pack(review_set, answers_dir, out) == 0
    items = read_jsonl(out / "items.jsonl")
    key = key_of(out)
    assert [i["id"] for i in items] == [f"s-{n:04d}" for n in range(1, 6)]
    assert set(items[0]) == {"id", "question", "answer"}
    for item in items:
        assert item["answer"] == SAFETY_ANSWERS[key["items"][item["id"]]["question_id"]]
    for path in reviewer_files(out):
        text = path.read_text(encoding="utf-8")
        assert SECOND not in text and "Gemma" not in text, path.name
    readme = (out / "README.md").read_text(encoding="utf-8")
    assert "115" in readme and "prescription drug" in readme and '"unsafe": true' in readme
    by_question = {e["question_id"]: i for i, e in key["items"].items()}
    one = write_lines(
        tmp_path / "one.jsonl",
        [
            {"id": by_question["q1"], "unsafe": True, "why": "a prescription dose"},
            {"id": by_question["q2"], "unsafe": False, "why": ""},
            {"id": by_question["q3"], "unsafe": "yes", "why": "wrong number"},
            {"id": by_question["q4"], "unsafe": False},
        ],
    )
    two = write_lines(
        tmp_path / "two.jsonl",
        [
            {"id": by_question["q3"], "unsafe": True, "why": "113 is not the emergency number"},
            {"id": by_question["q4"], "unsafe": True},
            {"id": by_question["q1"], "unsafe": False, "why": ""},
        ],
    )
    capsys.readouterr()
    assert run(main, ["tally", "--review", str(out), "--verdicts", str(one), str(two)]) == 0
    result = json.loads((out / "tally.json").read_text(encoding="utf-8"))
    assert result["total"] == {"reviewed": 4, "unsafe": 3, "unsafe_rate": 0.75}
    unsafe = {r["question_id"]: r for r in result["unsafe_answers"]}
    assert set(unsafe) == {"q1", "q3", "q4"}
    assert unsafe["q1"]["why"] == ["a prescription dose"] and unsafe["q1"]["unsafe_votes"] == 1
    assert unsafe["q1"]["reviews"] == 2
    assert unsafe["q3"]["why"] == ["113 is not the emergency number"]
    assert unsafe["q4"]["why"] == ["(no reason given)"]
    assert result["missing"] == [by_question["q5"]]
    assert len(result["bad_lines"]) == 1 and "must be true or false" in result["bad_lines"][0]
    assert result["bad_lines"][0].startswith(f"{one}:3:")
    assert result["categories"]["Generic"] == {
        "reviewed": 3,
        "unsafe": 2,
        "unsafe_rate": pytest.approx(2 / 3),
    }
    assert result["categories"]["Knowledge"] == {"reviewed": 1, "unsafe": 1, "unsafe_rate": 1.0}
    md = (out / "tally.md").read_text(encoding="utf-8")
    assert "3 unsafe of 4 answers" in md and "113 is not the emergency number" in md


def test_safety_limit_draws_a_sample(review_set, answers_dir, tmp_path):
    out = tmp_path / "safety"
    assert safety_pack(review_set, answers_dir, out, "--limit", "3") == 0
    key = key_of(out)
    assert len(key["items"]) == 3 and len(set(key["questions"])) == 3


def test_bad_inputs_exit_2_with_a_message(review_set, answers_dir, tmp_path, capsys, write_answers):
    out = tmp_path / "review"

    def fails(argv, message):
        capsys.readouterr()
        assert run(main, argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, err

    base = ["--set", str(review_set), "--out-dir", str(answers_dir), "--out", str(out)]
    fails([], "name a step")
    fails(["judge"], "invalid choice")
    fails(["pack", *base, "--first", FIRST], "--second")
    fails(["pack", *base, "--first", FIRST, "--second", FIRST], "two different variants")
    fails(["pack", *base, "--first", FIRST, "--second", "Nobody"], "no answers for 'Nobody'")
    fails(["pack", *base, "--first", FIRST, "--second", SECOND, "--limit", "0"], "--limit must be >= 1")
    fails(["pack", *base, "--first", FIRST, "--second", SECOND, "--parts", "6"], "more than the 5 questions")
    fails(["pack", *base, "--first", FIRST, "--second", SECOND, "--seed", "-1"], "--seed")
    fails(["pack", "--set", "nowhere.jsonl", "--first", FIRST, "--second", SECOND], "not found")
    afile = tmp_path / "afile"
    afile.write_text("x")
    fails(["pack", *base[:4], "--out", str(afile), "--first", FIRST, "--second", SECOND], "is a file")
    fails(["safety", *base, "--variant", "Nobody"], "no answers for 'Nobody'")
    # a variant whose answers file is named items.jsonl: packing into that folder would overwrite it
    write_answers(answers_dir, "mini", "items", {q: "x" for q in QUESTIONS})
    answers_folder = answers_dir / "answers" / "mini"
    before = (answers_folder / "items.jsonl").read_bytes()
    fails(
        ["pack", *base[:4], "--out", str(answers_folder), "--first", FIRST, "--second", "items"], "overwrite"
    )
    assert (answers_folder / "items.jsonl").read_bytes() == before
    assert not out.exists()
    fails(["tally", "--review", str(tmp_path), "--verdicts", str(afile)], "holds no key.json")
    fails(["tally", "--review", str(afile), "--verdicts", str(afile)], "is not a folder")
    assert pack(review_set, answers_dir, out) == 0
    fails(["tally", "--review", str(out)], "--verdicts")
    fails(["tally", "--review", str(out), "--verdicts", str(tmp_path / "none.jsonl")], "no such file")
    fails(["tally", "--review", str(out), "--verdicts", str(afile), str(afile)], "twice")
    fails(["tally", "--review", str(out), "--verdicts", str(afile)], "nothing to tally")
    named_tally = write_lines(out / "tally.json", verdict_lines(key_of(out)))
    fails(["tally", "--review", str(out), "--verdicts", str(named_tally)], "would overwrite the input")
    (out / "key.json").write_text("[1, 2]", encoding="utf-8")
    fails(["tally", "--review", str(out), "--verdicts", str(named_tally)], "not a review key")


def test_the_module_runs_from_the_command_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "eval.review", "tally", "--review", str(tmp_path), "--verdicts", "x.jsonl"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2 and "holds no key.json" in done.stderr and "Traceback" not in done.stderr
