"""train.decontam: no eval question restated in our training data; the measure finds restated cases and tasks."""

from __future__ import annotations

import glob
import random
import time
import unicodedata

from train.decontam import (
    THRESHOLD,
    EvalQuestion,
    best_pairs,
    find_matches,
    load_eval_questions,
    load_reviewed,
    main,
    normalise,
)
from vichat.data import read_jsonl_strict
from vichat.paths import REPO_ROOT

EVAL = [str(REPO_ROOT / "assets/eval/general.jsonl"), str(REPO_ROOT / "assets/eval/medical.jsonl")]

# Pairs that were in the project's data (eval question, training prompt), kept here as the measure's test.
RESTATED = [
    (
        "Chiến thắng Điện Biên Phủ năm 1954 có ý nghĩa lịch sử như thế nào đối với Việt Nam và thế giới?",
        "Chiến thắng Điện Biên Phủ năm 1954 có ý nghĩa như thế nào đối với Việt Nam?",
    ),
    (
        "Hãy viết một bài thơ lục bát khoảng 8 đến 10 câu về mùa thu Hà Nội.",
        "Viết một bài thơ lục bát ngắn về mùa thu Hà Nội.",
    ),
    (
        "Công nghệ blockchain là gì và hoạt động như thế nào? Hãy giải thích dễ hiểu.",
        "Blockchain là gì? Mình nghe nhiều nhưng vẫn chưa hiểu.",
    ),
    (
        "Em là nữ, 17 tuổi, học lớp 11. Hơn một năm nay mặt em nổi nhiều mụn, nhất là ở trán và hai má, có mụn "
        "đầu đen, mụn đỏ sưng đau và vài nốt mụn mủ. Em hay nặn mụn nên để lại nhiều vết thâm.",
        "Chào bác sĩ, em nam, 17 tuổi. Một năm nay mặt em nổi nhiều mụn, có mụn đầu đen, mụn đỏ sưng và vài "
        "nốt mụn mủ ở trán, hai má. Em hay nặn mụn và rửa mặt bằng xà phòng cho sạch dầu.",
    ),
    (
        "Em 26 tuổi, nữ, nhân viên văn phòng. Mỗi tháng em bị hai, ba cơn đau đầu dữ dội ở một bên thái dương, "
        "đau giật theo nhịp mạch, kèm buồn nôn, sợ ánh sáng và tiếng ồn, phải nằm trong phòng tối.",
        "Bác sĩ ơi, mình 34 tuổi, nữ. Mấy năm nay thỉnh thoảng bị đau nửa đầu bên phải, đau giật giật theo mạch "
        "đập, buồn nôn, sợ ánh sáng và tiếng ồn, phải nằm trong phòng tối cả buổi.",
    ),
]
UNRELATED = [
    "Kể tên ba loại trái cây giàu vitamin C.",
    "Chào bác sĩ, tôi 40 tuổi, nam. Gần đây tôi hay bị đau gót chân buổi sáng khi mới bước xuống giường.",
    "Viết hàm Python đảo ngược một danh sách.",
]


def questions_of(texts: list[str]) -> list[EvalQuestion]:
    return [EvalQuestion(f"q{i}", text, "test") for i, text in enumerate(texts)]


def test_no_eval_question_has_a_near_duplicate_in_our_training_data():
    records = [
        record
        for path in sorted(glob.glob(str(REPO_ROOT / "assets/data/*.jsonl")))
        for record in read_jsonl_strict(path)
    ]
    questions = load_eval_questions(EVAL)
    assert len(questions) == 180

    reviewed = load_reviewed()
    matches = find_matches(
        [record["prompt"] for record in records], questions, record_ids=[r.get("id") for r in records],
        reviewed=reviewed,
    )

    leaks = [
        f"{m.score:.2f} {m.question.id} ~ {records[m.record].get('id')}: {records[m.record]['prompt'][:80]}"
        for m in matches
    ]
    assert not leaks, f"{len(leaks)} training record(s) restate an eval question:\n" + "\n".join(leaks)


def test_restated_cases_and_tasks_score_above_the_threshold_and_others_below():
    questions = questions_of([question for question, _ in RESTATED])
    prompts = [prompt for _, prompt in RESTATED] + UNRELATED

    matches = {m.record: m for m in find_matches(prompts, questions)}

    assert sorted(matches) == list(range(len(RESTATED)))
    assert all(matches[i].question.id == f"q{i}" for i in matches)


def test_wording_accents_and_unicode_form_do_not_hide_a_copy():
    question = "Chữ Quốc ngữ ra đời và được phổ biến ở Việt Nam như thế nào?"
    variants = [
        unicodedata.normalize("NFD", question),
        "CHU QUOC NGU RA DOI VA DUOC PHO BIEN O VIET NAM NHU THE NAO",
        "Chữ quốc ngữ đã ra đời, rồi được phổ biến tại Việt Nam ra sao?",
    ]
    pairs = best_pairs(variants + UNRELATED, questions_of([question]))
    assert normalise(variants[0]) == normalise(question)
    matches = find_matches(variants + UNRELATED, questions_of([question]))
    assert sorted(m.record for m in matches) == [0, 1, 2], pairs


def test_lone_surrogates_and_empty_texts_do_not_crash():
    matches = find_matches(["a\ud800 b", "", "???"], questions_of(["a\udfff b c"]))
    assert isinstance(matches, list)
    assert find_matches([], questions_of(["x"])) == [] and find_matches(["x"], []) == []


def test_fifty_thousand_records_against_the_eval_sets_in_well_under_a_minute():
    rng = random.Random(0)
    words = [w for q in load_eval_questions(EVAL) for w in q.text.split()]
    prompts = [" ".join(rng.choices(words, k=rng.randint(5, 40))) for _ in range(50_000)]
    questions = load_eval_questions(EVAL)

    started = time.perf_counter()
    find_matches(prompts, questions, THRESHOLD)

    assert time.perf_counter() - started < 30


def test_cli_lists_the_leaks_and_exits_1(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(
        '{"prompt": "Viết một bài thơ lục bát ngắn về mùa thu Hà Nội.", "response": "..."}\n',
        encoding="utf-8",
    )
    assert main([str(data), "--eval", *EVAL]) == 1
    out = capsys.readouterr().out
    assert "LEAK" in out and "general-073" in out


def test_a_reviewed_pair_is_exempt_and_nothing_else():
    questions = questions_of(["Điều gì sẽ xảy ra nếu Trái Đất không có Mặt Trăng?"])
    prompts = [
        "Điều gì sẽ xảy ra nếu Trái Đất không có Mặt Trăng nữa?",
        "Điều gì sẽ xảy ra nếu Trái Đất không còn Mặt Trăng?",
    ]
    ids = ["r1", "r2"]
    assert [m.record for m in find_matches(prompts, questions, record_ids=ids)] == [0, 1]
    exempt = find_matches(prompts, questions, record_ids=ids, reviewed=frozenset({("q0", "r1")}))
    assert [m.record for m in exempt] == [1]


def test_every_reviewed_pair_names_a_real_question_and_record():
    ids = {r.get("id") for path in glob.glob(str(REPO_ROOT / "assets/data/*.jsonl")) for r in read_jsonl_strict(path)}
    questions = {q.id for q in load_eval_questions(EVAL)}
    for question_id, record_id in load_reviewed():
        assert question_id in questions and record_id in ids, (question_id, record_id)
