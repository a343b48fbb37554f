"""The blind arena of the Compare tab without a browser: real comparisons on the tiny models, real votes log.

Each test names what it holds shut: a vote recorded on the wrong sides after the random assignment, a vote
before both answers finished or a second one on the same comparison, names leaking before the vote, the raw
session id in the log, votes without a rate limit in public mode.
"""

from __future__ import annotations

import json
import random
import re

import gradio as gr
import pytest

from eval.arena import leaderboard, markdown, read_votes
from ui.arena import Arena, new_battle
from ui.common import Cancellations
from ui.compare import OUTPUTS, VOTE_OUTPUTS, CompareHandlers
from ui.public import Guard, Policy
from vichat.generation import GenerationSettings

PROMPT = "Hãy giới thiệu ngắn gọn về vịnh Hạ Long."
SETTINGS = (8, 0.0, 20, 1.2, 7)  # greedy, seed 7: each variant's answer is fixed
PAIR = ("bloom-base", "bloom-chat")
GEN = GenerationSettings(max_new_tokens=8, temperature=0.0, top_k=20, repetition_penalty=1.2, seed=7)


def request(session: str = "browser-session-1") -> gr.Request:
    return gr.Request(session_hash=session)


def handlers_for(registry, tmp_path, seed: int = 0, guard: Guard | None = None) -> CompareHandlers:
    return CompareHandlers(
        registry, Cancellations(), guard, votes=tmp_path / "arena" / "votes.jsonl", rng=random.Random(seed)
    )


def run(handlers, blind=True, pair=PAIR, session="browser-session-1", random_pair=False) -> list[dict]:
    """Every yield of one comparison, as {output name: value}."""
    steps = handlers.compare(PROMPT, *pair, *SETTINGS, request(session), blind, random_pair)
    return [dict(zip(OUTPUTS, step, strict=True)) for step in steps]


def vote(handlers, battle, choice, include_open=False, session="browser-session-1") -> dict:
    return dict(zip(VOTE_OUTPUTS, handlers.vote(battle, choice, include_open, request(session)), strict=True))


def interactive(step: dict) -> list[bool]:
    return [step[f"vote_{c}"]["interactive"] for c in ("a", "b", "tie", "bad")]


