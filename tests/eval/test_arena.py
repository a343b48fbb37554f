"""The arena: votes are checked and logged safely, and the ratings follow the strengths that made the votes."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from eval.arena import (
    VOTES,
    Vote,
    VoteError,
    battle_sides,
    fit_bradley_terry,
    leaderboard,
    main,
    markdown,
    new_session,
    read_votes,
    record_vote,
    wilson,
)
from vichat.cli import run
from vichat.errors import ViChatError
from vichat.generation import GenerationSettings

REPO = Path(__file__).resolve().parents[2]
SETTINGS = GenerationSettings().to_dict()


def vote(a="A", b="B", choice="a", **kw) -> Vote:
    fields = {"prompt": "Thủ đô của Việt Nam là gì?", "answer_a": f"{a} nói", "answer_b": f"{b} nói"}
    return Vote(a=a, b=b, vote=choice, settings=kw.pop("settings", SETTINGS), **(fields | kw))


def simulate(strengths: dict[str, float], n: int, seed: int, tie_share: float = 0.1) -> list[Vote]:
    """Votes drawn from Bradley-Terry with the given ratings (Elo-like scale), sides random."""
    rng = random.Random(seed)
    names = sorted(strengths)
    votes = []
    for _ in range(n):
        a, b = rng.sample(names, 2)
        p_a = 1 / (1 + 10 ** ((strengths[b] - strengths[a]) / 400))
        if rng.random() < tie_share:
            choice = rng.choice(["tie", "bad"])
        else:
            choice = "a" if rng.random() < p_a else "b"
        votes.append(vote(a, b, choice))
    return votes


# ------------------------------------------------------------------------------------------------ records


def test_record_round_trip_and_fields():
    v = vote(seed=7, session=new_session(), blind=False)
    record = v.to_record()
    assert list(record) == [
        "time", "prompt", "a", "b", "vote", "blind", "settings", "seed", "answer_a", "answer_b", "session",
    ]  # fmt: skip
    assert record["settings"] == SETTINGS and record["seed"] == 7 and record["blind"] is False
    assert record["time"].endswith("Z") and "T" in record["time"]
    assert Vote.from_record(json.loads(json.dumps(record))) == v


def test_settings_seed_fills_the_seed_and_a_different_seed_is_refused():
    assert vote(settings=GenerationSettings(seed=3)).seed == 3
    assert vote(settings={"temperature": 0.0}).settings == GenerationSettings(temperature=0.0)
    with pytest.raises(VoteError, match=r"field 'seed' is 4 but settings.seed is 3"):
        vote(settings=GenerationSettings(seed=3), seed=4)


def test_a_variant_against_itself_is_refused():
    with pytest.raises(VoteError, match="against itself"):
        vote("A", "A")
    with pytest.raises(VoteError, match="two different variants"):
        battle_sides("A", "A")
    sides = {battle_sides("A", "B", random.Random(i)) for i in range(20)}
    assert sides == {("A", "B"), ("B", "A")}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"vote": "c"}, r"field 'vote' must be one of a, b, tie, bad \(got 'c'\)"),
        ({"vote": None}, r"field 'vote' must be one of"),
        ({"blind": "yes"}, r"field 'blind' must be true or false"),
        ({"a": "B"}, r"a vote of a variant against itself \('B'\) is refused"),
        ({"a": ""}, r"field 'a' is empty"),
        ({"b": 3}, r"field 'b' must be text"),
        ({"prompt": "  "}, r"field 'prompt' is empty"),
        ({"answer_b": None}, r"field 'answer_b' must be text"),
        ({"time": "yesterday"}, r"field 'time' must be ISO-8601 UTC"),
        ({"time": "2025-05-01T12:00:00+07:00"}, r"field 'time' must be in UTC"),
        ({"time": "2025-05-01T12:00:00"}, r"field 'time' must be in UTC"),
        ({"seed": -1}, r"field 'seed' must be a whole number >= 0 or null"),
        ({"seed": True}, r"field 'seed' must be a whole number"),
        ({"session": "has space"}, r"field 'session' must be null or a short id"),
        ({"session": "x" * 65}, r"field 'session' must be null or a short id"),
        ({"settings": [1, 2]}, r"field 'settings' must be an object"),
        (
            {"settings": SETTINGS | {"temperature": 9}},
            r"field 'settings': temperature must be in \[0.0, 2.0\]",
        ),
        ({"settings": SETTINGS | {"beam": 2}}, r"field 'settings' has an unknown setting 'beam'"),
        ({"settings": {"temperature": 0.5}}, r"field 'settings' lacks 'max_new_tokens'"),
        ({"extra": 1}, r"unknown field 'extra'"),
        ({"prompt": "\ud800"}, r"field 'prompt' holds a lone surrogate"),
    ],
)
def test_from_record_names_the_line_and_the_field(change, message):
    record = vote().to_record() | change
    with pytest.raises(VoteError, match=r"^votes\.jsonl:5: " + message):
        Vote.from_record(record, "votes.jsonl:5")


def test_from_record_refuses_a_missing_field():
    record = vote().to_record()
    del record["answer_a"]
    with pytest.raises(VoteError, match=r"^x:2: field 'answer_a' is missing"):
        Vote.from_record(record, "x:2")
    with pytest.raises(VoteError, match="must be a JSON object"):
        Vote.from_record([1], "x:3")


def test_time_accepts_utc_offsets_written_either_way():
    for stamp in ("2025-05-01T12:00:00Z", "2025-05-01T12:00:00.123+00:00"):
        assert vote(time=stamp).time == stamp


# ------------------------------------------------------------------------------------------------ the log


def test_record_vote_creates_the_folder_and_appends(tmp_path):
    path = tmp_path / "runs" / "arena" / "votes.jsonl"
    first, second = vote(), vote("B", "C", "tie")
    assert record_vote(path, first) == first.to_record()
    record_vote(path, second)
    assert read_votes(path) == ([first, second], [])
    assert path.read_text(encoding="utf-8").count("\n") == 2
    assert "Thủ đô" in path.read_text(encoding="utf-8")  # UTF-8, not escapes


def test_record_vote_cuts_a_torn_last_line(tmp_path):
    path = tmp_path / "votes.jsonl"
    first = vote()
    record_vote(path, first)
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"time": "2025-05-01T1')  # a writer killed mid-line
    assert read_votes(path) == ([first], [])  # readers skip it without a complaint
    second = vote("A", "C", "b")
    record_vote(path, second)
    assert read_votes(path) == ([first, second], [])


def test_read_votes_reports_bad_lines_with_their_numbers_and_keeps_the_rest(tmp_path):
    path = tmp_path / "votes.jsonl"
    good = [vote(), vote("B", "C", "bad")]
    bad_vote = good[0].to_record() | {"vote": "both"}
    path.write_text(
        "\n".join(
            [
                json.dumps(good[0].to_record()),
                "not json",
                "",
                json.dumps(bad_vote),
                "[1, 2]",
                json.dumps(good[1].to_record()),
                '{"a": NaN}',
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    votes, problems = read_votes(path)
    assert votes == good
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:{n}" for n in (2, 4, 5, 7)]
    assert "field 'vote' must be one of" in problems[1]
    assert read_votes(tmp_path / "missing.jsonl") == ([], [])


def test_record_vote_from_threads_never_interleaves(tmp_path):
    path = tmp_path / "votes.jsonl"
    long = "Dài " * 4000  # each line is larger than a write buffer

    def cast(worker: int) -> None:
        for i in range(50):
            record_vote(path, vote(f"T{worker}", "B", VOTES[i % 4], answer_a=long, session=f"t{worker}"))

    threads = [threading.Thread(target=cast, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    votes, problems = read_votes(path)
    assert problems == [] and len(votes) == 200
    assert {v.session: sum(u.session == v.session for u in votes) for v in votes} == {
        f"t{w}": 50 for w in range(4)
    }


CHILD = """
import os, sys, time
from pathlib import Path
from eval.arena import Vote, record_vote
from vichat.generation import GenerationSettings

path, worker, folder = sys.argv[1], sys.argv[2], Path(sys.argv[3])
(folder / f"ready-{worker}").touch()
while not (folder / "go").exists():
    time.sleep(0.01)
long = "Tiếng Việt " * 1500
for i in range(200):
    record_vote(path, Vote(prompt=f"p{i}", a=f"P{worker}", b="Q", vote="a", answer_a=long, answer_b="x",
                           settings=GenerationSettings(), session=f"p{worker}"))
"""


def test_record_vote_from_two_processes_gives_400_whole_lines(tmp_path):
    path = tmp_path / "arena" / "votes.jsonl"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(w), str(tmp_path)], cwd=REPO, env=env)
        for w in (1, 2)
    ]
    while not all((tmp_path / f"ready-{w}").exists() for w in (1, 2)):  # both started: let them race
        assert all(c.poll() is None for c in children), "a child process died before it was ready"
        threading.Event().wait(0.02)
    (tmp_path / "go").touch()
    assert [c.wait(timeout=300) for c in children] == [0, 0]
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 401
    votes, problems = read_votes(path)
    assert problems == [] and len(votes) == 400
    assert sorted(v.session for v in votes) == ["p1"] * 200 + ["p2"] * 200
    for worker in ("p1", "p2"):  # each process's votes in its own order
        assert [v.prompt for v in votes if v.session == worker] == [f"p{i}" for i in range(200)]


# ------------------------------------------------------------------------------------------------ arithmetic


def test_wilson_matches_hand_computed_values():
    # z = 1.96: p = 0.8, n = 10 -> (0.99208 -+ 0.313624) / 1.38416
    assert wilson(8, 10, z=1.96) == pytest.approx((0.49016, 0.94332), abs=2e-5)
    assert wilson(5, 10, z=1.96) == pytest.approx((0.23659, 0.76341), abs=2e-5)
    assert wilson(0, 10, z=1.96) == pytest.approx((0.0, 0.27754), abs=2e-5)  # z^2/n / (1 + z^2/n)
    assert wilson(10, 10, z=1.96) == pytest.approx((0.72246, 1.0), abs=2e-5)
    assert wilson(7.5, 10, z=1.96) == pytest.approx((0.44218, 0.91905), abs=2e-5)  # a tie counts half
    assert wilson(0, 0) == (0.0, 1.0)


def test_the_fit_is_the_maximum_likelihood():
    """At the optimum each variant's expected points (with the prior's virtual ties) equal its points."""
    points = np.array([[0, 7, 3, 0], [4, 0, 6, 2], [1, 5, 0, 9], [0, 3, 4, 0]], dtype=float)
    prior = 0.5
    strength = 10 ** fit_bradley_terry(points, prior)
    padded = points + prior / 2 * (1 - np.eye(4))
    games = padded + padded.T
    expected = (games * strength[:, None] / (strength[:, None] + strength[None, :])).sum(axis=1)
    assert expected == pytest.approx(padded.sum(axis=1), abs=1e-7)
    assert np.log10(strength).mean() == pytest.approx(0, abs=1e-12)


def test_ratings_recover_the_order_of_known_strengths():
    truth = {"Bloomz": 850, "GPTJ": 950, "GPTJ-Chat": 1050, "Bloomz-Chat": 1150}
    board = leaderboard(simulate(truth, 2000, seed=3), bootstrap=50, seed=1)
    assert [r.variant for r in board.rows] == sorted(truth, key=truth.get, reverse=True)
    assert [r.rank for r in board.rows] == [1, 2, 3, 4]
    assert sum(r.rating for r in board.rows) / 4 == pytest.approx(1000)
    gap = board.rows[0].rating - board.rows[-1].rating
    assert 230 < gap < 380  # the true gap is 300 before ties pull ratings together
    assert sum(r.games for r in board.rows) == 2 * 2000
    for r in board.rows:
        assert r.games == r.wins + r.ties + r.losses + r.bad
        assert r.win_low < r.win_rate < r.win_high


def test_ratings_ignore_the_order_of_votes():
    votes = simulate({"A": 900, "B": 1000, "C": 1100}, 300, seed=5)
    shuffled = votes[:]
    random.Random(0).shuffle(shuffled)
    one, two = leaderboard(votes, bootstrap=0), leaderboard(shuffled, bootstrap=0)
    assert [(r.variant, round(r.rating, 6)) for r in one.rows] == [
        (r.variant, round(r.rating, 6)) for r in two.rows
    ]


def test_ties_and_both_bad():
    board = leaderboard([vote("A", "B", "tie")] * 5 + [vote("B", "A", "tie")] * 5, bootstrap=0)
    assert [r.rating for r in board.rows] == pytest.approx([1000, 1000])
    assert [(r.wins, r.ties, r.losses, r.bad, r.win_rate) for r in board.rows] == [(0, 10, 0, 0, 0.5)] * 2
    as_bad = leaderboard([vote("A", "B", "a")] * 6 + [vote("A", "B", "bad")] * 4, bootstrap=0)
    as_tie = leaderboard([vote("A", "B", "a")] * 6 + [vote("A", "B", "tie")] * 4, bootstrap=0)
    assert [r.rating for r in as_bad.rows] == pytest.approx([r.rating for r in as_tie.rows])
    a = as_bad.rows[0]
    assert (a.variant, a.wins, a.ties, a.losses, a.bad, a.win_rate) == ("A", 6, 0, 0, 4, 0.8)
    assert as_tie.rows[0].ties == 4 and as_tie.rows[0].bad == 0
    assert as_bad.rows[1].win_rate == pytest.approx(0.2)


def test_an_undefeated_variant_gets_a_finite_rating():
    few = leaderboard([vote("A", "B", "a")] * 10, bootstrap=20)
    many = leaderboard([vote("A", "B", "a")] * 1000 + [vote("B", "A", "b")] * 1000, bootstrap=20)
    for board in (few, many):
        top, bottom = board.rows
        assert top.variant == "A" and math.isfinite(top.rating) and math.isfinite(bottom.rating)
        assert top.rating > bottom.rating and top.losses == 0
        assert math.isfinite(top.rating_low) and math.isfinite(top.rating_high)
    assert many.rows[0].rating > few.rows[0].rating  # more evidence, stronger rating
    assert few.rows[0].win_rate == 1.0 and few.rows[0].win_low < 1.0


def test_variants_that_never_met_share_one_finite_scale():
    board = leaderboard([vote("A", "B", "a")] * 5 + [vote("C", "D", "a")] * 5, bootstrap=0)
    ratings = {r.variant: r.rating for r in board.rows}
    assert ratings["A"] == pytest.approx(ratings["C"]) and ratings["B"] == pytest.approx(ratings["D"])
    assert board.matrix["A"]["C"] is None and board.games["A"]["C"] == 0


def test_bootstrap_intervals_contain_the_estimate_and_are_repeatable():
    truth = {"A": 900, "B": 1000, "C": 1100}
    votes = simulate(truth, 400, seed=11)
    board = leaderboard(votes, bootstrap=200, seed=4)
    for r in board.rows:
        assert r.rating_low < r.rating < r.rating_high
    assert leaderboard(votes, bootstrap=200, seed=4) == board  # the same seed, the same table
    other = leaderboard(votes, bootstrap=200, seed=5)
    assert [r.rating for r in other.rows] == [r.rating for r in board.rows]
    assert [r.rating_low for r in other.rows] != [r.rating_low for r in board.rows]
    more = leaderboard(simulate(truth, 3200, seed=12), bootstrap=200, seed=4)
    width = {r.variant: r.rating_high - r.rating_low for r in board.rows}
    assert all(r.rating_high - r.rating_low < width[r.variant] for r in more.rows)  # more votes, narrower
    none = leaderboard(votes, bootstrap=0)
    assert all(r.rating_low is None and r.rating_high is None for r in none.rows)


def test_pairwise_matrix():
    votes = [vote("A", "B", "a")] * 3 + [vote("B", "A", "a"), vote("A", "B", "tie"), vote("C", "A", "b")]
    board = leaderboard(votes, bootstrap=0)
    assert board.matrix["A"]["B"] == pytest.approx(3.5 / 5) and board.matrix["B"]["A"] == pytest.approx(
        1.5 / 5
    )
    assert board.matrix["A"]["C"] == 1.0 and board.matrix["C"]["A"] == 0.0
    assert board.matrix["B"]["C"] is None
    assert board.games["A"] == {"B": 5, "C": 1}
    assert board.votes == 6 and board.blind == 6


def test_leaderboard_of_nothing_and_of_wrong_input():
    assert leaderboard([]).rows == []
    with pytest.raises(VoteError, match="takes Vote objects"):
        leaderboard([{"a": "A"}])
    with pytest.raises(ViChatError, match="bootstrap must be >= 0"):
        leaderboard([vote()], bootstrap=-1)


def test_markdown_table():
    text = markdown(leaderboard(simulate({"A": 900, "B": 1100}, 100, seed=2), bootstrap=30), "v.jsonl")
    assert "| rank | variant | rating [low, high] | win rate [low, high] | games | W/T/L | bad |" in text
    assert "100 votes from v.jsonl (100 blind)" in text
    row = next(line for line in text.splitlines() if line.startswith("| 1 | B |"))
    rating, rate = row.split(" | ")[2:4]
    assert rating.count("[") == 1 and rate.endswith("%]")


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_happy_path(tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    for v in simulate({"A": 900, "B": 1000, "C": 1100}, 120, seed=8):
        record_vote(path, v)
    record_vote(path, vote("A", "B", "a", blind=False))
    md, js = tmp_path / "out" / "board.md", tmp_path / "board.json"
    assert run(main, ["--votes", str(path), "--bootstrap", "40", "--out", str(md)]) == 0
    printed = capsys.readouterr().out
    assert printed == md.read_text(encoding="utf-8")
    assert "121 votes" in printed and "(120 blind)" in printed and "| 1 | C |" in printed
    assert run(main, ["--votes", str(path), "--bootstrap", "40", "--blind-only", "--out", str(js)]) == 0
    data = json.loads(js.read_text(encoding="utf-8"))
    assert data["votes"] == 120 and data["bootstrap"] == 40
    assert [r["variant"] for r in data["rows"]] == ["C", "B", "A"]
    assert set(data["rows"][0]) >= {"rating", "rating_low", "rating_high", "win_rate", "wins", "bad"}


def test_cli_warns_about_bad_lines_and_goes_on(tmp_path, capsys):
    path = tmp_path / "votes.jsonl"
    record_vote(path, vote())
    with path.open("a", encoding="utf-8") as fh:
        fh.write("garbage\n")
    record_vote(path, vote("B", "C", "b"))
    assert run(main, ["--votes", str(path), "--bootstrap", "0"]) == 0
    captured = capsys.readouterr()
    assert f"warning: skipped {path}:2: not a JSON object" in captured.err
    assert "| 3 |" in captured.out


def cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "eval.arena", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\xff\xfe not json\n{]\n")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(vote().to_record()) + "\n", encoding="utf-8")
    cases = [
        ((), "no votes log at runs/arena/votes.jsonl"),  # the default, missing in this folder
        (("--votes", str(empty)), "holds no votes yet"),
        (("--votes", str(garbage)), "holds no valid votes (2 bad lines); the first: "),
        (("--votes", str(tmp_path)), "is a folder"),
        (("--votes", str(good), "--out", str(tmp_path / "x.txt")), "must end in .md or .json"),
        (
            ("--votes", str(good), "--out", str(tmp_path / "good.json"), "--bootstrap", "-1"),
            "--bootstrap must be",
        ),
        (("--votes", str(good), "--out", str(good.with_suffix(".md")), "--seed", "x"), "seed"),
    ]
    for argv, message in cases:
        done = cli(*argv, cwd=tmp_path)
        assert done.returncode == 2, (argv, done.stderr)
        assert "Traceback" not in done.stderr
        assert message in done.stderr, (argv, done.stderr)
        if "--seed" not in argv:  # argparse's own errors print a usage line first
            assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "good.json").exists() and not (tmp_path / "x.txt").exists()


def test_cli_refuses_to_write_over_the_votes(tmp_path):
    path = tmp_path / "votes.json"
    path.write_text(json.dumps(vote().to_record()) + "\n", encoding="utf-8")
    before = path.read_bytes()
    assert run(main, ["--votes", str(path), "--out", str(path)]) == 2
    assert path.read_bytes() == before