def log_lines(tmp_path) -> list[dict]:
    path = tmp_path / "arena" / "votes.jsonl"
    return (
        [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    )


def test_a_blind_vote_is_recorded_with_the_sides_drawn_at_random(tiny_registry, tmp_path):
    alone = {name: tiny_registry.generate(name, PROMPT, GEN).strip() for name in PAIR}  # generate strips
    assert alone[PAIR[0]] != alone[PAIR[1]]  # the two variants answer differently: a mix-up would show
    orders = set()
    for seed in range(8):
        handlers = handlers_for(tiny_registry, tmp_path / str(seed), seed)
        last = run(handlers)[-1]
        battle = last["battle"]
        orders.add((battle.a, battle.b))
        assert {battle.a, battle.b} == set(PAIR)
        shown = last["answer_a"]["value"], last["answer_b"]["value"]
        assert (shown[0].strip(), shown[1].strip()) == (alone[battle.a], alone[battle.b])
        vote(handlers, battle, "a")
        (record,) = log_lines(tmp_path / str(seed))
        assert (record["a"], record["b"], record["vote"], record["blind"]) == (battle.a, battle.b, "a", True)
        assert (record["answer_a"], record["answer_b"]) == shown  # the answers as shown, on their sides
        assert record["prompt"] == PROMPT and record["seed"] == 7 and record["settings"]["seed"] == 7
        assert record["settings"]["max_new_tokens"] == 8 and record["settings"]["temperature"] == 0.0
    assert orders == {PAIR, PAIR[::-1]}  # both assignments happen: the sides really are drawn


def test_names_stay_hidden_in_blind_mode_until_the_vote(tiny_registry, tmp_path):
    handlers = handlers_for(tiny_registry, tmp_path, seed=3)
    steps = run(handlers)
    assert len(steps) > 2 and steps[-1]["status"] == "done · seed 7"
    for step in steps:
        assert (step["answer_a"]["label"], step["answer_b"]["label"]) == ("A", "B")
        shown = " ".join(str(step[k]) for k in ("status", "note", "stats_a", "stats_b"))
        assert not any(name in shown for name in PAIR), shown
    assert interactive(steps[0]) == [False] * 4  # still generating
    assert interactive(steps[-1]) == [True] * 4  # both answers done
    battle = steps[-1]["battle"]
    out = vote(handlers, battle, "b")
    assert out["answer_a"]["label"] == f"A: {battle.a}" and out["answer_b"]["label"] == f"B: {battle.b}"
    assert f"A was **{battle.a}**, B was **{battle.b}**" in out["note"] and "B is better" in out["note"]
    assert [out[f"vote_{c}"]["interactive"] for c in ("a", "b", "tie", "bad")] == [False] * 4


def test_a_vote_before_the_answers_are_done_or_a_second_vote_is_refused(tiny_registry, tmp_path):
    handlers = handlers_for(tiny_registry, tmp_path)
    with pytest.raises(gr.Error, match="compare two answers first"):
        vote(handlers, None, "a")
    steps = iter(handlers.compare(PROMPT, *PAIR, *SETTINGS, request(), True, False))
    first = dict(zip(OUTPUTS, next(steps), strict=True))
    with pytest.raises(gr.Error, match="wait until both answers are finished"):
        vote(handlers, first["battle"], "a")  # an API caller voting while it streams
    last = dict(zip(OUTPUTS, list(steps)[-1], strict=True))
    battle = last["battle"]
    assert log_lines(tmp_path) == []
    voted = vote(handlers, battle, "tie")["battle"]
    with pytest.raises(gr.Error, match="already voted on this comparison"):
        vote(handlers, voted, "a")
    with pytest.raises(gr.Error, match="already voted on this comparison"):
        vote(handlers, battle, "a")  # the battle as it was before the vote: a replay, or a double click
    with pytest.raises(gr.Error, match="a vote is one of a, b, tie, bad"):
        vote(handlers, run(handlers)[-1]["battle"], "A")
    assert [r["vote"] for r in log_lines(tmp_path)] == ["tie"]
    stopped = new_battle(PROMPT, *PAIR, True, battle.settings).finished(battle.answers, stopped=True)
    with pytest.raises(gr.Error, match="stopped before both answers finished"):
        handlers.arena.vote(stopped, "a", "s")
    assert len(log_lines(tmp_path)) == 1


def test_the_log_holds_a_keyed_hash_of_the_session_never_the_raw_one(tiny_registry, tmp_path):
    handlers = handlers_for(tiny_registry, tmp_path)
    for _ in range(2):
        vote(handlers, run(handlers)[-1]["battle"], "a", session="raw-session-xyz")
    vote(handlers, run(handlers)[-1]["battle"], "a", session="someone-else")
    sessions = [r["session"] for r in log_lines(tmp_path)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) for s in sessions)
    assert sessions[0] == sessions[1] != sessions[2]  # one id per browser session
    text = (tmp_path / "arena" / "votes.jsonl").read_text(encoding="utf-8")
    assert "raw-session-xyz" not in text and "someone-else" not in text
    assert Arena(tmp_path / "x.jsonl").session_id("-") is None


def test_open_mode_shows_the_names_and_its_votes_are_counted_apart(tiny_registry, tmp_path):
    handlers = handlers_for(tiny_registry, tmp_path)
    steps = run(handlers, blind=False)
    assert all(s["answer_a"]["label"] == "A: bloom-base" for s in steps)  # open: the picked order, named
    assert "bloom-base" in steps[0]["status"] and interactive(steps[-1]) == [True] * 4
    out = vote(handlers, steps[-1]["battle"], "a")
    (record,) = log_lines(tmp_path)
    assert record["blind"] is False and (record["a"], record["b"]) == PAIR
    assert "open vote" in out["note"]
    assert out["board"].startswith("No blind votes yet (1 open votes")  # blind only by default
    board = handlers.arena.board(include_open=True)
    assert "Counting blind and open votes" in board and "bloom-base" in board


def test_the_leaderboard_is_eval_arena_s_table_of_the_blind_votes(tiny_registry, tmp_path):
    handlers = handlers_for(tiny_registry, tmp_path, seed=1)
    assert handlers.arena.board().startswith("No votes yet")
    battle = run(handlers)[-1]["battle"]
    board = vote(handlers, battle, "a")["board"]
    rows = {
        cells[1]: cells
        for line in board.split("Head-to-head")[0].splitlines()  # the ratings table, not the matrix
        if line.startswith("| ")
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert rows["variant"] == [
        "rank",
        "variant",
        "rating [low, high]",
        "win rate [low, high]",
        "games",
        "W/T/L",
        "bad",
    ]
    assert rows[battle.a][0] == "1" and rows[battle.a][4:] == ["1", "1/0/0", "0"]
    assert rows[battle.b][0] == "2" and rows[battle.b][4:] == ["1", "0/0/1", "0"]
    votes, problems = read_votes(tmp_path / "arena" / "votes.jsonl")
    cli_table = markdown(leaderboard(votes, bootstrap=200, seed=0))  # what python -m eval.arena prints
    assert problems == [] and cli_table.split("| rank")[1].split("\n\n")[0] in board
    vote(handlers, run(handlers, blind=False)[-1]["battle"], "tie")  # an open vote: not in the default board
    assert handlers.arena.board() == board
    both = handlers.arena.board(include_open=True)
    assert "| 2 | 1/1/0 | 0 |" in both and "| 2 | 0/1/1 | 0 |" in both


def test_a_random_pair_is_two_different_variants_that_run_here(tiny_registry, tmp_path):
    handlers = handlers_for(tiny_registry, tmp_path, seed=5)
    assert all(v["is_valid"] for v in handlers.validate(PROMPT, None, None, *SETTINGS, True, True))
    pairs = set()
    for _ in range(4):
        battle = run(handlers, pair=(None, None), random_pair=True)[-1]["battle"]
        assert battle.a != battle.b and {battle.a, battle.b} <= set(tiny_registry.available_names())
        pairs.add(frozenset((battle.a, battle.b)))
    assert len(pairs) > 1
    only = [n for n in tiny_registry.names() if n != "bloom-base"]
    for name in only:
        tiny_registry.variants.pop(name)
    problem = handlers.validate(PROMPT, None, None, *SETTINGS, True, True)[-1]
    assert problem["is_valid"] is False and "random pair needs two variants" in problem["message"]
    with pytest.raises(gr.Error, match="random pair needs two variants that run here; available: bloom-base"):
        run(handlers, pair=(None, None), random_pair=True)


def test_public_votes_are_rate_limited_per_session(tmp_path):
    guard = Guard(Policy(public=True, generations_per_minute=2))
    arena = Arena(tmp_path / "votes.jsonl", guard)
    settings = GenerationSettings(seed=1)

    def finished():
        return new_battle("Xin chào", "x", "y", True, settings).finished(("một", "hai"), stopped=False)

    arena.vote(finished(), "a", "v1")
    arena.vote(finished(), "b", "v1")
    with pytest.raises(gr.Error, match="2 votes a minute per session"):
        arena.vote(finished(), "tie", "v1")
    arena.vote(finished(), "tie", "v2")  # another session has its own window
    guard.close_session("v1")  # the tab closed: its window is forgotten
    arena.vote(finished(), "bad", "v1")
    assert [v.vote for v in read_votes(tmp_path / "votes.jsonl")[0]] == ["a", "b", "tie", "bad"]
